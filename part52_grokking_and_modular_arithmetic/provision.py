"""Provisioning: the checkpoint history ("full run data") of the grokking run, whatever the machine offers.

:func:`load_full_run_data` tries, in order:

1. **a local file**: ``path``, else :func:`default_run_path`. A file there that cannot be used (not a regular
   file, damaged, truncated, inconsistent) raises :class:`~.checkpoints.CorruptCheckpointError` and is never
   skipped or deleted; an unfinished run is resumed (with ``allow_training``).
2. **the Hugging Face hub** (the course's file, ``callummcdougall/grokking_full_run_data``; :mod:`.hub`): a
   cached copy first, then a download unless ``HF_HUB_OFFLINE=1``; the decision takes at most ``hub_timeout``
   seconds whatever the hub does, and the reason is reported as it is. A file that fails its checks is removed
   from the Hugging Face cache and never used.
3. **local training** with ``train_config`` (default ``TrainConfig()``) into the local path (an interrupted
   run resumes there), if ``allow_training``; else :class:`ModelUnavailableError` says what was tried.

It returns the run object (:class:`~.run_data.RunData`), checked once; ``run.source`` says where it came from.
The hub file holds no ``config``: the run object infers its recipe and finds the analysed checkpoint
(epoch 40,000, index 400).
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
#: Name of the per-user data folder (under ``$XDG_DATA_HOME`` or ``~/.local/share``) used outside a checkout.
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
    """The repository root when the package runs from a source checkout (``Grokking/`` and ``pyproject.toml``
    beside the package folder; an editable install counts), else ``None`` (installed from pip, e.g. on Colab)."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "Grokking").is_dir() and (root / "pyproject.toml").is_file() else None


def user_data_dir() -> Path:
    """The course's per-user data folder (a data folder, not a cache: a trained run costs minutes of CPU):
    ``$PART52_GROKKING_HOME``, else ``$XDG_DATA_HOME/part52_grokking_and_modular_arithmetic``, else
    ``~/.local/share/part52_grokking_and_modular_arithmetic``."""
    if os.environ.get(ENV_HOME):
        return Path(os.environ[ENV_HOME]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / DATA_DIR_NAME


def default_run_path() -> Path:
    """The local run file, decided when called: ``$PART52_RUN_PATH``; else, in a source checkout
    (:func:`checkout_root`), ``<checkout>/Grokking/large_files/full_run_data.pth``; else
    ``<user_data_dir()>/full_run_data.pth``. The ``path`` of :func:`load_full_run_data` (``--out``) overrides it."""
    if os.environ.get(ENV_RUN_PATH):
        return Path(os.environ[ENV_RUN_PATH]).expanduser()
    root = checkout_root()
    return root / "Grokking" / "large_files" / RUN_FILENAME if root is not None else user_data_dir() / RUN_FILENAME


def _train(config: TrainConfig, out: Path, progress: bool, why: str, cause: str) -> RunData:
    """Run the trainer, saying first why and what (``cause`` goes into the run's ``source``); a run file locked by
    another process is refused before anything is announced (the trainer's own lock stays the guarantee)."""
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
) -> RunData:
    """The checkpoint history of the grokking run: a local file, else the hub file, else a local training run.

    Args:
        path: local run file (default :func:`default_run_path`); read if it exists, written by training.
        allow_training: train locally when nothing else is available (else raise :class:`ModelUnavailableError`).
        repo_id, filename, revision: the hub file (default: the course's file at ``main``).
        endpoint: hub URL (default ``$HF_ENDPOINT`` or https://huggingface.co).
        cache_dir: Hugging Face cache folder (default: from ``HF_HUB_CACHE`` / ``HF_HOME``).
        train_config: the recipe to train with (default ``TrainConfig()``). Another recipe than the hub run's
            skips the hub; a local file of another recipe raises ``ValueError``.
        progress: progress bars for the download and the training.
        hub_timeout: seconds allowed for the whole hub decision; past it, the hub counts as unavailable.
        stall_timeout: seconds without progress after which a download in progress is abandoned.

    Returns:
        The run object (:class:`~.run_data.RunData`), checked once; ``run.source`` says where it came from.

    Raises:
        CorruptCheckpointError: the local file, or the hub file, cannot be used (the message says why).
        ModelUnavailableError: nothing found and ``allow_training=False``.
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
            diff = config_differences(run.config, train_config, RECIPE_FIELDS, "train_config")
            if diff:
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
