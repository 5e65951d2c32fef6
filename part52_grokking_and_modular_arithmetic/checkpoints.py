"""The checkpoint-history file ("full run data"): its format, safe loading, validation and atomic saving.

One format serves the course's hub file and our own training runs::

    {
        "state_dicts": [paper-layout state dict, ...],   # one per checkpoint
        "epochs": [0, 100, 200, ...],                     # epoch of each state dict
        "train_losses": [float, ...],                     # one per epoch
        "test_losses": [float, ...],                      # one per test interval
        "config": {...plain values...},                   # our runs only (p, fn, frac_train, seed, ...)
        "train_indices": LongTensor,                      # our runs only: indices into all_data (x*p + y)
    }

Files are read with ``torch.load(..., weights_only=True)`` (never unpickle untrusted code) and written
atomically (temporary file in the same folder, fsync, ``os.replace``), so an interrupted write never leaves
a half-written checkpoint behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import torch

from .layout import PAPER_KEYS, is_paper_layout

__all__ = [
    "REQUIRED_KEYS",
    "CorruptCheckpointError",
    "atomic_save",
    "safe_load",
    "validate_run_data",
    "expected_paper_shapes",
    "load_run_data",
]

REQUIRED_KEYS = ("state_dicts", "epochs", "train_losses", "test_losses")


class CorruptCheckpointError(ValueError):
    """A checkpoint file that is truncated, not a torch file, or not in the expected format."""


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically: write a temporary file beside it, fsync, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def safe_load(path: str | os.PathLike) -> Any:
    """Load a torch file with ``weights_only=True``; a truncated or foreign file raises
    :class:`CorruptCheckpointError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for bad zips / pickles
        raise CorruptCheckpointError(
            f"{path} ({path.stat().st_size:,} bytes) is not a readable torch checkpoint: it may be truncated "
            f"(an interrupted download?) or not a weights-only torch file. Delete it to fetch or train it again. "
            f"({type(e).__name__}: {e})"
        ) from e


def expected_paper_shapes(p: int, d_model: int = 128, n_heads: int = 4, d_head: int = 32, d_mlp: int = 512, n_ctx: int = 3) -> dict[str, tuple[int, ...]]:
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
    first = state_dicts[0]
    if not isinstance(first, Mapping) or any(k not in first for k in PAPER_KEYS):
        raise CorruptCheckpointError(f"{source}: state dicts must hold the paper-layout keys {PAPER_KEYS}")
    if not is_paper_layout(first):
        raise CorruptCheckpointError(f"{source}: state dicts must be in the paper layout (W_O of shape (d_model, n_heads*d_head))")
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
                raise CorruptCheckpointError(f"{source}: state dict {i}: {name} has dtype {t.dtype}, expected a float dtype")
    if "train_indices" in data:
        idx = torch.as_tensor(data["train_indices"])
        if idx.ndim != 1 or (idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= p * p)):
            raise CorruptCheckpointError(f"{source}: 'train_indices' must be a 1-D tensor of indices in [0, {p * p})")
    return p


def load_run_data(path: str | os.PathLike, p: int | None = None) -> dict:
    """Safely load and validate a full-run-data file."""
    data = safe_load(path)
    validate_run_data(data, source=str(path), p=p)
    return data
