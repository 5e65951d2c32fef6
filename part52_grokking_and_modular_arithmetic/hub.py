"""The Hugging Face hub half of provisioning: find the course's run file in the Hugging Face cache, or download it.

Built on ``huggingface_hub`` itself: ``try_to_load_from_cache`` finds a cached copy, ``get_hf_file_metadata``
asks for the file (``HEAD``), ``hf_hub_download(..., etag_timeout=..., tqdm_class=...)`` downloads it into the
Hugging Face cache, and its error classes (``RepositoryNotFoundError``, ``GatedRepoError``,
``RevisionNotFoundError``, ``RemoteEntryNotFoundError``, ``HfHubHTTPError`` and its ``response.status_code``)
say what went wrong. ``HF_ENDPOINT``, ``HF_HOME`` / ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` are honoured.

What the library cannot do, we add (each place says why):

* **settings read at call time**: ``huggingface_hub`` reads its environment once, when it is imported; a
  notebook that sets ``HF_HOME`` or ``HF_HUB_OFFLINE`` afterwards must still be obeyed;
* **one time budget for the whole decision** (:data:`DEFAULT_HUB_TIMEOUT` seconds: the metadata request and
  the start of the download, name resolution included): the library's timeouts apply per socket operation and
  its retries multiply them, and name resolution is not bounded at all; so each call runs in a daemon thread
  that is abandoned at the deadline (a hung connection never keeps the process alive either);
* **a stalled download is abandoned** (no new chunk for ``stall_timeout`` seconds), its ``.incomplete`` file
  removed: the library only bounds each read, and resumes a broken download several times;
* **a corrupt file is never used**: every file (cached or downloaded) is validated
  (:func:`~.checkpoints.load_run_data`) and an invalid one is removed from the Hugging Face cache;
* **a malformed endpoint or proxy** is named before anything is contacted.

Entry points: :func:`cached_hub_file`, :func:`download_full_run_data` (the command line's ``download``), and
:func:`fetch_hub_file` (used by :func:`.provision.load_full_run_data`).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from .run_data import RunData

# huggingface_hub (~0.3 s) and `.checkpoints` (transformer_lens, ~3 s) are imported inside the functions that
# need them, so that importing this module — e.g. for the command line's --help — stays cheap.

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
#: Seconds allowed for the whole hub decision (the file's metadata and the start of the download): within the
#: 5 s the course promises for "the hub cannot be reached", with room for the thread hand-over.
DEFAULT_HUB_TIMEOUT = 4.0
#: Seconds without progress (no new 1 MiB chunk) after which a download in progress is abandoned.
DEFAULT_STALL_TIMEOUT = 30.0


class ModelUnavailableError(RuntimeError):
    """No run data could be found locally, in the Hugging Face cache or on the hub (and training was not allowed)."""


# ----------------------------------------------------------------------------------------------------------
# Settings, read when called (huggingface_hub reads them once, at its import)
# ----------------------------------------------------------------------------------------------------------
def hub_offline() -> bool:
    """True when the hub is switched off: ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set now, or
    ``huggingface_hub.constants.is_offline_mode()`` (the variables as they were at its import)."""
    from huggingface_hub import constants

    now = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    return (now is not None and now.strip().upper() in {"1", "ON", "YES", "TRUE"}) or constants.is_offline_mode()


def hub_endpoint(endpoint: str | None = None) -> str:
    """``endpoint``, else ``$HF_ENDPOINT`` (now), else ``huggingface_hub.constants.ENDPOINT``
    (``https://huggingface.co``); without trailing slashes."""
    from huggingface_hub import constants

    url = (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).strip()
    return url.rstrip("/") if "://" in url.rstrip("/") else url  # "http://" stays as it is, for the message


def hub_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The Hugging Face hub cache: ``cache_dir``, else ``$HF_HUB_CACHE`` or ``$HF_HOME/hub`` as set now (a
    notebook may set them after ``huggingface_hub`` was imported), else ``huggingface_hub.constants.HF_HUB_CACHE``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expandvars(os.environ["HF_HUB_CACHE"])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
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


def _remove_from_hub_cache(path: Path, cache_dir: Path) -> bool:
    """Delete a cached hub file: its snapshot link and the blob it points to (huggingface_hub deletes whole
    revisions only). Only touches files inside ``cache_dir``; returns whether anything was removed."""
    cache_dir = cache_dir.resolve()
    removed = False
    for target in (path, path.resolve()):
        try:
            if cache_dir in target.parent.resolve().joinpath(target.name).parents and (
                target.is_file() or target.is_symlink()
            ):
                target.unlink()
                removed = True
        except OSError:
            pass
    return removed


# ----------------------------------------------------------------------------------------------------------
# The endpoint and its proxy: named before anything is contacted
# ----------------------------------------------------------------------------------------------------------
def _host_and_port(url: str, what: str) -> tuple[str, int]:
    """``(host, port)`` of an http(s) URL; ``ValueError`` naming ``what`` when it is not one (no host, a port
    outside 1-65535, a broken IPv6 address...). huggingface_hub would fail later with a less clear error."""
    expected = f"{what} must be an http(s) URL such as https://huggingface.co, got {url!r}"
    try:
        parts = urlsplit(url.strip())
        port = parts.port  # raises ValueError for a port outside 0-65535 or a broken address
    except ValueError as e:
        raise ValueError(f"{expected} ({e})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(expected)
    if port == 0:
        raise ValueError(f"{expected} (port 0 cannot be connected to)")
    return parts.hostname, port if port is not None else (443 if parts.scheme == "https" else 80)


def _proxy_for(endpoint: str) -> tuple[str, str] | None:
    """``(proxy URL, environment variable)`` of the proxy a request to ``endpoint`` goes through, if any (the
    same variables httpx reads), so that a dead proxy is named in the message."""
    parts = urlsplit(endpoint.strip())
    proxies = urllib.request.getproxies()
    for key in (parts.scheme, "all"):
        proxy = proxies.get(key)
        if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
            return (proxy if "://" in proxy else f"http://{proxy}"), f"{key.upper()}_PROXY"
    return None


def _first_hop(endpoint: str) -> tuple[str, int, str]:
    """``(host, port, note)`` of the connection a request to ``endpoint`` opens first: the proxy's when one
    applies (``note`` then names it). ``ValueError`` for a malformed endpoint or proxy."""
    host, port = _host_and_port(endpoint, "the hub endpoint")
    proxy = _proxy_for(endpoint)
    if proxy is None:
        return host, port, ""
    host, port = _host_and_port(proxy[0], f"the proxy {proxy[1]}")
    return host, port, f" (the proxy set by {proxy[1]}={proxy[0]})"


# ----------------------------------------------------------------------------------------------------------
# Why the hub did not provide the file: from huggingface_hub's error classes and the network errors behind them
# ----------------------------------------------------------------------------------------------------------
class _HubRequest:
    """What is asked of which hub, and the time budget of the decision (shared by the steps of :func:`fetch_hub_file`)."""

    def __init__(self, url: str, repo_id: str, filename: str, revision: str | None, cache: Path, budget: float) -> None:
        from huggingface_hub import hf_hub_url

        self.url, self.repo_id, self.filename, self.revision, self.cache = url, repo_id, filename, revision, cache
        self.budget = budget
        self.deadline = time.monotonic() + budget
        self.host, self.port, self.proxy_note = _first_hop(url)
        self.file_url = hf_hub_url(repo_id, filename, revision=revision, endpoint=url)
        self.file_path = self.file_url[len(url) :] if self.file_url.startswith(url) else self.file_url  # for messages
        self.revision_label = revision or "main"
        #: where huggingface_hub writes this repository's files, ``.incomplete`` ones included
        self.blobs_dir = cache / f"models--{repo_id.replace('/', '--')}" / "blobs"

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def timed_out(self, stage: str) -> str:
        return f"no answer within {self.budget:g} s ({stage})"


def _in_chain(e: BaseException | None, cls: type | tuple[type, ...]) -> BaseException | None:
    """The first error of ``e``'s chain (``e``, its cause, its cause's cause...) that is an instance of ``cls``:
    huggingface_hub and httpx wrap the error that matters (an HTTP answer, a refused connection)."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, cls):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _describe_hub_error(e: BaseException, hub: _HubRequest, stage: str) -> str:
    """One line saying why the hub did not provide the file (``stage``: the request that failed)."""
    import socket

    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if _in_chain(e, OfflineModeIsEnabled) is not None:
        return "huggingface_hub is in offline mode (HF_HUB_OFFLINE=1)"
    if isinstance(http := _in_chain(e, HfHubHTTPError), HfHubHTTPError) and http.response is not None:
        status = http.response.status_code
        if isinstance(http, GatedRepoError):
            return f"{status}: the repository {hub.repo_id} is gated: it needs a login (`hf auth login`)"
        if isinstance(http, RepositoryNotFoundError):
            return f"{status}: repository {hub.repo_id} not found on the hub (or it is private or gated: log in with `hf auth login`)"
        if isinstance(http, RevisionNotFoundError):
            return f"{status}: revision {hub.revision_label} of {hub.repo_id} not found on the hub"
        if isinstance(http, RemoteEntryNotFoundError) or status == 404:
            return f"404: file not found on the hub ({hub.repo_id}/{hub.filename}, revision {hub.revision_label})"
        return _describe_status(status, http.response, hub)
    if _in_chain(e, TimeoutError) is not None:  # socket timeouts, wrapped by httpx's ConnectTimeout / ReadTimeout
        return hub.timed_out(stage)
    if (os_error := _in_chain(e, (ConnectionRefusedError, socket.gaierror, ConnectionError))) is not None:
        # through a proxy, the connection that failed is the proxy's; else the request's (a redirect may lead
        # to another host than the endpoint)
        target = (hub.host, hub.port) if hub.proxy_note else _connection_target(e) or (hub.host, hub.port)
        note = hub.proxy_note
        if isinstance(os_error, ConnectionRefusedError):
            return f"cannot connect: connection to {target[0]}:{target[1]} refused{note}"
        if isinstance(os_error, socket.gaierror):
            return f"cannot connect: DNS lookup of {target[0]} failed ({os_error.strerror or os_error}){note}"
        return f"cannot connect to {target[0]}:{target[1]} ({_first_line(os_error)}){note}"
    if isinstance(e, LocalEntryNotFoundError):
        return f"the hub could not be reached ({_first_line(e)})"
    return f"the download failed ({type(e).__name__}: {_first_line(e)})"


def _connection_target(e: BaseException) -> tuple[str, int] | None:
    """``(host, port)`` of the request behind an httpx error (a redirect may lead to another host)."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        try:
            url = e.request.url  # httpx errors carry their request; the property raises when it has none
            return str(url.host), int(url.port or (443 if url.scheme == "https" else 80))
        except (AttributeError, RuntimeError, TypeError, ValueError):
            pass
        e = e.__cause__ or e.__context__
    return None


def _describe_status(status: int, response, hub: _HubRequest) -> str:
    from http import HTTPStatus

    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    try:
        method = str(response.request.method)
    except (AttributeError, RuntimeError):  # httpx raises RuntimeError when a response has no request
        method = ""
    request = f" to {method} {hub.file_path}" if method else f" for {hub.file_path}"
    hint = " (a login may be needed: `hf auth login`, or the mirror refuses access)" if status in (401, 403) else ""
    wait = (response.headers.get("Retry-After") or "").strip()
    if wait:
        hint += f" (it asks to retry after {wait} s)" if wait.isdigit() else f" (it asks to retry after {wait})"
    return f"the hub answered {status} {phrase}{request}{hint}"


# ----------------------------------------------------------------------------------------------------------
# Calls with a deadline: the library bounds each socket operation, not a whole request (name resolution,
# retries, redirects), so each call runs in a daemon thread that is abandoned at the decision's deadline
# ----------------------------------------------------------------------------------------------------------
def _in_daemon_thread(fn, name: str) -> tuple[threading.Thread, dict]:
    """Start ``fn()`` in a daemon thread (a hung network call never keeps the process alive). The returned
    dict receives ``"value"`` or ``"error"`` when it ends."""
    box: dict = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread, box


def _metadata_problem(hub: _HubRequest) -> str | None:
    """Ask the hub for the file's metadata (``HEAD``, ``get_hf_file_metadata``, no retries) within the
    decision's budget. ``None`` when the hub has the file, else the reason. (``hf_hub_download`` asks the same
    but turns connection and server errors into "not in the cache"; asked first, the reason stays exact.)"""
    from huggingface_hub import get_hf_file_metadata

    stage = f"asked for the file's metadata: HEAD {hub.file_path}"
    thread, box = _in_daemon_thread(
        lambda: get_hf_file_metadata(hub.file_url, timeout=max(0.1, hub.left()), retry_on_errors=False), "hub-metadata"
    )
    thread.join(max(0.0, hub.left()))
    if thread.is_alive():
        return hub.timed_out(stage)
    if "error" in box:
        return _describe_hub_error(box["error"], hub, stage)
    meta = box["value"]
    if meta.commit_hash is None or meta.etag is None:
        redirect = f" (it redirected to {meta.location})" if meta.location and meta.location != hub.file_url else ""
        return (
            f"the endpoint answered HEAD {hub.file_path}{redirect} without the X-Repo-Commit / ETag headers of a "
            "Hugging Face hub: check HF_ENDPOINT"
        )
    return None


# ----------------------------------------------------------------------------------------------------------
# The download, watched: hf_hub_download only bounds each read (and resumes a broken download several
# times), so progress is watched through its tqdm_class and a stalled download is abandoned
# ----------------------------------------------------------------------------------------------------------
class _DownloadAbandoned(Exception):
    """Raised inside the download thread (from its progress bar) once the download has been given up on."""


class _TruncatedDownload(Exception):
    """huggingface_hub received fewer bytes than announced."""


class _HubWarnings(logging.Handler):
    """Keeps the last warning ``huggingface_hub`` logs while we wait (e.g. "Error while downloading from URL:
    connection refused ... Trying to resume download"): hf_hub_download retries a failing download itself, so
    when our deadline comes first, its own report is the real reason."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.last = record.getMessage().strip().splitlines()[0]
        except Exception:  # noqa: BLE001 - a log record we cannot format is no reason to fail
            pass

    def __enter__(self) -> _HubWarnings:
        logging.getLogger("huggingface_hub").addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger("huggingface_hub").removeHandler(self)

    def explain(self, reason: str) -> str:
        return reason if self.last is None else f"{reason}; huggingface_hub reported: {self.last}"


class _DownloadWatch:
    """Progress of one download, written by the download thread (its progress bar: created once the ``GET`` is
    answered, updated at every chunk) and read by the watchdog."""

    def __init__(self, blobs_dir: Path) -> None:
        self.blobs_dir = blobs_dir
        self.bytes = 0
        self.last_progress: float | None = None  # time.monotonic() of the answer or the latest chunk; None before
        self.abandoned = False
        self._before = set(self._incomplete())

    def _incomplete(self) -> list[Path]:
        try:
            return list(self.blobs_dir.glob("*.incomplete"))
        except OSError:
            return []

    def saw_answer(self) -> None:
        self.last_progress = time.monotonic()

    def saw_bytes(self, n: int) -> None:
        if n > 0:
            self.bytes += n
            self.last_progress = time.monotonic()

    def remove_partial_files(self) -> None:
        """Remove the ``.incomplete`` files this download created (huggingface_hub would resume from them)."""
        for f in self._incomplete():
            if f not in self._before:
                try:
                    f.unlink()
                except OSError:  # e.g. still open on Windows; huggingface_hub never reads these unique names
                    pass


def _watched_tqdm_class(watch: _DownloadWatch, show: bool):
    """A tqdm class for ``hf_hub_download``: records every byte in ``watch`` and stops the download (raises in
    the download thread) once ``watch.abandoned`` is set; silent unless ``show``."""
    from tqdm.auto import tqdm

    class WatchedTqdm(tqdm):
        def __init__(self, *args, **kwargs):
            if not show:
                kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            watch.saw_answer()

        def update(self, n=1):
            if watch.abandoned:
                raise _DownloadAbandoned("the download was abandoned")
            watch.saw_bytes(int(n or 0))
            return super().update(n)

    return WatchedTqdm


#: Bytes per progress report while we download: huggingface_hub reads the body in chunks of
#: ``constants.DOWNLOAD_CHUNK_SIZE`` (10 MB) and reports nothing in between, which would make a slow link look
#: stalled. Set for the duration of our download when the library's chunk is larger (only the granularity
#: changes; the bytes written are the same).
_PROGRESS_CHUNK = 1 << 20


def _size_text(n: int) -> str:
    """``1 MiB``, ``256 bytes``: a chunk size in words."""
    return f"{n >> 20} MiB" if n >= 1 << 20 and n % (1 << 20) == 0 else f"{n:,} bytes"


class _FinerProgressChunks:
    """Context manager: ``huggingface_hub.constants.DOWNLOAD_CHUNK_SIZE`` at most :data:`_PROGRESS_CHUNK` inside."""

    def __enter__(self) -> int:
        from huggingface_hub import constants

        self.before = constants.DOWNLOAD_CHUNK_SIZE
        constants.DOWNLOAD_CHUNK_SIZE = min(self.before, _PROGRESS_CHUNK)
        return constants.DOWNLOAD_CHUNK_SIZE

    def __exit__(self, *exc) -> None:
        from huggingface_hub import constants

        constants.DOWNLOAD_CHUNK_SIZE = self.before


def _download_with_watchdog(hub: _HubRequest, progress: bool, stall_timeout: float) -> tuple[Path | None, str | None]:
    """``hf_hub_download`` in a daemon thread, watched: the ``GET`` must be answered before the decision's
    deadline, and then a chunk must arrive every ``stall_timeout`` seconds. Returns ``(path, None)`` or
    ``(None, reason)``; an abandoned download leaves no ``.incomplete`` file behind."""
    from huggingface_hub import hf_hub_download

    watch = _DownloadWatch(hub.blobs_dir)
    with _FinerProgressChunks() as chunk, _HubWarnings() as warnings:
        thread, box = _in_daemon_thread(
            lambda: hf_hub_download(
                hub.repo_id,
                hub.filename,
                revision=hub.revision,
                endpoint=hub.url,
                cache_dir=str(hub.cache),
                etag_timeout=max(0.1, hub.left()),
                tqdm_class=_watched_tqdm_class(watch, progress),
            ),
            "hub-download",
        )
        try:
            reason = _watch(thread, watch, hub, stall_timeout, chunk)
            reason = None if reason is None else warnings.explain(reason)
        except BaseException:  # Ctrl-C while waiting: stop the download and keep nothing partial
            reason = "interrupted"
            raise
        finally:
            if reason is not None:
                watch.abandoned = True  # the thread stops at its next chunk; meanwhile it is a daemon
                watch.remove_partial_files()
    if reason is not None:
        return None, reason
    if "error" in box:
        watch.remove_partial_files()  # huggingface_hub keeps a failed download's .incomplete file to resume it
        error = box["error"]
        # huggingface_hub's size check ("Consistency check failed") raises a bare OSError, no class of its own;
        # errors of the network or the disk are subclasses or carry an errno
        if type(error) is OSError and error.errno is None:
            raise _TruncatedDownload(_first_line(error)) from error
        return None, _describe_hub_error(error, hub, f"GET {hub.file_path}")
    return Path(box["value"]), None


def _watch(
    thread: threading.Thread, watch: _DownloadWatch, hub: _HubRequest, stall_timeout: float, chunk: int
) -> str | None:
    """Wait for the download thread; the reason to abandon it, or ``None`` once it has ended."""
    while thread.is_alive():
        thread.join(0.1)
        now = time.monotonic()
        if not thread.is_alive():
            break
        if watch.last_progress is None and now >= hub.deadline:
            return hub.timed_out(f"the download did not start: GET {hub.file_path}")
        if watch.last_progress is not None and now - watch.last_progress >= stall_timeout:
            return (
                f"the download stalled: less than {_size_text(chunk)} arrived in {stall_timeout:g} s "
                f"({watch.bytes:,} bytes saved); it was abandoned and nothing partial was kept"
            )
    return None


# ----------------------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------------------
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
    """The hub file's run data: the cached copy, else a download. Returns ``(run, path, how)`` (a
    :class:`~.run_data.RunData` validated once; ``how``:
    ``"hub-cache"`` or ``"hub"``) or ``None`` with the reasons appended to ``notes``. A corrupt cached file is
    removed (and reported in ``notes``), then downloaded again; a corrupt download is removed and raises
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
            gone = _remove_from_hub_cache(cached, cache)
            notes.append(
                f"the cached hub file {cached} is not valid run data ({e}); "
                + ("it was removed from the Hugging Face cache" if gone else "remove it from the Hugging Face cache")
            )
            print(f"[provision] {notes[-1]}; downloading it again.", file=sys.stderr)
    else:
        notes.append(f"no cached copy of {where} in the Hugging Face cache {cache}")

    if hub_offline():
        notes.append("the hub is switched off (HF_HUB_OFFLINE=1), so it was not contacted")
        return None
    url = hub_endpoint(endpoint)
    try:
        hub = _HubRequest(url, repo_id, filename, revision, cache, hub_timeout)  # the decision's clock starts here
    except ValueError as e:
        origin = "" if endpoint else " (from HF_ENDPOINT)" if os.environ.get("HF_ENDPOINT") else ""
        notes.append(f"the hub was not contacted: {e}{origin}")
        return None

    def give_up(reason: str) -> None:
        notes.append(f"the hub {url} did not provide {where}: {reason} (decided in {hub.budget - hub.left():.1f} s)")

    reason = _metadata_problem(hub)
    if reason is not None:
        give_up(reason)
        return None
    try:
        downloaded, reason = _download_with_watchdog(hub, progress, stall_timeout)
    except _TruncatedDownload as e:
        raise CorruptCheckpointError(
            f"the download of {where} from {url} was cut short ({e}). It was not used; "
            "run the same call again to retry the download."
        ) from e
    if downloaded is None:
        give_up(reason)
        return None
    try:
        data = RunData.from_file(downloaded)
    except CorruptCheckpointError as e:
        gone = _remove_from_hub_cache(downloaded, cache)
        raise CorruptCheckpointError(
            f"the file downloaded from {url} ({where}) is not valid run data: {e}\n"
            + (
                f"It was removed from the Hugging Face cache ({cache}); run the same call again to download it again."
                if gone
                else f"Remove {downloaded} from the Hugging Face cache ({cache}) and run the call again."
            )
        ) from e
    return data, downloaded, "hub"


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
    """Hub only: make sure the hub file is in the Hugging Face cache (downloading it if needed), validate it,
    and return its path — or, with ``out``, copy it there (atomically) and return ``out``.

    Raises :class:`ModelUnavailableError` (within ``hub_timeout`` s when the hub cannot be reached, does not
    answer or fails; ``stall_timeout`` s after the last chunk of a download that stalls) or
    :class:`~.checkpoints.CorruptCheckpointError`.
    """
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
    _, path, _ = got
    if out is None:
        return path
    out = Path(out).expanduser()
    _check_copy_destination(out)
    _copy_atomically(path, out)
    return out


def _check_copy_destination(out: Path) -> None:
    """``download --out``: never replace a folder, a file that is no run data, or a run trained locally (only an
    earlier copy of a hub file)."""
    from .checkpoints import CorruptCheckpointError, load_run_data

    if out.is_dir():
        raise ValueError(f"{out} is a folder; --out (out) must be a file path, e.g. {out / HUB_FILENAME}")
    if not out.exists():
        return
    try:
        existing = load_run_data(out)
    except CorruptCheckpointError as e:
        raise CorruptCheckpointError(
            f"{out} exists and is not valid run data; refusing to overwrite it with the download. Move it away or "
            f"pass another --out (out). ({str(e).splitlines()[0][:160]})"
        ) from e
    if isinstance(existing.get("config"), dict) or "resume" in existing:
        raise ValueError(
            f"{out} holds a run trained locally; refusing to overwrite it with the hub file. Pass another --out (out)."
        )


def _copy_atomically(source: Path, out: Path) -> None:
    """Copy ``source`` to ``out`` through a temporary file beside it (named like those of
    :func:`~.checkpoints.write_bytes_atomically`, so a killed copy's leftover is recognised), then rename."""
    from .checkpoints import RunFileWriteError, _temp_path, describe_os_error

    tmp = _temp_path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, tmp)
        os.replace(tmp, out)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if not isinstance(e, OSError):
            raise
        raise RunFileWriteError(
            e.errno,
            f"could not copy the hub file to {out}: {describe_os_error(e)}; the Hugging Face cache still holds it at {source}",
        ) from e
