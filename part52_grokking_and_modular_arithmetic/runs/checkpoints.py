"""Run files on disk: read only when verified, written without ever losing the previous one.

Reading (:func:`safe_load`): a regular file only; the CRC-32 of every zip entry is checked (torch does not, so
a changed byte inside a tensor would otherwise be used); then ``torch.load(..., weights_only=True)``. Any
failure is one :class:`CorruptCheckpointError` line naming the file. Content checks: :mod:`.run_data`.

Writing (:func:`atomic_save`): a temporary file beside the target, fsynced and renamed over it; a failure
raises :class:`RunFileWriteError` saying why. :class:`RunFileLock` keeps two processes from writing one file.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import io
import os
import re
import secrets
import shutil
import stat
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch

try:
    import fcntl
except ImportError:  # Windows: an O_EXCL lock file holding the pid
    fcntl = None

__all__ = [
    "CorruptCheckpointError",
    "RunFileWriteError",
    "RunFileLockedError",
    "RunFileLock",
    "atomic_save",
    "write_bytes_atomically",
    "temp_path",
    "describe_os_error",
    "check_destination",
    "remove_stale_temp_files",
    "check_run_path",
    "verify_archive",
    "safe_load",
]

#: Temporary files of :func:`write_bytes_atomically`: ``<name>.tmp-<pid>-<hex>``.
_TEMP_RE = re.compile(r"\.tmp-(\d+)-[0-9a-f]{8}$")


class CorruptCheckpointError(ValueError):
    """A run file that cannot be used (not a regular file, damaged, truncated, not weights-only, or not in the
    expected format); one line naming the file."""


class RunFileWriteError(OSError):
    """A run file could not be written (the message says why and where); the previous file is unchanged."""

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
    errno.ELOOP: "a symlink loop (ELOOP: too many levels of symbolic links)",
}


def describe_os_error(e: OSError) -> str:
    """Why a file operation failed, in words: ``"the disk is full (ENOSPC)"``, ..."""
    return _REASONS.get(e.errno) or f"{e.strerror or e} ({errno.errorcode.get(e.errno or 0, 'unknown error')})"


# ---- reading ----
_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def check_run_path(path: str | os.PathLike) -> Path:
    """``path`` if it names a regular file (symlinks followed); else ``FileNotFoundError`` or
    :class:`CorruptCheckpointError` naming what it is (a folder, a FIFO, a device, a symlink loop)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"no checkpoint file at {path}") from None
    except OSError as e:
        raise CorruptCheckpointError(f"{path} cannot be read as a run file: {describe_os_error(e)}") from None
    if stat.S_ISDIR(mode):
        raise CorruptCheckpointError(
            f"{path} is a folder, not a run file; give the file's path, e.g. {path / 'full_run_data.pth'}"
        )
    if not stat.S_ISREG(mode):
        kind = next((what for test, what in _KINDS if test(mode)), "a special file")
        raise CorruptCheckpointError(f"{path} is not a regular file ({kind}); a run file is a regular file")
    return path


def verify_archive(path: str | os.PathLike) -> None:
    """Check the CRC-32 of every entry of the zip archive at ``path`` (~0.1 s for the 139 MB default run):
    ``zipfile.BadZipFile`` if it is not a readable zip; :class:`CorruptCheckpointError` naming a failing entry."""
    buffer = memoryview(bytearray(8 << 20))
    with open(path, "rb", buffering=0) as f, zipfile.ZipFile(f) as archive:
        for info in archive.infolist():
            if info.compress_type != zipfile.ZIP_STORED:  # not torch's own layout: let zipfile check it
                with archive.open(info) as entry:
                    while entry.read(len(buffer)):
                        pass
                continue
            f.seek(info.header_offset)
            header = f.read(30)  # the local header: its name and extra lengths say where the data starts
            if len(header) < 30 or header[:4] != b"PK\x03\x04":
                raise zipfile.BadZipFile(f"bad local header of entry {info.filename!r}")
            name_length, extra_length = struct.unpack("<HH", header[26:30])
            f.seek(info.header_offset + 30 + name_length + extra_length)
            left, crc = info.compress_size, 0
            while left:
                n = f.readinto(buffer[: min(left, len(buffer))])
                if not n:
                    raise zipfile.BadZipFile(f"entry {info.filename!r} is cut short")
                crc, left = zlib.crc32(buffer[:n], crc), left - n
            if crc != info.CRC:
                raise CorruptCheckpointError(
                    f"{path}: the archive entry {info.filename!r} fails its CRC check: the file is damaged; "
                    "delete it and run again"
                )


def safe_load(path: str | os.PathLike) -> Any:
    """Load a run file (:func:`check_run_path`, :func:`verify_archive`, ``torch.load(weights_only=True)`` on the
    CPU); raises :class:`CorruptCheckpointError` (one line) or ``FileNotFoundError``."""
    path = check_run_path(path)
    try:
        try:
            verify_archive(path)
            zipped = True
        except zipfile.BadZipFile:
            zipped = False  # torch.load says why (truncated, code refused, ...)
        data = torch.load(path, map_location="cpu", weights_only=True)
    except CorruptCheckpointError:
        raise
    except Exception as e:  # torch raises several types for bad zips / pickles
        with open(path, "rb") as f:
            head = f.read(1)  # a zip archive starts with "P", a pickle (torch's legacy format) with 0x80
        why = _why(e) if head in (b"", b"P", b"\x80") else "it is neither a zip archive nor a pickle (text? HTML?)"
        raise CorruptCheckpointError(
            f"{path} ({path.stat().st_size:,} bytes) is not a readable torch checkpoint: {why}"
        ) from e
    if not zipped:
        raise CorruptCheckpointError(
            f"{path} is in torch's legacy (pre-1.6) format, which carries no checksums, so its content cannot be "
            "verified; save it again with torch.save"
        )
    return data


def _why(e: Exception) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if "Weights only load failed" in str(e):  # a pickle asking for Python objects (possibly code)
        detail = next((x for x in lines if x.startswith("Unsupported") or "GLOBAL" in x), "see torch.load")
        return (
            f"a weights-only load refuses what it holds ({detail}): Python objects or code, not just tensors. "
            "It was not loaded and no code in it ran; only weights-only torch files are accepted."
        )
    return (
        "it may be truncated (an interrupted download?) or not a weights-only torch file. Delete it to "
        f"fetch or train it again. ({type(e).__name__}: {lines[0] if lines else 'no details'})"
    )


# ---- writing ----
def _mb(n: int | float) -> str:
    return f"{n / 1e6:,.1f} MB"


def temp_path(path: Path) -> Path:
    """A fresh temporary name beside ``path``: ``<name>.tmp-<pid>-<hex>``."""
    return path.with_name(f"{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def _write_all(fd: int, data: memoryview) -> None:
    while len(data):
        data = data[os.write(fd, data) :]


def _free_bytes(folder: Path) -> int | None:
    with contextlib.suppress(OSError):
        return shutil.disk_usage(folder).free
    return None


def write_bytes_atomically(data: bytes | memoryview, path: str | os.PathLike) -> Path:
    """Write ``data`` to ``path`` atomically (a temporary file beside it, fsync, ``os.replace``); on failure
    ``path`` is left as it was and :class:`RunFileWriteError` says why."""
    path = Path(path)
    tmp = temp_path(path)
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
            free = _free_bytes(path.parent)
            raise RunFileWriteError(
                e.errno,
                f"could not write {path}: {describe_os_error(e)}; {_mb(len(data))} to write"
                + (f", {_mb(free)} free there" if free is not None else "")
                + (". The previous file is unchanged" if path.exists() else ""),
            ) from e
        raise
    with contextlib.suppress(OSError):  # make the rename durable (best effort: not possible on every platform)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return path


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically (:func:`write_bytes_atomically`), serialised in memory."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes_atomically(buffer.getbuffer(), path)


def check_destination(path: str | os.PathLike, need_bytes: int, what: str = "the run file") -> None:
    """Fail fast (:class:`RunFileWriteError`) if ``path`` cannot be written (a probe file) or its disk lacks
    ``need_bytes``."""
    path = Path(path)
    probe = temp_path(path)  # named like a temporary file, so a leftover is cleaned up like one
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
    if pid == os.getpid() or os.name == "nt":  # on Windows os.kill(pid, 0) would terminate it: assume alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, owned by someone else
        return True
    return True


def remove_stale_temp_files(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files for ``path`` whose writing process is dead (call it holding the lock)."""
    path = Path(path)
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    for f in path.parent.glob(f"{glob.escape(path.name)}.tmp-*"):
        m = _TEMP_RE.search(f.name)
        if m is not None and f.name[: m.start()] == path.name and not _pid_alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                f.unlink()
                removed.append(f)
    return removed


class RunFileLock:
    """An exclusive lock on ``<path>.lock`` (holding the owner's pid) while a process trains into ``path``: an
    ``flock`` where ``fcntl`` exists (released by the kernel when the process dies), else an ``O_EXCL`` file."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._fd: int | None = None

    def _refuse(self) -> RunFileLockedError:
        owner = ""
        with contextlib.suppress(OSError):
            owner = self.lock_path.read_text().strip()
        stale_hint = "" if fcntl is not None else f" (if no such process is running, delete {self.lock_path})"
        return RunFileLockedError(
            f"another training run (pid {owner if owner.isdigit() else 'unknown'}) is writing {self.path}; wait "
            f"for it to finish, stop it, or choose another --out/out path{stale_hint}"
        )

    def acquire(self) -> RunFileLock:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            if fcntl is None:
                try:
                    fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    raise self._refuse() from None
            else:
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
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._fd = fd
            return self
        raise self._refuse()

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):  # before unlocking: nobody can lock a file we then remove
            self.lock_path.unlink(missing_ok=True)
        os.close(self._fd)  # releases the flock
        self._fd = None

    def __enter__(self) -> RunFileLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
