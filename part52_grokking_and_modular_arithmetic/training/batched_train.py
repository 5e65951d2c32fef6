"""The training step of S runs of one modulus ``p`` at once: their weights are the rows of one ``(S, N)`` tensor.

:class:`Batch` holds the runs' weights, gradients, Adam state and input pairs on one device and computes one
epoch of all of them through :mod:`.last_position` (its leading axis is the run axis); each run keeps its own
seed, split, weight decay, lr, betas and warm-up. :mod:`.train` drives it; this module knows nothing of files.
On the CPU the runs are computed one per chunk, the chunks spread over worker threads: one small model cannot
keep many cores busy, several side by side can (``benchmarks/benchmark_batched.py``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import no_type_check

import torch
from jaxtyping import Float
from torch import Tensor
from torch.optim.adamw import adamw

from ..runs.architecture import FROZEN_ZERO_BIASES, PAPER_TRAINABLE, parameter_shapes
from ..runs.config import TrainConfig
from ..runs.data import Split
from . import last_position as lp
from .resources import activation_bytes_per_run, chunk_runs, cpu_workers

__all__ = ["BatchedAdamW", "Batch", "worker_pool", "n_workers"]


# --- the optimizer
class BatchedAdamW:
    """AdamW with the recipe's warm-up for S runs whose parameters are the rows of one ``(S, N)`` tensor: per run,
    one :meth:`step` does what ``torch.optim.AdamW`` + ``LambdaLR`` (:func:`.train.make_optimizer`) do; runs whose
    entry of ``active`` is False are left as they are. On a GPU one batched chain of elementwise ops updates every
    run; on the CPU torch's fused kernel updates each active run. Attributes ``(S,)`` float64: ``lr``,
    ``weight_decay``, ``beta1``, ``beta2``, ``warmup``, ``step_count``, ``last_epoch``; ``exp_avg``, ``exp_avg_sq``:
    ``(S, N)`` in the parameters' dtype."""

    def __init__(
        self,
        params: Float[Tensor, "S N"],
        *,
        lr: Sequence[float],
        weight_decay: Sequence[float],
        betas: Sequence[Sequence[float]],
        warmup_steps: Sequence[int],
        eps: float = TrainConfig.eps,
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
        self._work: tuple[Tensor, Tensor] | None = None  # scratch of the GPU step, reused

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

    def scheduled_lr(self) -> Float[Tensor, "S"]:
        """The learning rate of each run's next update (``TrainConfig.warmup_factor``, as ``LambdaLR``)."""
        ramp = torch.where(self.warmup > 0, (self.last_epoch / self.warmup.clamp(min=1)).clamp(max=1.0), 1.0)
        return self.lr * ramp

    @torch.no_grad()
    def step(self, params: Tensor, grad: Tensor, active: Tensor, pool: ThreadPoolExecutor | None = None) -> None:
        """Update ``params`` in place from ``grad`` (both ``(S, N)``; ``grad`` is overwritten); ``active``: ``(S,)``
        bool, the runs to update. ``pool``: on the CPU, threads that update runs side by side."""
        if params.is_cpu:
            self._step_each_run(params, grad, active, pool)
            return
        act = active.to(torch.float64)
        lr = self.scheduled_lr() * act
        step = self.step_count + act
        t = step.clamp(min=1)
        bias1, bias2_sqrt = 1 - self.beta1**t, (1 - self.beta2**t).sqrt()

        @no_type_check  # per-call closure: not re-instrumented by the tests' type checker at each call
        def col(v: Tensor) -> Tensor:
            return v.to(params.dtype)[:, None]

        grad.masked_fill_(~active[:, None], 0.0)  # an inactive (e.g. diverged) run's gradient may be nan
        if self._work is None or self._work[0].shape != params.shape:
            self._work = (torch.empty_like(params), torch.empty_like(params))
        work, scaled = self._work
        # in the order of torch's fused AdamW kernel (so rounding, amplified over a run, stays close to it)
        params.mul_(col(1 - lr * self.weight_decay))
        self.exp_avg.lerp_(grad, col((1 - self.beta1) * act))
        torch.mul(grad, col((1 - self.beta2) * act), out=work)
        self.exp_avg_sq.mul_(col(torch.where(active, self.beta2, 1.0))).addcmul_(grad, work)
        torch.sqrt(self.exp_avg_sq, out=work).div_(col(bias2_sqrt)).add_(self.eps)  # the denominator
        torch.mul(self.exp_avg, col(-lr / bias1), out=scaled)
        params.addcdiv_(scaled, work)
        self.step_count, self.last_epoch = step, self.last_epoch + act

    def _step_each_run(self, params: Tensor, grad: Tensor, active: Tensor, pool: ThreadPoolExecutor | None) -> None:
        """The CPU step: torch's fused AdamW kernel per active run (~3x faster there than the batched chain)."""
        lrs, steps, wds = self.scheduled_lr().tolist(), self.step_count.tolist(), self.weight_decay.tolist()
        beta1s, beta2s = self.beta1.tolist(), self.beta2.tolist()

        @no_type_check  # per-call closure: not re-instrumented by the tests' type checker at each call
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
        self.step_count, self.last_epoch = self.step_count + act, self.last_epoch + act

    def select(self, rows: Tensor) -> None:
        """Keep only the runs ``rows`` (an index tensor on the parameters' device), in that order."""
        names = ("lr", "weight_decay", "warmup", "beta1", "beta2", "step_count", "last_epoch", "exp_avg", "exp_avg_sq")
        for name in names:
            setattr(self, name, getattr(self, name).index_select(0, rows))
        self._work = None


def n_workers(configs: Sequence[TrainConfig], device: torch.device, workers: int | None = None) -> int:
    """CPU worker threads for runs of one ``p`` (:func:`~.resources.cpu_workers` with torch's thread count); 1 on a
    GPU."""
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return 1 if device.type != "cpu" else cpu_workers(configs, torch.get_num_threads(), workers)


@contextlib.contextmanager
def worker_pool(n: int) -> Iterator[ThreadPoolExecutor | None]:
    """``n`` threads with ``torch.get_num_threads() // n`` torch threads each (None for one); restored at the end."""
    if n <= 1:
        yield None
        return
    threads = torch.get_num_threads()
    pool = ThreadPoolExecutor(
        n, thread_name_prefix="train_many", initializer=torch.set_num_threads, initargs=(max(1, threads // n),)
    )
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(threads)


# --- S runs of one p as one set of tensors
class Batch:
    """Weights ``P`` ``(S, N)`` (row ``i``: run ``i``'s :data:`~..runs.architecture.PAPER_TRAINABLE` parameters, flattened),
    gradients ``G``, :class:`BatchedAdamW` ``opt`` and input pairs of S runs of one ``p`` on ``device``."""

    def __init__(
        self,
        configs: Sequence[TrainConfig],
        params: Float[Tensor, "S N"],
        splits: Sequence[Split],
        device: torch.device,
        pool: ThreadPoolExecutor | None = None,
    ):
        self.configs, self.device, self.pool = list(configs), device, pool
        p = self.configs[0].p
        shapes = parameter_shapes(p)
        self.shapes = [shapes[name] for name in PAPER_TRAINABLE]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.offsets = [sum(self.sizes[:i]) for i in range(len(self.sizes))]
        d_model, d_head = self.shapes[0][1], self.shapes[2][2]
        n_heads = self.shapes[2][0]
        self.zero_shapes = dict(zip(FROZEN_ZERO_BIASES, [(n_heads, d_head)] * 3 + [(d_model,), (p + 1,)], strict=True))
        self.P = params.to(device=device, dtype=torch.float32).contiguous()
        self.G = torch.zeros_like(self.P)
        self.opt = BatchedAdamW.for_configs(self.P, self.configs)
        self.active = torch.ones(len(self.configs), dtype=torch.bool, device=device)

        def pairs(which: str) -> lp.Pairs:
            tokens = [s.all_data[getattr(s, which)] for s in splits]
            labels = [s.labels[getattr(s, which)] for s in splits]
            return lp.Pairs.from_tokens(tokens, labels, d_vocab=p + 1, device=device)

        self.train_pairs, self.test_pairs = pairs("train_indices"), pairs("test_indices")
        self._rechunk()

    @property
    def n_runs(self) -> int:
        return len(self.configs)

    def _rechunk(self) -> None:
        """Split the runs into chunks computed together, each with its own pairs (built once)."""
        S = self.n_runs
        gpu_free = torch.cuda.mem_get_info(self.device)[0] if self.device.type == "cuda" else None
        self.chunk = chunk_runs(max(activation_bytes_per_run(c) for c in self.configs), S, gpu_free)
        self.bounds = [(a, min(a + self.chunk, S)) for a in range(0, S, self.chunk)]

        def part(pairs: lp.Pairs, a: int, b: int) -> lp.Pairs:
            return pairs if (a, b) == (0, S) else pairs.select(slice(a, b))

        self.train_chunks = [part(self.train_pairs, a, b) for a, b in self.bounds]
        self.test_chunks = [part(self.test_pairs, a, b) for a, b in self.bounds]

    def set_adam_state(self, i: int, exp_avg: Tensor, exp_avg_sq: Tensor, step: float, last_epoch: float) -> None:
        """Row ``i``'s Adam moments ``(N,)``, Adam step and scheduler epoch (a continued run)."""
        self.opt.exp_avg[i], self.opt.exp_avg_sq[i] = exp_avg.to(self.device), exp_avg_sq.to(self.device)
        self.opt.step_count[i], self.opt.last_epoch[i] = float(step), float(last_epoch)

    def row(self, i: int) -> dict[str, Tensor]:
        """Row ``i``'s weights, Adam moments and counters ``(step, last_epoch)``, on the CPU."""
        return {
            "params": self.P[i].cpu(),
            "exp_avg": self.opt.exp_avg[i].cpu(),
            "exp_avg_sq": self.opt.exp_avg_sq[i].cpu(),
            "counters": torch.stack([self.opt.step_count[i], self.opt.last_epoch[i]]).cpu(),
        }

    def _weights(self, a: int, b: int, leaves: bool) -> tuple[dict[str, Tensor], list[Tensor]]:
        """Weights of runs ``a:b`` (views of ``P``) and zero biases; ``leaves``: trained ones require grad (listed)."""
        n, w, trained = b - a, {}, []
        for name, shape, off, size in zip(PAPER_TRAINABLE, self.shapes, self.offsets, self.sizes, strict=True):
            t = self.P[a:b, off : off + size].view(n, *shape)
            if leaves:
                t = t.detach().requires_grad_()
                trained.append(t)
            w[name] = t
        for name, shape in self.zero_shapes.items():
            w[name] = torch.zeros((1, *shape), dtype=self.P.dtype, device=self.device).expand(n, *shape)
        return w, trained

    def _each_chunk(self, compute: Callable[[int, int, lp.Pairs], Tensor], chunks: list[lp.Pairs]) -> Tensor:
        jobs = [(a, b, pairs) for (a, b), pairs in zip(self.bounds, chunks, strict=True)]
        results = [compute(*job) for job in jobs] if self.pool is None else self.pool.map(lambda j: compute(*j), jobs)
        return torch.cat(list(results))

    def test_losses(self) -> Float[Tensor, "S"]:
        """float64 test loss of every run at the current weights."""

        @torch.no_grad()  # (a decorator: grad mode is per thread)
        @no_type_check  # per-call closure: not re-instrumented by the tests' type checker at each call
        def compute(a: int, b: int, pairs: lp.Pairs) -> Tensor:
            return lp.losses(self._weights(a, b, leaves=False)[0], pairs)

        return self._each_chunk(compute, self.test_chunks)

    def train_losses_and_grads(self) -> Float[Tensor, "S"]:
        """float64 train loss of every run; their gradients go to ``G`` (rows ``a:b`` by chunk ``a:b`` alone)."""

        @no_type_check  # per-call closure: not re-instrumented by the tests' type checker at each call
        def compute(a: int, b: int, pairs: lp.Pairs) -> Tensor:
            w, leaves = self._weights(a, b, leaves=True)
            loss = lp.losses(w, pairs)
            grads = torch.autograd.grad(loss.sum(), leaves)
            with torch.no_grad():
                for g, off, size in zip(grads, self.offsets, self.sizes, strict=True):
                    self.G[a:b, off : off + size].copy_(g.reshape(b - a, size))
            return loss.detach()

        return self._each_chunk(compute, self.train_chunks)

    def step(self) -> None:
        """One AdamW update of the active runs."""
        self.opt.step(self.P, self.G, self.active, self.pool)

    def select(self, keep: list[int]) -> None:
        """Keep only rows ``keep`` (host indices), in that order."""
        self.configs = [self.configs[i] for i in keep]
        if not keep:
            return
        idx = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.P, self.G, self.active = self.P[idx], self.G[idx], self.active[idx]
        self.opt.select(idx)
        self.train_pairs, self.test_pairs = self.train_pairs.select(keep), self.test_pairs.select(keep)
        self._rechunk()
