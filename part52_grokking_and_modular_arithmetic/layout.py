"""Weight layouts: the paper's (released checkpoints, the hub file) and TransformerLens'.

The package works in the TransformerLens layout everywhere; the paper layout exists only at the loading and
saving boundary (the paper's released checkpoints, Nanda et al. 2023, arXiv 2301.05217):

============================  =================================  ==============================
name                          paper layout                       TransformerLens layout
============================  =================================  ==============================
embed.W_E                     (d_model, d_vocab)                 (d_vocab, d_model)
pos_embed.W_pos               (n_ctx, d_model)                   (n_ctx, d_model)
blocks.0.attn.W_Q / W_K / W_V (n_heads, d_head, d_model)         (n_heads, d_model, d_head)
blocks.0.attn.W_O             (d_model, n_heads * d_head)        (n_heads, d_head, d_model)
blocks.0.mlp.W_in             (d_mlp, d_model)                   (d_model, d_mlp)
blocks.0.mlp.W_out            (d_model, d_mlp)                   (d_mlp, d_model)
blocks.0.mlp.b_in / b_out     (d_mlp) / (d_model)                same
unembed.W_U                   (d_model, d_vocab_out)             same
============================  =================================  ==============================
"""

from __future__ import annotations

from collections.abc import Mapping

import einops
import torch
from torch import Tensor
from transformer_lens import HookedTransformer

from .model import FROZEN_ZERO_BIASES, PAPER_TRAINABLE

__all__ = [
    "PAPER_KEYS",
    "is_paper_layout",
    "paper_to_transformer_lens",
    "transformer_lens_to_paper",
    "load_in_state_dict",
]

#: Keys of a paper-layout state dict: the paper model's parameters, which keep their names in both layouts
#: (``blocks.0.attn.mask`` is an optional buffer and ignored).
PAPER_KEYS = PAPER_TRAINABLE
#: TransformerLens biases the paper model lacks: zero after conversion.
_ZERO_BIASES = FROZEN_ZERO_BIASES


def _missing(state_dict: Mapping[str, Tensor]) -> list[str]:
    return [k for k in PAPER_KEYS if k not in state_dict]


def is_paper_layout(state_dict: Mapping[str, Tensor]) -> bool:
    """True for a paper-layout state dict, False for a TransformerLens one.

    Decided from shapes: in the paper layout ``W_in`` is ``(d_mlp, d_model)`` and ``W_E`` is
    ``(d_model, d_vocab)``; TransformerLens stores both transposed and has ``W_O`` as a 3-D tensor.
    """
    missing = _missing(state_dict)
    if missing:
        raise KeyError(f"not a state dict of the grokking model: missing {missing}; keys present: {sorted(state_dict)[:20]}")
    return state_dict["blocks.0.attn.W_O"].ndim == 2


def paper_to_transformer_lens(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Convert a paper-layout state dict to TransformerLens layout (zero attention biases and ``b_U`` added).

    The attention ``mask`` buffer of the paper model is dropped.
    """
    if not is_paper_layout(state_dict):
        raise ValueError("state dict is already in TransformerLens layout")
    sd = state_dict
    n_heads, d_head, d_model = sd["blocks.0.attn.W_Q"].shape
    dtype = sd["embed.W_E"].dtype
    out = {
        "embed.W_E": sd["embed.W_E"].T.contiguous(),
        "pos_embed.W_pos": sd["pos_embed.W_pos"].clone(),
        "blocks.0.attn.W_Q": sd["blocks.0.attn.W_Q"].transpose(-1, -2).contiguous(),
        "blocks.0.attn.W_K": sd["blocks.0.attn.W_K"].transpose(-1, -2).contiguous(),
        "blocks.0.attn.W_V": sd["blocks.0.attn.W_V"].transpose(-1, -2).contiguous(),
        "blocks.0.attn.W_O": einops.rearrange(sd["blocks.0.attn.W_O"], "m (h e) -> h e m", h=n_heads).contiguous(),
        "blocks.0.mlp.W_in": sd["blocks.0.mlp.W_in"].T.contiguous(),
        "blocks.0.mlp.b_in": sd["blocks.0.mlp.b_in"].clone(),
        "blocks.0.mlp.W_out": sd["blocks.0.mlp.W_out"].T.contiguous(),
        "blocks.0.mlp.b_out": sd["blocks.0.mlp.b_out"].clone(),
        "unembed.W_U": sd["unembed.W_U"].clone(),
    }
    d_vocab_out = out["unembed.W_U"].shape[1]
    out["blocks.0.attn.b_Q"] = torch.zeros(n_heads, d_head, dtype=dtype)
    out["blocks.0.attn.b_K"] = torch.zeros(n_heads, d_head, dtype=dtype)
    out["blocks.0.attn.b_V"] = torch.zeros(n_heads, d_head, dtype=dtype)
    out["blocks.0.attn.b_O"] = torch.zeros(d_model, dtype=dtype)
    out["unembed.b_U"] = torch.zeros(d_vocab_out, dtype=dtype)
    return out


def transformer_lens_to_paper(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Convert a TransformerLens-layout state dict to the paper layout (the inverse of
    :func:`paper_to_transformer_lens`). Non-zero attention biases or ``b_U`` cannot be represented in the
    paper model and raise ``ValueError``."""
    if is_paper_layout(state_dict):
        raise ValueError("state dict is already in the paper layout")
    sd = state_dict
    for name in _ZERO_BIASES:
        if name in sd and bool(sd[name].abs().max() > 0):
            raise ValueError(f"{name} is non-zero; the paper model has no such bias, so it cannot be converted")
    return {
        "embed.W_E": sd["embed.W_E"].T.contiguous(),
        "pos_embed.W_pos": sd["pos_embed.W_pos"].clone(),
        "blocks.0.attn.W_Q": sd["blocks.0.attn.W_Q"].transpose(-1, -2).contiguous(),
        "blocks.0.attn.W_K": sd["blocks.0.attn.W_K"].transpose(-1, -2).contiguous(),
        "blocks.0.attn.W_V": sd["blocks.0.attn.W_V"].transpose(-1, -2).contiguous(),
        "blocks.0.attn.W_O": einops.rearrange(sd["blocks.0.attn.W_O"], "h e m -> m (h e)").contiguous(),
        "blocks.0.mlp.W_in": sd["blocks.0.mlp.W_in"].T.contiguous(),
        "blocks.0.mlp.b_in": sd["blocks.0.mlp.b_in"].clone(),
        "blocks.0.mlp.W_out": sd["blocks.0.mlp.W_out"].T.contiguous(),
        "blocks.0.mlp.b_out": sd["blocks.0.mlp.b_out"].clone(),
        "unembed.W_U": sd["unembed.W_U"].clone(),
    }


def load_in_state_dict(model: HookedTransformer, state_dict: Mapping[str, Tensor]) -> HookedTransformer:
    """Load a paper-layout **or** TransformerLens-layout state dict into ``model`` (in place) and return it.

    The layout is detected from the shapes; a paper-layout dict is converted at this boundary. Shapes are
    checked against ``model.cfg`` with an error that names the offending weight.
    """
    sd = paper_to_transformer_lens(state_dict) if is_paper_layout(state_dict) else dict(state_dict)
    own = model.state_dict()
    for name, tensor in sd.items():
        if name not in own:
            continue
        if tuple(own[name].shape) != tuple(tensor.shape):
            raise ValueError(
                f"{name}: the checkpoint has shape {tuple(tensor.shape)} but the model expects "
                f"{tuple(own[name].shape)} (is p = {model.cfg.d_vocab - 1} the modulus this checkpoint was trained on?)"
            )
    for name in _ZERO_BIASES:
        sd.setdefault(name, torch.zeros_like(own[name]))
    weights = {k: v for k, v in sd.items() if k in own and "attn.mask" not in k and not k.endswith("IGNORE")}
    missing = [k for k in own if k not in weights and not k.endswith(("mask", "IGNORE"))]
    if missing:
        raise KeyError(f"the state dict lacks {missing}")
    model.load_state_dict(weights, strict=False)
    return model
