"""The one-layer transformer of the paper (Nanda et al. 2023, arXiv 2301.05217) as a ``HookedTransformer``.

TransformerLens is imported inside the functions that build models, so reading a run file does not load it.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    import transformer_lens

__all__ = [
    "make_model_config",
    "parameter_shapes",
    "make_model",
    "paper_init_",
    "PAPER_TRAINABLE",
    "FROZEN_ZERO_BIASES",
    "silence_transformer_lens_deprecation",
]

#: TransformerLens parameter names that exist in the paper model (trained and weight-decayed).
PAPER_TRAINABLE = (
    "embed.W_E",
    "pos_embed.W_pos",
    "blocks.0.attn.W_Q",
    "blocks.0.attn.W_K",
    "blocks.0.attn.W_V",
    "blocks.0.attn.W_O",
    "blocks.0.mlp.W_in",
    "blocks.0.mlp.b_in",
    "blocks.0.mlp.W_out",
    "blocks.0.mlp.b_out",
    "unembed.W_U",
)
#: TransformerLens biases the paper model does not have: zero and frozen.
FROZEN_ZERO_BIASES = (
    "blocks.0.attn.b_Q",
    "blocks.0.attn.b_K",
    "blocks.0.attn.b_V",
    "blocks.0.attn.b_O",
    "unembed.b_U",
)
#: The paper's architecture: 1 layer, 4 heads of 32, d_model 128, d_mlp 512, 3 positions ``[x, y, =]``.
ARCHITECTURE = dict(n_layers=1, n_heads=4, d_model=128, d_head=32, d_mlp=512, n_ctx=3)

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


@functools.lru_cache(maxsize=16)
def parameter_shapes(p: int) -> dict[str, tuple[int, ...]]:
    """The TransformerLens-layout shape of each of the paper's parameters (:data:`PAPER_TRAINABLE`) for modulus
    ``p``, from :data:`ARCHITECTURE` (TransformerLens' shapes; a test compares them with a built model)."""
    a = ARCHITECTURE
    h, m, e, mlp, v = a["n_heads"], a["d_model"], a["d_head"], a["d_mlp"], p + 1
    qkv = (h, m, e)
    shapes = [(v, m), (a["n_ctx"], m), qkv, qkv, qkv, (h, e, m), (m, mlp), (mlp,), (mlp, m), (m,), (m, v)]
    return dict(zip(PAPER_TRAINABLE, shapes, strict=True))


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
