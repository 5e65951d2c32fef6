"""Provisioning: the checkpoint history of the grokking run, whatever the machine offers. In order:

1. **a local file** (``path``, else :func:`default_run_path`): one that cannot be used raises
   :class:`~.checkpoints.CorruptCheckpointError` and is never skipped or deleted; an unfinished run is resumed;
2. **the Hugging Face hub** (:mod:`.hub`): a cached copy, then a download unless ``HF_HUB_OFFLINE=1``, decided
   within ``hub_timeout`` seconds; a file that fails its checks is removed from the cache and never used;
3. **local training** into the local path, if ``allow_training``; else :class:`ModelUnavailableError`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .config import ANALYSED_EPOCH, RECIPE_FIELDS, TrainConfig, config_differences
from .hub import (
    DEFAULT_HUB_TIMEOUT,
    DEFAULT_STALL_TIMEOUT,
    HUB_FILENAME,
    HUB_REPO_ID,
    ModelUnavailableError,
    fetch_hub_file,
)

if TYPE_CHECKING:
    from .run_data import RunData
# `.run_data` (torch) is imported inside the functions that read files: importing this module stays cheap.

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
    "load_full_run_data",
]

#: Environment variable: full path of the local run file (overrides every other default).
ENV_RUN_PATH = "PART52_RUN_PATH"
#: Environment variable: the per-user data folder (used when the package does not run from a checkout).
ENV_HOME = "PART52_GROKKING_HOME"
#: Name of the per-user data folder, used outside a checkout.
DATA_DIR_NAME = "part52_grokking_and_modular_arithmetic"
RUN_FILENAME = "full_run_data.pth"

_FIX_HINT = (
    "To fix this, either\n"
    "  * connect to the internet (and unset HF_HUB_OFFLINE), or set HF_ENDPOINT to a reachable Hugging Face mirror;\n"
    "  * or train the model locally: `python -m part52_grokking_and_modular_arithmetic train --out {path}`,\n"
    "    or call load_full_run_data(allow_training=True);\n"
    "  * or put an existing run file at {path} (or set {env} to its path)."
)


def checkout_root() -> Path | None:
    """The repository root in a source checkout (``Grokking/`` and ``pyproject.toml`` beside the package), else None."""
    root = Path(__file__).resolve().parents[2]  # runs/ -> the package -> the checkout
    return root if (root / "Grokking").is_dir() and (root / "pyproject.toml").is_file() else None


def user_data_dir() -> Path:
    """The per-user data folder (not a cache: a trained run costs minutes of CPU): ``$PART52_GROKKING_HOME``,
    else :data:`DATA_DIR_NAME` under ``$XDG_DATA_HOME`` or ``~/.local/share``."""
    if os.environ.get(ENV_HOME):
        return Path(os.environ[ENV_HOME]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / DATA_DIR_NAME


def default_run_path() -> Path:
    """The local run file: ``$PART52_RUN_PATH``; else ``<checkout>/Grokking/large_files/full_run_data.pth`` in a
    source checkout; else ``<user_data_dir()>/full_run_data.pth``."""
    if os.environ.get(ENV_RUN_PATH):
        return Path(os.environ[ENV_RUN_PATH]).expanduser()
    root = checkout_root()
    return root / "Grokking" / "large_files" / RUN_FILENAME if root is not None else user_data_dir() / RUN_FILENAME


def _train(config: TrainConfig, out: Path, progress: bool, why: str, cause: str) -> RunData:
    """Run the trainer, saying first why and what (``cause``: for ``source``); refuse a locked file first."""
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
    from ..training.train import train  # imported late: the trainer is only needed on this path

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
) -> RunData:
    """The checkpoint history of the grokking run (a :class:`~.run_data.RunData`; ``run.source`` says where it
    came from): a local file, else the hub file, else a local training run.

    Args:
        path: local run file (default :func:`default_run_path`); read if it exists, written by training.
        repo_id, filename, revision, endpoint, cache_dir: the hub file (default: the course's, at ``main``).
        train_config: the recipe to train with (default ``TrainConfig()``); another recipe than the hub run's
            skips the hub; a local file of another recipe raises ``ValueError``.
        hub_timeout: seconds allowed for the whole hub decision; stall_timeout: for a download without progress.

    Raises ``CorruptCheckpointError`` (a file cannot be used) or :class:`ModelUnavailableError` (nothing found
    and ``allow_training=False``).
    """
    from .checkpoints import CorruptCheckpointError
    from .run_data import HUB_RECIPE, RunData, RunSource

    path = Path(path).expanduser() if path is not None else default_run_path()
    notes: list[str] = []

    # 1. the local file
    try:
        present = path.stat() is not None
    except FileNotFoundError:
        present = False
    except OSError:
        present = True  # a symlink loop, a path through a file: reading it says so in one line
    if present:
        try:
            run = RunData.from_file(path, RunSource("local", str(path)))
        except CorruptCheckpointError as e:
            raise CorruptCheckpointError(
                f"{e} (the local run file, left untouched: move or delete it and call again to fetch or train the "
                "run anew, or pass another path)"
            ) from e
        if train_config is not None and run.config_stored:
            if diff := config_differences(run.config, train_config, RECIPE_FIELDS, "train_config"):
                raise ValueError(
                    f"{path} holds a run with a different recipe than train_config ({'; '.join(diff)}). "
                    "Pass another path for this recipe, or move that file away."
                )
        status = run.status
        if status.state != "finished":
            why = (
                f"{path} holds an unfinished run ({status.detail})."
                if status.state == "unfinished"
                else f"{path} holds a run that {status.detail}."
            )
            if allow_training:
                cfg = run.config if train_config is None else train_config
                return _train(cfg, path, progress, why + " Resuming it.", "resumed an unfinished run")
            print(f"[provision] {why} Using it as it is (allow_training=False).", file=sys.stderr)
        return run
    notes.append(f"no local run file at {path}")

    # 2. the hub (its cache first)
    diff = []
    if train_config is not None:
        diff = config_differences(TrainConfig.from_dict(HUB_RECIPE), train_config, RECIPE_FIELDS, "train_config")
        if diff:
            notes.append(f"the hub run was skipped: train_config asks for another recipe ({'; '.join(diff)})")
    if not diff:
        try:
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
        except CorruptCheckpointError as e:
            if not allow_training:
                raise
            # a broken download (an HTML error page, a truncated file...) was removed; it is a reason to train
            notes.append(" ".join(str(e).split("\n")[:2]))
            got = None
        if got is not None:
            data, where, how = got
            source = RunSource("hub-cache" if how == "hub-cache" else "hub", str(where), f"{repo_id}/{filename}")
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
