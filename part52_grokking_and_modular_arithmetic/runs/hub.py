"""The hub half of provisioning: the course's run file from the Hugging Face cache, or downloaded.

``huggingface_hub`` does the work. Ours: settings read when called; one deadline for the whole decision; a
stalled download abandoned, nothing partial kept; the sha256 checked; a malformed endpoint or proxy named.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from .run_data import RunData

__all__ = [
    "HUB_REPO_ID",
    "HUB_FILENAME",
    "DEFAULT_HUB_TIMEOUT",
    "DEFAULT_STALL_TIMEOUT",
    "ModelUnavailableError",
    "hub_offline",
    "hub_endpoint",
    "hub_cache_dir",
    "cached_hub_file",
    "fetch_hub_file",
    "download_full_run_data",
]

HUB_REPO_ID = "callummcdougall/grokking_full_run_data"
HUB_FILENAME = "full_run_data.pth"
#: Seconds allowed for the whole hub decision (the file's metadata and the start of the download).
DEFAULT_HUB_TIMEOUT = 4.0
#: Seconds without progress (no new chunk of at most 1 MiB) after which a download in progress is abandoned.
DEFAULT_STALL_TIMEOUT = 30.0
#: huggingface_hub reads in 10 MB pieces (no setting): a slow link would look stalled, so we read 1 MiB at a time.
_PROGRESS_CHUNK = 1 << 20


class ModelUnavailableError(RuntimeError):
    """No run data could be found locally, in the Hugging Face cache or on the hub (and training was not allowed)."""


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set now, or was when huggingface_hub loaded."""
    from huggingface_hub import constants

    now = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    return (now is not None and now.strip().upper() in {"1", "ON", "YES", "TRUE"}) or constants.is_offline_mode()


def hub_endpoint(endpoint: str | None = None) -> str:
    """``endpoint``, else ``$HF_ENDPOINT`` (now), else ``huggingface_hub.constants.ENDPOINT``; no trailing slash."""
    from huggingface_hub import constants

    url = (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).strip()
    return url.rstrip("/") if "://" in url.rstrip("/") else url  # "http://" stays as it is, for the message


def hub_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$HF_HUB_CACHE`` or ``$HF_HOME/hub`` (now), else the library's ``HF_HUB_CACHE``."""
    from huggingface_hub import constants

    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    for var, sub in (("HF_HUB_CACHE", ""), ("HF_HOME", "hub")):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.environ[var])).expanduser() / sub
    return Path(constants.HF_HUB_CACHE)


def cached_hub_file(
    repo_id: str = HUB_REPO_ID,
    filename: str = HUB_FILENAME,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path | None:
    """Path of an already-downloaded hub file in the Hugging Face cache (no network), else ``None``."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=str(hub_cache_dir(cache_dir)), revision=revision)
    return Path(found) if isinstance(found, str) else None


def _evict(path: Path, cache: Path) -> str:
    """Remove a cached hub file with the library's cache API; says what happened."""
    from huggingface_hub import scan_cache_dir

    blob = path.resolve()
    try:
        info = scan_cache_dir(cache)
        info.delete_files(
            *(f for r in info.repos for v in r.revisions for f in v.files if f.blob_path == blob)
        ).execute()
    except Exception:  # noqa: BLE001 - an unreadable cache: the message says what to remove
        pass
    if blob.exists():
        return f"remove {path} from the Hugging Face cache ({cache})"
    return "it was removed from the Hugging Face cache"


def _host_and_port(url: str, what: str) -> tuple[str, int]:
    expected = f"{what} must be an http(s) URL such as https://huggingface.co, got {url!r}"
    try:
        parts = urlsplit(url.strip())
        port = parts.port  # ValueError for a port outside 0-65535 or a broken address
    except ValueError as e:
        raise ValueError(f"{expected} ({e})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(expected)
    if port == 0:
        raise ValueError(f"{expected} (port 0 cannot be connected to)")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def _first_hop(endpoint: str) -> tuple[str, int, str]:
    """``(host, port, note)`` of the first hop to ``endpoint`` (the proxy's, named in ``note``, when one applies)."""
    host, port = _host_and_port(endpoint, "the hub endpoint")
    proxies = urllib.request.getproxies()
    for key in (urlsplit(endpoint).scheme, "all"):
        if (proxy := proxies.get(key)) and not urllib.request.proxy_bypass(host):
            proxy, var = (proxy if "://" in proxy else f"http://{proxy}"), f"{key.upper()}_PROXY"
            return *_host_and_port(proxy, f"the proxy {var}"), f" (the proxy set by {var}={proxy})"
    return host, port, ""


def _first(e: BaseException | None, cls) -> BaseException | None:
    """The first error of type ``cls`` in ``e``'s chain of causes: the library and httpx wrap the one that matters."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen and not isinstance(e, cls):
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return e if isinstance(e, cls) else None


def _line(e: BaseException | str) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class _Download:
    """The metadata (``HEAD``) and ``hf_hub_download`` of one file, in a daemon thread, watched by :meth:`wait`."""

    def __init__(self, url: str, repo_id: str, filename: str, revision: str | None, cache: Path, budget: float):
        from huggingface_hub import hf_hub_url

        self.url, self.repo_id, self.filename, self.revision, self.cache = url, repo_id, filename, revision, cache
        self.host, self.port, self.proxy_note = _first_hop(url)
        self.file_url = hf_hub_url(repo_id, filename, revision=revision, endpoint=url)
        self.path = self.file_url.removeprefix(url)  # for messages
        self.budget, self.deadline = budget, time.monotonic() + budget
        self.stage = f"asked for the file's metadata: HEAD {self.path}"
        self.bytes, self.last_progress, self.abandoned = 0, None, False  # last_progress: once the GET is answered
        self.result = self.etag = self.error = None  # set by _run: the file's path, its ETag, what it raised

    def left(self) -> float:  # the library's timeouts get what is left of the budget
        return max(0.1, self.deadline - time.monotonic())

    def _run(self, show_progress: bool) -> None:
        from huggingface_hub import get_hf_file_metadata, hf_hub_download
        from huggingface_hub.utils import tqdm

        download = self

        class Watched(tqdm):  # the library's progress bar, which also tells the watcher that bytes arrive
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **{**kwargs, **({} if show_progress else {"disable": True})})
                download.last_progress = time.monotonic()  # created once the GET is answered

            def update(self, n=1):
                if download.abandoned:
                    raise InterruptedError("the download was abandoned")  # ends the thread; the library cleans up
                download.bytes += int(n or 0)
                download.last_progress = time.monotonic()
                return super().update(n)

        try:
            # asked first, without retries: hf_hub_download retries a failing HEAD for up to a minute, then says
            # "not in the cache" instead of the HTTP status
            meta = get_hf_file_metadata(self.file_url, timeout=self.left(), retry_on_errors=False)
            self.etag = meta.etag
            if not self.proxy_note and meta.location:  # the download goes there (the real hub: a CDN)
                self.host, self.port = _host_and_port(meta.location, "the file's location")
            self.stage = f"the download did not start: GET {self.path}"
            self.result = hf_hub_download(
                self.repo_id,
                self.filename,
                revision=self.revision,
                endpoint=self.url,
                cache_dir=str(self.cache),
                etag_timeout=self.left(),
                tqdm_class=Watched,
            )
        except BaseException as e:  # noqa: BLE001 - handed to the watcher
            self.error = e

    def wait(self, show_progress: bool, stall_timeout: float) -> str | None:
        """Run the download: ``None`` once it ended (``result`` or ``error``), else why it was abandoned (no
        answer by the deadline, or no chunk for ``stall_timeout`` s); an abandoned one keeps no partial file."""
        from huggingface_hub import constants

        blobs = self.cache / f"models--{self.repo_id.replace('/', '--')}" / "blobs"
        before = set(blobs.glob("*.incomplete"))
        restore = constants.DOWNLOAD_CHUNK_SIZE
        chunk = constants.DOWNLOAD_CHUNK_SIZE = min(restore, _PROGRESS_CHUNK)
        # the library logs why it retries: when our deadline comes first, that is the real reason
        log, hf_logger = logging.handlers.BufferingHandler(64), logging.getLogger("huggingface_hub")
        log.setLevel(logging.WARNING)
        hf_logger.addHandler(log)
        thread = threading.Thread(target=self._run, args=(show_progress,), name="hub-download", daemon=True)
        reason, ended = None, False
        try:
            thread.start()
            while reason is None:
                thread.join(0.1)
                if not thread.is_alive():
                    break
                now = time.monotonic()
                if self.last_progress is None and now >= self.deadline:
                    reason = f"no answer within {self.budget:g} s ({self.stage})"
                elif self.last_progress is not None and now - self.last_progress >= stall_timeout:
                    size = f"{chunk >> 20} MiB" if chunk % (1 << 20) == 0 else f"{chunk:,} bytes"
                    reason = (
                        f"the download stalled: less than {size} arrived in {stall_timeout:g} s ({self.bytes:,} "
                        "bytes saved); it was abandoned and nothing partial was kept"
                    )
            ended = reason is None
        finally:
            constants.DOWNLOAD_CHUNK_SIZE = restore
            hf_logger.removeHandler(log)
            if not ended:  # abandoned or interrupted: the thread stops at its next chunk; it is a daemon
                self.abandoned = True
                for f in set(blobs.glob("*.incomplete")) - before:
                    f.unlink(missing_ok=True)
        if reason is not None and log.buffer:
            reason += f"; huggingface_hub reported: {_line(log.buffer[-1].getMessage())}"
        return reason

    def why(self, e: BaseException) -> str:
        """One line saying why the hub did not provide the file (from the library's error classes)."""
        import socket

        from huggingface_hub import errors

        http, rev = _first(e, errors.HfHubHTTPError), self.revision or "main"
        if (answer := getattr(http, "response", None)) is not None:
            if isinstance(http, errors.RepositoryNotFoundError):  # gated repositories too
                return (
                    f"{answer.status_code}: repository {self.repo_id} not found on the hub (or it is private or "
                    "gated: log in with `hf auth login`)"
                )
            if isinstance(http, errors.RevisionNotFoundError):
                return f"{answer.status_code}: revision {rev} of {self.repo_id} not found on the hub"
            if answer.status_code == 404:
                return f"404: file not found on the hub ({self.repo_id}/{self.filename}, revision {rev})"
            text = (
                f"the hub answered {answer.status_code} {answer.reason_phrase} to {answer.request.method} {self.path}"
            )
            if answer.status_code in (401, 403):
                text += " (a login may be needed: `hf auth login`, or the mirror refuses access)"
            if wait := (answer.headers.get("Retry-After") or "").strip():
                text += f" (it asks to retry after {wait}{' s' if wait.isdigit() else ''})"
            return text
        if _first(e, TimeoutError) is not None:  # socket time-outs, wrapped by httpx's ConnectTimeout / ReadTimeout
            return f"no answer within {self.budget:g} s ({self.stage})"
        if (down := _first(e, (ConnectionError, socket.gaierror))) is not None:  # refused, reset, DNS...
            what = "refused" if isinstance(down, ConnectionRefusedError) else f"failed ({down.strerror or _line(down)})"
            return f"cannot connect: connection to {self.host}:{self.port} {what}{self.proxy_note}"
        return f"{type(e).__name__}: {_line(e)}"  # e.g. the library's "not a Hugging Face Hub endpoint"


def _checksum_mismatch(path: Path, etag: str | None) -> str | None:
    """Why a download does not match the hub's sha256 (an LFS file's ETag; the library checks only the size)."""
    from huggingface_hub.utils.sha import sha_fileobj

    if etag is None or not re.fullmatch(r"[0-9a-f]{64}", etag):
        return None
    with open(path, "rb") as f:
        actual = sha_fileobj(f).hex()
    return None if actual == etag else f"its sha256 is {actual}, the hub's ETag says {etag}"


def fetch_hub_file(
    *,
    repo_id: str,
    filename: str,
    revision: str | None,
    endpoint: str | None,
    cache_dir: str | os.PathLike | None,
    progress: bool,
    hub_timeout: float,
    stall_timeout: float,
    notes: list[str],
) -> tuple[RunData, Path, str] | None:
    """``(run, path, "hub-cache" or "hub")`` from the cache, else a download; or ``None``, the reasons in ``notes``.
    A corrupt cached file is evicted and downloaded again; a bad download is evicted and raises
    :class:`~.checkpoints.CorruptCheckpointError`."""
    from .checkpoints import CorruptCheckpointError
    from .run_data import RunData

    cache = hub_cache_dir(cache_dir)
    where = f"{repo_id}/{filename}" + (f"@{revision}" if revision else "")
    cached = cached_hub_file(repo_id, filename, revision, cache)
    if cached is not None:
        try:
            return RunData.from_file(cached), cached, "hub-cache"
        except CorruptCheckpointError as e:
            notes.append(f"the cached hub file {cached} is not valid run data ({_line(e)}); {_evict(cached, cache)}")
            print(f"[provision] {notes[-1]}; downloading it again.", file=sys.stderr)
    else:
        notes.append(f"no cached copy of {where} in the Hugging Face cache {cache}")
    if hub_offline():
        notes.append("the hub is switched off (HF_HUB_OFFLINE=1), so it was not contacted")
        return None

    url = hub_endpoint(endpoint)
    try:
        download = _Download(url, repo_id, filename, revision, cache, hub_timeout)  # the decision's clock starts
    except ValueError as e:
        origin = " (from HF_ENDPOINT)" if not endpoint and os.environ.get("HF_ENDPOINT") else ""
        notes.append(f"the hub was not contacted: {e}{origin}")
        return None
    reason, error = download.wait(progress, stall_timeout), download.error
    if reason is None and type(error) is OSError and error.errno is None:
        # the library's size check ("Consistency check failed") raises a bare OSError (others carry an errno)
        raise CorruptCheckpointError(
            f"the download of {where} from {url} was cut short ({_line(error)}). It was not used; "
            "run the same call again to retry the download."
        ) from error
    if reason is not None or error is not None:
        spent = download.budget - (download.deadline - time.monotonic())
        notes.append(
            f"the hub {url} did not provide {where}: {reason or download.why(error)} (decided in {spent:.1f} s)"
        )
        return None

    path = Path(download.result)
    if (mismatch := _checksum_mismatch(path, download.etag)) is not None:
        raise CorruptCheckpointError(
            f"the file downloaded from {url} ({where}) does not match the hub's checksum ({mismatch}); it was not "
            f"used; {_evict(path, cache)}; run the same call again to download it again."
        )
    try:
        return RunData.from_file(path), path, "hub"
    except CorruptCheckpointError as e:
        raise CorruptCheckpointError(
            f"the file downloaded from {url} ({where}) is not valid run data: {e}\n{_evict(path, cache)}; "
            "run the same call again to download it again."
        ) from e


def download_full_run_data(
    out: str | os.PathLike | None = None,
    *,
    repo_id: str = HUB_REPO_ID,
    filename: str = HUB_FILENAME,
    revision: str | None = None,
    endpoint: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    hub_timeout: float = DEFAULT_HUB_TIMEOUT,
    stall_timeout: float = DEFAULT_STALL_TIMEOUT,
) -> Path:
    """The hub file in the Hugging Face cache (downloaded if needed), checked: its path, or with ``out`` an atomic
    copy there (never over a folder, a non-run file or a local run). Raises :class:`ModelUnavailableError`
    (within ``hub_timeout`` s; a stalled download after ``stall_timeout`` s) or ``CorruptCheckpointError``."""
    from .checkpoints import CorruptCheckpointError, write_bytes_atomically
    from .run_data import RunData

    notes: list[str] = []
    got = fetch_hub_file(
        repo_id=repo_id,
        filename=filename,
        revision=revision,
        endpoint=endpoint,
        cache_dir=cache_dir,
        progress=progress,
        hub_timeout=hub_timeout,
        stall_timeout=stall_timeout,
        notes=notes,
    )
    if got is None:
        raise ModelUnavailableError(
            f"could not download {repo_id}/{filename}:\n"
            + "".join(f"  - {n}\n" for n in notes)
            + "Connect to the internet (and unset HF_HUB_OFFLINE), or set HF_ENDPOINT / --endpoint to a reachable "
            "mirror; or train locally instead: `python -m part52_grokking_and_modular_arithmetic train`."
        )
    if out is None:
        return got[1]
    out = Path(out).expanduser()
    if out.is_dir():
        raise ValueError(f"{out} is a folder; --out (out) must be a file path, e.g. {out / HUB_FILENAME}")
    if out.exists():
        try:
            existing = RunData.from_file(out)
        except CorruptCheckpointError as e:
            raise CorruptCheckpointError(
                f"{out} exists and is not valid run data; refusing to overwrite it with the download. Move it "
                f"away or pass another --out (out). ({_line(e)[:160]})"
            ) from e
        if existing.config_stored or existing.resume is not None:
            raise ValueError(
                f"{out} holds a run trained locally; refusing to overwrite it with the hub file. Pass another "
                "--out (out)."
            )
    return write_bytes_atomically(got[1].read_bytes(), out)  # a temporary file beside it, then a rename
