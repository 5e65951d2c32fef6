"""The checkpoint-history file ("full run data"): its format, safe loading, validation and safe writing.

One format serves the course's hub file and our own training runs::

    {
        "state_dicts": [paper-layout state dict, ...],   # one per checkpoint
        "epochs": [0, 100, 200, ...],                     # epoch of each state dict
        "train_losses": [float, ...],                     # one per epoch
        "test_losses": [float, ...],                      # one per test interval
        "config": {...plain values...},                   # our runs only (p, fn, frac_train, seed, ...)
        "train_indices": LongTensor,                      # our runs only: indices into all_data (x*p + y)
        "resume": {...},                                  # our runs only: see train.py
    }

Files are read with ``torch.load(..., weights_only=True)`` (never unpickle untrusted code) and validated:
structure, shapes, finite weights, a stored config that agrees with the weights, a usable resume record.

Writing never loses the previous file: the run is serialised in memory, written to a temporary file beside the
target (``<name>.tmp-<pid>-<random>``), fsynced and renamed over it (``os.replace``). A failed write removes its
temporary file and raises :class:`RunFileWriteError`, which says why in words (disk full, read-only file
system, permission denied). Temporary files left by a killed process are recognised by their name and removed
by :func:`remove_stale_temp_files`. :class:`RunFileLock` keeps two processes from writing the same file.
"""

from __future__ import annotations

import errno
import io
import os
import re
import secrets
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .layout import PAPER_KEYS, is_paper_layout

try:
    import fcntl
except ImportError:  # Windows: fall back to an O_EXCL lock file holding the pid
    fcntl = None

__all__ = [
    "REQUIRED_KEYS",
    "RESUME_FORMAT_VERSION",
    "CorruptCheckpointError",
    "RunFileWriteError",
    "RunFileLockedError",
    "RunFileLock",
    "atomic_save",
    "write_bytes_atomically",
    "describe_os_error",
    "check_destination",
    "remove_stale_temp_files",
    "safe_load",
    "validate_run_data",
    "validate_config_against_weights",
    "validate_resume_record",
    "expected_paper_shapes",
    "load_run_data",
    "run_is_complete",
]

REQUIRED_KEYS = ("state_dicts", "epochs", "train_losses", "test_losses")
#: Newest version of the ``resume`` record this package reads (``resume["format"]``; written by ``train``).
RESUME_FORMAT_VERSION = 1

#: Temporary files of :func:`write_bytes_atomically`: ``<name>.tmp-<pid>-<hex>``.
_TEMP_RE = re.compile(r"\.tmp-(\d+)-[0-9a-f]{8}$")


class CorruptCheckpointError(ValueError):
    """A checkpoint file that is truncated, not a torch file, or not in the expected format."""


class RunFileWriteError(OSError):
    """A run file could not be written; the message says why (disk full, read-only, permission) and where.
    ``errno`` is the underlying error's; the previous file, if any, is unchanged."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class RunFileLockedError(RuntimeError):
    """Another live process holds the lock of a run file (it is training into it)."""


_REASONS = {
    errno.ENOSPC: "the disk is full (ENOSPC)",
    errno.EDQUOT: "the disk quota is exhausted (EDQUOT)",
    errno.EROFS: "the file system is read-only (EROFS)",
    errno.EACCES: "permission denied (EACCES)",
    errno.EPERM: "operation not permitted (EPERM)",
    errno.ENOENT: "the folder does not exist (ENOENT)",
    errno.ENOTDIR: "a part of the path is not a folder (ENOTDIR)",
}


def describe_os_error(e: OSError) -> str:
    """Why a write failed, in words: ``"the disk is full (ENOSPC)"``, ``"the file system is read-only (EROFS)"``..."""
    if e.errno in _REASONS:
        return _REASONS[e.errno]
    name = errno.errorcode.get(e.errno or 0, "unknown error")
    return f"{e.strerror or e} ({name})"


def _mb(n: int | float) -> str:
    return f"{n / 1e6:,.1f} MB"


def _temp_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def _write_all(fd: int, data: memoryview) -> None:
    """``os.write`` until every byte is written (a full disk raises ``OSError(ENOSPC)`` here)."""
    while len(data):
        data = data[os.write(fd, data) :]


def write_bytes_atomically(data: bytes | memoryview, path: str | os.PathLike) -> Path:
    """Write ``data`` to ``path`` atomically: a temporary file beside it (``<name>.tmp-<pid>-<hex>``), fsync,
    ``os.replace``. On failure the temporary file is removed, the previous ``path`` is left as it was, and
    :class:`RunFileWriteError` says why."""
    path = Path(path)
    tmp = _temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
        try:
            _write_all(fd, memoryview(data).cast("B"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, RunFileWriteError):
            raise RunFileWriteError(
                e.errno,
                f"could not write {path}: {describe_os_error(e)}; {_mb(len(data))} to write"
                + (f", {_mb(_free_bytes(path.parent))} free there" if _free_bytes(path.parent) is not None else "")
                + (". The previous file is unchanged" if path.exists() else ""),
            ) from e
        raise
    _fsync_folder(path.parent)
    return path


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable (best effort; not possible on every platform)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically (see :func:`write_bytes_atomically`). The object is
    serialised in memory first, so a failing disk raises a plain :class:`RunFileWriteError` naming the cause
    instead of torch's zip-writer error, and nothing half-written is ever left behind."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes_atomically(buffer.getbuffer(), path)


def check_destination(path: str | os.PathLike, need_bytes: int, what: str = "the run file") -> None:
    """Fail fast, before any work, if ``path`` cannot be written or its disk lacks ``need_bytes``.

    Creates the folder if needed, writes and removes a small temporary file there, and compares ``need_bytes``
    with ``shutil.disk_usage``. Raises :class:`RunFileWriteError` naming the path, the need and what is free.
    """
    path = Path(path)
    probe = _temp_path(path)  # named like a temporary file, so a leftover is cleaned up like one
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            _write_all(fd, memoryview(b"probe"))
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as e:
        raise RunFileWriteError(
            e.errno,
            f"cannot write {what} {path}: {describe_os_error(e)} in {path.parent}. Choose another --out/out path.",
        ) from e
    free = _free_bytes(path.parent)
    if free is not None and free < need_bytes:
        raise RunFileWriteError(
            errno.ENOSPC,
            f"not enough room for {what} {path}: it needs about {_mb(need_bytes)}, and only {_mb(free)} is free "
            f"on {path.parent}. Free some space or choose another --out/out path.",
        )


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (when unsure: True, so nothing of a live process is ever removed)."""
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill(pid, 0) would terminate it there
        return _windows_pid_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, owned by someone else
        return True
    return True


def _windows_pid_alive(pid: int) -> bool:
    import ctypes

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return kernel32.GetLastError() == 5  # access denied: it exists
    try:
        code = ctypes.c_ulong()
        return not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)) or code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


#: Temporary files of earlier versions (``tempfile.mkstemp``: ``.<name>.<8 random>.tmp``), no pid: removed
#: when older than this many seconds.
_LEGACY_TEMP_AGE_S = 600


def remove_stale_temp_files(path: str | os.PathLike) -> list[Path]:
    """Remove temporary files of :func:`write_bytes_atomically` for ``path`` whose writing process is dead
    (left by a killed run), and those of earlier versions (``.<name>.XXXXXXXX.tmp``) older than 10 minutes.
    Call it while holding :class:`RunFileLock`. Returns the removed paths."""
    path = Path(path)
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    candidates = [
        (f, m)
        for f in path.parent.glob(f"{glob_escape(path.name)}.tmp-*")
        if (m := _TEMP_RE.search(f.name)) is not None and f.name[: m.start()] == path.name
    ]
    stale = [f for f, m in candidates if not _pid_alive(int(m.group(1)))]
    legacy_cutoff = time.time() - _LEGACY_TEMP_AGE_S
    for f in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        try:
            if len(f.name) == len(path.name) + 14 and f.stat().st_mtime < legacy_cutoff:
                stale.append(f)
        except OSError:
            pass
    for f in stale:
        try:
            f.unlink()
            removed.append(f)
        except OSError:
            pass
    return removed


def glob_escape(name: str) -> str:
    """``name`` with glob wildcards escaped (``[`` ``*`` ``?``)."""
    return re.sub(r"([\[\]*?])", r"[\1]", name)


class RunFileLock:
    """An exclusive lock on ``<path>.lock`` held while a process trains into ``path``.

    With ``fcntl`` (Linux, macOS) it is an ``flock`` on the lock file, released by the kernel when the process
    dies, so a stale lock never blocks. Elsewhere it is a file created with ``O_EXCL`` holding the owner's pid;
    a lock file whose pid is dead is taken over. The lock file holds the owner's pid either way and is removed
    on release. Use as a context manager; a held lock raises :class:`RunFileLockedError` naming the pid.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._fd: int | None = None

    def _owner(self) -> str:
        try:
            text = self.lock_path.read_text().strip()
        except OSError:
            return "unknown"
        return text if text.isdigit() else "unknown"

    def _refuse(self) -> RunFileLockedError:
        stale_hint = "" if fcntl is not None else f" (if no such process is running, delete {self.lock_path})"
        return RunFileLockedError(
            f"another training run (pid {self._owner()}) is writing {self.path}; wait for it to finish, stop it, "
            f"or choose another --out/out path{stale_hint}"
        )

    def acquire(self) -> "RunFileLock":
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            if fcntl is not None:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    raise self._refuse() from None
                try:  # the holder we waited for may have removed the file: lock the one that is there now
                    same = os.path.samestat(os.fstat(fd), os.stat(self.lock_path))
                except FileNotFoundError:
                    same = False
                if not same:
                    os.close(fd)
                    continue
            else:
                try:
                    fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    owner = self._owner()
                    if owner.isdigit() and not _pid_alive(int(owner)):
                        self.lock_path.unlink(missing_ok=True)  # stale: its process is gone
                        continue
                    raise self._refuse() from None
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._fd = fd
            return self
        raise self._refuse()

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.lock_path.unlink(missing_ok=True)  # before unlocking: nobody can lock a file we then remove
        except OSError:
            pass
        os.close(self._fd)  # releases the flock
        self._fd = None

    def __enter__(self) -> "RunFileLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def safe_load(path: str | os.PathLike) -> Any:
    """Load a torch file with ``weights_only=True``; a truncated or foreign file raises
    :class:`CorruptCheckpointError` naming the file."""
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(
            f"{path} is a folder, not a run file; give the file's path, e.g. {path / 'full_run_data.pth'}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for bad zips / pickles
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        if "Weights only load failed" in str(e):  # a pickle asking for Python objects (possibly code)
            detail = next((x for x in lines if x.startswith("Unsupported") or "GLOBAL" in x), "see torch.load")
            what = (
                f"a weights-only load refuses what it holds ({detail}): Python objects or code, not just tensors. "
                "It was not loaded and no code in it ran; only weights-only torch files are accepted."
            )
        else:
            what = (
                "it may be truncated (an interrupted download?) or not a weights-only torch file. Delete it to "
                f"fetch or train it again. ({type(e).__name__}: {lines[0] if lines else 'no details'})"
            )
        raise CorruptCheckpointError(
            f"{path} ({path.stat().st_size:,} bytes) is not a readable torch checkpoint: {what}"
        ) from e


def expected_paper_shapes(
    p: int, d_model: int = 128, n_heads: int = 4, d_head: int = 32, d_mlp: int = 512, n_ctx: int = 3
) -> dict[str, tuple[int, ...]]:
    """Paper-layout shape of every weight of the model for modulus ``p``."""
    d_vocab = p + 1
    return {
        "embed.W_E": (d_model, d_vocab),
        "pos_embed.W_pos": (n_ctx, d_model),
        "blocks.0.attn.W_K": (n_heads, d_head, d_model),
        "blocks.0.attn.W_Q": (n_heads, d_head, d_model),
        "blocks.0.attn.W_V": (n_heads, d_head, d_model),
        "blocks.0.attn.W_O": (d_model, n_heads * d_head),
        "blocks.0.mlp.W_in": (d_mlp, d_model),
        "blocks.0.mlp.b_in": (d_mlp,),
        "blocks.0.mlp.W_out": (d_model, d_mlp),
        "blocks.0.mlp.b_out": (d_model,),
        "unembed.W_U": (d_model, d_vocab),
    }


def validate_run_data(data: Any, source: str = "run data", p: int | None = None) -> int:
    """Check the structure of a full-run-data dict; return its modulus ``p``.

    Raises :class:`CorruptCheckpointError` with a message saying what was expected.
    """
    if not isinstance(data, Mapping):
        raise CorruptCheckpointError(f"{source}: expected a dict with keys {REQUIRED_KEYS}, got {type(data).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise CorruptCheckpointError(f"{source}: missing keys {missing} (has {sorted(data)})")
    state_dicts, epochs = data["state_dicts"], data["epochs"]
    if not isinstance(state_dicts, (list, tuple)) or len(state_dicts) == 0:
        raise CorruptCheckpointError(f"{source}: 'state_dicts' must be a non-empty list of state dicts")
    if len(epochs) != len(state_dicts):
        raise CorruptCheckpointError(f"{source}: {len(state_dicts)} state dicts but {len(epochs)} epochs")
    if len(data["train_losses"]) == 0:
        raise CorruptCheckpointError(f"{source}: 'train_losses' is empty")
    _check_epochs(epochs, source)
    first = state_dicts[0]
    if not isinstance(first, Mapping) or any(k not in first for k in PAPER_KEYS):
        raise CorruptCheckpointError(f"{source}: state dicts must hold the paper-layout keys {PAPER_KEYS}")
    if not is_paper_layout(first):
        raise CorruptCheckpointError(
            f"{source}: state dicts must be in the paper layout (W_O of shape (d_model, n_heads*d_head))"
        )
    if p is None:
        p = int(first["embed.W_E"].shape[1]) - 1
    shapes = expected_paper_shapes(p)
    for i, sd in enumerate(state_dicts):
        for name, shape in shapes.items():
            t = sd.get(name) if isinstance(sd, Mapping) else None
            if not isinstance(t, torch.Tensor):
                raise CorruptCheckpointError(f"{source}: state dict {i} lacks tensor {name!r}")
            if tuple(t.shape) != shape:
                raise CorruptCheckpointError(
                    f"{source}: state dict {i} (epoch {epochs[i]}): {name} has shape {tuple(t.shape)}, expected {shape} for p = {p}"
                )
            if not t.is_floating_point():
                raise CorruptCheckpointError(
                    f"{source}: state dict {i}: {name} has dtype {t.dtype}, expected a float dtype"
                )
            _check_finite(t, f"{source}: state dict {i} (epoch {epochs[i]}): {name}")
    if "train_indices" in data:
        idx = torch.as_tensor(data["train_indices"])
        if idx.ndim != 1 or (idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= p * p)):
            raise CorruptCheckpointError(f"{source}: 'train_indices' must be a 1-D tensor of indices in [0, {p * p})")
    if "config" in data:
        validate_config_against_weights(data["config"], p, source)
        if "train_indices" in data:
            _check_split_against_config(data, source)
    elif "train_indices" in data:
        raise CorruptCheckpointError(f"{source}: 'train_indices' stored without the 'config' that defines the split")
    if "resume" in data:
        validate_resume_record(data["resume"], p, len(data["train_losses"]), source)
    if isinstance(data.get("config"), Mapping) and isinstance(data.get("resume"), Mapping):
        _check_histories_against_config(data, source)
    return p


def _check_epochs(epochs: Any, source: str) -> None:
    """Checkpoint epochs: integers >= 0, strictly increasing (a run of our trainer is checked further against its
    config)."""
    try:
        values = [int(e) for e in epochs]
    except (TypeError, ValueError):
        raise CorruptCheckpointError(
            f"{source}: 'epochs' must be a list of integers, got {list(epochs)[:5]!r}"
        ) from None
    if values[0] < 0 or any(b <= a for a, b in zip(values, values[1:], strict=False)):
        raise CorruptCheckpointError(
            f"{source}: 'epochs' must be integers >= 0 that increase strictly, got {values[:6]}{'…' if len(values) > 6 else ''}"
        )


def _check_histories_against_config(data: Mapping, source: str) -> None:
    """A run of our trainer: checkpoints every ``save_every`` epochs, a test loss every ``test_every``, and an
    unfinished run shorter than its configured length."""
    from .config import TrainConfig

    cfg = TrainConfig.from_dict(data["config"])  # already validated
    n = len(data["train_losses"])
    epochs = [int(e) for e in data["epochs"]]
    regular = list(range(0, n, cfg.save_every))
    if (epochs != regular and epochs[:-1] != regular) or epochs[-1] >= n:  # an early stop adds its last epoch
        raise CorruptCheckpointError(
            f"{source}: checkpoints at epochs {epochs[:4]}… do not match the stored config (every {cfg.save_every} "
            f"epochs over {n:,} epochs: {regular[:4]}…); the file is inconsistent"
        )
    n_test = -(-n // cfg.test_every)
    if len(data["test_losses"]) != n_test:
        raise CorruptCheckpointError(
            f"{source}: {len(data['test_losses']):,} test losses stored, but {n:,} epochs with a test every "
            f"{cfg.test_every} make {n_test:,}; the file is inconsistent"
        )
    resume = data["resume"]
    if not resume.get("finished") and int(resume["epochs_done"]) >= cfg.epochs:
        raise CorruptCheckpointError(
            f"{source}: resume record: marked unfinished after {int(resume['epochs_done']):,} epochs, but the stored "
            f"config asks for {cfg.epochs:,}; the file is inconsistent"
        )


def _check_split_against_config(data: Mapping, source: str) -> None:
    """Stored ``train_indices`` must be the split of the stored config, in the paper's shuffled order."""
    from .config import TrainConfig
    from .data import train_test_split

    cfg = TrainConfig.from_dict(data["config"])  # already validated
    expected = train_test_split(cfg.p, cfg.frac_train, cfg.seed)[0]
    if not torch.equal(torch.as_tensor(data["train_indices"]).long(), expected.long()):
        raise CorruptCheckpointError(
            f"{source}: 'train_indices' ({len(data['train_indices']):,} pairs) are not the split of the stored "
            f"config (frac_train={cfg.frac_train}, seed={cfg.seed}: {len(expected):,} pairs); the file is inconsistent"
        )


def run_is_complete(data: Mapping, config: Any = None) -> bool:
    """Whether a run needs no more training: the one definition, for provisioning and the trainer.

    * a diverged run (``resume["diverged"]``) is never complete (the trainer refuses to continue it, saying why);
    * with the trainer's ``resume`` record: ``finished``, and — when a requested ``config``
      (:class:`~.config.TrainConfig`) is given — stopped early or trained for at least ``config.epochs``;
    * without one: judged from the stored ``config`` (its length, or its early-stop test loss reached);
    * a file without ``config`` (the hub file) is complete.
    """
    resume = data.get("resume")
    if isinstance(resume, Mapping) and resume.get("diverged"):
        return False
    if isinstance(resume, Mapping) and "finished" in resume:
        if not resume["finished"]:
            return False
        if config is None or resume.get("stopped_early"):
            return True
        return int(resume.get("epochs_done", len(data["train_losses"]))) >= int(config.epochs)
    cfg = data.get("config")
    if not isinstance(cfg, Mapping) or "epochs" not in cfg:
        return True
    epochs = int(config.epochs) if config is not None else int(cfg["epochs"])
    if len(data["train_losses"]) >= epochs:
        return True
    stop = cfg.get("stop_at_test_loss")
    return stop is not None and len(data["test_losses"]) > 0 and float(data["test_losses"][-1]) < float(stop)


def _check_finite(t: torch.Tensor, what: str) -> None:
    bad = int((~torch.isfinite(t)).sum())
    if bad:
        kinds = [k for k, f in (("nan", torch.isnan), ("inf", torch.isinf)) if bool(f(t).any())]
        raise CorruptCheckpointError(
            f"{what} holds {bad:,} non-finite values ({'/'.join(kinds)}) of {t.numel():,}: the run diverged or the "
            f"file was damaged; these weights cannot be analysed"
        )


def validate_config_against_weights(config: Any, p: int, source: str = "run data") -> None:
    """A stored ``config`` must be a valid :class:`~.config.TrainConfig` whose ``p`` matches the weights."""
    from .config import TrainConfig  # imported here: config -> data -> torch only, but keep this module light

    try:
        stored = TrainConfig.from_dict(config)
    except (ValueError, TypeError) as e:
        raise CorruptCheckpointError(f"{source}: {e}") from None
    if stored.p != p:
        raise CorruptCheckpointError(
            f"{source}: the stored config says p = {stored.p}, but the weights are for p = {p} "
            f"(embed.W_E has {p + 1} vocabulary columns); the file is inconsistent"
        )


def validate_resume_record(resume: Any, p: int, n_train_losses: int, source: str = "run data") -> None:
    """The ``resume`` record of a run written by :func:`~.train.train`: its counters agree with the histories,
    and an unfinished run carries every trained parameter (finite, of the right size), the optimizer and the
    scheduler state it needs to continue."""
    from .model import PAPER_TRAINABLE

    if not isinstance(resume, Mapping):
        raise CorruptCheckpointError(f"{source}: 'resume' must be a dict, got {type(resume).__name__}")
    done = resume.get("epochs_done")
    if isinstance(done, bool) or not isinstance(done, int) or done < 0:
        raise CorruptCheckpointError(f"{source}: resume record: 'epochs_done' must be an integer >= 0, got {done!r}")
    if not isinstance(resume.get("finished"), bool):
        raise CorruptCheckpointError(
            f"{source}: resume record: 'finished' must be True or False, got {resume.get('finished')!r}"
        )
    version = resume.get("format", 1)
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= RESUME_FORMAT_VERSION:
        raise CorruptCheckpointError(
            f"{source}: resume record of format {version!r}, but this package reads formats 1 to "
            f"{RESUME_FORMAT_VERSION}: it was written by another version; update the package or use another path"
        )
    if resume.get("finished") or resume.get("diverged"):
        return  # nothing to continue
    if n_train_losses != done:
        raise CorruptCheckpointError(
            f"{source}: resume record: {done:,} epochs done but {n_train_losses:,} train losses stored"
        )
    missing = [k for k in ("params", "optimizer", "scheduler") if not isinstance(resume.get(k), Mapping)]
    if missing:
        raise CorruptCheckpointError(
            f"{source}: the run is unfinished but its resume record lacks {missing}, so it cannot be continued; "
            f"train again with --no-resume (resume=False) or choose another --out/out path"
        )
    shapes = _transformer_lens_shapes(p)
    for name in PAPER_TRAINABLE:
        t = resume["params"].get(name)
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != shapes[name]:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise CorruptCheckpointError(
                f"{source}: resume record: parameter {name!r} must be a tensor of shape {shapes[name]} (p = {p}), got {got}"
            )
        _check_finite(t, f"{source}: resume record: parameter {name}")
    _check_optimizer_state(resume["optimizer"], [shapes[name] for name in PAPER_TRAINABLE], source)
    _check_scheduler_state(resume["scheduler"], source)


def _transformer_lens_shapes(p: int) -> dict[str, tuple[int, ...]]:
    """TransformerLens-layout shape of every weight (the layout of the resume record's ``params``)."""
    from .layout import paper_to_transformer_lens

    empty = {k: torch.empty(s, device="meta") for k, s in expected_paper_shapes(p).items()}
    return {k: tuple(v.shape) for k, v in paper_to_transformer_lens(empty).items()}


def _check_optimizer_state(state: Mapping, shapes: list[tuple[int, ...]], source: str) -> None:
    """AdamW's state for the trained parameters, in order: one group, and moments of each parameter's shape,
    finite."""
    where = f"{source}: resume record: optimizer state"
    groups = state.get("param_groups")
    if (
        not isinstance(groups, list)
        or len(groups) != 1
        or list(groups[0].get("params", [])) != list(range(len(shapes)))
    ):
        raise CorruptCheckpointError(f"{where}: expected one parameter group of the {len(shapes)} trained parameters")
    per_param = state.get("state")
    if not isinstance(per_param, Mapping):
        raise CorruptCheckpointError(f"{where}: 'state' must be a dict")
    for i, moments in per_param.items():
        if not isinstance(i, int) or not 0 <= i < len(shapes) or not isinstance(moments, Mapping):
            raise CorruptCheckpointError(f"{where}: unexpected entry {i!r}")
        for key in ("exp_avg", "exp_avg_sq"):
            t = moments.get(key)
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != shapes[i]:
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise CorruptCheckpointError(f"{where}: {key} of parameter {i} must have shape {shapes[i]}, got {got}")
            _check_finite(t, f"{where}: {key} of parameter {i}")


def _check_scheduler_state(state: Mapping, source: str) -> None:
    missing = [k for k in ("last_epoch", "base_lrs", "lr_lambdas") if k not in state]
    if missing:
        raise CorruptCheckpointError(f"{source}: resume record: the scheduler state lacks {missing}")


def load_run_data(path: str | os.PathLike, p: int | None = None) -> dict:
    """Safely load and validate a full-run-data file; the plain dict (the trainer's format). For the run
    object the course works with (recipe, split, source, models) use :meth:`.run_data.RunData.from_file`."""
    data = safe_load(path)
    validate_run_data(data, source=str(path), p=p)
    return data
