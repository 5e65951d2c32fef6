"""The one-layer transformer of the paper, as a TransformerLens ``HookedTransformer``.

:func:`make_model_config` is the one description of the architecture (Nanda et al. 2023, arXiv 2301.05217);
:func:`parameter_shapes` derives the weights' shapes from it. :func:`make_model` builds the model with the
paper's initialisation and only the paper's parameters trainable (TransformerLens' extra biases stay zero).
"""

from __future__ import annotations

import functools
import math
import warnings

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

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


#: The message of the deprecation warning TransformerLens 3.x gives at every ``HookedTransformer`` construction.
_TL_DEPRECATION = r"HookedTransformer is deprecated"


def silence_transformer_lens_deprecation() -> None:
    """Hide TransformerLens 3.x's deprecation warning for the rest of the process (a warning filter: process-wide,
    so only a notebook or a script that owns its process calls this; :func:`make_model` silences it for its own
    construction only)."""
    warnings.filterwarnings("ignore", message=_TL_DEPRECATION, category=DeprecationWarning)


def make_model_config(
    p: int = 113, device: str | torch.device = "cpu", seed: int | None = None
) -> HookedTransformerConfig:
    """Config of the paper's model for modulus ``p``: 1 layer, d_model 128, 4 heads of 32, d_mlp 512, ReLU,
    no LayerNorm, vocabulary ``p + 1`` (the ``=`` token is id ``p``), 3 positions, ``p + 1`` output logits
    (training uses all of them; the analysis drops the ``=`` logit)."""
    return HookedTransformerConfig(
        n_layers=1,
        n_heads=4,
        d_model=128,
        d_head=32,
        d_mlp=512,
        act_fn="relu",
        normalization_type=None,
        d_vocab=p + 1,
        d_vocab_out=p + 1,
        n_ctx=3,
        init_weights=True,
        device=str(device),
        seed=seed,
    )


@functools.lru_cache(maxsize=16)
def parameter_shapes(p: int) -> dict[str, tuple[int, ...]]:
    """The TransformerLens-layout shape of each of the paper's parameters (:data:`PAPER_TRAINABLE`) for modulus
    ``p``, read from a model of :func:`make_model_config` built on the meta device (no memory, ~1 ms)."""
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.filterwarnings("ignore", message=_TL_DEPRECATION, category=DeprecationWarning)
        cfg = make_model_config(p, device="meta")
        cfg.init_weights = False
        params = dict(HookedTransformer(cfg).named_parameters())
    return {name: tuple(params[name].shape) for name in PAPER_TRAINABLE}


@torch.no_grad()
def paper_init_(model: HookedTransformer, generator: torch.Generator | None = None) -> HookedTransformer:
    """Re-initialise ``model`` in place with the paper's init: ``randn * std``.

    std is ``1/sqrt(d_model)`` for W_E, W_pos, W_Q, W_K, W_V, W_O, W_in, W_out, ``1/sqrt(d_vocab)`` for W_U;
    every bias is zero. Draw order follows the paper's module order so that one generator state gives one
    model.
    """
    cfg = model.cfg
    std = 1 / math.sqrt(cfg.d_model)
    params = dict(model.named_parameters())
    for name in PAPER_TRAINABLE:
        param = params[name]
        if name.endswith(("b_in", "b_out")):
            param.zero_()
            continue
        scale = 1 / math.sqrt(cfg.d_vocab) if name == "unembed.W_U" else std
        param.copy_(
            torch.randn(param.shape, generator=generator, dtype=param.dtype, device="cpu").to(param.device) * scale
        )
    for name in FROZEN_ZERO_BIASES:
        params[name].zero_()
    return model


def make_model(
    p: int = 113, seed: int | None = 0, device: str | torch.device = "cpu", init: str = "paper"
) -> HookedTransformer:
    """Build the paper model for modulus ``p``.

    Args:
        seed: seeds the initialisation (``None``: torch's global generator).
        init: ``"paper"`` (default, the paper's init) or ``"transformer_lens"`` (TL's own default init).

    The attention/unembedding biases TransformerLens adds are zero with ``requires_grad=False``.
    """
    with warnings.catch_warnings():  # the filter is restored on exit: no process-wide change
        warnings.filterwarnings("ignore", message=_TL_DEPRECATION, category=DeprecationWarning)
        model = HookedTransformer(make_model_config(p, device=device, seed=seed))
    if init == "paper":
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        paper_init_(model, generator)
    elif init != "transformer_lens":
        raise ValueError(f"init must be 'paper' or 'transformer_lens', got {init!r}")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in FROZEN_ZERO_BIASES:
            params[name].zero_()
            params[name].requires_grad_(False)
    return model
