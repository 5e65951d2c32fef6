"""Train the grokking model with the paper's recipe and record its checkpoint history: one run or many at once.

The recipe (Nanda et al. 2023, arXiv 2301.05217; defaults in :class:`~..runs.config.TrainConfig`): the paper's init and
seeded split; full batch AdamW (lr 1e-3, weight decay 1.0, betas (0.9, 0.98)) with a 10-step linear warm-up; the
float64 cross-entropy over all ``p + 1`` logits at the last position.

One loop (:class:`_Loop`) trains :func:`train` (one run) and :func:`train_many` (many): the runs of one ``p`` are
the rows of a :class:`~.batched_train.Batch`. Each run file holds ``train_losses[e]`` (before epoch ``e``'s
update), ``test_losses[i]`` (epoch ``i * test_every``), ``state_dicts[k]`` (paper layout) at ``epochs[k]``,
``config``, ``train_indices`` and ``resume``: the last weights with AdamW's and ``LambdaLR``'s ``state_dict()``
(:func:`make_optimizer` loads them), so a stopped run continues exactly. The textbook loop the tests compare
against is ``tests/reference/plain_training.py``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from ..runs.architecture import PAPER_TRAINABLE, parameter_shapes
from ..runs.checkpoints import (
    CorruptCheckpointError,
    RunFileLock,
    RunFileWriteError,
    atomic_save,
    check_destination,
    check_run_path,
    describe_os_error,
    remove_stale_temp_files,
    safe_load,
)
from ..runs.config import TrainConfig
from ..runs.data import make_split
from ..runs.layout import transformer_lens_to_paper
from ..runs.model import make_model
from ..runs.run_data import RESUME_FORMAT_VERSION, run_status, validate_run_data
from .batched_train import Batch, n_workers, worker_pool
from .last_position import Pairs, model_loss
from .resources import estimate_memory_bytes, estimate_run_file_bytes

__all__ = [
    "train",
    "train_many",
    "keep_freed_memory",
    "command_process",
    "make_optimizer",
    "trained_parameters",
    "fast_train_step",
    "resolve_device",
    "TrainingData",
    "TrainingDivergedError",
    "TrainingInterrupted",
    "RunNotSavedError",
    "NotEnoughMemoryError",
    "available_memory_bytes",
    "check_memory",
    "check_disk_room",
    "load_stored_run",
    "SYNC_EVERY",
]

#: On a GPU, the losses are read back to the host at least every this many epochs (and at checkpoint epochs).
SYNC_EVERY = 100
#: Keys of ``TrainConfig`` that may differ between a stored run and a request to continue it.
_EXTENDABLE = ("epochs",)


# --- the recipe
def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory (mmap 32 MB, trim 512 MB thresholds): page faults cost 10-20% of an epoch
    (``benchmarks/benchmark_allocator.py``). Process-wide: only commands call it. True if applied (Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 512 << 20))
    except (OSError, AttributeError):
        return False


#: Set by :func:`command_process`: SIGINT/SIGTERM stay ignored once a signal has stopped training.
_EXIT_AFTER_STOP = False


def command_process(owns_process: bool) -> None:
    """Set up a command that may train: :func:`keep_freed_memory`; and if the command line owns the process (not
    ``cli.main()`` called from Python), SIGINT/SIGTERM stay ignored once a signal has stopped training, while the
    process reports what was saved and exits (a library caller gets its own handlers back instead)."""
    global _EXIT_AFTER_STOP
    keep_freed_memory()
    _EXIT_AFTER_STOP = _EXIT_AFTER_STOP or owns_process


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; ``"cpu"``/``"cuda"`` as given; else ``ValueError``."""
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
    """A configuration's split, tokens and labels (CPU) and ``train_pairs``/``test_pairs`` on ``device``."""

    def __init__(self, config: TrainConfig, device: str | torch.device = "cpu"):
        split = make_split(config.p, config.frac_train, config.seed, config.fn)
        self.train_indices, self.test_indices = split.train_indices, split.test_indices
        self.train_tokens, self.train_labels = split.all_data[self.train_indices], split.labels[self.train_indices]
        self.test_tokens, self.test_labels = split.all_data[self.test_indices], split.labels[self.test_indices]
        d_vocab = config.p + 1
        self.train_pairs = Pairs.from_tokens(self.train_tokens, self.train_labels, d_vocab=d_vocab, device=device)
        self.test_pairs = Pairs.from_tokens(self.test_tokens, self.test_labels, d_vocab=d_vocab, device=device)


def trained_parameters(model: HookedTransformer) -> list[torch.nn.Parameter]:
    """The 11 parameters the paper trains (``architecture.PAPER_TRAINABLE``, in that order)."""
    params = dict(model.named_parameters())
    return [params[name] for name in PAPER_TRAINABLE]


def _adamw(params: list[Tensor], config: TrainConfig) -> torch.optim.AdamW:
    kwargs = dict(lr=config.lr, betas=tuple(config.betas), eps=TrainConfig.eps, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, fused=True, **kwargs)  # one fused kernel per tensor (CPU and CUDA)


def make_optimizer(
    model: HookedTransformer, config: TrainConfig
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the paper's parameters and the warm-up (``LambdaLR``), stepped once per epoch."""
    optimizer = _adamw(trained_parameters(model), config)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, config.warmup_factor)


def fast_train_step(
    model: HookedTransformer,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    pairs: Pairs,
) -> float:
    """One full-batch epoch of one model with the last-position forward/backward; the loss before the update."""
    loss = model_loss(model, pairs)
    loss.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def _optimizer_state(config: TrainConfig, step: float, last_epoch: float, exp_avg: dict, exp_avg_sq: dict) -> dict:
    """``make_optimizer(...)[0].state_dict()`` after ``step`` updates with these moments."""
    group = _adamw([torch.zeros(1) for _ in PAPER_TRAINABLE], config).state_dict()["param_groups"][0]
    group.update(lr=config.lr * config.warmup_factor(last_epoch), initial_lr=config.lr)
    state = {
        i: {"step": torch.tensor(float(step)), "exp_avg": exp_avg[name].clone(), "exp_avg_sq": exp_avg_sq[name].clone()}
        for i, name in enumerate(PAPER_TRAINABLE)
    }
    return {"state": state if step > 0 else {}, "param_groups": [group]}


def _flatten(tensors) -> Tensor:
    return torch.cat([t.detach().reshape(-1).float().cpu() for t in tensors])


def _unflatten(flat: Tensor, p: int) -> dict[str, Tensor]:
    """TransformerLens-layout trained parameters (copies) from a run's ``(N,)`` row."""
    out, offset = {}, 0
    for name, shape in parameter_shapes(p).items():
        size = math.prod(shape)
        out[name] = flat[offset : offset + size].view(shape).clone()
        offset += size
    return out


# --- failures, said plainly
class TrainingDivergedError(RuntimeError):
    """A loss became nan/inf at ``epoch``; ``run_data``: the run before it; ``saved_to``: its file (or None)."""

    def __init__(self, message: str, *, epoch: int, run_data: dict, saved_to: Path | None):
        super().__init__(message)
        self.epoch, self.run_data, self.saved_to = epoch, run_data, saved_to


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT or SIGTERM (``signum``). ``saved_to``: the file (or folder) that holds the run
    (None: nothing written); ``members``: ``(path, epochs done)`` of every run."""

    def __init__(self, message: str, *, signum: int, saved_to: Path | None, epochs_done: int, members=()):
        super().__init__(message)
        self.signum, self.saved_to, self.epochs_done, self.members = signum, saved_to, epochs_done, list(members)


class RunNotSavedError(RuntimeError):
    """A run file could not be written: ``run_data``/``saved_to`` (fallback or None) of the first; ``results``."""

    def __init__(self, message: str, *, run_data: dict, saved_to: Path | None, results=()):
        super().__init__(message)
        self.run_data, self.saved_to, self.results = run_data, saved_to, list(results)


class NotEnoughMemoryError(MemoryError):
    """A configuration whose estimated memory need exceeds what the machine has available."""


# --- resources, checked before any allocation
def available_memory_bytes() -> int | None:
    """``MemAvailable`` of /proc/meminfo, else the free pages from ``os.sysconf``, else None."""
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


def check_memory(configs: TrainConfig | Sequence[TrainConfig], workers: int | None = None, how: str = "") -> None:
    """Raise :class:`NotEnoughMemoryError` when ``configs`` need more than :func:`available_memory_bytes`."""
    configs = [configs] if isinstance(configs, TrainConfig) else list(configs)
    need, have = estimate_memory_bytes(configs, workers), available_memory_bytes()
    if have is None or need <= have:
        return
    files = 2 * sum(estimate_run_file_bytes(c) for c in configs)
    c = configs[0]
    who = (
        f"p = {c.p} needs about {need / 1e9:,.1f} GB of memory to train for {c.epochs:,} epochs"
        if len(configs) == 1
        else f"these {len(configs)} runs need about {need / 1e9:,.1f} GB of memory to train together"
    )
    if len(configs) > 1:
        advice = "Use a larger --save-every (save_every), fewer --epochs (epochs), or " + (
            how or "split the sweep (--shard K/N)"
        )
    elif files > need - files:
        advice = "Use fewer --epochs (epochs) or a larger --save-every (save_every)"
    else:
        advice = "Choose a smaller p (the paper uses 113)"
    raise NotEnoughMemoryError(
        f"{who} (checkpoint histories, a checkpoint every {c.save_every:,} epochs: {files / 1e9:,.1f} GB; "
        f"activations and optimizer state: {(need - files) / 1e9:,.1f} GB), but only {have / 1e9:,.1f} GB is "
        f"available. {advice}."
    )


def _free_bytes(folder: Path) -> int | None:
    while not folder.exists() and folder != folder.parent:  # the nearest existing folder: where it will be
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def check_disk_room(configs: Sequence[TrainConfig], paths: Sequence[Path], how: str = "") -> None:
    """Raise :class:`~..runs.checkpoints.RunFileWriteError` (ENOSPC) when the run files of ``configs`` at ``paths`` need
    more room than their disk has: each at its end (:func:`estimate_run_file_bytes`) less its size now, +10 %."""
    by_folder: dict[Path, list[tuple[int, int]]] = {}
    for config, path in zip(configs, paths, strict=True):
        try:
            now = path.stat().st_size if path.is_file() else 0
        except OSError:
            now = 0
        by_folder.setdefault(path.parent, []).append((estimate_run_file_bytes(config), now))
    for folder, files in by_folder.items():
        need = int(1.1 * sum(max(0, size - now) for size, now in files))
        free = _free_bytes(folder)
        if free is not None and need > free:
            raise RunFileWriteError(
                errno.ENOSPC,
                f"not enough room for {len(files)} run file(s) in {folder}: they need about {need / 1e9:,.2f} GB "
                f"(at their end), and only {free / 1e9:,.2f} GB is free. Free some space, "
                + (how or "use a larger --save-every (save_every) or fewer --epochs (epochs)")
                + ".",
            )


# --- signals: stop at the next epoch boundary, save, then raise
def _say(text: str) -> None:
    """Write to stderr from a signal handler bypassing Python's buffered streams (no re-entrant write)."""
    try:
        os.write(2, text.encode(errors="replace"))
    except OSError:
        pass


class _StopRequest:
    """The first SIGINT/SIGTERM received while training (``signum``), and whether a write is in progress."""

    def __init__(self, path: Path | None):
        self.path, self.signum, self.saving = path, None, False

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
    """SIGINT/SIGTERM set a flag checked at each epoch boundary (main thread only; restored on exit)."""
    stop, previous = _StopRequest(path), {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, getattr(signal, "SIGTERM", None)):
            old = signal.getsignal(sig) if sig is not None else None
            if old is signal.SIG_IGN or old is None:  # ignored, or set outside Python: leave it
                continue
            previous[sig] = old
            signal.signal(sig, stop.handle)
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, signal.SIG_IGN if stop.signum is not None and _EXIT_AFTER_STOP else old)


# --- writing a run file without losing it
class _Saver:
    """Writes a run to ``path``; a failed periodic write is reported and training goes on; a final record that
    cannot go to ``path`` goes to a fallback folder (default: the temp folder, then home)."""

    def __init__(self, path: Path, stop: _StopRequest, fallback_dirs: list | None):
        self.path, self.stop = path, stop
        dirs = [tempfile.gettempdir(), Path.home()] if fallback_dirs is None else fallback_dirs
        self.fallback_dirs = [Path(d) for d in dirs]
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
        """Write ``data`` to ``path``, else to ``<fallback dir>/<stem>-rescued-<time><suffix>``; return where."""
        try:
            self._write(data, self.path)
            self.failure, self.saved_done = None, int(data["resume"]["epochs_done"])
            return self.path
        except RunFileWriteError as e:
            self.failure = str(e)
        name = f"{self.path.stem}-rescued-{time.strftime('%Y%m%d-%H%M%S')}{self.path.suffix or '.pth'}"
        for folder in (d for d in self.fallback_dirs if d.resolve() != self.path.parent.resolve()):
            with contextlib.suppress(OSError):
                self._write(data, folder / name)
                return folder / name
        return None

    def where(self, saved_to: Path | None) -> str:
        """Words for where a final record went."""
        if saved_to == self.path:
            return f"{self.path} holds it"
        if saved_to is not None:
            return f"{self.failure}; it was saved to {saved_to} instead (move it to {self.path} to continue it there)"
        return f"{self.failure}; no fallback folder could be written either, so nothing was saved"


# --- the run record
class _Run:
    """One run: its recipe, file, record (in memory) and ``status``: pending -> training -> finished / stopped /
    diverged / interrupted, or skipped (complete file, returned as ``result``). ``start``/``done``: epochs done at
    the start / now; ``diverged``: ``(epoch, "train"/"test", the non-finite loss)``."""

    def __init__(self, index: int, config: TrainConfig, path: Path | None):
        self.index, self.config, self.path = index, config, path
        self.saver: _Saver | None = None
        self.train_indices: Tensor | None = None
        self.status, self.result, self.saved_to, self.existing = "pending", None, None, None
        self.state_dicts, self.epochs, self.train_losses, self.test_losses = [], [], [], []
        self.stopped_early, self.diverged, self.start, self.done = False, None, 0, 0
        self.elapsed_s, self.t_start = 0.0, time.monotonic()
        self.last_write = self.t_start

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else f"run {self.index}"

    def restore(self, data: dict, train_indices: Tensor) -> tuple[Tensor, tuple]:
        """Continue the stored run ``data``: returns its ``(N,)`` weights and ``(exp_avg, exp_avg_sq, step,
        last_epoch)``; ``ValueError`` for another split, ``CorruptCheckpointError`` for a bad resume record."""
        if not torch.equal(torch.as_tensor(data["train_indices"]), train_indices):
            raise ValueError(
                f"{self.path}: its train_indices differ from the split of this config; refusing to continue it"
            )
        state = data["resume"]
        try:
            params = _flatten(state["params"][name] for name in PAPER_TRAINABLE)
            moments = state["optimizer"]["state"]
            exp_avg, exp_avg_sq = (
                _flatten(moments[i][key] for i in range(len(PAPER_TRAINABLE))) if moments else torch.zeros_like(params)
                for key in ("exp_avg", "exp_avg_sq")
            )
            step = float(moments[0]["step"]) if moments else 0.0
            adam = (exp_avg, exp_avg_sq, step, float(state["scheduler"]["last_epoch"]))
        except (KeyError, ValueError, RuntimeError, TypeError, IndexError) as e:
            raise CorruptCheckpointError(
                f"{self.path}: its resume record cannot be loaded ({_short_cause(e)}); train again "
                "with --no-resume (resume=False) or choose another --out/out path"
            ) from e
        self.state_dicts = list(data["state_dicts"])
        self.epochs = [int(e) for e in data["epochs"]]
        self.train_losses, self.test_losses = ([float(x) for x in data[k]] for k in ("train_losses", "test_losses"))
        self.stopped_early, self.elapsed_s = bool(state["stopped_early"]), float(state.get("elapsed_s", 0.0))
        self.start = self.done = int(state["epochs_done"])
        self.saver.saved_done = None if state["finished"] else self.start  # "finished" must be rewritten to extend
        threads = state.get("torch_threads")
        if isinstance(threads, int) and threads != torch.get_num_threads():
            print(
                f"[train] {self.path} was trained with {threads} torch thread(s), this process uses "
                f"{torch.get_num_threads()}: the run continues correctly, but not bit-identically to an uninterrupted "
                f"run (set OMP_NUM_THREADS={threads} for that).",
                file=sys.stderr,
            )
        return params, adam

    def checkpoint(self, flat: Tensor, epoch: int) -> None:
        """Keep the weights ``flat`` (a CPU row) as the checkpoint of ``epoch`` (paper layout)."""
        self.state_dicts.append(transformer_lens_to_paper(_unflatten(flat, self.config.p)))
        self.epochs.append(epoch)

    def to_data(self, row: dict[str, Tensor]) -> dict:
        """The run data after ``done`` updates, with ``row``'s weights and Adam state (none when diverged)."""
        config, done = self.config, self.done
        limit = done + 1 if self.stopped_early else done
        keep = [i for i, e in enumerate(self.epochs) if e < limit]
        self.elapsed_s += time.monotonic() - self.t_start
        self.t_start = time.monotonic()
        resume = {
            "format": RESUME_FORMAT_VERSION,
            "epochs_done": done,
            "finished": self.stopped_early or done >= config.epochs or self.diverged is not None,
            "stopped_early": self.stopped_early,
            "elapsed_s": self.elapsed_s,
            "torch_threads": torch.get_num_threads(),  # float32 sums, and so the trajectory, depend on it
        }
        if self.diverged is not None:
            epoch, which, value = self.diverged
            resume.update(diverged=True, diverged_at=epoch, diverged_loss=f"{which} loss {value}")
        else:
            step, last_epoch = (float(x) for x in row["counters"])
            moments = [_unflatten(row[key], config.p) for key in ("exp_avg", "exp_avg_sq")]
            resume.update(
                params=_unflatten(row["params"], config.p),
                optimizer=_optimizer_state(config, step, last_epoch, *moments),
                scheduler={"base_lrs": [config.lr], "last_epoch": int(last_epoch), "lr_lambdas": [None]},
            )
        return {
            "state_dicts": [self.state_dicts[i] for i in keep],
            "epochs": [self.epochs[i] for i in keep],
            "train_losses": self.train_losses[:limit],
            "test_losses": self.test_losses[: -(-limit // config.test_every)],
            "config": config.to_dict(),
            "train_indices": self.train_indices.clone(),
            "resume": resume,
        }

    def finish(self, row: dict[str, Tensor]) -> None:
        """Keep the final record as ``result`` and write it (unless the file already holds exactly it)."""
        self.result = self.to_data(row)
        if self.path is None or not self.result["train_losses"]:  # (nothing trained: nothing to write)
            return
        if self.saver.saved_done == self.done and not self.stopped_early and self.diverged is None:
            self.saved_to = self.path
        else:
            self.saved_to = self.saver.final(self.result)


# --- opening a run file
def _file_signature(path: Path) -> tuple | None:
    """``(inode, size, mtime)`` of ``path`` (None: none yet); a folder, FIFO, device or link loop is refused."""
    try:
        st = check_run_path(path).stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _short_cause(e: BaseException) -> str:
    """The underlying error of ``e`` in one short line."""
    cause = e.__cause__ or e
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    if "Weights only load failed" in str(cause):  # torch's long notice: keep what it refused
        lines = [x for x in lines if x.startswith("Unsupported") or "GLOBAL" in x] or ["a weights-only load refused it"]
    text = lines[0] if lines else "no details"
    return f"{type(cause).__name__}: {text[:100]}{'…' if len(text) > 100 else ''}"


def load_stored_run(path: Path, config: TrainConfig) -> dict:
    """The run file ``path``, checked to hold a run of ``config``: ``CorruptCheckpointError`` for a file that does
    not load, ``ValueError`` for another configuration (or more epochs) or a file not written by the trainer."""
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
    mine, theirs = config.to_dict(), TrainConfig.from_dict(stored).to_dict()
    diff = [
        f"{k}: file {theirs[k]!r} vs requested {mine[k]!r}"
        for k in mine
        if k not in _EXTENDABLE and theirs[k] != mine[k]
    ]
    if diff:
        raise ValueError(
            f"{path} holds a run with a different configuration ({'; '.join(diff)}); refusing to overwrite it. "
            f"Pass another `out` path, move the file away, or train with the stored configuration."
        )
    done = int(data["resume"]["epochs_done"])
    if done > config.epochs:
        raise ValueError(f"{path} holds a run of {done:,} epochs, more than the {config.epochs:,} requested")
    return data


def _complete(path: Path, data: dict, config: TrainConfig) -> bool:
    """Whether the stored run needs no more training (:class:`TrainingDivergedError` if it diverged)."""
    r = data["resume"]
    if r.get("diverged"):
        raise TrainingDivergedError(
            f"{path} holds a run of this configuration that diverged at epoch {r.get('diverged_at')} "
            f"({r.get('diverged_loss')}); continuing it would diverge again. Lower --lr (lr) and write to another "
            f"--out (out), or start again with --no-resume (resume=False).",
            epoch=int(r.get("diverged_at", r["epochs_done"])),
            run_data=data,
            saved_to=path,
        )
    return run_status(data, config).state == "finished"


def _open(run: _Run, resume: bool, stack: contextlib.ExitStack, who: str) -> None:
    """Open ``run``'s file: a complete stored run (``resume``) becomes its result; otherwise check the room, take
    the lock ``<path>.lock`` (until ``stack`` closes), remove a killed run's temp files, keep a run to continue."""
    path, config = run.path, run.config
    seen = _file_signature(path)
    existing = load_stored_run(path, config) if seen is not None else None
    if resume and existing is not None and _complete(path, existing, config):
        run.result, run.status = existing, "skipped"
        return
    check_destination(path, int(1.1 * estimate_run_file_bytes(config)), "the run file")
    stack.enter_context(RunFileLock(path))
    for stale in remove_stale_temp_files(path):
        print(f"[{who}] removed {stale.name}, a temporary file left by a killed run", file=sys.stderr)
    if _file_signature(path) != seen:  # another run wrote it before we held the lock
        existing = load_stored_run(path, config) if path.exists() else None
        if resume and existing is not None and _complete(path, existing, config):
            run.result, run.status = existing, "skipped"
            return
    run.existing = existing if resume else None


def _out_path(out) -> Path | None:
    if out is None:
        return None
    path = Path(out).expanduser()
    if path.is_symlink():  # write (and lock) the file the link points to; keep the link
        path = Path(os.path.realpath(path))
    return path


# --- the loop: the runs of one p as one Batch, epoch by epoch
def _start(runs: list[_Run], device: torch.device, pool) -> Batch:
    """Build the runs' batch: each run's split, and its paper init (seeded) or its stored state to continue."""
    rows, splits, restored = [], [], {}
    for i, run in enumerate(runs):
        split = make_split(run.config.p, run.config.frac_train, run.config.seed, run.config.fn)
        run.train_indices = split.train_indices
        if run.existing is None:
            rows.append(_flatten(trained_parameters(make_model(run.config.p, seed=run.config.seed))))
        else:
            params, restored[i] = run.restore(run.existing, split.train_indices)
            rows.append(params)
        run.existing = None
        splits.append(split)
    batch = Batch([r.config for r in runs], torch.stack(rows), splits, device, pool)
    for i, adam in restored.items():
        batch.set_adam_state(i, *adam)
    return batch


def _sync_every(device: torch.device) -> int:
    """Most epochs between reads to the host: 1 on the CPU (free there), :data:`SYNC_EVERY` on a GPU."""
    return 1 if device.type == "cpu" else SYNC_EVERY


class _Loop:
    """Trains a :class:`~.batched_train.Batch` (row ``i`` is ``runs[i]``) until each run ends or a stop is
    requested, writing each run at its end, periodically, and when an exception stops training. Stop decisions
    are taken on the device; results are read back in blocks (:meth:`read_back`), so a GPU never waits."""

    def __init__(self, runs: list[_Run], batch: Batch, stop: _StopRequest, save_interval_s: float | int, bar, callback):
        self.runs, self.batch, self.stop, self.bar, self.callback = list(runs), batch, stop, bar, callback
        self.save_interval_s = float(save_interval_s)
        dev = batch.device
        self.sync_every = 1 if callback is not None else _sync_every(dev)
        self.start = torch.tensor([r.start for r in runs], device=dev)
        self.test_every = torch.tensor([r.config.test_every for r in runs], device=dev)
        limit = [-math.inf if r.config.stop_at_test_loss is None else r.config.stop_at_test_loss for r in runs]
        self.threshold = torch.tensor(limit, dtype=torch.float64, device=dev)
        self.tick, self.block, self.snapshots, self.block_start = 0, [], {}, 0

    def run(self) -> None:
        batch, updating = self.batch, False
        for r in self.runs:
            r.status, r.t_start, r.last_write = "training", time.monotonic(), time.monotonic()
        try:
            while self.runs and self.stop.signum is None:
                epochs = [r.start + self.tick for r in self.runs]
                if any(e % r.config.save_every == 0 for e, r in zip(epochs, self.runs, strict=True)):
                    self.snapshots[self.tick] = batch.P.clone()
                need_test = (self.start + self.tick) % self.test_every == 0
                nan = torch.full((batch.n_runs,), math.nan, dtype=torch.float64, device=batch.device)
                tested = any(e % r.config.test_every == 0 for e, r in zip(epochs, self.runs, strict=True))
                test = torch.where(need_test, batch.test_losses(), nan) if tested else nan
                train = batch.train_losses_and_grads()
                finite = torch.isfinite(train) & (torch.isfinite(test) | ~need_test)
                early = need_test & (test < self.threshold) & finite
                before = batch.active
                batch.active = before & finite & ~early
                updating = True
                batch.step()
                updating = False
                flags = (need_test, before, finite, early)
                self.block.append(torch.stack([train, test, *(f.double() for f in flags)]))
                self.tick += 1
                ends = [
                    (r.start + self.tick) % r.config.save_every == 0 or r.start + self.tick >= r.config.epochs
                    for r in self.runs
                ]
                if len(self.block) >= self.sync_every or self.stop.signum is not None or any(ends):
                    self.read_back()
        except BaseException:
            if updating:  # the update was cut short: the weights match no epoch; the files keep their last write
                for r in self.runs:
                    r.status = "interrupted"
                self.runs = []
            else:  # at an epoch boundary: the block and the weights agree; write every run
                with contextlib.suppress(Exception):
                    self.read_back(periodic=False)
                self.finish_all()
            raise
        self.read_back()
        self.finish_all()

    def read_back(self, periodic: bool = True) -> None:
        """Copy the block's results to the host into each run's record; write the runs due, finish those ended."""
        if not self.block:
            return
        values = torch.stack(self.block).cpu()  # (T, 6, S): one transfer
        snapshots = {t: s.cpu() for t, s in self.snapshots.items()}
        first, self.block, self.snapshots, self.block_start = self.block_start, [], {}, self.tick
        ended = []
        for i, r in enumerate(self.runs):
            for j in range(values.shape[0]):
                train, test, tested, before, finite, early = values[j, :, i].tolist()
                if not before:
                    break
                epoch = r.start + first + j
                if tested:
                    r.test_losses.append(test)
                if epoch % r.config.save_every == 0 and first + j in snapshots:
                    r.checkpoint(snapshots[first + j][i], epoch)
                r.train_losses.append(train)
                if not finite:
                    r.diverged = (epoch, "train", train) if not math.isfinite(train) else (epoch, "test", test)
                    r.done, r.status = epoch, "diverged"
                    break
                if early:
                    if not r.epochs or r.epochs[-1] != epoch:  # its weights are frozen since: they are epoch's
                        r.checkpoint(self.batch.P[i].cpu(), epoch)
                    r.stopped_early, r.done, r.status = True, epoch, "stopped"
                    break
                r.done = epoch + 1
                if self.callback is not None:
                    self.callback(epoch, train, test if tested else None)
                if r.done >= r.config.epochs:
                    r.status = "finished"
                    break
            if r.status != "training":
                ended.append(i)
            elif periodic and r.path is not None and r.done % r.config.save_every == 0 and r.saver.saved_done != r.done:
                if time.monotonic() - r.last_write >= self.save_interval_s:
                    r.saver.periodic(r.to_data(self.batch.row(i)))
                    r.last_write = time.monotonic()
        self.update_bar(values.shape[0], len(ended))
        for i in ended:
            self.runs[i].finish(self.batch.row(i))
        if ended:
            self.select([i for i in range(len(self.runs)) if i not in set(ended)])

    def update_bar(self, epochs: int, ended: int) -> None:
        if self.bar is None or self.bar.disable:
            return
        self.bar.update(epochs)
        if len(self.runs) == 1 and self.runs[0].train_losses:
            r = self.runs[0]
            test = f"{r.test_losses[-1]:.3g}" if r.test_losses else "…"
            self.bar.set_postfix(train=f"{r.train_losses[-1]:.3g}", test=test, refresh=False)
        elif now := sorted(r.train_losses[-1] for r in self.runs if r.train_losses):
            self.bar.set_postfix(runs=len(self.runs) - ended, median_train=f"{now[len(now) // 2]:.3g}", refresh=False)

    def select(self, keep: list[int]) -> None:
        self.runs = [self.runs[i] for i in keep]
        self.batch.select(keep)
        if keep:
            idx = torch.tensor(keep, device=self.batch.device)
            self.start, self.test_every, self.threshold = self.start[idx], self.test_every[idx], self.threshold[idx]

    def finish_all(self) -> None:
        """Write every run still in the batch (stopped by a signal or an exception) at its epoch boundary."""
        for i, r in enumerate(self.runs):
            r.status = "interrupted"
            r.finish(self.batch.row(i))
        self.select([])


def _train(
    configs, outs, *, device, resume, progress, save_interval_s, fallback_dirs, workers, callback, who: str
) -> tuple[list[_Run], _StopRequest]:
    """Open every run's file, then train the runs of each ``p`` as one batch; returns the runs and the stop flag."""
    device = resolve_device(device)
    runs = [_Run(i, c, _out_path(o)) for i, (c, o) in enumerate(zip(configs, outs, strict=True))]
    seen: dict[Path, int] = {}
    with_file = [r for r in runs if r.path is not None]
    for r in with_file:
        key = Path(os.path.abspath(r.path))
        if key in seen:
            raise ValueError(
                f"outs[{seen[key]}] and outs[{r.index}] are the same file {r.path}; each run needs its own file"
            )
        seen[key] = r.index
    for r in with_file:
        _file_signature(r.path)  # a folder, a FIFO, a link loop: refused before anything else
    check_memory(configs, workers)
    paths = [r.path for r in runs if r.path is not None]
    label = paths[0] if len(paths) == 1 else Path(os.path.commonpath([p.parent for p in paths])) if paths else None
    with contextlib.ExitStack() as stack:
        stop = stack.enter_context(_stop_on_signals(label))
        for r in runs:
            if r.path is not None:
                r.saver = _Saver(r.path, stop, fallback_dirs)
                try:
                    _open(r, resume, stack, who)
                except TrainingDivergedError as e:
                    if who == "train":
                        raise
                    print(f"[{who}] skipping {r.path}: {e}", file=sys.stderr)
                    r.result, r.status = e.run_data, "skipped"
        todo = [r for r in runs if r.status == "pending" and r.path is not None]
        check_disk_room([r.config for r in todo], [r.path for r in todo])
        for p in dict.fromkeys(r.config.p for r in runs if r.status == "pending"):  # in order of appearance
            if stop.signum is not None:
                break
            group = [r for r in runs if r.status == "pending" and r.config.p == p]
            total = max(
                r.config.epochs - (int(r.existing["resume"]["epochs_done"]) if r.existing else 0) for r in group
            )
            initial = 0
            if len(group) == 1:
                total, initial = group[0].config.epochs, group[0].config.epochs - total
            desc = "training" if len(group) == 1 else f"{len(group)} runs (p = {p})"
            with (
                tqdm(
                    total=total, initial=initial, disable=not progress, desc=desc, unit="epoch", dynamic_ncols=True
                ) as bar,
                worker_pool(n_workers([r.config for r in group], device, workers)) as pool,
            ):
                _Loop(group, _start(group, device, pool), stop, save_interval_s, bar, callback).run()
    return runs, stop


def _where(run: _Run) -> str:
    return run.saver.where(run.saved_to) if run.saver is not None else "it was not written"


def _unsaved(runs: list[_Run]) -> list[_Run]:
    """The runs that trained but whose file does not hold their final record."""
    trained = [r for r in runs if r.path is not None and r.status != "skipped" and r.result]
    return [r for r in trained if r.result["train_losses"] and r.saved_to != r.path]


def _interrupted(stop: _StopRequest, runs: list[_Run]) -> TrainingInterrupted:
    trained = [r for r in runs if r.status != "skipped"]
    written = [r for r in trained if r.saved_to is not None and r.saved_to == r.path]
    done = min((r.done for r in trained), default=0)
    sig = signal.Signals(stop.signum).name if stop.signum is not None else "interrupt"
    if len(runs) == 1:
        r = runs[0]
        head = f"{sig}: stopped after {r.done:,} of {r.config.epochs:,} epochs"
        if r.path is None:
            tail = "; nothing is written (no output file was given)"
        elif not r.result or not r.result["train_losses"]:
            tail = f"; no epoch had finished, so nothing was written ({r.path} is unchanged)"
        elif written:
            tail = f"; {r.path} holds them (last checkpoint at epoch {r.result['epochs'][-1]:,})" + (
                "" if r.result["resume"]["finished"] else "; run the same command again to resume"
            )
        else:
            tail = f"; {_where(r)}"
    else:
        head = f"{sig}: stopped {len(trained)} run(s) (the least advanced after {done:,} epochs)"
        tail = "; nothing was written"
        if written:
            tail = f"; {len(written)} run file(s) hold them; run the same command again to resume"
        if failed := _unsaved(trained):
            tail += "; not written: " + "; ".join(f"{r.path}: {_where(r)}" for r in failed[:3])
    folders = {r.path if len(runs) == 1 else r.path.parent for r in written}
    return TrainingInterrupted(
        head + tail,
        signum=stop.signum or signal.SIGINT,
        saved_to=folders.pop() if len(folders) == 1 else None,
        epochs_done=done,
        members=[(r.path, r.done) for r in runs],
    )


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
    """Train a model with ``config`` and return its run data (the :mod:`..runs.checkpoints` format).

    ``out``: the file to write the run to (None: memory only), atomically, at checkpoint epochs at least
    ``save_interval_s`` seconds apart, at the end, and when training stops early (SIGINT/SIGTERM at the next epoch
    boundary, divergence, an exception). ``resume``: continue an unfinished run of the same config in ``out``
    (bit-identically with as many torch threads), return a finished one, extend a shorter one; ``False`` overwrites
    it. Anything else in ``out`` is never overwritten (``ValueError``). ``callback(epoch, train_loss, test_loss or
    None)`` runs after every epoch. ``fallback_dirs``: where the final record goes when ``out`` cannot be written
    (default: the temp folder, then home). ``device``: ``"auto"``, ``"cpu"`` or ``"cuda"`` (same file either way).
    Memory, the path and its room are checked first; ``<out>.lock`` is held while training.

    Raises:
        TrainingInterrupted: SIGINT/SIGTERM; the message says what was written where.
        TrainingDivergedError: a loss became nan/inf; the checkpoints before it are written (status "diverged").
        RunNotSavedError: ``out`` could not be written (the run is on the exception, and maybe in a fallback file).
    """
    (run,), stop = _train(
        [config], [out], device=device, resume=resume, progress=progress, save_interval_s=save_interval_s,
        fallback_dirs=fallback_dirs, workers=None, callback=callback, who="train",
    )  # fmt: skip
    result, path = run.result, run.path
    if run.diverged is not None:
        epoch, which, value = run.diverged
        n = len(result["epochs"])
        last = f", the last at epoch {result['epochs'][-1]:,}" if n else ""
        kept = f"the {epoch:,} epochs before it ({n} checkpoint{'s' if n != 1 else ''}{last})"
        if path is None:
            where = f"{kept} are in the returned error's run_data"
        elif run.saved_to == path:
            where = f"{kept} are in {path} (status: diverged)"
        else:
            where = f"{kept}: {_where(run)}"
        raise TrainingDivergedError(
            f"diverged at epoch {epoch:,}: the {which} loss is {value}; lower --lr (lr = {config.lr:g}). "
            f"{where[0].upper()}{where[1:]}.",
            epoch=epoch,
            run_data=result,
            saved_to=run.saved_to,
        )
    if stop.signum is not None or run.status in ("interrupted", "pending"):
        raise _interrupted(stop, [run])
    if _unsaved([run]):
        raise RunNotSavedError(
            f"training finished ({run.done:,} epochs) but {path} could not be written: {_where(run)}",
            run_data=result,
            saved_to=run.saved_to,
            results=[result],
        )
    return result


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

    The runs of one ``p`` train together as one :class:`~.batched_train.Batch`. Each file of ``outs`` (None: memory
    only) is handled as ``out`` by :func:`train`. A member that diverges is written with status "diverged" and the
    others go on. ``workers``: CPU runs computed side by side (default :func:`~.batched_train.n_workers`).

    Raises:
        TrainingInterrupted: SIGINT/SIGTERM, every member written first (``.members``: ``(path, epochs done)``).
        RunNotSavedError: some member files could not be written (``.results``: every member's run data).
    """
    configs, outs = list(configs), list(outs)
    if len(configs) != len(outs):
        raise ValueError(
            f"configs and outs must have the same length (one file per run), got {len(configs)} and {len(outs)}"
        )
    for i, c in enumerate(configs):
        if not isinstance(c, TrainConfig):
            raise TypeError(f"configs[{i}] must be a TrainConfig, got {type(c).__name__}")
    if not configs:
        return []
    runs, stop = _train(
        configs, outs, device=device, resume=resume, progress=progress, save_interval_s=save_interval_s,
        fallback_dirs=fallback_dirs, workers=workers, callback=None, who="train_many",
    )  # fmt: skip
    for r in runs:
        if r.status == "diverged":
            epoch, which, value = r.diverged
            print(
                f"[train_many] {r.name} diverged at epoch {epoch:,} ({which} loss {value}); lower its lr "
                f"(lr = {r.config.lr:g}). The epochs before it are kept (status: diverged).",
                file=sys.stderr,
            )
    if stop.signum is not None or any(r.status in ("interrupted", "pending") for r in runs):
        raise _interrupted(stop, runs)
    results = [r.result for r in runs]
    unsaved = _unsaved(runs)
    if unsaved:
        raise RunNotSavedError(
            f"training finished but {len(unsaved)} member file(s) could not be written: "
            + "; ".join(f"{r.path}: {_where(r)}" for r in unsaved[:3]),
            run_data=unsaved[0].result,
            saved_to=unsaved[0].saved_to,
            results=results,
        )
    return results
