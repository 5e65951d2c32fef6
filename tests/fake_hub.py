"""A tiny stand-in for the Hugging Face hub on 127.0.0.1, for testing the real ``hf_hub_download`` path offline.

It answers what ``huggingface_hub.hf_hub_download`` and ``get_hf_file_metadata`` ask for (the hub's
``/resolve/`` endpoint and the headers ``huggingface_hub`` reads from it):

* ``HEAD`` / ``GET /{repo_id}/resolve/{revision}/{filename}`` -> 200 with ``X-Repo-Commit`` (40 hex chars),
  ``ETag`` (quoted sha256 of the bytes) and ``Content-Length``; ``GET`` honours a ``Range: bytes=N-`` header
  (206) so a resumed download works;
* a missing file of a known repo -> 404 with ``X-Error-Code: EntryNotFound``; an unknown repo -> 404 with
  ``X-Error-Code: RepoNotFound``; an unknown revision -> 404 with ``X-Error-Code: RevisionNotFound``;
* anything else (e.g. ``GET /api/agent-harnesses``) -> 404.

No ``X-Xet-*`` headers are sent, so the client uses a plain HTTP download. Every request is recorded in
:attr:`FakeHub.requests` as ``(method, path)``.

Failure modes (keyword arguments, for the file requests ``/resolve/`` only; other paths answer as usual):

* ``status=500`` (or 503, 404, 403 …): answer with that status and a small JSON body, without
  ``X-Error-Code`` (like a generic mirror or proxy); ``status_methods`` picks which methods get it
  (default both ``HEAD`` and ``GET``);
* ``hang="all"``: accept the connection, read the request, never answer;
* ``hang="get"``: answer ``HEAD`` normally, never answer ``GET``;
* ``hang="body"``: answer ``GET`` with its headers and the first ``stall_after`` bytes of the body, then
  send nothing more.

More options: ``cut_body_after=N`` sends N bytes of the body (``Content-Length`` announces all), then closes;
``trickle_s=1.0`` sends the body one byte per second; ``get_body=b"<html>…"`` answers ``GET`` with 200 and that
body instead of the file (``HEAD`` is normal); ``retry_after="3600"`` adds a ``Retry-After`` header to
``status`` answers; ``redirect_to=URL`` answers both with a 302 to ``URL`` carrying the hub's headers (a
redirect to a CDN, or to a dead host, or a loop when ``URL`` is the file's own); ``etag="<64 hex>"`` serves that
ETag instead of the bytes' sha256 (a checksum the file does not match).

A hanging answer waits until :meth:`FakeHub.stop` (then the connection is closed), so a test never leaves
a thread behind for longer than the hub lives.

Usage::

    with FakeHub({("user/repo", "file.pth"): data_bytes}) as hub:
        hf_hub_download("user/repo", "file.pth", endpoint=hub.url, cache_dir=tmp)

    with FakeHub({("user/repo", "file.pth"): data_bytes}, hang="body", stall_after=1000) as hub:
        ...  # the download starts, then stalls after 1,000 bytes
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

__all__ = ["FakeHub", "COMMIT", "HANG_MODES", "make_paper_run_data", "to_bytes"]

#: The commit hash every file of the fake hub is served at.
COMMIT = "0123456789abcdef0123456789abcdef01234567"

_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_RANGE = re.compile(r"^bytes=(\d+)-$")
#: The values of ``FakeHub(hang=...)``.
HANG_MODES = ("all", "get", "body")


class FakeHub:
    """Serve ``files`` (``{(repo_id, filename): bytes}``) on ``127.0.0.1`` at an ephemeral port (bound at
    construction, served from :meth:`start` / ``with`` until :meth:`stop`).

    ``files`` may be changed while the server runs (e.g. to serve a fixed file after a corrupt one); each
    response reads it afresh. The ETag follows the bytes, as on the real hub. ``status``, ``status_methods``,
    ``hang`` and ``stall_after`` switch on a failure mode (see the module docstring); they may be changed
    while the server runs too.
    """

    def __init__(
        self,
        files: dict[tuple[str, str], bytes] | None = None,
        commit: str = COMMIT,
        *,
        status: int | None = None,
        status_methods: tuple[str, ...] = ("HEAD", "GET"),
        hang: str | None = None,
        stall_after: int = 4096,
        get_body: bytes | None = None,
        retry_after: str | None = None,
        redirect_to: str | None = None,
        cut_body_after: int | None = None,
        trickle_s: float | None = None,
        etag: str | None = None,
    ) -> None:
        if not re.fullmatch(r"[0-9a-f]{40}", commit):
            raise ValueError(f"commit must be 40 lowercase hex characters, got {commit!r}")
        if status is not None and not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error status (400-599), got {status}")
        if hang is not None and hang not in HANG_MODES:
            raise ValueError(f"hang must be one of {HANG_MODES} or None, got {hang!r}")
        if stall_after < 0:
            raise ValueError(f"stall_after must be >= 0 bytes, got {stall_after}")
        self.files: dict[tuple[str, str], bytes] = dict(files or {})
        self.commit = commit
        self.status = status
        self.status_methods = tuple(status_methods)
        self.hang = hang
        self.stall_after = stall_after
        self.get_body = get_body
        self.retry_after = retry_after
        self.redirect_to = redirect_to
        self.cut_body_after = cut_body_after
        self.trickle_s = trickle_s
        self.etag = etag
        self.requests: list[tuple[str, str]] = []
        self._release = threading.Event()  # set by stop(): hanging answers give up and close their connection
        self._etags: dict[int, tuple[bytes, str]] = {}  # id(bytes) -> (bytes, ETag): hashing a big file once
        self._server: ThreadingHTTPServer | None = self._bind()  # bound now, so `url` is known before start()
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake hub was stopped")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def _bind(self) -> ThreadingHTTPServer:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_HEAD(self) -> None:
                hub._answer(self, send_body=False)

            def do_GET(self) -> None:
                hub._answer(self, send_body=True)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        return server

    def start(self) -> "FakeHub":
        self._release.clear()
        if self._server is None:
            self._server = self._bind()
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            if self._thread is not None:
                self._server.shutdown()
                self._thread = None
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- requests ----------------------------------------------------------------------------------------
    def resolve_requests(self) -> list[tuple[str, str]]:
        """The recorded requests for files (``/resolve/``), in order."""
        return [r for r in self.requests if "/resolve/" in r[1]]

    def _answer(self, handler: BaseHTTPRequestHandler, send_body: bool) -> None:
        path = unquote(handler.path.split("?", 1)[0])
        self.requests.append((handler.command, path))
        match = _RESOLVE.match(path)
        if match is None:
            return self._not_found(handler, None, send_body)
        if self.hang == "all" or (self.hang == "get" and handler.command == "GET"):
            return self._hang(handler)
        if self.status is not None and handler.command in self.status_methods:
            return self._error(handler, self.status, send_body)
        if self.redirect_to is not None:
            return self._redirect(handler)
        repo, rev, filename = match["repo"], match["rev"], match["file"]
        if not any(r == repo for r, _ in self.files):
            return self._not_found(handler, "RepoNotFound", send_body)
        if rev not in ("main", self.commit):
            return self._not_found(handler, "RevisionNotFound", send_body)
        data = self.files.get((repo, filename))
        if data is None:
            return self._not_found(handler, "EntryNotFound", send_body, commit=True)

        start = 0
        range_header = handler.headers.get("Range")
        if range_header and (m := _RANGE.match(range_header.strip())) and int(m[1]) < len(data):
            start = int(m[1])
        body = data[start:]
        if send_body and self.get_body is not None:  # a 200 whose body is not the file (an HTML error page...)
            handler.send_response(200)
            handler.send_header("X-Repo-Commit", self.commit)
            handler.send_header("ETag", self._etag(data))
            handler.send_header("Content-Type", "text/html")
            handler.send_header("Content-Length", str(len(self.get_body)))
            handler.end_headers()
            handler.wfile.write(self.get_body)
            return
        handler.send_response(206 if start else 200)
        handler.send_header("X-Repo-Commit", self.commit)
        handler.send_header("ETag", self._etag(data))
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Accept-Ranges", "bytes")
        if start:
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        handler.end_headers()
        if send_body and self.cut_body_after is not None:  # fewer bytes than Content-Length, then close
            handler.wfile.write(body[: self.cut_body_after])
            handler.wfile.flush()
            handler.close_connection = True
            return
        if send_body and self.trickle_s is not None:  # one byte every trickle_s seconds
            handler.close_connection = True
            for i in range(len(body)):
                if self._release.wait(self.trickle_s):
                    return
                try:
                    handler.wfile.write(body[i : i + 1])
                    handler.wfile.flush()
                except OSError:
                    return
            return
        if send_body and self.hang == "body":
            handler.wfile.write(body[: self.stall_after])
            handler.wfile.flush()
            return self._hang(handler)
        if send_body:
            handler.wfile.write(body)

    def _etag(self, data: bytes) -> str:
        """The quoted sha256 of ``data``, computed once per bytes object (files may change while serving), or the
        ``etag`` given."""
        if self.etag is not None:
            return f'"{self.etag}"'
        known = self._etags.get(id(data))
        if known is None or known[0] is not data:
            known = (data, f'"{hashlib.sha256(data).hexdigest()}"')
            self._etags[id(data)] = known
        return known[1]

    def _hang(self, handler: BaseHTTPRequestHandler) -> None:
        """Send nothing (more) until the hub stops, then close the connection."""
        handler.close_connection = True
        self._release.wait()

    def _error(self, handler: BaseHTTPRequestHandler, status: int, send_body: bool) -> None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:  # a status Python does not name
            phrase = "Error"
        body = json.dumps({"error": f"{status} {phrase}"}).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        if self.retry_after is not None:
            handler.send_header("Retry-After", self.retry_after)
        handler.end_headers()
        if send_body:
            handler.wfile.write(body)

    def _redirect(self, handler: BaseHTTPRequestHandler) -> None:
        """302 to ``redirect_to`` (a CDN, as the real hub does for large files), with the hub's headers."""
        handler.send_response(302)
        handler.send_header("Location", self.redirect_to)
        handler.send_header("X-Repo-Commit", self.commit)
        data = next(iter(self.files.values()), b"")
        handler.send_header("ETag", self._etag(data))
        handler.send_header("X-Linked-Etag", self._etag(data))
        handler.send_header("X-Linked-Size", str(len(data)))
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def _not_found(
        self, handler: BaseHTTPRequestHandler, error_code: str | None, send_body: bool, commit: bool = False
    ) -> None:
        body = b'{"error": "not found"}'
        handler.send_response(404)
        if error_code is not None:
            handler.send_header("X-Error-Code", error_code)
        if commit:
            handler.send_header("X-Repo-Commit", self.commit)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if send_body:
            handler.wfile.write(body)


# ----------------------------------------------------------------------------------------------------------
# Run files to serve (small but real: the paper model's shapes, paper layout)
# ----------------------------------------------------------------------------------------------------------
def make_paper_run_data(
    p: int = 23, n_checkpoints: int = 3, save_every: int = 100, test_every: int = 10, *, ours: bool = False
) -> dict:
    """A run-data dict in the hub file's format: paper-layout state dicts (each a differently seeded
    paper-init model, with the ``blocks.0.attn.mask`` buffer the released files carry), ``epochs``, one train
    loss per epoch and one test loss per ``test_every`` epochs. With ``ours=True`` it also holds ``config``
    and ``train_indices``, like a run of our trainer."""
    import torch

    from part52_grokking_and_modular_arithmetic.runs.config import TrainConfig
    from part52_grokking_and_modular_arithmetic.runs.data import train_test_split
    from part52_grokking_and_modular_arithmetic.runs.layout import transformer_lens_to_paper
    from part52_grokking_and_modular_arithmetic.runs.model import make_model

    state_dicts = []
    for seed in range(n_checkpoints):
        sd = transformer_lens_to_paper(
            {k: v.detach().clone() for k, v in make_model(p, seed=seed).state_dict().items()}
        )
        sd["blocks.0.attn.mask"] = torch.tril(torch.ones(3, 3))
        state_dicts.append(sd)
    n_epochs = save_every * n_checkpoints  # like the hub file: 50,000 epochs, checkpoints at 0, 100, ..., 49,900
    gen = torch.Generator().manual_seed(0)
    data = {
        "state_dicts": state_dicts,
        "epochs": [save_every * i for i in range(n_checkpoints)],
        "train_losses": (torch.rand(n_epochs, generator=gen) * 5).tolist(),
        "test_losses": (torch.rand(n_epochs // test_every, generator=gen) * 5).tolist(),
    }
    if ours:
        cfg = TrainConfig(p=p, epochs=n_epochs, save_every=save_every, test_every=test_every)
        data["config"] = cfg.to_dict()
        data["train_indices"] = train_test_split(p, cfg.frac_train, cfg.seed)[0]
    return data


def to_bytes(obj) -> bytes:
    """``torch.save`` into bytes."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()
