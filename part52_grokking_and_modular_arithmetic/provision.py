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

**Nothing hangs** (the hub half lives in :mod:`.hub`, built on ``huggingface_hub``'s own calls). The whole
"can the hub serve the file?" decision — the file's metadata (``HEAD``, ``get_hf_file_metadata`` without
retries) and the start of the download (the answer to the ``GET``) — fits in ``hub_timeout`` seconds (default
:data:`DEFAULT_HUB_TIMEOUT`, 4 s), whatever the endpoint does: refuse, never answer, answer ``HEAD`` but not
``GET``, or fail (``5xx``, ``4xx``). The reason is reported as it is: "connection to host:port refused", "the
hub answered 500 Internal Server Error", "404: file not found on the hub (repo/file, revision main)", "no
answer within 4 s". A download that has started and then makes no progress for ``stall_timeout`` seconds
(default :data:`DEFAULT_STALL_TIMEOUT`; progress is seen per 1 MiB chunk) is abandoned. The download runs in a
daemon thread (a hung connection never keeps the process alive), into ``huggingface_hub``'s own
``.incomplete`` file, which is removed when the download is abandoned: the cache only ever holds complete
files, and those are validated before use. Then step 3 follows.

It returns a :class:`~.run_data.RunData`, validated once, whose ``source`` (a :class:`~.run_data.RunSource`)
says where it came from. The hub file is in paper layout, holds no ``config`` or ``train_indices``, has
``test_losses`` once per 10 epochs, and its analysed checkpoint is epoch 40,000 (index 400); the run object
infers its recipe and finds that checkpoint (``run.config``, ``run.analysed_index``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .config import ANALYSED_EPOCH, TrainConfig

# The hub half of provisioning lives in `.hub`; its public names stay importable from here.
from .hub import (
    DEFAULT_HUB_TIMEOUT,
    DEFAULT_STALL_TIMEOUT,
    HUB_FILENAME,
    HUB_REPO_ID,
    ModelUnavailableError,
    cached_hub_file,
    download_full_run_data,
    hub_cache_dir,
    hub_endpoint,
    hub_offline,
)
from .hub import fetch_hub_file as _fetch_hub

if TYPE_CHECKING:
    from .run_data import RunData

# `.checkpoints` (and through it transformer_lens, ~3 s) is imported inside the functions that read files, so
# that importing this module — e.g. for the command line's --help — stays cheap.

__all__ = [
    "HUB_REPO_ID",
    "HUB_FILENAME",
    "ANALYSED_EPOCH",
    "ENV_RUN_PATH",
    "ENV_HOME",
    "DATA_DIR_NAME",
    "DEFAULT_HUB_TIMEOUT",
    "DEFAULT_STALL_TIMEOUT",
    "ModelUnavailableError",
    "default_run_path",
    "user_data_dir",
    "checkout_root",
    "hub_endpoint",
    "hub_cache_dir",
    "hub_offline",
    "cached_hub_file",
    "download_full_run_data",
    "load_full_run_data",
    "analysed_checkpoint_index",
    "run_data_source",
    "source_kind",
    "run_config",
]

#: Environment variable: full path of the local run file (overrides every other default).
ENV_RUN_PATH = "PART52_RUN_PATH"
#: Environment variable: the per-user data folder (used when the package does not run from a checkout).
ENV_HOME = "PART52_GROKKING_HOME"
#: Name of the per-user data folder (under ``$XDG_DATA_HOME`` or ``~/.local/share``) used outside a checkout.
DATA_DIR_NAME = "part52_grokking_and_modular_arithmetic"
RUN_FILENAME = "full_run_data.pth"
#: Fields of :class:`TrainConfig` that define *which* run a file holds (length and intervals excluded).
_RUN_DEFINING = ("p", "fn", "frac_train", "seed", "lr", "weight_decay", "betas", "warmup_steps")

_FIX_HINT = (
    "To fix this, either\n"
    "  * connect to the internet (and unset HF_HUB_OFFLINE), or set HF_ENDPOINT to a reachable Hugging Face mirror;\n"
    "  * or train the model locally: `python -m part52_grokking_and_modular_arithmetic train --out {path}`,\n"
    "    or call load_full_run_data(allow_training=True);\n"
    "  * or put an existing run file at {path} (or set {env} to its path)."
)


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


def _config_mismatch(a: TrainConfig, b: TrainConfig) -> list[str]:
    da, db = a.to_dict(), b.to_dict()
    return [f"{k}: {da[k]!r} vs {db[k]!r}" for k in _RUN_DEFINING if da[k] != db[k]]


def _train(config: TrainConfig, out: Path, progress: bool, why: str, cause: str) -> "RunData":
    """Run the trainer, saying first why and what; ``cause`` goes into the run's ``source``. When another
    process is already training into ``out``, :class:`~.checkpoints.RunFileLockedError` says so before anything
    is announced (the trainer's own lock stays the guarantee)."""
    from .checkpoints import RunFileLock
    from .run_data import RunData, RunSource

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

    return RunData.from_dict(
        train(config, out=out, resume=True, progress=progress), RunSource("trained", str(out), cause)
    )


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
) -> "RunData":
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
        The run object (:class:`~.run_data.RunData`), validated once: recipe, split, checkpoints, histories,
        ``source`` (a :class:`~.run_data.RunSource`: local / hub-cache / hub / trained), ``model(i)``. It also
        reads like the run-file dict (``run["state_dicts"]``, ...).

    Raises:
        CorruptCheckpointError: the local file, or the downloaded file, is truncated or malformed.
        ModelUnavailableError: nothing found and ``allow_training=False``.
    """
    from .checkpoints import CorruptCheckpointError, run_is_complete
    from .run_data import HUB_RECIPE, RunData, RunSource

    path = Path(path).expanduser() if path is not None else default_run_path()
    notes: list[str] = []

    # 1. the local file
    if path.exists():
        try:
            run = RunData.from_file(path, RunSource("local", str(path)))
        except CorruptCheckpointError as e:
            raise CorruptCheckpointError(
                f"{e}\nThe local run file {path} was left untouched. Move or delete it, then call again "
                f"(the data will be fetched from the hub or trained again), or pass another path."
            ) from e
        if train_config is not None and run.config_stored:
            diff = _config_mismatch(run.config, train_config)
            if diff:
                raise ValueError(
                    f"{path} holds a run with a different recipe than train_config ({'; '.join(diff)}). "
                    "Pass another path for this recipe, or move that file away."
                )
        if not run_is_complete(run):
            cfg = run.config if train_config is None else train_config
            why = f"{path} holds an unfinished run ({len(run.train_losses):,} of {cfg.epochs:,} epochs)."
            if allow_training:
                return _train(cfg, path, progress, why + " Resuming it.", "resumed an unfinished run")
            print(f"[provision] {why} Using it as it is (allow_training=False).", file=sys.stderr)
        return run
    notes.append(f"no local run file at {path}")

    # 2. the hub (its cache first)
    use_hub = True
    if train_config is not None:
        diff = _config_mismatch(TrainConfig.from_dict(HUB_RECIPE), train_config)
        if diff:
            use_hub = False
            notes.append(f"the hub run was skipped: train_config asks for another recipe ({'; '.join(diff)})")
    if use_hub:
        try:
            got = _fetch_hub(
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
        except CorruptCheckpointError as e:
            if not allow_training:
                raise
            # a broken download (an HTML error page, a truncated file...) was removed; it is a reason to train
            notes.append(" ".join(str(e).split("\n")[:2]))
            got = None
        if got is not None:
            data, where, how = got
            source = RunSource("hub-cache" if how == "hub-cache" else "hub", str(where), f"{repo_id}/{filename}")
            # the hub code hands over a RunData (validated when fetched) or a validated dict
            return data.with_source(source) if isinstance(data, RunData) else RunData.from_dict(data, source)

    # 3. local training, or a clear error
    if allow_training:
        why = "No run data found:" + "".join(f"\n[provision]   - {n}" for n in notes)
        return _train(train_config or TrainConfig(), path, progress, why, notes[-1])
    raise ModelUnavailableError(
        "No run data available (allow_training=False). Tried:\n"
        + "".join(f"  - {n}\n" for n in notes)
        + _FIX_HINT.format(path=path, env=ENV_RUN_PATH)
    )


# ----------------------------------------------------------------------------------------------------------
# Helpers on run data (kept for existing code; the run object has them as attributes)
# ----------------------------------------------------------------------------------------------------------
def analysed_checkpoint_index(run_data, epoch: int = ANALYSED_EPOCH) -> int:
    """Index of the checkpoint at ``epoch`` (40,000: the model the course analyses; index 400 in the hub file),
    or of the last checkpoint. Prefer ``run.analysed_index`` (:class:`~.run_data.RunData`)."""
    from .run_data import analysed_index_of

    return analysed_index_of(run_data["epochs"], epoch)


def run_data_source(run_data) -> str:
    """Where :func:`load_full_run_data` got this run: ``str(run.source)`` (``"local file: PATH"``,
    ``"hub file (cached): …"``, ``"hub file (downloaded): …"``, ``"trained locally: PATH (why)"``), ``"unknown"``
    for anything else. Prefer ``run.source`` (:class:`~.run_data.RunSource`)."""
    source = getattr(run_data, "source", None)
    return "unknown" if source is None or not hasattr(source, "kind") else str(source)


def source_kind(run_data) -> str:
    """``"local"``, ``"hub-cache"``, ``"hub"``, ``"trained"``, ``"memory"`` or ``"unknown"``. Prefer
    ``run.source.kind``."""
    source = getattr(run_data, "source", None)
    return getattr(source, "kind", "unknown")


def run_config(run_data) -> TrainConfig:
    """The recipe of a run (stored, or inferred for the hub file). Prefer ``run.config``."""
    config = getattr(run_data, "config", None)
    if isinstance(config, TrainConfig):
        return config
    from .run_data import infer_config

    return infer_config(run_data)
