"""Train many runs at once: S runs of one modulus ``p`` as one set of batched tensors, each to its own run file.

A sweep over seeds, weight decays, learning rates or train fractions trains S small models with the same
architecture. :func:`train_many` keeps their weights as the rows of one ``(S, n_params)`` tensor and computes
every epoch of all of them together through :mod:`.last_position` (its leading axis R is the run axis): one
forward, one backward and one AdamW update per epoch for the S runs. Each run keeps everything that makes it
a separate run:

* its own seed (initialisation and train/test split, so the runs train on different pairs: the pair sets are
  padded to the longest with a weight of 0, see :class:`~.last_position.Pairs`), weight decay, learning
  rate, betas, warm-up, train fraction, task, length (``epochs``), checkpoint and test intervals and early
  stop (``stop_at_test_loss``);
* :class:`BatchedAdamW`, step for step the ``torch.optim.AdamW`` + ``LambdaLR`` warm-up that
  :func:`.train.make_optimizer` builds for one run, with per-run hyper-parameters;
* its own run file, in exactly the format :func:`.train.train` writes (``train(config, out)`` continues a
  member's file, and :func:`train_many` continues a file written by ``train``), with the same guarantees:
  atomic writes, the ``<out>.lock`` lock, a memory check before any allocation, SIGINT/SIGTERM stop at an
  epoch boundary with every member written. These come from :mod:`.train` itself (``_Saver``, ``_Run``,
  ``RunFileLock``...), not from copies.

A member that diverges (a non-finite loss) stops and is written with status "diverged" (its record ends
before that epoch, as ``train`` writes it); the others go on. A member that reaches ``stop_at_test_loss``
stops at that epoch; a finished member file is skipped. Runs of different ``p`` cannot share tensors: they
are grouped by ``p`` and the groups are trained one after another.

Each member's train losses equal those of ``train(config)`` up to float32 rounding (the batched sums run in
another order: ``tests/test_batched_train.py`` checks a relative difference <= 1e-3 over 50 epochs).
``benchmarks/benchmark_batched.py`` measures the speed against single runs and against ``torch.func.vmap``
over the plain ``HookedTransformer``.

On the CPU the runs are computed one per chunk, and the chunks are spread over worker threads (by default as
many as torch has threads, each with its share of them): one small model cannot keep many cores busy (a run
at p = 113 is hardly faster on 16 cores than on 2), several runs side by side can. The heavy kernels release
Python's GIL, so the workers run in parallel.

Device: everything lives on ``device`` (``"auto"``: CUDA when present). The losses are read back to the
host in blocks (every epoch on the CPU, where it costs nothing; at checkpoint epochs and every
:data:`SYNC_EVERY` epochs on a GPU), and the stop decisions (divergence, early stop) are taken on the device,
so a GPU is never made to wait for the host within a block.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor
from torch.optim.adamw import adamw
from tqdm.auto import tqdm

from . import last_position as lp
from .config import TrainConfig
from .data import make_split
from .layout import transformer_lens_to_paper
from .model import FROZEN_ZERO_BIASES, PAPER_TRAINABLE, make_model
from .train import (
    NotEnoughMemoryError,
    RunNotSavedError,
    TrainingDivergedError,
    TrainingInterrupted,
    _open_out,
    _restore,
    _Run,
    _Saver,
    _stop_on_signals,
    available_memory_bytes,
    estimate_run_file_bytes,
    make_optimizer,
    resolve_device,
    trained_parameters,
)

__all__ = [
    "train_many",
    "BatchedAdamW",
    "estimate_sweep_memory_bytes",
    "SYNC_EVERY",
]

#: On a GPU, the losses are read back to the host at least every this many epochs (and at checkpoint epochs).
SYNC_EVERY = 100

#: AdamW's epsilon in the recipe (``train.make_optimizer``).
_EPS = 1e-8


# ---------------------------------------------------------------------------------------------------------
# the optimizer
class BatchedAdamW:
    """AdamW with the recipe's linear warm-up for S runs whose parameters are the rows of one ``(S, N)`` tensor.

    Per run ``r`` (hyper-parameters may differ between runs) one :meth:`step` does what
    ``optimizer.step(); scheduler.step()`` of :func:`.train.make_optimizer` do for one run: with
    ``lr = lr_r * min(last_epoch / warmup_r, 1)`` (1 when ``warmup_r = 0``) and ``t = step + 1``::

        param  *= 1 - lr * wd_r
        m       = lerp(m, grad, 1 - beta1_r);      v = beta2_r v + (1 - beta2_r) grad^2
        param  -= lr / (1 - beta1_r^t) * m / (sqrt(v) / sqrt(1 - beta2_r^t) + eps)

    Runs whose entry of ``active`` is False are left exactly as they are (parameters, moments, counters).
    On a GPU the per-run scalars are float64 tensors on the device and one batched chain of elementwise ops
    updates every run, so a step never waits for the host; on the CPU each active run is updated by torch's own
    fused AdamW kernel (the one :func:`.train.make_optimizer` uses), which is faster there.

    Attributes (all ``(S,)`` float64 unless said): ``lr``, ``weight_decay``, ``beta1``, ``beta2``, ``warmup``;
    ``step_count`` (Adam's step), ``last_epoch`` (the scheduler's); ``exp_avg``, ``exp_avg_sq``: ``(S, N)``
    in the parameters' dtype.
    """

    def __init__(
        self,
        params: Float[Tensor, "S N"],
        *,
        lr: Sequence[float],
        weight_decay: Sequence[float],
        betas: Sequence[Sequence[float]],
        warmup_steps: Sequence[int],
        eps: float = _EPS,
    ):
        if params.ndim != 2:
            raise ValueError(f"params must be (S, N): one row per run, got shape {tuple(params.shape)}")
        S = params.shape[0]
        for name, values in (
            ("lr", lr),
            ("weight_decay", weight_decay),
            ("betas", betas),
            ("warmup_steps", warmup_steps),
        ):
            if len(values) != S:
                raise ValueError(f"{name} must have one entry per run ({S}), got {len(values)}")

        def vec(values) -> Tensor:
            return torch.tensor([float(v) for v in values], dtype=torch.float64, device=params.device)

        self.lr, self.weight_decay, self.warmup = vec(lr), vec(weight_decay), vec(warmup_steps)
        self.beta1, self.beta2 = vec([b[0] for b in betas]), vec([b[1] for b in betas])
        self.eps = float(eps)
        self.step_count = torch.zeros(S, dtype=torch.float64, device=params.device)
        self.last_epoch = torch.zeros(S, dtype=torch.float64, device=params.device)
        self.exp_avg = torch.zeros_like(params)
        self.exp_avg_sq = torch.zeros_like(params)
        self._work: tuple[Tensor, Tensor] | None = None  # scratch of the step, reused

    @classmethod
    def for_configs(cls, params: Float[Tensor, "S N"], configs: Sequence[TrainConfig]) -> BatchedAdamW:
        """The optimizer of runs with these recipes (lr, weight decay, betas, warm-up of each), one row each."""
        return cls(
            params,
            lr=[c.lr for c in configs],
            weight_decay=[c.weight_decay for c in configs],
            betas=[c.betas for c in configs],
            warmup_steps=[c.warmup_steps for c in configs],
        )

    @property
    def n_runs(self) -> int:
        return int(self.lr.shape[0])

    def scheduled_lr(self) -> Float[Tensor, "S"]:
        """The learning rate of each run's next update: ``lr * min(last_epoch / warmup, 1)`` (``LambdaLR``)."""
        ramp = torch.where(self.warmup > 0, (self.last_epoch / self.warmup.clamp(min=1)).clamp(max=1.0), 1.0)
        return self.lr * ramp

    @torch.no_grad()
    def step(
        self,
        params: Float[Tensor, "S N"],
        grad: Float[Tensor, "S N"],
        active: Tensor,
        pool: ThreadPoolExecutor | None = None,
    ) -> None:
        """Update ``params`` in place from ``grad`` (both ``(S, N)``); ``active``: ``(S,)`` bool, the runs to update.
        ``grad`` is overwritten (inactive rows zeroed). ``pool``: on the CPU, threads that update runs side by
        side."""
        if params.is_cpu:
            self._step_each_run(params, grad, active, pool)
            return
        act = active.to(torch.float64)
        lr = self.scheduled_lr() * act
        step = self.step_count + act
        t = step.clamp(min=1)
        bias1 = 1 - self.beta1**t
        bias2_sqrt = (1 - self.beta2**t).sqrt()
        dtype = params.dtype

        def col(v: Tensor) -> Tensor:
            return v.to(dtype)[:, None]

        if not (grad.is_cpu and bool(active.all())):  # (a free check on the CPU only: no GPU sync)
            grad.masked_fill_(~active[:, None], 0.0)  # an inactive (e.g. diverged) run's gradient may be nan
        if self._work is None or self._work[0].shape != params.shape:
            self._work = (torch.empty_like(params), torch.empty_like(params))
        work, scaled = self._work  # scratch, reused: no allocation per step
        # in the order of torch's fused AdamW kernel (so rounding, amplified over a run, stays close to it)
        params.mul_(col(1 - lr * self.weight_decay))
        self.exp_avg.lerp_(grad, col((1 - self.beta1) * act))
        torch.mul(grad, col((1 - self.beta2) * act), out=work)
        self.exp_avg_sq.mul_(col(torch.where(active, self.beta2, 1.0))).addcmul_(grad, work)
        torch.sqrt(self.exp_avg_sq, out=work).div_(col(bias2_sqrt)).add_(self.eps)  # the denominator
        torch.mul(self.exp_avg, col(-lr / bias1), out=scaled)
        params.addcdiv_(scaled, work)
        self.step_count = step
        self.last_epoch = self.last_epoch + act

    def _step_each_run(self, params: Tensor, grad: Tensor, active: Tensor, pool: ThreadPoolExecutor | None) -> None:
        """The CPU step: torch's own fused AdamW kernel once per active run (on the rows of ``params``), with that
        run's scalars. Reading the scalars costs nothing on the CPU, and the fused kernel is ~3x faster there than
        the batched elementwise chain; it is also exactly the kernel :func:`.train.make_optimizer` uses."""
        lrs = self.scheduled_lr().tolist()
        steps, wds = self.step_count.tolist(), self.weight_decay.tolist()
        beta1s, beta2s = self.beta1.tolist(), self.beta2.tolist()

        def update(r: int) -> None:
            step = torch.tensor(steps[r], dtype=torch.float32)  # incremented by the kernel, as AdamW's state
            adamw(
                [params[r]], [grad[r]], [self.exp_avg[r]], [self.exp_avg_sq[r]], [], [step],
                fused=True, amsgrad=False, beta1=beta1s[r], beta2=beta2s[r], lr=lrs[r],
                weight_decay=wds[r], eps=self.eps, maximize=False,
            )  # fmt: skip

        runs = [r for r, on in enumerate(active.tolist()) if on]
        if pool is None or len(runs) < 2:
            for r in runs:
                update(r)
        else:
            list(pool.map(update, runs))
        act = active.to(torch.float64)
        self.step_count = self.step_count + act
        self.last_epoch = self.last_epoch + act

    def select(self, rows: Tensor) -> None:
        """Keep only the runs ``rows`` (an index tensor on the parameters' device), in that order."""
        for name in (
            "lr",
            "weight_decay",
            "warmup",
            "beta1",
            "beta2",
            "step_count",
            "last_epoch",
            "exp_avg",
            "exp_avg_sq",
        ):
            setattr(self, name, getattr(self, name).index_select(0, rows))
        self._work = None


# ---------------------------------------------------------------------------------------------------------
# memory
def _n_params(p: int) -> int:
    from .checkpoints import expected_paper_shapes

    return sum(math.prod(s) for s in expected_paper_shapes(p).values())


def _activation_bytes_per_run(config: TrainConfig) -> int:
    """Peak memory of one run's forward + backward on its train pairs (and of its test evaluation, which
    comes first and is freed): per pair the Z rows (d_mlp + p + 1 floats), the ReLU output, the float32 and
    float64 logits with their log-softmax and gradients, and the attention weights; plus the run's tables."""
    p, d_mlp = config.p, 512
    n_out, d = p + 1, d_mlp + p + 1
    n_train = int(config.frac_train * p * p)
    per_train_pair = 4 * (3 * d + 2 * d_mlp + 4 * n_out + 24) + 8 * (4 * n_out) + 8 * 16
    per_test_pair = 4 * (d + 2 * n_out) + 8 * (2 * n_out) + 8 * 16
    tables = 4 * 6 * (4 * 2 * n_out * d)
    return max(n_train * per_train_pair, (p * p - n_train) * per_test_pair) + tables


def _state_bytes_per_run(p: int) -> int:
    """Parameters, gradient, the two Adam moments, the step's two scratch rows and up to two pending checkpoint
    copies: 8 float32 rows."""
    return 8 * 4 * _n_params(p)


def estimate_sweep_memory_bytes(
    configs: Sequence[TrainConfig], chunk_runs: int | None = None, workers: int | None = None
) -> int:
    """Memory :func:`train_many` needs for ``configs``, estimated before allocating anything.

    * every member's run record while it trains (its checkpoint history, as in its run file:
      :func:`.train.estimate_run_file_bytes`), all held until the end (they are returned), plus one serialised
      copy while a member is written;
    * per group of one ``p``: the batched state (parameters, gradients, Adam moments, the step's scratch,
      pending checkpoint copies: 8 float32 values per parameter per run) and the activations of the chunks
      computed at once (``chunk_runs`` runs computed together, by ``workers`` CPU worker threads; default: as
      :func:`train_many` chooses them on the CPU).

    * a fixed 64 MB for the rest of the process' growth (models built, allocator caches).

    The checkpoint histories dominate a long sweep: 64 runs of the default recipe (p = 113, 15,000 epochs)
    hold ~0.92 MB per checkpoint per run, so ``save_every = 100`` needs ~9.7 GB and ``save_every = 500`` ~2.5 GB.
    Measured growth of the peak RSS, 3 epochs at 1 thread (``benchmarks/benchmark_batched.py --memory``):
    107 / 194 / 262 MB for 1 / 8 / 16 runs, against 159 / 230 / 311 MB estimated.
    """
    configs = list(configs)
    if not configs:
        return 0
    files = [estimate_run_file_bytes(c) for c in configs]
    need = sum(files) + max(files) + _FIXED_BYTES
    training = 0
    for p in sorted({c.p for c in configs}):
        group = [c for c in configs if c.p == p]
        per_run = max(_activation_bytes_per_run(c) for c in group)
        chunk = chunk_runs or _chunk_runs(per_run, len(group), torch.device("cpu"))
        at_once = min(chunk * _n_workers(group, torch.device("cpu"), workers), len(group))
        training = max(training, len(group) * _state_bytes_per_run(p) + at_once * per_run)
    return need + training


#: Memory the process grows by besides the runs' state, activations and histories (models built, allocator caches).
_FIXED_BYTES = 64 * 2**20

#: Activations computed at once on the CPU (one chunk of runs per worker thread) at most this many bytes by default
#: (10 runs at p = 113), so that a 64-run sweep of the default recipe fits in 4 GB on any number of cores.
_CPU_CHUNK_BYTES = 768 * 2**20
#: Runs per chunk on the CPU: one. A run's working set (~10 MB at p = 113) stays in cache; more runs per chunk
#: only add cache misses. Measured on a quiet 2-core machine, 8 runs, ms per run-epoch at chunks of 1 / 2 / 8
#: runs: 1 thread 35.1 / 39.2 / 48.5 (single-run trainer 34.0); 2 threads 19.7 / 22.5 / 26.9 (single 20.1), all
#: in one thread. The cores are used by computing the one-run chunks side by side instead (:func:`_worker_pool`).
_CPU_CHUNK_RUNS = 1


def _chunk_runs(per_run_bytes: int, n_runs: int, device: torch.device) -> int:
    """How many runs to compute together: on a GPU all that fit half of its free memory; on the CPU
    :data:`_CPU_CHUNK_RUNS` (within 768 MB of activations)."""
    budget, most = _CPU_CHUNK_BYTES, _CPU_CHUNK_RUNS
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget, most = free // 2, n_runs
    return max(1, min(n_runs, most, budget // max(per_run_bytes, 1)))


def _n_workers(group: Sequence[TrainConfig], device: torch.device, workers: int | None) -> int:
    """CPU worker threads for a group of runs of one ``p``: ``workers``, at most one per chunk; by default
    torch's thread count, as long as the chunks computed at once stay within :data:`_CPU_CHUNK_BYTES` of
    activations. 1 (no worker threads) on a GPU."""
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if device.type != "cpu":
        return 1
    per_run = max(_activation_bytes_per_run(c) for c in group)
    chunk = _chunk_runs(per_run, len(group), device)
    if workers is None:
        workers = min(torch.get_num_threads(), max(1, _CPU_CHUNK_BYTES // (chunk * per_run)))
    return max(1, min(-(-len(group) // chunk), workers))


@contextlib.contextmanager
def _worker_pool(n_workers: int) -> Iterator[ThreadPoolExecutor | None]:
    """``n_workers`` threads that compute chunks side by side, each with ``torch.get_num_threads() // n_workers``
    torch threads (at least 1); None for one worker. torch's thread count is restored at the end (a thread's
    ``torch.set_num_threads`` also sets the default of threads started later)."""
    if n_workers <= 1:
        yield None
        return
    threads = torch.get_num_threads()
    pool = ThreadPoolExecutor(
        n_workers,
        thread_name_prefix="train_many",
        initializer=torch.set_num_threads,
        initargs=(max(1, threads // n_workers),),
    )
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(threads)


def _check_memory(configs: Sequence[TrainConfig], workers: int | None) -> None:
    need, have = estimate_sweep_memory_bytes(configs, workers=workers), available_memory_bytes()
    if have is not None and need > have:
        files = sum(estimate_run_file_bytes(c) for c in configs)
        raise NotEnoughMemoryError(
            f"these {len(configs)} runs need about {need / 1e9:,.1f} GB of memory to train together (their checkpoint "
            f"histories: {files / 1e9:,.1f} GB; training: {(need - files) / 1e9:,.1f} GB), but only {have / 1e9:,.1f} GB "
            f"is available. Use a larger --save-every (save_every), fewer --epochs (epochs), or split the sweep "
            f"(--shard K/N) over several processes or machines."
        )


# ---------------------------------------------------------------------------------------------------------
# members
class _Member:
    """One run of the sweep: its config, file, record and (while it trains) its row in the batched tensors."""

    def __init__(self, index: int, config: TrainConfig, path: Path | None):
        self.index, self.config, self.path = index, config, path
        self.existing: dict | None = None  # the stored run to continue
        self.result: dict | None = None  # the run data to return
        self.status = "pending"  # pending -> training -> finished / stopped / diverged / interrupted / skipped
        self.saved_to: Path | None = None
        self.run: _Run | None = None
        self.saver: _Saver | None = None
        self.model = self.optimizer = self.scheduler = None
        self.start = self.done = 0
        self.elapsed_before = 0.0
        self.last_write = time.monotonic()

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else f"run {self.index}"


def _open(m: _Member, resume: bool, stack: contextlib.ExitStack) -> None:
    """Open the member's file as :func:`.train.train` opens ``out`` (``train._open_out``): a finished run is
    kept as the result (a diverged one too, with a note: continuing it would diverge again); else the lock is
    held and the stored run kept to continue (``resume``)."""
    try:
        existing, complete = _open_out(m.path, m.config, resume, stack, who="train_many")
    except TrainingDivergedError as e:
        print(f"[train_many] skipping {m.path}: {e}", file=sys.stderr)
        existing, complete = e.run_data, True
    if complete:
        m.result, m.status = existing, "skipped"
    else:
        m.existing = existing if resume else None


def _prepare(m: _Member, stop, fallback_dirs) -> None:
    """Build the member's model (its seed's init), the torch optimizer and scheduler that its resume record is
    written from, and its record; restore a stored run to continue."""
    config = m.config
    m.model = make_model(config.p, seed=config.seed)
    m.optimizer, m.scheduler = make_optimizer(m.model, config)
    m.saver = _Saver(m.path, stop, fallback_dirs) if m.path is not None else None
    split = make_split(config.p, config.frac_train, config.seed, config.fn)
    if m.existing is None:
        m.run, m.start = _Run(config, split.train_indices), 0
    else:
        m.run = _restore(m.path, config, m.existing, m.model, m.optimizer, m.scheduler, split.train_indices)
        state = m.existing["resume"]
        m.start = int(state["epochs_done"])
        m.elapsed_before = m.run.elapsed_s
        m.saver.saved_done = m.start
        if state["finished"] and m.start < config.epochs:
            m.saver.saved_done = None  # the file says "finished"; extending it must rewrite that
    m.existing = None
    m.done = m.start
    m.split = split


# ---------------------------------------------------------------------------------------------------------
# one group: runs of one p, trained as one set of tensors
class _Group:
    """The batched state of S runs of one ``p`` on one device; row ``i`` is ``self.rows[i]``."""

    def __init__(self, members: list[_Member], device: torch.device, pool: ThreadPoolExecutor | None = None):
        self.rows, self.device, self.pool = list(members), device, pool
        params0 = trained_parameters(members[0].model)
        self.shapes = [tuple(t.shape) for t in params0]
        self.sizes = [t.numel() for t in params0]
        self.offsets = [sum(self.sizes[:i]) for i in range(len(self.sizes))]
        frozen = dict(members[0].model.named_parameters())
        self.zero_shapes = {name: tuple(frozen[name].shape) for name in FROZEN_ZERO_BIASES}
        S = len(members)
        self.P = torch.stack([self._flat(trained_parameters(m.model)) for m in members]).to(device)
        self.G = torch.zeros_like(self.P)
        self.opt = BatchedAdamW.for_configs(self.P, [m.config for m in members])
        for i, m in enumerate(members):  # Adam's moments and counters of a continued run
            state = [m.optimizer.state.get(param, {}) for param in trained_parameters(m.model)]
            if any(state):
                self.opt.exp_avg[i] = self._flat(
                    [s.get("exp_avg", torch.zeros(sh)) for s, sh in zip(state, self.shapes, strict=True)]
                ).to(device)
                self.opt.exp_avg_sq[i] = self._flat(
                    [s.get("exp_avg_sq", torch.zeros(sh)) for s, sh in zip(state, self.shapes, strict=True)]
                ).to(device)
                self.opt.step_count[i] = float(state[0].get("step", 0.0))
            self.opt.last_epoch[i] = float(m.scheduler.last_epoch)
        vec = lambda xs, dtype=torch.float64: torch.tensor(xs, dtype=dtype, device=device)  # noqa: E731
        self.start = vec([m.start for m in members], torch.long)
        self.test_every = vec([m.config.test_every for m in members], torch.long)
        self.threshold = vec(
            [-math.inf if m.config.stop_at_test_loss is None else m.config.stop_at_test_loss for m in members]
        )
        self.active = torch.ones(S, dtype=torch.bool, device=device)
        d_vocab = members[0].config.p + 1

        def pairs(which: str) -> lp.Pairs:
            tokens, labels = [], []
            for m in members:
                idx = getattr(m.split, which)
                tokens.append(m.split.all_data[idx])
                labels.append(m.split.labels[idx])
            return lp.Pairs.from_tokens(tokens, labels, d_vocab=d_vocab, device=device)

        self.train_pairs, self.test_pairs = pairs("train_indices"), pairs("test_indices")
        self.per_run_bytes = max(_activation_bytes_per_run(m.config) for m in members)
        self._rechunk()

    def _rechunk(self) -> None:
        """Split the runs into chunks computed together; each chunk's pairs are built once (they keep the index
        structures :mod:`.last_position` derives from them)."""
        S = self.n_runs
        self.chunk = _chunk_runs(self.per_run_bytes, S, self.device)
        self.bounds = [(a, min(a + self.chunk, S)) for a in range(0, S, self.chunk)]
        self.train_chunks = [self._subset(self.train_pairs, a, b) for a, b in self.bounds]
        self.test_chunks = [self._subset(self.test_pairs, a, b) for a, b in self.bounds]

    @staticmethod
    def _flat(tensors: Sequence[Tensor]) -> Tensor:
        return torch.cat([t.detach().reshape(-1) for t in tensors])

    @property
    def n_runs(self) -> int:
        return len(self.rows)

    def weights(self, flat: Tensor, a: int, b: int, leaves: bool) -> tuple[dict[str, Tensor], list[Tensor]]:
        """Stacked TransformerLens-layout weights of runs ``a:b`` (views of ``flat``), with the frozen zero
        biases; ``leaves``: the trained ones are fresh leaves that require grad (returned as a list too)."""
        n = b - a
        w, trained = {}, []
        for name, shape, off, size in zip(PAPER_TRAINABLE, self.shapes, self.offsets, self.sizes, strict=True):
            t = flat[a:b, off : off + size].view(n, *shape)
            if leaves:
                t = t.detach().requires_grad_()
                trained.append(t)
            w[name] = t
        for name, shape in self.zero_shapes.items():
            w[name] = torch.zeros((1, *shape), dtype=flat.dtype, device=flat.device).expand(n, *shape)
        return w, trained

    @staticmethod
    def _subset(pairs: lp.Pairs, a: int, b: int) -> lp.Pairs:
        """Runs ``a:b`` of ``pairs``, without the padding none of them needs."""
        if a == 0 and b == pairs.n_runs:
            return pairs
        n = max(pairs.lengths[a:b])
        labels = None if pairs.labels is None else pairs.labels[a:b, :n]
        return lp.Pairs(
            pairs.x[a:b, :n], pairs.y[a:b, :n], labels, pairs.weight[a:b, :n], pairs.lengths[a:b], pairs.eq_token
        )

    def _each_chunk(self, compute: Callable[[int, int, lp.Pairs], Tensor], chunks: list[lp.Pairs]) -> Tensor:
        """``compute(a, b, pairs)`` for every chunk (side by side on the worker threads, if any), concatenated."""
        jobs = [(a, b, pairs) for (a, b), pairs in zip(self.bounds, chunks, strict=True)]
        results = [compute(*job) for job in jobs] if self.pool is None else self.pool.map(lambda j: compute(*j), jobs)
        return torch.cat(list(results))

    def test_losses(self) -> Tensor:
        """(S,) float64 test loss of every run at the current weights."""

        @torch.no_grad()  # (a decorator: grad mode is per thread)
        def compute(a: int, b: int, pairs: lp.Pairs) -> Tensor:
            w, _ = self.weights(self.P, a, b, leaves=False)
            return lp.losses(w, pairs)

        return self._each_chunk(compute, self.test_chunks)

    def train_losses_and_grads(self) -> Tensor:
        """(S,) float64 train loss of every run; their gradients are written to ``self.G`` (rows ``a:b`` by the
        chunk ``a:b`` alone, so chunks can be computed side by side)."""

        def compute(a: int, b: int, pairs: lp.Pairs) -> Tensor:
            w, leaves = self.weights(self.P, a, b, leaves=True)
            loss = lp.losses(w, pairs)
            grads = torch.autograd.grad(loss.sum(), leaves)
            with torch.no_grad():
                for g, off, size in zip(grads, self.offsets, self.sizes, strict=True):
                    self.G[a:b, off : off + size].copy_(g.reshape(b - a, size))
            return loss.detach()

        return self._each_chunk(compute, self.train_chunks)

    def select(self, keep: list[int]) -> None:
        """Keep only rows ``keep`` (host indices), in that order."""
        if not keep:
            self.rows = []
            return
        idx = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.rows = [self.rows[i] for i in keep]
        self.P, self.G = self.P.index_select(0, idx), self.G.index_select(0, idx)
        self.opt.select(idx)
        for name in ("start", "test_every", "threshold", "active"):
            setattr(self, name, getattr(self, name).index_select(0, idx))
        for name in ("train_pairs", "test_pairs"):
            pairs: lp.Pairs = getattr(self, name)
            labels = None if pairs.labels is None else pairs.labels.index_select(0, idx)
            lengths = tuple(pairs.lengths[i] for i in keep)
            n = max(lengths)  # drop padding no remaining run needs
            setattr(
                self,
                name,
                lp.Pairs(
                    pairs.x.index_select(0, idx)[:, :n],
                    pairs.y.index_select(0, idx)[:, :n],
                    None if labels is None else labels[:, :n],
                    pairs.weight.index_select(0, idx)[:, :n],
                    lengths,
                    pairs.eq_token,
                ),
            )
        self._rechunk()

    def row_state(self, i: int) -> dict[str, Tensor]:
        """Row ``i``'s parameters and Adam state, on the CPU."""
        return {
            "params": self.P[i].cpu(),
            "exp_avg": self.opt.exp_avg[i].cpu(),
            "exp_avg_sq": self.opt.exp_avg_sq[i].cpu(),
            "counters": torch.stack([self.opt.step_count[i], self.opt.last_epoch[i]]).cpu(),
        }

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """TransformerLens-layout trained weights of one run from its ``(N,)`` row."""
        return {
            name: flat[off : off + size].view(shape)
            for name, shape, off, size in zip(PAPER_TRAINABLE, self.shapes, self.offsets, self.sizes, strict=True)
        }


def _record(m: _Member, group: _Group, state: dict[str, Tensor]) -> dict:
    """The member's run data after ``m.done`` updates, in exactly the format of :func:`.train.train`: the
    weights and Adam state of its row are loaded into its own model, ``torch.optim.AdamW`` and ``LambdaLR``,
    whose ``state_dict()`` s ``_Run.to_data`` writes."""
    if m.run.diverged is None:
        step, last_epoch = (float(x) for x in state["counters"])
        params = trained_parameters(m.model)
        with torch.no_grad():
            for param, w in zip(params, group.unflatten(state["params"]).values(), strict=True):
                param.copy_(w)
        exp_avg, exp_avg_sq = group.unflatten(state["exp_avg"]), group.unflatten(state["exp_avg_sq"])
        opt_state = m.optimizer.state_dict()
        opt_state["state"] = (
            {
                i: {
                    "step": torch.tensor(step),
                    "exp_avg": exp_avg[name].clone(),
                    "exp_avg_sq": exp_avg_sq[name].clone(),
                }
                for i, name in enumerate(PAPER_TRAINABLE)
            }
            if step > 0
            else {}
        )
        warmup = m.config.warmup_steps
        lr = m.config.lr * (min(last_epoch / warmup, 1.0) if warmup > 0 else 1.0)
        opt_state["param_groups"][0]["lr"] = lr
        m.optimizer.load_state_dict(opt_state)
        sched_state = m.scheduler.state_dict()
        sched_state.update(last_epoch=int(last_epoch), _last_lr=[lr])
        if "_step_count" in sched_state:
            sched_state["_step_count"] = int(last_epoch) + 1
        m.scheduler.load_state_dict(sched_state)
    m.run.elapsed_s = m.elapsed_before + (time.monotonic() - m.t_start)
    return m.run.to_data(m.done, m.model, m.optimizer, m.scheduler)


def _checkpoint(group: _Group, flat: Tensor) -> dict[str, Tensor]:
    return transformer_lens_to_paper(group.unflatten(flat))


class _Block:
    """Per-epoch device results not yet read back: losses, stop flags and checkpoint copies."""

    def __init__(self, first_tick: int):
        self.first_tick = first_tick
        self.rows: list[Tensor] = []  # per tick: (6, S) float64 [train, test, tested, active before, finite, early]
        self.snapshots: dict[int, Tensor] = {}  # tick -> (S, N) copy of the parameters at that tick

    def __len__(self) -> int:
        return len(self.rows)


def _sync_every(device: torch.device) -> int:
    """Epochs between reads of the results to the host, at most: 1 on the CPU (a read costs nothing there),
    :data:`SYNC_EVERY` on a GPU (each read waits for the GPU to finish its queue)."""
    return 1 if device.type == "cpu" else SYNC_EVERY


def _train_group(group: _Group, stop, save_interval_s: float, bar) -> None:
    """Train the group's runs until each finishes, stops or diverges, or a stop is requested."""
    device = group.device
    sync_every = _sync_every(device)
    tick = 0
    block = _Block(0)
    for m in group.rows:
        m.t_start, m.status, m.last_write = time.monotonic(), "training", time.monotonic()

    def planned(m: _Member) -> int:
        return m.start + tick  # the member's epoch at this tick, while it trains

    updating = False
    try:
        while group.n_runs > 0:
            if stop.signum is not None:
                break
            epochs = [planned(m) for m in group.rows]
            tested = any(e % m.config.test_every == 0 for e, m in zip(epochs, group.rows, strict=True))
            if any(e % m.config.save_every == 0 for e, m in zip(epochs, group.rows, strict=True)):
                block.snapshots[tick] = group.P.clone()
            epoch_dev = group.start + tick
            need_test = (epoch_dev % group.test_every) == 0
            nan = torch.full((group.n_runs,), math.nan, dtype=torch.float64, device=device)
            test = torch.where(need_test, group.test_losses(), nan) if tested else nan
            train = group.train_losses_and_grads()
            finite = torch.isfinite(train) & (torch.isfinite(test) | ~need_test)
            early = need_test & (test < group.threshold) & finite
            before = group.active
            group.active = before & finite & ~early
            updating = True
            group.opt.step(group.P, group.G, group.active, group.pool)
            updating = False
            block.rows.append(
                torch.stack([train, test, need_test.double(), before.double(), finite.double(), early.double()])
            )
            tick += 1
            due = (
                len(block) >= sync_every
                or stop.signum is not None
                or any(
                    (e + 1) % m.config.save_every == 0 or e + 1 >= m.config.epochs
                    for e, m in zip(epochs, group.rows, strict=True)
                )
            )
            if due:
                _read_back(group, block, save_interval_s, bar)
                block = _Block(tick)
    except BaseException:
        if (
            updating
        ):  # the update of this epoch was cut short: the weights match no epoch; the files keep their last write
            for m in group.rows:
                m.status = "interrupted"
            group.select([])
        else:  # at an epoch boundary: the block and the weights are consistent; write every member
            if len(block):
                with contextlib.suppress(Exception):
                    _read_back(group, block, save_interval_s, bar, periodic=False)
            _finish_all(group, "interrupted")
        raise
    if len(block):
        _read_back(group, block, save_interval_s, bar)
    _finish_all(group, "interrupted")


def _read_back(group: _Group, block: _Block, save_interval_s: float, bar, periodic: bool = True) -> None:
    """Copy the block's results to the host, extend each member's record, write the members whose write is
    due, finish the members that ended, and drop them from the group."""
    values = torch.stack(block.rows).cpu()  # (T, 6, S): one transfer
    snapshots = {t: s.cpu() for t, s in block.snapshots.items()}
    ended: list[int] = []
    for i, m in enumerate(group.rows):
        for j in range(values.shape[0]):
            train, test, tested, before, finite, early = values[j, :, i].tolist()
            if not before:
                break
            tick = block.first_tick + j
            epoch = m.start + tick
            if tested:
                m.run.test_losses.append(test)
            if epoch % m.config.save_every == 0 and tick in snapshots:
                m.run.state_dicts.append(_checkpoint(group, snapshots[tick][i]))
                m.run.epochs.append(epoch)
            m.run.train_losses.append(train)
            if not finite:
                which, value = ("train", train) if not math.isfinite(train) else ("test", test)
                m.run.diverged = (epoch, which, value)
                m.done, m.status = epoch, "diverged"
                break
            if early:
                if not m.run.epochs or m.run.epochs[-1] != epoch:  # its weights are frozen since: this row is epoch's
                    m.run.state_dicts.append(_checkpoint(group, group.P[i].cpu()))
                    m.run.epochs.append(epoch)
                m.run.stopped_early = True
                m.done, m.status = epoch, "stopped"
                break
            m.done = epoch + 1
            if m.done >= m.config.epochs:
                m.status = "finished"
                break
        if m.status != "training":
            ended.append(i)
        elif periodic and m.path is not None and m.done % m.config.save_every == 0 and m.saver.saved_done != m.done:
            if time.monotonic() - m.last_write >= save_interval_s:
                m.saver.periodic(_record(m, group, group.row_state(i)))
                m.last_write = time.monotonic()
    if bar is not None:
        bar.update(values.shape[0])
        train_now = [m.run.train_losses[-1] for m in group.rows if m.run.train_losses]
        if train_now:
            bar.set_postfix(
                runs=group.n_runs - len(ended),
                median_train=f"{sorted(train_now)[len(train_now) // 2]:.3g}",
                refresh=False,
            )
    for i in ended:
        _finish(group.rows[i], group, i)
    if ended:
        keep = [i for i in range(group.n_runs) if i not in set(ended)]
        group.select(keep)


def _finish(m: _Member, group: _Group, i: int) -> None:
    """Write the member's final record (if it holds any epoch) and keep it as the result (as ``train`` does:
    a file that already holds this record is not written again)."""
    m.result = _record(m, group, group.row_state(i))
    if m.path is None or not m.result["train_losses"]:
        return
    if m.saver.saved_done == m.done and not m.run.stopped_early and m.run.diverged is None:
        m.saved_to = m.path
    else:
        m.saved_to = m.saver.final(m.result)


def _finish_all(group: _Group, status: str) -> None:
    for i, m in enumerate(group.rows):
        if m.status == "training":
            m.status = status
        _finish(m, group, i)
    group.select([])


# ---------------------------------------------------------------------------------------------------------
def train_many(
    configs: Sequence[TrainConfig],
    outs: Sequence[str | os.PathLike | None],
    *,
    device: str | torch.device = "auto",
    resume: bool = True,
    progress: bool = True,
    save_interval_s: float | int = 60.0,
    fallback_dirs: list[str | os.PathLike] | None = None,
    workers: int | None = None,
) -> list[dict]:
    """Train every configuration of ``configs`` at once, each to its own file of ``outs``; return their run data.

    Args:
        configs: the runs (:class:`~.config.TrainConfig`); runs of one ``p`` train together as one set of
            batched tensors, groups of different ``p`` one after another. Any other field may differ.
        outs: one path per config (or None: keep that run in memory). Each file is written exactly as
            :func:`.train.train` writes its ``out``, with the same rules: atomically; when a checkpoint epoch is
            reached and ``save_interval_s`` seconds have passed since that member's last write; at its end (finish,
            early stop, divergence); and on SIGINT/SIGTERM (at the next epoch boundary). No two may be the same file.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``; every tensor of the training lives there.
        resume: a member whose file holds a finished run of its config is returned as it is (a diverged one too,
            with a note); an unfinished one is continued; one with fewer epochs is extended. ``False``: train every
            member from scratch (a file of another configuration is never overwritten: ``ValueError``).
        progress: one progress bar for the whole group (epochs of the longest run, runs still training, the
            median train loss).
        save_interval_s: minimum seconds between periodic writes of one member's file.
        fallback_dirs: where a member's final record goes when its file cannot be written (as in ``train``).
        workers: on the CPU, how many runs are computed side by side, each on its own thread with
            ``torch.get_num_threads() // workers`` torch threads (default: ``torch.get_num_threads()``, one torch
            thread each, up to 10 at p = 113 to bound the memory; at most one per run). Ignored on a GPU.

    Before any work it checks the memory the sweep needs (:func:`estimate_sweep_memory_bytes`,
    :class:`~.train.NotEnoughMemoryError`), then each member's file as ``train`` does (readable run of the same
    config, writable folder with room, the ``<out>.lock`` lock held until the end, a killed run's temporary files
    removed).

    Returns:
        One run-data dict per config, in order (the format of :func:`.train.train`). A diverged member's record
        has ``resume["diverged"] = True`` (a note is printed; the others are not stopped).

    Raises:
        TrainingInterrupted: SIGINT/SIGTERM: every member that trained is written first (``.members``: the list
            of ``(path, epochs done)``); running the same call again continues each of them.
        RunNotSavedError: training finished but some member files could not be written (``.results``: every
            member's run data; ``saved_to``/``run_data``: those of the first such member).
    """
    configs = list(configs)
    outs = list(outs)
    if len(configs) != len(outs):
        raise ValueError(
            f"configs and outs must have the same length (one file per run), got {len(configs)} and {len(outs)}"
        )
    if not configs:
        return []
    for i, c in enumerate(configs):
        if not isinstance(c, TrainConfig):
            raise TypeError(f"configs[{i}] must be a TrainConfig, got {type(c).__name__}")
    dev = resolve_device(device)
    members = [_Member(i, c, _member_path(o)) for i, (c, o) in enumerate(zip(configs, outs, strict=True))]
    seen: dict[Path, int] = {}
    for m in members:
        if m.path is None:
            continue
        if m.path.is_dir():
            raise ValueError(
                f"outs[{m.index}] = {m.path} is a folder; each member needs a file path, e.g. {m.path / f'run{m.index}.pth'}"
            )
        key = Path(os.path.abspath(m.path))
        if key in seen:
            raise ValueError(
                f"outs[{seen[key]}] and outs[{m.index}] are the same file {m.path}; each run needs its own file"
            )
        seen[key] = m.index
    _check_memory(configs, workers)
    stop_label = _describe_outs([m.path for m in members])
    with contextlib.ExitStack() as stack:
        stop = stack.enter_context(_stop_on_signals(stop_label))
        for m in members:
            if m.path is not None:
                _open(m, resume, stack)
        for p in dict.fromkeys(m.config.p for m in members if m.status == "pending"):  # in order of appearance
            if stop.signum is not None:
                break
            todo = [m for m in members if m.status == "pending" and m.config.p == p]
            for m in todo:
                _prepare(m, stop, fallback_dirs)
            total = max(m.config.epochs - m.start for m in todo)
            bar = tqdm(
                total=total, disable=not progress, desc=f"{len(todo)} runs (p = {p})", unit="epoch", dynamic_ncols=True
            )
            try:
                with _worker_pool(_n_workers([m.config for m in todo], dev, workers)) as pool:
                    _train_group(_Group(todo, dev, pool), stop, float(save_interval_s), bar)
            finally:
                bar.close()
    results = [m.result for m in members]
    for m in members:
        if m.status == "diverged":
            epoch, which, value = m.run.diverged
            print(
                f"[train_many] {m.name} diverged at epoch {epoch:,} ({which} loss {value}); lower its lr "
                f"(lr = {m.config.lr:g}). The epochs before it are kept (status: diverged).",
                file=sys.stderr,
            )
    if stop.signum is not None or any(m.status in ("interrupted", "pending") for m in members):
        _raise_interrupted(stop, members)
    unsaved = [
        m
        for m in members
        if m.path is not None
        and m.status not in ("skipped",)
        and m.result is not None
        and m.result["train_losses"]
        and m.saved_to != m.path
    ]
    if unsaved:
        first = unsaved[0]
        error = RunNotSavedError(
            f"training finished but {len(unsaved)} member file(s) could not be written: "
            + "; ".join(f"{m.path}: {m.saver.where(m.saved_to)}" for m in unsaved[:3]),
            run_data=first.result,
            saved_to=first.saved_to,
        )
        error.results = results
        raise error
    return results


def _member_path(out) -> Path | None:
    if out is None:
        return None
    path = Path(out).expanduser()
    if path.is_symlink():  # write (and lock) the file the link points to; keep the link
        path = Path(os.path.realpath(path))
    return path


def _describe_outs(paths: list[Path | None]) -> Path | None:
    """What the stop message says is being written: the one file, else the folder that holds the files."""
    real = [p for p in paths if p is not None]
    if len(real) <= 1:
        return real[0] if real else None
    return Path(os.path.commonpath([p.parent for p in real]))


def _raise_interrupted(stop, members: list[_Member]) -> None:
    written = [m for m in members if m.saved_to is not None and m.saved_to == m.path]
    trained = [m for m in members if m.status not in ("skipped",)]
    done = min((m.done for m in trained), default=0)
    head = f"{stop.name or 'interrupt'}: stopped {len(trained)} run(s) (the least advanced after {done:,} epochs)"
    if written:
        tail = f"; {len(written)} run file(s) hold them; run the same command again to resume"
    else:
        tail = "; nothing was written"
    failed = [
        m
        for m in trained
        if m.path is not None and m.result is not None and m.result["train_losses"] and m.saved_to != m.path
    ]
    if failed:
        tail += "; not written: " + "; ".join(f"{m.path}: {m.saver.where(m.saved_to)}" for m in failed[:3])
    folders = {m.path.parent for m in written}
    error = TrainingInterrupted(
        head + tail,
        signum=stop.signum or signal.SIGINT,
        saved_to=folders.pop() if len(folders) == 1 else None,
        epochs_done=done,
    )
    error.members = [(m.path, m.done) for m in members]
    raise error
