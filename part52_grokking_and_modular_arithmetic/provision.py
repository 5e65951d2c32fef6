"""Provisioning: get the checkpoint history ("full run data") of the grokking run, whatever the machine offers.

:func:`load_full_run_data` tries, in order:

1. **a local file**: ``path`` if given, else :func:`default_run_path` (see there: ``$PART52_RUN_PATH``; else
   ``Grokking/large_files/full_run_data.pth`` in a source checkout; else ``full_run_data.pth`` in the per-user
   data folder :func:`user_data_dir`). A file that exists but cannot be read or validated raises
   :class:`~.checkpoints.CorruptCheckpointError`; it is never skipped and never deleted (the message says what
   to do).
2. **the Hugging Face hub** (the course's file, ``callummcdougall/grokking_full_run_data``), through the real
   ``huggingface_hub.hf_hub_download``: first a cached copy in the Hugging Face cache (no network), then, if
   the hub is not switched off (``HF_HUB_OFFLINE=1``), a download. ``HF_ENDPOINT``, ``HF_HOME`` /
   ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` are read when this function runs, so setting them after import
   works. A cached copy is used as it is (no check for a newer revision; pass ``revision`` to pin one). The
   downloaded file is validated (keys, shapes); a corrupt or truncated one (e.g. an HTML error page served
   with status 200) is removed from the Hugging Face cache (so the next call downloads it again); then step 3
   follows, saying why, or — with ``allow_training=False`` — :class:`~.checkpoints.CorruptCheckpointError`
   is raised. A valid file stays in the Hugging Face cache; nothing is copied. A malformed endpoint
   (``HF_ENDPOINT="not a url"``, a port outside 1-65535) is reported and the hub skipped.
3. **local training** with the default recipe (``TrainConfig()`` or ``train_config``), saved to the local
   path of step 1 (interrupted runs resume there), if ``allow_training``; the reason is printed first.
   Otherwise :class:`ModelUnavailableError` says what was tried and how to fix it.

**Nothing hangs.** The whole "can the hub serve the file?" decision — a TCP probe of the endpoint, the file's
metadata (``HEAD``, through ``huggingface_hub.get_hf_file_metadata`` with its retries off) and the start of
the download (the answer to the ``GET``) — fits in ``hub_timeout`` seconds (default
:data:`DEFAULT_HUB_TIMEOUT`), whatever the endpoint does: refuse, never answer, answer ``HEAD`` but not
``GET``, or fail (``5xx``, ``4xx``). The reason is reported as it is: "connection refused", "the hub answered
500 Internal Server Error", "404: file not found on the hub (repo/file, revision main)", "no answer within
8 s". A download that has started and then makes no progress for ``stall_timeout`` seconds (default
:data:`DEFAULT_STALL_TIMEOUT`; progress is seen per 1 MiB chunk) is abandoned. The download runs in a daemon thread (a hung connection never keeps
the process alive), into ``huggingface_hub``'s own ``.incomplete`` file, which is removed when the download is
abandoned: the cache only ever holds complete files, and those are validated before use. Then step 3 follows.

The returned dict is in the format of :mod:`.checkpoints` plus a ``"source"`` string saying where it came
from (see :func:`run_data_source`). The hub file is in paper layout, holds no ``config`` or
``train_indices``, has ``test_losses`` once per 10 epochs, and its analysed checkpoint is epoch 40,000
(index 400): see :func:`analysed_checkpoint_index` and :func:`run_config`.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from .config import TrainConfig

# `.checkpoints` (and through it transformer_lens, ~3 s) is imported inside the functions that read files, so
# that importing this module — e.g. for the command line's --help — stays cheap.

__all__ = [
    "HUB_REPO_ID",
    "HUB_FILENAME",
    "ANALYSED_EPOCH",
    "ENV_RUN_PATH",
    "ENV_HOME",
    "DATA_DIR_NAME",
    "DEFAULT_RUN_PATH",
    "DEFAULT_HUB_TIMEOUT",
    "DEFAULT_STALL_TIMEOUT",
    "ModelUnavailableError",
    "default_run_path",
    "user_data_dir",
    "checkout_root",
    "hub_endpoint",
    "hub_cache_dir",
    "hub_offline",
    "probe_endpoint",
    "cached_hub_file",
    "download_full_run_data",
    "load_full_run_data",
    "analysed_checkpoint_index",
    "run_data_source",
    "source_kind",
    "run_config",
]

HUB_REPO_ID = "callummcdougall/grokking_full_run_data"
HUB_FILENAME = "full_run_data.pth"
#: The epoch of the checkpoint the course analyses (Nanda et al. 2023, arXiv 2301.05217).
ANALYSED_EPOCH = 40_000
#: Environment variable: full path of the local run file (overrides every other default).
ENV_RUN_PATH = "PART52_RUN_PATH"
#: Environment variable: the per-user data folder (used when the package does not run from a checkout).
ENV_HOME = "PART52_GROKKING_HOME"
#: Name of the per-user data folder (under ``$XDG_DATA_HOME`` or ``~/.local/share``) used outside a checkout.
DATA_DIR_NAME = "part52_grokking_and_modular_arithmetic"
RUN_FILENAME = "full_run_data.pth"
#: Seconds allowed for the whole hub decision: TCP probe, the file's metadata and the first bytes of the download.
DEFAULT_HUB_TIMEOUT = 8.0
#: Seconds without progress (no new 1 MiB chunk) after which a download in progress is abandoned.
DEFAULT_STALL_TIMEOUT = 30.0

#: Fields of :class:`TrainConfig` that define *which* run a file holds (length and intervals excluded).
_RUN_DEFINING = ("p", "fn", "frac_train", "seed", "lr", "weight_decay", "betas", "warmup_steps")
#: The recipe of the hub run (the paper's mainline, 50k epochs, checkpoint every 100, test loss every 10).
_HUB_RECIPE = dict(TrainConfig().to_dict(), epochs=50_000, save_every=100, test_every=10)

_FIX_HINT = (
    "To fix this, either\n"
    "  * connect to the internet (and unset HF_HUB_OFFLINE), or set HF_ENDPOINT to a reachable Hugging Face mirror;\n"
    "  * or train the model locally: `python -m part52_grokking_and_modular_arithmetic train --out {path}`,\n"
    "    or call load_full_run_data(allow_training=True);\n"
    "  * or put an existing run file at {path} (or set {env} to its path)."
)


class ModelUnavailableError(RuntimeError):
    """No run data could be found locally, in the Hugging Face cache or on the hub (and training was not allowed)."""


# ----------------------------------------------------------------------------------------------------------
# Where files live
# ----------------------------------------------------------------------------------------------------------
def checkout_root() -> Path | None:
    """The repository root when the package runs from a source checkout (it holds ``Grokking/`` and
    ``pyproject.toml`` next to the package folder; an editable install counts), else ``None`` (a package
    installed from pip, e.g. on Colab)."""
    root = Path(__file__).resolve().parent.parent
    if (root / "Grokking").is_dir() and (root / "pyproject.toml").is_file():
        return root
    return None


def user_data_dir() -> Path:
    """The per-user data folder of the course, used when the package does not run from a checkout:
    ``$PART52_GROKKING_HOME`` when set, else ``$XDG_DATA_HOME/part52_grokking_and_modular_arithmetic`` when
    ``XDG_DATA_HOME`` is set, else ``~/.local/share/part52_grokking_and_modular_arithmetic`` (on every system; on
    Colab that is ``/root/.local/share/…``). A data folder, not a cache: a trained run costs minutes of CPU."""
    if os.environ.get(ENV_HOME):
        return Path(os.environ[ENV_HOME]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / DATA_DIR_NAME


def default_run_path() -> Path:
    """The local run file (read if it exists, written by local training), decided when called:

    1. ``$PART52_RUN_PATH`` (the file itself) when that variable is set;
    2. else, when the package runs from a source checkout (:func:`checkout_root`),
       ``<checkout>/Grokking/large_files/full_run_data.pth``;
    3. else (a package installed from pip, e.g. on Colab) ``<data folder>/full_run_data.pth``, the data folder
       being ``$PART52_GROKKING_HOME``, else ``$XDG_DATA_HOME/part52_grokking_and_modular_arithmetic``, else
       ``~/.local/share/part52_grokking_and_modular_arithmetic`` (:func:`user_data_dir`).

    The ``path`` argument of :func:`load_full_run_data` (the command line's ``--out``) overrides all three.
    """
    if os.environ.get(ENV_RUN_PATH):
        return Path(os.environ[ENV_RUN_PATH]).expanduser()
    root = checkout_root()
    if root is not None:
        return root / "Grokking" / "large_files" / RUN_FILENAME
    return user_data_dir() / RUN_FILENAME


#: :func:`default_run_path` as it was when the package was imported.
DEFAULT_RUN_PATH: Path = default_run_path()


# ----------------------------------------------------------------------------------------------------------
# The hub: settings read at call time, a bounded reachability probe, the cache
# ----------------------------------------------------------------------------------------------------------
def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """True when the hub is switched off: ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set now, or
    ``huggingface_hub`` itself in offline mode (the variable as it was at its import)."""
    if _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE")):
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _without_trailing_slash(url: str) -> str:
    """``url`` without surrounding spaces and trailing slashes (but ``"http://"`` stays as it is, for messages)."""
    url = url.strip()
    return url.rstrip("/") if "://" in url.rstrip("/") else url


def hub_endpoint(endpoint: str | None = None) -> str:
    """``endpoint``, else ``$HF_ENDPOINT`` (now), else huggingface_hub's endpoint (``https://huggingface.co``)."""
    if endpoint:
        return _without_trailing_slash(endpoint)
    if os.environ.get("HF_ENDPOINT"):
        return _without_trailing_slash(os.environ["HF_ENDPOINT"])
    from huggingface_hub import constants

    return constants.ENDPOINT.rstrip("/")


def hub_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The Hugging Face hub cache, read from the environment now (same precedence as huggingface_hub:
    ``HF_HUB_CACHE``, ``HUGGINGFACE_HUB_CACHE``, ``$HF_HOME/hub``, ``$XDG_CACHE_HOME/huggingface/hub``,
    ``~/.cache/huggingface/hub``)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.environ[var])).expanduser()
    if os.environ.get("HF_HOME"):
        home = Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser()
    else:
        home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "huggingface"
    return home / "hub"


def _host_and_port(url: str, what: str) -> tuple[str, int]:
    """``(host, port)`` of an http(s) URL; ``ValueError`` naming ``what`` when it is not one (no host, a port
    outside 1-65535, a broken IPv6 address...)."""
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
    """``(proxy URL, environment variable)`` of the proxy a request to ``endpoint`` goes through, if any."""
    parts = urlsplit(endpoint.strip())
    proxies = urllib.request.getproxies()
    for key in (parts.scheme, "all"):
        proxy = proxies.get(key)
        if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
            return (proxy if "://" in proxy else f"http://{proxy}"), f"{key.upper()}_PROXY"
    return None


def _probe_target(endpoint: str) -> tuple[str, int]:
    """The (host, port) a connection to ``endpoint`` opens first: the proxy's when one applies."""
    host, port = _host_and_port(endpoint, "the hub endpoint")
    proxy = _proxy_for(endpoint)
    if proxy is not None:
        return _host_and_port(proxy[0], f"the proxy {proxy[1]}")
    return host, port


def probe_endpoint(endpoint: str, timeout: float = 5.0) -> str | None:
    """Try to open a TCP connection to the hub endpoint (or its proxy) within ``timeout`` seconds.

    Returns ``None`` when it connects, else a short reason ("DNS lookup failed …", "connection refused …",
    "no answer within 5 s …"). Name resolution runs inside the time limit too (in a daemon thread), so this
    never takes longer than ``timeout``.
    """
    host, port = _probe_target(endpoint)
    proxy = _proxy_for(endpoint)
    outcome: list[str | None] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(None)
        except socket.gaierror as e:
            outcome.append(f"DNS lookup of {host} failed ({e.strerror or e})")
        except ConnectionRefusedError:
            outcome.append(f"connection to {host}:{port} refused")
        except (TimeoutError, socket.timeout):
            outcome.append(f"no answer from {host}:{port} within {timeout:.1f} s")
        except OSError as e:
            outcome.append(f"cannot connect to {host}:{port} ({e.strerror or e})")

    thread = threading.Thread(target=attempt, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    reason = outcome[0] if outcome else f"no answer from {host}:{port} within {timeout:.1f} s"
    if reason is not None and proxy is not None:
        reason += f" (the proxy set by {proxy[1]}={proxy[0]})"
    return reason


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
    """Delete a cached hub file (its snapshot entry and the blob it points to). Only touches files inside
    ``cache_dir``; returns whether anything was removed."""
    cache_dir = cache_dir.resolve()
    targets = [path, path.resolve()]
    removed = False
    for target in targets:
        try:
            if cache_dir in target.parent.resolve().joinpath(target.name).parents and (target.is_file() or target.is_symlink()):
                target.unlink()
                removed = True
        except OSError:
            pass
    return removed


def _hub_error_class(*names: str) -> type[BaseException]:
    """The first of ``names`` that the installed ``huggingface_hub`` defines (in ``huggingface_hub.errors`` on
    recent releases, ``huggingface_hub.utils`` on older ones), else a placeholder nothing is an instance of: the
    fallback to local training must work on every release that ``pyproject.toml`` admits."""
    import importlib

    for module_name in ("huggingface_hub.errors", "huggingface_hub.utils"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for name in names:
            cls = getattr(module, name, None)
            if isinstance(cls, type) and issubclass(cls, BaseException):
                return cls
    return type(f"_Absent{names[0]}", (Exception,), {})


def _accepts(fn, name: str) -> bool:
    """Whether ``fn`` takes a keyword argument ``name`` (keywords differ between huggingface_hub releases)."""
    import inspect

    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _status_phrase(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _http_answer(e: BaseException) -> tuple[int, str | None, str, str | None] | None:
    """``(status, X-Error-Code, method, Retry-After)`` of the HTTP answer behind an error, looking through its causes."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        response = getattr(e, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(status, int) and status >= 400:
            headers = getattr(response, "headers", None) or {}
            try:
                method = str(getattr(getattr(response, "request", None), "method", "") or "")
            except RuntimeError:  # httpx raises when a response has no request attached
                method = ""
            return status, headers.get("X-Error-Code"), method, headers.get("Retry-After")
        e = e.__cause__ or e.__context__
    return None


def _caused_by(e: BaseException, *words: str) -> BaseException | None:
    """The first error in ``e``'s chain whose class name contains one of ``words`` (library-neutral: httpx and
    requests name their errors alike), or that is a builtin ``TimeoutError`` when ``"Timeout"`` is asked for."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        name = type(e).__name__
        if any(w in name for w in words) or ("Timeout" in words and isinstance(e, TimeoutError)):
            return e
        e = e.__cause__ or e.__context__
    return None


def _describe_hub_error(e: BaseException, hub: "_HubRequest") -> str:
    """One line saying why the hub did not provide the file: the HTTP status when there was one, else the
    network error, else the error itself."""
    if isinstance(e, _hub_error_class("OfflineModeIsEnabled")):
        return "huggingface_hub is in offline mode (HF_HUB_OFFLINE=1)"
    answer = _http_answer(e)
    if answer is not None:
        return _describe_status(*answer, hub=hub)
    if _caused_by(e, "Timeout") is not None:
        return f"no answer within {hub.budget:g} s"
    if (cause := _caused_by(e, "ConnectError", "ConnectionError", "ProxyError")) is not None:
        return f"cannot connect ({_first_line(cause)})"
    if isinstance(e, _hub_error_class("LocalEntryNotFoundError")):
        return f"the hub could not be reached ({_first_line(e)})"
    return f"the download failed ({type(e).__name__}: {_first_line(e)})"


def _describe_status(status: int, error_code: str | None, method: str, retry_after: str | None = None, *, hub: "_HubRequest") -> str:
    if error_code == "RepoNotFound":
        return f"{status}: repository {hub.repo_id} not found on the hub (or it is private or gated: log in with `hf auth login`)"
    if error_code == "RevisionNotFound":
        return f"{status}: revision {hub.revision_label} of {hub.repo_id} not found on the hub"
    if error_code == "GatedRepo":
        return f"{status}: the repository {hub.repo_id} is gated: it needs a login (`hf auth login`)"
    if status == 404:
        return f"404: file not found on the hub ({hub.repo_id}/{hub.filename}, revision {hub.revision_label})"
    request = f" to {method} {hub.file_path}" if method else f" for {hub.file_path}"
    hint = " (a login may be needed: `hf auth login`, or the mirror refuses access)" if status in (401, 403) else ""
    if retry_after and retry_after.strip():
        wait = retry_after.strip()
        hint += f" (it asks to retry after {wait} s)" if wait.isdigit() else f" (it asks to retry after {wait})"
    return f"the hub answered {status} {_status_phrase(status)}{request}{hint}"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class _HubRequest:
    """What is asked of which hub, and the time budget of the decision (shared by the steps of :func:`_fetch_hub`)."""

    def __init__(self, url: str, repo_id: str, filename: str, revision: str | None, cache: Path, budget: float) -> None:
        self.url, self.repo_id, self.filename, self.revision, self.cache = url, repo_id, filename, revision, cache
        self.budget = budget
        self.deadline = time.monotonic() + budget
        from huggingface_hub import hf_hub_url

        self.file_url = hf_hub_url(repo_id, filename, revision=revision, endpoint=url)
        self.file_path = self.file_url[len(url):] if self.file_url.startswith(url) else self.file_url  # for messages

    @property
    def revision_label(self) -> str:
        return self.revision or "main"

    @property
    def blobs_dir(self) -> Path:
        """Where huggingface_hub writes this repository's files, ``.incomplete`` ones included."""
        return self.cache / f"models--{self.repo_id.replace('/', '--')}" / "blobs"

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def timed_out(self, stage: str) -> str:
        return f"no answer within {self.budget:g} s ({stage})"


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


def _call_with_deadline(fn, deadline: float, name: str) -> tuple[bool, object, BaseException | None]:
    """Run ``fn()`` in a daemon thread and wait for it until ``deadline`` (``time.monotonic()``).
    Returns ``(finished, value, error)``."""
    thread, box = _in_daemon_thread(fn, name)
    thread.join(max(0.0, deadline - time.monotonic()))
    return not thread.is_alive(), box.get("value"), box.get("error")


def _metadata_problem(hub: _HubRequest) -> str | None:
    """Ask the hub for the file's metadata (``HEAD``, huggingface_hub's own call, without its retries) within
    the decision's budget. ``None`` when the hub has the file, else the reason."""
    from huggingface_hub import get_hf_file_metadata

    kwargs: dict = {"timeout": max(0.1, hub.left())}
    if _accepts(get_hf_file_metadata, "retry_on_errors"):
        kwargs["retry_on_errors"] = False
    finished, meta, error = _call_with_deadline(
        lambda: get_hf_file_metadata(hub.file_url, **kwargs), hub.deadline, "hub-metadata"
    )
    if not finished:
        return hub.timed_out(f"asked for the file's metadata: HEAD {hub.file_path}")
    if error is not None:
        return _describe_hub_error(error, hub)
    if getattr(meta, "commit_hash", None) is None or getattr(meta, "etag", None) is None:
        location = getattr(meta, "location", None)
        redirect = f" (it redirected to {location})" if location and location != hub.file_url else ""
        return (
            f"the endpoint answered HEAD {hub.file_path}{redirect} without the X-Repo-Commit / ETag headers of a "
            "Hugging Face hub: check HF_ENDPOINT"
        )
    return None


class _DownloadAbandoned(Exception):
    """Raised inside the download thread (from its progress bar) once the download has been given up on."""


class _TruncatedDownload(Exception):
    """huggingface_hub received fewer bytes than announced."""


class _DownloadWatch:
    """Progress of one download, written by the download thread (its progress bar: created once the ``GET`` is
    answered, updated at every chunk) and read by the watchdog, which also sees the ``.incomplete`` files grow
    (for releases without ``tqdm_class``)."""

    def __init__(self, blobs_dir: Path) -> None:
        self.blobs_dir = blobs_dir
        self.bytes = 0
        self.last_progress: float | None = None  # time.monotonic() of the answer or the latest chunk; None before
        self.abandoned = False
        self._before = set(self._incomplete())
        self._sizes: dict[Path, int] = {}

    def _incomplete(self) -> list[Path]:
        try:
            return list(self.blobs_dir.glob("*.incomplete"))
        except OSError:
            return []

    def new_incomplete_files(self) -> list[Path]:
        """The ``.incomplete`` files that appeared since this download started."""
        return [f for f in self._incomplete() if f not in self._before]

    def saw_answer(self) -> None:
        self.last_progress = time.monotonic()

    def saw_bytes(self, n: int) -> None:
        if n > 0:
            self.bytes += n
            self.last_progress = time.monotonic()

    def poll_files(self) -> None:
        for f in self.new_incomplete_files():
            try:
                size = f.stat().st_size
            except OSError:
                continue
            if size > self._sizes.get(f, 0):
                self._sizes[f] = size
                self.last_progress = time.monotonic()

    def remove_partial_files(self) -> None:
        for f in self.new_incomplete_files():
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

    def __enter__(self) -> None:
        from huggingface_hub import constants

        self.before = getattr(constants, "DOWNLOAD_CHUNK_SIZE", None)
        if isinstance(self.before, int) and self.before > _PROGRESS_CHUNK:
            constants.DOWNLOAD_CHUNK_SIZE = _PROGRESS_CHUNK

    def __exit__(self, *exc) -> None:
        from huggingface_hub import constants

        if isinstance(self.before, int):
            constants.DOWNLOAD_CHUNK_SIZE = self.before


def _download_with_watchdog(hub: _HubRequest, progress: bool, stall_timeout: float) -> tuple[Path | None, str | None]:
    """``hf_hub_download`` in a daemon thread, watched: the ``GET`` must be answered before the decision's
    deadline, and then some bytes must arrive every ``stall_timeout`` seconds. Returns ``(path, None)`` or
    ``(None, reason)``; an abandoned download leaves no ``.incomplete`` file behind."""
    with _FinerProgressChunks():
        return _watch_download(hub, progress, stall_timeout)


def _watch_download(hub: _HubRequest, progress: bool, stall_timeout: float) -> tuple[Path | None, str | None]:
    from huggingface_hub import constants, hf_hub_download

    chunk = getattr(constants, "DOWNLOAD_CHUNK_SIZE", _PROGRESS_CHUNK)  # progress is seen per chunk
    watch = _DownloadWatch(hub.blobs_dir)
    kwargs: dict = dict(revision=hub.revision, endpoint=hub.url, cache_dir=str(hub.cache))
    if _accepts(hf_hub_download, "etag_timeout"):
        kwargs["etag_timeout"] = max(0.1, hub.left())
    if _accepts(hf_hub_download, "tqdm_class"):
        kwargs["tqdm_class"] = _watched_tqdm_class(watch, progress)
    thread, box = _in_daemon_thread(lambda: hf_hub_download(hub.repo_id, hub.filename, **kwargs), "hub-download")
    try:
        return _watch(thread, box, watch, hub, stall_timeout, chunk)
    except BaseException:  # Ctrl-C while waiting: stop the download and keep nothing partial
        watch.abandoned = True
        watch.remove_partial_files()
        raise


def _watch(thread, box: dict, watch: _DownloadWatch, hub: _HubRequest, stall_timeout: float, chunk: int) -> tuple[Path | None, str | None]:
    """The watchdog loop of :func:`_watch_download`."""
    reason = None
    while thread.is_alive():
        thread.join(0.1)
        watch.poll_files()
        now = time.monotonic()
        if watch.last_progress is None and now >= hub.deadline:
            reason = hub.timed_out(f"the download did not start: GET {hub.file_path}")
        elif watch.last_progress is not None and now - watch.last_progress >= stall_timeout:
            reason = (
                f"the download stalled: less than {_size_text(chunk)} arrived in {stall_timeout:g} s "
                f"({watch.bytes:,} bytes saved); "
                "it was abandoned and nothing partial was kept"
            )
        if reason is not None and thread.is_alive():
            watch.abandoned = True  # the thread stops at its next chunk; meanwhile it is a daemon
            watch.remove_partial_files()
            return None, reason
    if "error" in box:
        error = box["error"]
        if isinstance(error, OSError) and "Consistency check failed" in str(error):
            raise _TruncatedDownload(str(error).splitlines()[0]) from error
        return None, _describe_hub_error(error, hub)
    return Path(box["value"]), None


def _fetch_hub(
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
) -> tuple[dict, Path, str] | None:
    """Cached hub file, else a download. Returns ``(data, path, how)`` or ``None`` with the reasons appended
    to ``notes``. A corrupt cached file is removed (and reported in ``notes``), then downloaded again; a corrupt
    download is removed and raises :class:`CorruptCheckpointError`."""
    from .checkpoints import CorruptCheckpointError, load_run_data

    cache = hub_cache_dir(cache_dir)
    where = f"{repo_id}/{filename}" + (f"@{revision}" if revision else "")

    cached = cached_hub_file(repo_id, filename, revision, cache)
    if cached is not None:
        try:
            return load_run_data(cached), cached, "hub-cache"
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
        _probe_target(url)
    except ValueError as e:
        origin = "" if endpoint else " (from HF_ENDPOINT)" if os.environ.get("HF_ENDPOINT") else ""
        notes.append(f"the hub was not contacted: {e}{origin}")
        return None
    hub = _HubRequest(url, repo_id, filename, revision, cache, hub_timeout)  # the decision's clock starts here

    def give_up(reason: str) -> None:
        notes.append(f"the hub {url} did not provide {where}: {reason} (decided in {hub.budget - hub.left():.1f} s)")

    reason = probe_endpoint(url, timeout=max(0.05, hub.left() - 0.05))
    if reason is not None:
        notes.append(f"the hub endpoint {url} is unreachable: {reason} (decided in {hub.budget - hub.left():.2f} s)")
        return None
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
        data = load_run_data(downloaded)
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


# ----------------------------------------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------------------------------------
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
    answer or fails; ``stall_timeout`` s after the last byte of a download that stalls) or
    :class:`CorruptCheckpointError`.
    """
    notes: list[str] = []
    got = _fetch_hub(
        repo_id=repo_id, filename=filename, revision=revision, endpoint=endpoint, cache_dir=cache_dir,
        progress=progress, hub_timeout=hub_timeout, stall_timeout=stall_timeout, notes=notes,
    )
    if got is None:
        raise ModelUnavailableError(
            f"could not download {repo_id}/{filename}:\n" + "".join(f"  - {n}\n" for n in notes)
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
            e.errno, f"could not copy the hub file to {out}: {describe_os_error(e)}; the Hugging Face cache still holds it at {source}"
        ) from e


def _config_mismatch(a: TrainConfig, b: TrainConfig) -> list[str]:
    da, db = a.to_dict(), b.to_dict()
    return [f"{k}: {da[k]!r} vs {db[k]!r}" for k in _RUN_DEFINING if da[k] != db[k]]


def _is_complete(data: dict) -> bool:
    """Whether a run of ours reached its configured length (or its early-stop loss): the trainer's
    ``resume["finished"]`` flag when present, else judged from ``config``. Files without a ``config`` (the hub
    file) count as complete. A diverged run is never complete: the trainer then refuses it with the reason."""
    resume = data.get("resume")
    if isinstance(resume, dict) and resume.get("diverged"):
        return False
    if isinstance(resume, dict) and "finished" in resume:
        return bool(resume["finished"])
    cfg = data.get("config")
    if not isinstance(cfg, dict) or "epochs" not in cfg:
        return True
    if len(data["train_losses"]) >= int(cfg["epochs"]):
        return True
    stop = cfg.get("stop_at_test_loss")
    return stop is not None and len(data["test_losses"]) > 0 and float(data["test_losses"][-1]) < float(stop)


def _train(config: TrainConfig, out: Path, progress: bool, why: str, cause: str) -> dict:
    """Run the trainer, saying first why and what; ``cause`` goes into the data's ``source``. When another
    process is already training into ``out``, :class:`~.checkpoints.RunFileLockedError` says so before anything
    is announced (the trainer's own lock stays the guarantee)."""
    from .checkpoints import RunFileLock

    if out.parent.is_dir() and out.with_name(out.name + ".lock").exists():
        RunFileLock(out).acquire().release()  # raises RunFileLockedError naming the training process
    print(
        f"[provision] {why}\n"
        f"[provision] Training the model locally (p={config.p}, fn={config.fn}, frac_train={config.frac_train}, "
        f"seed={config.seed}, {config.epochs:,} epochs, a checkpoint every {config.save_every}) -> {out}\n"
        "[provision] This takes a while on a CPU; if it is interrupted, the same call resumes from the last checkpoint.",
        flush=True,
    )
    from .train import train  # imported late: the trainer is only needed on this path

    data = train(config, out=out, resume=True, progress=progress)
    data["source"] = f"trained locally: {out} ({cause})"
    return data


def load_full_run_data(
    path: str | os.PathLike | None = None,
    *,
    allow_training: bool = True,
    repo_id: str = HUB_REPO_ID,
    filename: str = HUB_FILENAME,
    revision: str | None = None,
    endpoint: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    train_config: TrainConfig | None = None,
    progress: bool = True,
    hub_timeout: float = DEFAULT_HUB_TIMEOUT,
    stall_timeout: float = DEFAULT_STALL_TIMEOUT,
) -> dict:
    """The checkpoint history of the grokking run: a local file, else the hub file, else a local training run.

    Args:
        path: local run file (default :func:`default_run_path`: ``$PART52_RUN_PATH``, else the checkout's
            ``Grokking/large_files/full_run_data.pth``, else the per-user data folder). Read if it exists;
            training writes it.
        allow_training: train locally when nothing else is available (else raise :class:`ModelUnavailableError`).
        repo_id, filename, revision: the hub file (default: the course's file at ``main``).
        endpoint: hub URL (default ``$HF_ENDPOINT`` or https://huggingface.co).
        cache_dir: Hugging Face cache folder (default: from ``HF_HUB_CACHE`` / ``HF_HOME``).
        train_config: the recipe to train with (default ``TrainConfig()``). A recipe other than the hub run's
            skips the hub; a local file made with a different recipe raises ``ValueError``.
        progress: progress bars for the download and the training.
        hub_timeout: seconds allowed for the whole hub decision (TCP probe, the file's metadata, the first
            bytes of the download); past it, the hub counts as unavailable and step 3 follows.
        stall_timeout: seconds without progress after which a download in progress is abandoned.

    Returns:
        The run-data dict (:mod:`.checkpoints` format) with a ``"source"`` entry (:func:`run_data_source`).

    Raises:
        CorruptCheckpointError: the local file, or the downloaded file, is truncated or malformed.
        ModelUnavailableError: nothing found and ``allow_training=False``.
    """
    from .checkpoints import CorruptCheckpointError, load_run_data

    path = Path(path).expanduser() if path is not None else default_run_path()
    notes: list[str] = []

    # 1. the local file
    if path.exists():
        try:
            data = load_run_data(path)
        except CorruptCheckpointError as e:
            raise CorruptCheckpointError(
                f"{e}\nThe local run file {path} was left untouched. Move or delete it, then call again "
                f"(the data will be fetched from the hub or trained again), or pass another path."
            ) from e
        if train_config is not None and isinstance(data.get("config"), dict):
            diff = _config_mismatch(TrainConfig.from_dict(data["config"]), train_config)
            if diff:
                raise ValueError(
                    f"{path} holds a run with a different recipe than train_config ({'; '.join(diff)}). "
                    "Pass another path for this recipe, or move that file away."
                )
        if not _is_complete(data):
            cfg = TrainConfig.from_dict(data["config"]) if train_config is None else train_config
            why = f"{path} holds an unfinished run ({len(data['train_losses']):,} of {cfg.epochs:,} epochs)."
            if allow_training:
                return _train(cfg, path, progress, why + " Resuming it.", "resumed an unfinished run")
            print(f"[provision] {why} Using it as it is (allow_training=False).", file=sys.stderr)
        data["source"] = f"local file: {path}"
        return data
    notes.append(f"no local run file at {path}")

    # 2. the hub (its cache first)
    use_hub = True
    if train_config is not None:
        diff = _config_mismatch(TrainConfig.from_dict(_HUB_RECIPE), train_config)
        if diff:
            use_hub = False
            notes.append(f"the hub run was skipped: train_config asks for another recipe ({'; '.join(diff)})")
    if use_hub:
        try:
            got = _fetch_hub(
                repo_id=repo_id, filename=filename, revision=revision, endpoint=endpoint, cache_dir=cache_dir,
                progress=progress, hub_timeout=hub_timeout, stall_timeout=stall_timeout, notes=notes,
            )
        except CorruptCheckpointError as e:
            if not allow_training:
                raise
            # a broken download (an HTML error page, a truncated file...) was removed; it is a reason to train
            notes.append(" ".join(str(e).split("\n")[:2]))
            got = None
        if got is not None:
            data, where, how = got
            label = "hub file (cached)" if how == "hub-cache" else "hub file (downloaded)"
            data["source"] = f"{label}: {repo_id}/{filename} at {where}"
            return data

    # 3. local training, or a clear error
    if allow_training:
        why = "No run data found:" + "".join(f"\n[provision]   - {n}" for n in notes)
        return _train(train_config or TrainConfig(), path, progress, why, notes[-1])
    raise ModelUnavailableError(
        "No run data available (allow_training=False). Tried:\n" + "".join(f"  - {n}\n" for n in notes)
        + _FIX_HINT.format(path=path, env=ENV_RUN_PATH)
    )


# ----------------------------------------------------------------------------------------------------------
# Helpers on run data
# ----------------------------------------------------------------------------------------------------------
def analysed_checkpoint_index(run_data: dict, epoch: int = ANALYSED_EPOCH) -> int:
    """Index into ``run_data["state_dicts"]`` of the checkpoint at ``epoch`` (40,000: the model the course
    analyses; index 400 in the hub file), or of the last checkpoint when the run has no such epoch."""
    epochs = [int(e) for e in run_data["epochs"]]
    if not epochs:
        raise ValueError("run data holds no checkpoints")
    return epochs.index(epoch) if epoch in epochs else len(epochs) - 1


_SOURCE_KINDS = {
    "local file": "local",
    "hub file (cached)": "hub-cache",
    "hub file (downloaded)": "hub",
    "trained locally": "trained",
}


def run_data_source(run_data: dict) -> str:
    """Where :func:`load_full_run_data` got this data: ``"local file: PATH"``, ``"hub file (cached): …"``,
    ``"hub file (downloaded): …"`` or ``"trained locally: PATH (why)"``; ``"unknown"`` otherwise."""
    return str(run_data.get("source", "unknown"))


def source_kind(run_data: dict) -> str:
    """``"local"``, ``"hub-cache"``, ``"hub"``, ``"trained"`` or ``"unknown"`` (see :func:`run_data_source`)."""
    label = run_data_source(run_data).split(":", 1)[0]
    return _SOURCE_KINDS.get(label, "unknown")


def run_config(run_data: dict) -> TrainConfig:
    """The recipe of a run: its stored ``config``, or — for the hub file, which stores none — the paper's
    mainline recipe with ``p`` read from the weights, the length from ``train_losses``, the checkpoint interval
    from ``epochs`` and the test interval from the number of ``test_losses``."""
    if isinstance(run_data.get("config"), dict):
        return TrainConfig.from_dict(run_data["config"])
    p = int(run_data["state_dicts"][0]["embed.W_E"].shape[-1]) - 1
    n_epochs = len(run_data["train_losses"])
    epochs = [int(e) for e in run_data["epochs"]]
    save_every = epochs[1] - epochs[0] if len(epochs) > 1 else max(n_epochs, 1)
    n_test = len(run_data["test_losses"])
    test_every = max(1, math.ceil(n_epochs / n_test)) if n_test else 1
    return TrainConfig.from_dict(dict(_HUB_RECIPE, p=p, epochs=max(n_epochs, 1), save_every=max(save_every, 1), test_every=test_every))
