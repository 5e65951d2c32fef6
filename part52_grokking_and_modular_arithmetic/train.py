"""Train the grokking model with the paper's recipe and record its checkpoint history.

The recipe (Nanda et al. 2023, arXiv 2301.05217; defaults in :class:`~.config.TrainConfig`): paper init seeded by ``seed``;
the paper's split; full batch (every epoch is one AdamW step on all training pairs); AdamW with lr 1e-3,
weight decay 1.0 on every trained parameter, betas (0.9, 0.98), eps 1e-8; a linear warm-up over 10 steps
that starts at lr 0; the float64 cross-entropy over all ``p + 1`` logits at the last position.

:func:`train` computes each step with :mod:`.last_position` (the same gradients as a full
``HookedTransformer`` forward, several times faster), on the CPU or a GPU (``device``), and writes the run file
of :mod:`.checkpoints`:

* ``train_losses[e]``: the loss of epoch ``e``'s step, measured before its update (as in the paper);
* ``test_losses[i]``: the test loss at epoch ``i * test_every`` (measured at the same weights);
* ``state_dicts[k]`` (paper layout) at ``epochs[k]``, every ``save_every`` epochs from epoch 0: the weights
  at which that epoch's losses were measured. As in the course's hub file, a run of ``E`` epochs has ``E``
  train losses and its last checkpoint at the last multiple of ``save_every`` below ``E``;
* ``config`` (``TrainConfig.to_dict()``), ``train_indices``, and ``resume``: the weights after the last
  completed update (TransformerLens layout) with the optimizer and scheduler state, so an interrupted run
  continues exactly where it stopped and a finished one can be extended to more epochs.

The textbook loop (a full ``HookedTransformer`` forward, autograd) that the tests and
``benchmarks/benchmark_training.py`` compare against lives in ``tests/reference/plain_training.py``.
:func:`keep_freed_memory` (a process-wide allocator setting) is never called by :func:`train`; the ``train`` command
and the benchmarks opt in.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from .checkpoints import (
    RESUME_FORMAT_VERSION,
    CorruptCheckpointError,
    RunFileLock,
    RunFileWriteError,
    atomic_save,
    check_destination,
    describe_os_error,
    expected_paper_shapes,
    remove_stale_temp_files,
    run_is_complete,
    safe_load,
    validate_run_data,
)
from .config import TrainConfig
from .data import make_split
from .last_position import Pairs, model_logits, model_loss
from .layout import transformer_lens_to_paper
from .losses import cross_entropy_high_precision
from .model import PAPER_TRAINABLE, make_model

__all__ = [
    "train",
    "keep_freed_memory",
    "make_optimizer",
    "trained_parameters",
    "fast_train_step",
    "resolve_device",
    "TrainingData",
    "TrainingDivergedError",
    "TrainingInterrupted",
    "RunNotSavedError",
    "NotEnoughMemoryError",
    "estimate_run_file_bytes",
    "estimate_training_memory_bytes",
    "available_memory_bytes",
]

#: Keys of ``TrainConfig`` that may differ between a stored run and a request to continue it.
_EXTENDABLE = ("epochs",)


# ---------------------------------------------------------------------------------------------------------
# the recipe
def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep freed memory in this process instead of returning it to the OS at once.

    Every epoch allocates and frees the same few tens of MB of tensors. By default glibc maps large blocks
    afresh and trims the heap after each free, so every epoch pays page faults on all of it: 10-20% of an
    epoch on a busy machine. Raising the mmap threshold (to 32 MB) and the trim threshold (to 512 MB) keeps
    the memory for reuse. Process-wide (freed memory, up to 512 MB, stays mapped), so no library function calls
    it: the ``train``/``fetch`` commands and the benchmarks opt in (its gain on its own:
    ``benchmarks/benchmark_allocator.py``). A no-op outside Linux/glibc. Returns True if the settings were applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 512 << 20))
    except (OSError, AttributeError):
        return False


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; ``"cpu"``/``"cuda"`` (or a ``torch.device``) as given.
    Raises ``ValueError`` for an unknown name, and for CUDA on a machine without it."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}") from e
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but this machine has no CUDA GPU (use --device cpu or auto)")
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    return resolved


class TrainingData:
    """Tokens, labels and split of a configuration (on the CPU), and the :class:`~.last_position.Pairs` of both
    halves on ``device`` (``train_pairs``, ``test_pairs``)."""

    def __init__(self, config: TrainConfig, device: str | torch.device = "cpu"):
        p = config.p
        split = make_split(p, config.frac_train, config.seed, config.fn)
        all_data, labels = split.all_data, split.labels
        self.train_indices, self.test_indices = split.train_indices, split.test_indices
        self.train_tokens, self.train_labels = all_data[self.train_indices], labels[self.train_indices]
        self.test_tokens, self.test_labels = all_data[self.test_indices], labels[self.test_indices]
        self.train_pairs = Pairs.from_tokens(self.train_tokens, self.train_labels, d_vocab=p + 1, device=device)
        self.test_pairs = Pairs.from_tokens(self.test_tokens, self.test_labels, d_vocab=p + 1, device=device)


def trained_parameters(model: HookedTransformer) -> list[torch.nn.Parameter]:
    """The 11 parameters the paper trains (``model.PAPER_TRAINABLE``, in that order)."""
    params = dict(model.named_parameters())
    return [params[name] for name in PAPER_TRAINABLE]


def make_optimizer(
    model: HookedTransformer, config: TrainConfig
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the paper's parameters (weight decay on all of them) and the warm-up schedule
    ``lr * min(step / warmup_steps, 1)``, stepped once per epoch (the first update has lr 0)."""
    kwargs = dict(lr=config.lr, betas=tuple(config.betas), eps=1e-8, weight_decay=config.weight_decay)
    params = trained_parameters(model)
    try:  # one fused kernel per tensor (torch >= 2.4 on CPU)
        optimizer = torch.optim.AdamW(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        optimizer = torch.optim.AdamW(params, foreach=True, **kwargs)
    warmup = config.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(step / warmup, 1.0) if warmup > 0 else 1.0
    )
    return optimizer, scheduler


def _update(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def fast_train_step(
    model: HookedTransformer,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    pairs: Pairs,
) -> float:
    """One full-batch epoch with the last-position forward/backward; returns the loss before the update."""
    loss = model_loss(model, pairs)
    loss.backward()
    _update(optimizer, scheduler)
    return loss.item()


def _test_loss(model: HookedTransformer, data: TrainingData) -> Tensor:
    """The test loss (a float64 0-d tensor on the model's device: read it back when needed)."""
    return cross_entropy_high_precision(model_logits(model, data.test_pairs), data.test_pairs.labels[0])


def _to_cpu(obj):
    """``obj`` (tensors in dicts/lists) with every tensor on the CPU (run files hold CPU tensors only)."""
    if isinstance(obj, Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


# ---------------------------------------------------------------------------------------------------------
# failures, said plainly
class TrainingDivergedError(RuntimeError):
    """The loss became nan/inf. ``epoch``: where; ``run_data``: the run up to the epoch before it;
    ``saved_to``: the file that holds it (None if it could not be written)."""

    def __init__(self, message: str, *, epoch: int, run_data: dict, saved_to: Path | None):
        super().__init__(message)
        self.epoch, self.run_data, self.saved_to = epoch, run_data, saved_to


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT (Ctrl-C) or SIGTERM. The message says truthfully what was written:
    ``saved_to`` is the file that holds the run (None: nothing was written), ``signum`` the signal."""

    def __init__(self, message: str, *, signum: int, saved_to: Path | None, epochs_done: int):
        super().__init__(message)
        self.signum, self.saved_to, self.epochs_done = signum, saved_to, epochs_done


class RunNotSavedError(RuntimeError):
    """Training finished but ``out`` could not be written. ``run_data`` holds the run; ``saved_to`` is the
    fallback file it was written to instead (None if that failed too)."""

    def __init__(self, message: str, *, run_data: dict, saved_to: Path | None):
        super().__init__(message)
        self.run_data, self.saved_to = run_data, saved_to


class NotEnoughMemoryError(MemoryError):
    """A configuration whose estimated memory need exceeds what the machine has available."""


# ---------------------------------------------------------------------------------------------------------
# resources, estimated before any allocation
#: torch.save overhead per tensor (pickle record, zip entry, alignment), bytes: a generous estimate.
_TENSOR_OVERHEAD = 1024


def estimate_run_file_bytes(config: TrainConfig) -> int:
    """Size of the run file of ``config`` at its end, from the shapes alone: the checkpoints (float32 weights),
    the resume record (the weights and Adam's two moments), the loss histories and the train split."""
    shapes = expected_paper_shapes(config.p)
    per_checkpoint = 4 * sum(math.prod(s) for s in shapes.values()) + _TENSOR_OVERHEAD * len(shapes)
    n_checkpoints = math.ceil(config.epochs / config.save_every) + 1  # +1: an early stop adds its epoch
    histories = 12 * (config.epochs + math.ceil(config.epochs / config.test_every))  # pickled floats
    n_train = math.ceil(config.frac_train * config.p**2)
    return (n_checkpoints + 3) * per_checkpoint + histories + 8 * n_train + 64 * 1024


def estimate_training_memory_bytes(config: TrainConfig) -> int:
    """Memory training ``config`` needs, estimated before allocating anything: per input pair (all ``p^2`` are
    evaluated: train and test) two float32 vectors of ``d_mlp`` (the MLP activation and its gradient) and two
    float64 vectors of ``p + 1`` (the logits' log-softmax and its gradient), plus the checkpoint history kept in
    memory and its serialised copy while it is written. Measured peaks are below it (p = 113: 77 MB of 89 MB
    estimated; p = 211: 287 of 340 MB)."""
    pairs = config.p**2
    d_mlp = expected_paper_shapes(config.p)["blocks.0.mlp.b_in"][0]
    per_pair = 2 * 4 * d_mlp + 2 * 8 * (config.p + 1) + 64
    return pairs * per_pair + 2 * estimate_run_file_bytes(config)


def available_memory_bytes() -> int | None:
    """Memory available to a new allocation: ``MemAvailable`` of /proc/meminfo (Linux), else the free physical
    pages from ``os.sysconf``; None where neither is known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _check_memory(config: TrainConfig) -> None:
    need, have = estimate_training_memory_bytes(config), available_memory_bytes()
    if have is not None and need > have:
        history = 2 * estimate_run_file_bytes(config)
        advice = (
            "Use fewer --epochs (epochs) or a larger --save-every (save_every)"
            if history > need - history
            else "Choose a smaller p (the paper uses 113)"
        )
        raise NotEnoughMemoryError(
            f"p = {config.p} needs about {need / 1e9:,.1f} GB of memory to train for {config.epochs:,} epochs "
            f"({config.p}^2 = {config.p**2:,} input pairs with their activations and p + 1 logits: "
            f"{(need - history) / 1e9:,.1f} GB; the checkpoint history, a checkpoint every {config.save_every:,} "
            f"epochs: {history / 1e9:,.1f} GB), but only {have / 1e9:,.1f} GB is available. {advice}."
        )


# ---------------------------------------------------------------------------------------------------------
# signals: stop at the next epoch boundary, save, then raise
def _say(text: str) -> None:
    """Write to stderr from a signal handler without touching Python's buffered streams (a handler that runs
    while the progress bar is printing would otherwise hit a re-entrant write)."""
    try:
        os.write(2, text.encode(errors="replace"))
    except OSError:
        pass


class _StopRequest:
    """The first SIGINT/SIGTERM received while training (``signum``), and whether a write is in progress."""

    def __init__(self, path: Path | None):
        self.path, self.signum, self.saving = path, None, False

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.signum is None:
            self.signum = signum
            target = f" and writing {self.path}" if self.path is not None else ""
            _say(f"\n{name} received: stopping at the end of this epoch{target}...\n")
        elif self.saving:
            _say(f"\n{name} received again: still writing {self.path}; the write is finished first (it is atomic).\n")
        else:
            _say(f"\n{name} received again: already stopping.\n")


@contextlib.contextmanager
def _stop_on_signals(path: Path | None) -> Iterator[_StopRequest]:
    """While training, SIGINT and SIGTERM set a flag that the loop checks at each epoch boundary (so the file
    written then matches the weights) instead of raising wherever they land. Handlers are installed only in
    the main thread, never over an ignored signal, and the previous ones are restored on exit."""
    stop = _StopRequest(path)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, getattr(signal, "SIGTERM", None)):
            if sig is None:
                continue
            old = signal.getsignal(sig)
            if old is signal.SIG_IGN or old is None:  # ignored, or set outside Python: leave it
                continue
            previous[sig] = old
            signal.signal(sig, stop.handle)
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# ---------------------------------------------------------------------------------------------------------
# writing the run file without losing it
def _default_fallback_dirs() -> list[Path]:
    return [Path(tempfile.gettempdir()), Path.home()]


class _Saver:
    """Writes the run to ``path``; keeps training when a periodic write fails, and writes the final record to a
    fallback folder when ``path`` cannot be written."""

    def __init__(self, path: Path | None, stop: _StopRequest, fallback_dirs: list[Path] | None):
        self.path, self.stop = path, stop
        self.fallback_dirs = _default_fallback_dirs() if fallback_dirs is None else [Path(d) for d in fallback_dirs]
        self.saved_done: int | None = None  # epochs_done of the record the file holds
        self.failure: str | None = None  # why the last write to `path` failed

    def _write(self, data: dict, target: Path) -> None:
        self.stop.saving = True
        try:
            atomic_save(data, target)
        finally:
            self.stop.saving = False

    def periodic(self, data: dict) -> None:
        """A write during training: on failure, say why once and go on (the run stays in memory)."""
        try:
            self._write(data, self.path)
        except RunFileWriteError as e:
            if self.failure is None:
                print(
                    f"\nwarning: {e}.\nTraining goes on with the run in memory; the write is tried again at the next "
                    "save and at the end (free some space meanwhile).",
                    file=sys.stderr,
                    flush=True,
                )
            self.failure = describe_os_error(e)
            return
        self.failure, self.saved_done = None, int(data["resume"]["epochs_done"])

    def final(self, data: dict) -> Path | None:
        """Write ``data`` to ``path``, else to ``<fallback dir>/<stem>-rescued-<time><suffix>``; return where it
        went (None: nowhere; ``failure`` says why ``path`` failed)."""
        try:
            self._write(data, self.path)
            self.failure, self.saved_done = None, int(data["resume"]["epochs_done"])
            return self.path
        except RunFileWriteError as e:
            self.failure = str(e)
        name = f"{self.path.stem}-rescued-{time.strftime('%Y%m%d-%H%M%S')}{self.path.suffix or '.pth'}"
        for folder in self.fallback_dirs:
            if folder.resolve() == self.path.parent.resolve():
                continue
            try:
                self._write(data, folder / name)
                return folder / name
            except OSError:
                continue
        return None

    def where(self, saved_to: Path | None) -> str:
        """Words for where a final record went."""
        if saved_to == self.path:
            return f"{self.path} holds it"
        if saved_to is not None:
            return f"{self.failure}; it was saved to {saved_to} instead (move it to {self.path} to continue it there)"
        return f"{self.failure}; no fallback folder could be written either, so nothing was saved"


# ---------------------------------------------------------------------------------------------------------
# the run record
class _Run:
    """Histories of one run, kept in memory and written as the run-data dict of :mod:`.checkpoints`."""

    def __init__(self, config: TrainConfig, train_indices: Tensor):
        self.config = config
        self.train_indices = train_indices
        self.state_dicts: list[dict[str, Tensor]] = []
        self.epochs: list[int] = []
        self.train_losses: list[float] = []
        self.test_losses: list[float] = []
        self.stopped_early = False
        self.diverged: tuple[int, str, float] | None = None  # (epoch, "train"/"test", the non-finite loss)
        self.elapsed_s = 0.0

    @classmethod
    def from_data(cls, config: TrainConfig, data: dict) -> "_Run":
        run = cls(config, torch.as_tensor(data["train_indices"]))
        run.state_dicts = list(data["state_dicts"])
        run.epochs = [int(e) for e in data["epochs"]]
        run.train_losses = [float(x) for x in data["train_losses"]]
        run.test_losses = [float(x) for x in data["test_losses"]]
        run.stopped_early = bool(data["resume"]["stopped_early"])
        run.elapsed_s = float(data["resume"].get("elapsed_s", 0.0))
        return run

    def to_data(self, done: int, model: HookedTransformer, optimizer, scheduler) -> dict:
        """The run after ``done`` completed updates (records of a later epoch are left out), with the current
        weights and optimizer state. An early-stopped run keeps the records of its last epoch; a diverged one
        keeps the records before the epoch whose loss was not finite, and no resume state (it cannot go on)."""
        limit = done + 1 if self.stopped_early else done
        n_test = (limit + self.config.test_every - 1) // self.config.test_every
        keep = [i for i, e in enumerate(self.epochs) if e < limit]
        finished = self.stopped_early or done >= self.config.epochs or self.diverged is not None
        resume = {
            "format": RESUME_FORMAT_VERSION,
            "epochs_done": done,
            "finished": finished,
            "stopped_early": self.stopped_early,
            "elapsed_s": self.elapsed_s,
            "torch_threads": torch.get_num_threads(),  # float32 sums, and so the trajectory, depend on it
        }
        if self.diverged is not None:
            epoch, which, value = self.diverged
            resume.update(diverged=True, diverged_at=epoch, diverged_loss=f"{which} loss {value}")
        else:
            resume.update(
                params={
                    name: param.detach().clone()
                    for name, param in zip(PAPER_TRAINABLE, trained_parameters(model), strict=True)
                },
                optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict(),
            )
            if model.W_E.device.type != "cpu":  # the run file holds CPU tensors, whatever trained it
                resume.update(params=_to_cpu(resume["params"]), optimizer=_to_cpu(resume["optimizer"]))
        return {
            "state_dicts": [self.state_dicts[i] for i in keep],
            "epochs": [self.epochs[i] for i in keep],
            "train_losses": self.train_losses[:limit],
            "test_losses": self.test_losses[:n_test],
            "config": self.config.to_dict(),
            "train_indices": self.train_indices.clone(),
            "resume": resume,
        }


def _config_difference(stored: dict, config: TrainConfig) -> list[str]:
    mine = config.to_dict()
    theirs = TrainConfig.from_dict(stored).to_dict()
    return [
        f"{k}: file {theirs[k]!r} vs requested {mine[k]!r}"
        for k in mine
        if k not in _EXTENDABLE and theirs[k] != mine[k]
    ]


def _load_existing(path: Path, config: TrainConfig) -> dict:
    """Load ``path`` and check that it holds a run of ``config`` that can be returned or continued."""
    if path.is_dir():
        raise ValueError(f"{path} is a folder; `out` (--out) must be a file path, e.g. {path / 'full_run_data.pth'}")
    try:
        data = safe_load(path)
    except CorruptCheckpointError as e:
        raise CorruptCheckpointError(
            f"{path} exists but is not a readable torch checkpoint ({path.stat().st_size:,} bytes; {_short_cause(e)}), "
            f"so it is not a run file: refusing to overwrite it. Pass another `out` (--out) path, or move that file "
            f"away if it is a damaged run."
        ) from e
    validate_run_data(data, source=str(path))
    stored = data.get("config")
    if not isinstance(stored, dict) or not isinstance(data.get("resume"), dict) or "train_indices" not in data:
        raise ValueError(
            f"{path} holds run data that was not written by train() (no config/resume record, e.g. the course's hub "
            f"file); refusing to overwrite it. Pass another `out` path or move the file away."
        )
    diff = _config_difference(stored, config)
    if diff:
        raise ValueError(
            f"{path} holds a run with a different configuration ({'; '.join(diff)}); refusing to overwrite it. "
            f"Pass another `out` path, move the file away, or train with the stored configuration."
        )
    done = int(data["resume"]["epochs_done"])
    if done > config.epochs:
        raise ValueError(f"{path} holds a run of {done:,} epochs, more than the {config.epochs:,} requested")
    return data


def _short_cause(e: BaseException) -> str:
    """The underlying error of ``e`` in one short line."""
    cause = e.__cause__ or e
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    if "Weights only load failed" in str(cause):  # torch's long notice: keep what it refused
        lines = [x for x in lines if x.startswith("Unsupported") or "GLOBAL" in x] or ["a weights-only load refused it"]
    text = lines[0] if lines else "no details"
    return f"{type(cause).__name__}: {text[:100]}{'…' if len(text) > 100 else ''}"


def _file_signature(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _is_complete(path: Path, data: dict, config: TrainConfig) -> bool:
    """Whether the stored run of ``config`` needs no more training; a diverged one raises
    :class:`TrainingDivergedError` (continuing it would diverge again)."""
    if data["resume"].get("diverged"):
        _refuse_diverged(path, data)
    return run_is_complete(data, config)


def _refuse_diverged(path: Path, data: dict) -> None:
    r = data["resume"]
    raise TrainingDivergedError(
        f"{path} holds a run of this configuration that diverged at epoch {r.get('diverged_at')} "
        f"({r.get('diverged_loss')}); continuing it would diverge again. Lower --lr (lr) and write to another "
        f"--out (out), or start again with --no-resume (resume=False).",
        epoch=int(r.get("diverged_at", r["epochs_done"])),
        run_data=data,
        saved_to=path,
    )


# ---------------------------------------------------------------------------------------------------------
def train(
    config: TrainConfig = TrainConfig(),
    out: str | os.PathLike | None = None,
    *,
    resume: bool = True,
    progress: bool = True,
    save_interval_s: float | int = 60.0,
    callback: Callable[[int, float, float | None], None] | None = None,
    fallback_dirs: list[str | os.PathLike] | None = None,
    device: str | torch.device = "auto",
) -> dict:
    """Train a model with ``config`` and return its run data (the :mod:`.checkpoints` format).

    Args:
        config: the recipe (defaults: the paper's).
        out: file to write the run to (atomically: the previous file stays valid until the new one replaces
            it). Written when a checkpoint epoch is reached and at least ``save_interval_s`` seconds have passed
            since the last write, at the end, and when training stops early (SIGINT/Ctrl-C or SIGTERM, at the
            next epoch boundary; divergence; an exception at an epoch boundary). None: keep it in memory.
        resume: if ``out`` holds an unfinished run of the same config, continue it (bit-identical to an
            uninterrupted run with the same number of torch threads: float32 sums, and so the trajectory,
            depend on it); a finished one is returned as it is; a run of the same config with fewer epochs is
            extended. ``resume=False`` trains from scratch and overwrites a run of the same config.
            A file holding a different configuration is never overwritten (``ValueError``).
        progress: show a progress bar (epoch, train loss, test loss).
        save_interval_s: minimum seconds between writes of ``out`` (0: at every checkpoint). The file grows by
            ~1 MB per checkpoint (p = 113), so writing it every 100 epochs would dominate a fast run.
        callback: called after every epoch as ``callback(epoch, train_loss, test_loss_or_None)``; an exception
            it raises stops training (the run is written first, so it can be resumed).
        fallback_dirs: where the final record goes when ``out`` cannot be written (default: the temp folder,
            then the home folder).
        device: ``"auto"`` (CUDA when available, else the CPU), ``"cpu"`` or ``"cuda"``. The run file is the same
            either way (CPU tensors). On a GPU the losses are read back in blocks (at every test epoch, i.e. every
            ``test_every`` epochs, or every epoch when a ``callback`` is given), not after every step, so a loss
            that is not finite is noticed there: the records after it are dropped as on the CPU.

    Before any work it checks that the memory the configuration needs is available
    (:class:`NotEnoughMemoryError`) and that ``out``'s folder is writable with room for the final file
    (:class:`~.checkpoints.RunFileWriteError`); it then holds the lock ``<out>.lock`` while training, so a second
    run on the same file stops at once (:class:`~.checkpoints.RunFileLockedError`), and removes temporary files
    a killed run left beside ``out``. In the main thread, SIGINT and SIGTERM stop training at the next epoch
    boundary; the previous signal handlers are restored on return.

    Raises:
        TrainingInterrupted: SIGINT/SIGTERM; the message says what was written where.
        TrainingDivergedError: a loss became nan/inf; the checkpoints before it are written (status "diverged").
        RunNotSavedError: training finished but ``out`` could not be written (the run is on the exception, and
            in a fallback file when one could be written).

    Returns:
        ``{"state_dicts", "epochs", "train_losses", "test_losses", "config", "train_indices", "resume"}``.
    """
    device = resolve_device(device)
    path = Path(out).expanduser() if out is not None else None
    if path is not None and path.is_symlink():  # write (and lock) the file the link points to; keep the link
        path = Path(os.path.realpath(path))
    _check_memory(config)
    with contextlib.ExitStack() as stack:
        stop = stack.enter_context(_stop_on_signals(path))
        existing = None
        if path is not None:
            existing, complete = _open_out(path, config, resume, stack)
            if complete:
                return existing
        return _train_locked(
            config, path, existing if resume else None, stop, progress, save_interval_s, callback, fallback_dirs, device
        )


def _open_out(
    path: Path, config: TrainConfig, resume: bool, stack: contextlib.ExitStack, who: str = "train"
) -> tuple[dict | None, bool]:
    """Open ``out`` for training ``config`` (used by :func:`train` and :func:`.batched_train.train_many`):
    returns ``(stored run or None, complete)``. A complete stored run (``resume``) is returned without writing
    anything (read-only media too); otherwise the folder is checked for room, the lock ``<out>.lock`` is taken
    (held until ``stack`` closes) and a killed run's temporary files are removed. A stored diverged run raises
    :class:`TrainingDivergedError` (with ``resume``); another configuration, ``ValueError``."""
    seen = _file_signature(path)
    existing = None
    if seen is not None:
        existing = _load_existing(path, config)
        if resume and _is_complete(path, existing, config):
            return existing, True
    check_destination(path, int(1.1 * estimate_run_file_bytes(config)), "the run file")
    stack.enter_context(RunFileLock(path))
    for stale in remove_stale_temp_files(path):
        print(f"[{who}] removed {stale.name}, a temporary file left by a killed run", file=sys.stderr)
    if _file_signature(path) != seen:  # another run wrote it before we held the lock
        existing = _load_existing(path, config) if path.exists() else None
        if resume and existing is not None and _is_complete(path, existing, config):
            return existing, True
    return existing, False


def _restore(
    path: Path,
    config: TrainConfig,
    existing: dict,
    model: HookedTransformer,
    optimizer,
    scheduler,
    train_indices: Tensor,
) -> _Run:
    """Load a stored run into ``model``, ``optimizer`` and ``scheduler`` to continue it (used by :func:`train` and
    :func:`.batched_train.train_many`); returns its record. Refuses a split other than ``train_indices``
    (``ValueError``) and a resume record that does not load (:class:`~.checkpoints.CorruptCheckpointError`)."""
    run = _Run.from_data(config, existing)
    if not torch.equal(run.train_indices, train_indices):
        raise ValueError(f"{path}: its train_indices differ from the split of this config; refusing to continue it")
    state = existing["resume"]
    try:
        with torch.no_grad():
            for name, param in zip(PAPER_TRAINABLE, trained_parameters(model), strict=True):
                param.copy_(state["params"][name])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise CorruptCheckpointError(
            f"{path}: its resume record cannot be loaded ({_short_cause(e)}); train again "
            "with --no-resume (resume=False) or choose another --out/out path"
        ) from e
    return run


def _checkpoint(model: HookedTransformer) -> dict[str, Tensor]:
    """The model's weights in paper layout, on the CPU."""
    return transformer_lens_to_paper(_to_cpu(model.state_dict()))


def _train_locked(config, path, existing, stop, progress, save_interval_s, callback, fallback_dirs, device) -> dict:
    """The training loop of :func:`train`, once ``out`` is checked and locked."""
    model = make_model(config.p, seed=config.seed, device=device)
    optimizer, scheduler = make_optimizer(model, config)
    data = TrainingData(config, device)
    saver = _Saver(path, stop, fallback_dirs)
    if existing is not None:
        run = _restore(path, config, existing, model, optimizer, scheduler, data.train_indices)
        state = existing["resume"]
        threads = state.get("torch_threads")
        if isinstance(threads, int) and threads != torch.get_num_threads():
            print(
                f"[train] {path} was trained with {threads} torch thread(s), this process uses "
                f"{torch.get_num_threads()}: the run continues correctly, but not bit-identically to an uninterrupted "
                f"run (set OMP_NUM_THREADS={threads} for that).",
                file=sys.stderr,
            )
        start = int(state["epochs_done"])
        saver.saved_done = start
        if existing["resume"]["finished"] and start < config.epochs:
            saver.saved_done = None  # the file says "finished"; extending it must rewrite that
    else:
        run = _Run(config, data.train_indices)
        start = 0
    del existing

    done, updating, interrupted = start, False, False
    last_write = time.monotonic()
    t_start = time.monotonic()
    elapsed_before = run.elapsed_s
    # on a GPU the train losses stay on the device and are read back in blocks (a read-back waits for the GPU)
    blocked = model.W_E.device.type != "cpu" and callback is None
    pending: list[Tensor] = []

    def read_back() -> bool:
        """Append the pending train losses; on a non-finite one, mark the run diverged there and return True."""
        nonlocal done
        if not pending:
            return False
        values = torch.stack(pending).tolist()
        pending.clear()
        for value in values:
            run.train_losses.append(value)
            if not math.isfinite(value):
                epoch = len(run.train_losses) - 1
                run.diverged, done = (epoch, "train", value), epoch
                return True
        return False

    bar = tqdm(
        total=config.epochs, initial=start, disable=not progress, desc="training", unit="epoch", dynamic_ncols=True
    )
    try:
        for epoch in range(start, config.epochs):
            if stop.signum is not None:
                interrupted = True
                break
            test_loss = None
            if epoch % config.test_every == 0:
                if read_back():
                    break
                test_loss = _test_loss(model, data).item()
                run.test_losses.append(test_loss)
            if epoch % config.save_every == 0:
                run.state_dicts.append(_checkpoint(model))
                run.epochs.append(epoch)
            loss = model_loss(model, data.train_pairs)
            if blocked:
                pending.append(loss.detach())
                train_loss = None
            else:
                train_loss = loss.item()
                run.train_losses.append(train_loss)
            if (train_loss is not None and not math.isfinite(train_loss)) or (
                test_loss is not None and not math.isfinite(test_loss)
            ):
                which, value = (
                    ("test", test_loss) if train_loss is None or math.isfinite(train_loss) else ("train", train_loss)
                )
                if blocked:
                    run.train_losses.append(float(pending.pop()))
                run.diverged = (epoch, which, value)
                optimizer.zero_grad(set_to_none=True)
                break
            loss.backward()
            if test_loss is not None:
                shown = run.train_losses[-1] if train_loss is None and run.train_losses else train_loss
                bar.set_postfix(
                    train=f"{shown:.3g}" if shown is not None else "…", test=f"{test_loss:.3g}", refresh=False
                )
                if config.stop_at_test_loss is not None and test_loss < config.stop_at_test_loss:
                    if run.epochs[-1] != epoch:
                        run.state_dicts.append(_checkpoint(model))
                        run.epochs.append(epoch)
                    optimizer.zero_grad(set_to_none=True)
                    run.stopped_early = True
                    if read_back():  # (the loss of this very epoch is finite: its test loss is)
                        run.stopped_early = False
                    break
            updating = True
            _update(optimizer, scheduler)
            done, updating = epoch + 1, False
            bar.update(1)
            if callback is not None:
                callback(epoch, train_loss, test_loss)
            if path is not None and done % config.save_every == 0 and time.monotonic() - last_write >= save_interval_s:
                if read_back():
                    break
                run.elapsed_s = elapsed_before + time.monotonic() - t_start
                saver.periodic(run.to_data(done, model, optimizer, scheduler))
                last_write = time.monotonic()
        else:
            read_back()
        if interrupted:
            read_back()
    except BaseException:
        if not updating and path is not None and done > 0 and saver.saved_done != done:
            # at an epoch boundary: the weights and optimizer match `done`
            read_back()
            run.elapsed_s = elapsed_before + time.monotonic() - t_start
            saved_to = saver.final(run.to_data(done, model, optimizer, scheduler))
            if saved_to != path:
                print(f"\nwarning: the run could not be written to {path}: {saver.where(saved_to)}", file=sys.stderr)
        raise
    finally:
        bar.close()
    run.elapsed_s = elapsed_before + time.monotonic() - t_start
    result = run.to_data(done, model, optimizer, scheduler)
    saved_to = None
    if path is not None and result["train_losses"]:  # (an interrupt before the first epoch has nothing to write)
        already_written = saver.saved_done == done and not run.stopped_early and run.diverged is None
        saved_to = path if already_written else saver.final(result)
    if run.diverged is not None:
        _raise_diverged(run, result, config, path, saved_to, saver)
    if interrupted or stop.signum is not None:
        _raise_interrupted(stop, result, config, path, saved_to, saver)
    if path is not None and saved_to != path:
        raise RunNotSavedError(
            f"training finished ({done:,} epochs) but {path} could not be written: {saver.where(saved_to)}",
            run_data=result,
            saved_to=saved_to,
        )
    return result


def _raise_diverged(run: _Run, result: dict, config: TrainConfig, path, saved_to, saver: _Saver) -> None:
    epoch, which, value = run.diverged
    last = f", the last at epoch {result['epochs'][-1]:,}" if result["epochs"] else ""
    n = len(result["epochs"])
    kept = f"the {epoch:,} epochs before it ({n} checkpoint{'s' if n != 1 else ''}{last})"
    if path is None:
        where = f"{kept} are in the returned error's run_data"
    elif saved_to == path:
        where = f"{kept} are in {path} (status: diverged)"
    else:
        where = f"{kept}: {saver.where(saved_to)}"
    raise TrainingDivergedError(
        f"diverged at epoch {epoch:,}: the {which} loss is {value}; lower --lr (lr = {config.lr:g}). {where[0].upper()}{where[1:]}.",
        epoch=epoch,
        run_data=result,
        saved_to=saved_to,
    )


def _raise_interrupted(stop: _StopRequest, result: dict, config: TrainConfig, path, saved_to, saver: _Saver) -> None:
    done = int(result["resume"]["epochs_done"])
    head = f"{stop.name or 'interrupt'}: stopped after {done:,} of {config.epochs:,} epochs"
    if path is None:
        tail = "; nothing is written (no output file was given)"
    elif done == 0:
        tail = f"; no epoch had finished, so nothing was written ({path} is unchanged)"
    elif saved_to == path:
        tail = f"; {path} holds them (last checkpoint at epoch {result['epochs'][-1]:,})" + (
            "" if result["resume"]["finished"] else "; run the same command again to resume"
        )
    else:
        tail = f"; {saver.where(saved_to)}"
    raise TrainingInterrupted(head + tail, signum=stop.signum or signal.SIGINT, saved_to=saved_to, epochs_done=done)
