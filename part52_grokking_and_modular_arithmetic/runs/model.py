"""The one-layer transformer of the paper (Nanda et al. 2023, arXiv 2301.05217) as a ``HookedTransformer``.

TransformerLens is imported inside the functions that build models, so reading a run file does not load it.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import torch

from .architecture import ARCHITECTURE, FROZEN_ZERO_BIASES, PAPER_TRAINABLE

if TYPE_CHECKING:
    import transformer_lens

__all__ = [
    "make_model_config",
    "make_model",
    "paper_init_",
    "silence_transformer_lens_deprecation",
]

#: The message of the deprecation warning TransformerLens 3.x gives at every ``HookedTransformer`` construction.
_TL_DEPRECATION = r"HookedTransformer is deprecated"


def silence_transformer_lens_deprecation() -> None:
    """Hide TransformerLens 3.x's deprecation warning for the rest of the process (process-wide: only for a
    notebook or a script that owns its process; :func:`make_model` silences it for its own construction)."""
    warnings.filterwarnings("ignore", message=_TL_DEPRECATION, category=DeprecationWarning)


def make_model_config(
    p: int = 113, device: str | torch.device = "cpu", seed: int | None = None
) -> transformer_lens.HookedTransformerConfig:
    """Config of the paper's model for modulus ``p``: :data:`ARCHITECTURE`, ReLU, no LayerNorm, vocabulary
    ``p + 1`` (the ``=`` token is id ``p``), ``p + 1`` output logits (the analysis drops the ``=`` logit)."""
    from transformer_lens import HookedTransformerConfig

    return HookedTransformerConfig(
        **ARCHITECTURE,
        act_fn="relu",
        normalization_type=None,
        d_vocab=p + 1,
        d_vocab_out=p + 1,
        init_weights=True,
        device=str(device),
        seed=seed,
    )


@torch.no_grad()
def paper_init_(
    model: transformer_lens.HookedTransformer, generator: torch.Generator | None = None
) -> transformer_lens.HookedTransformer:
    """Re-initialise ``model`` in place with the paper's init: ``randn / sqrt(d_model)`` (W_U: ``/ sqrt(d_vocab)``),
    biases zero, drawn in the paper's module order (one generator state gives one model)."""
    cfg = model.cfg
    params = dict(model.named_parameters())
    for name in PAPER_TRAINABLE:
        param = params[name]
        if name.endswith(("b_in", "b_out")):
            param.zero_()
            continue
        scale = 1 / math.sqrt(cfg.d_vocab if name == "unembed.W_U" else cfg.d_model)
        param.copy_(
            torch.randn(param.shape, generator=generator, dtype=param.dtype, device="cpu").to(param.device) * scale
        )
    for name in FROZEN_ZERO_BIASES:
        params[name].zero_()
    return model


def make_model(
    p: int = 113, seed: int | None = 0, device: str | torch.device = "cpu", init: str = "paper"
) -> transformer_lens.HookedTransformer:
    """Build the paper model for modulus ``p``; ``seed`` seeds the init (``None``: torch's global generator),
    ``init`` is ``"paper"`` or ``"transformer_lens"``. TransformerLens' extra biases are zero and frozen."""
    from transformer_lens import HookedTransformer

    with warnings.catch_warnings():  # the filter is restored on exit: no process-wide change
        warnings.filterwarnings("ignore", message=_TL_DEPRECATION, category=DeprecationWarning)
        model = HookedTransformer(make_model_config(p, device=device, seed=seed))
    if init == "paper":
        paper_init_(model, torch.Generator().manual_seed(seed) if seed is not None else None)
    elif init != "transformer_lens":
        raise ValueError(f"init must be 'paper' or 'transformer_lens', got {init!r}")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in FROZEN_ZERO_BIASES:
            params[name].zero_()
            params[name].requires_grad_(False)
    return model
