"""Weight layouts: the paper's (released checkpoints, the hub file) and TransformerLens'.

The package works in the TransformerLens layout; the paper layout (Nanda et al. 2023, arXiv 2301.05217) exists
only at the loading and saving boundary. Shapes, paper -> TransformerLens (the other weights are the same):

* ``embed.W_E``: ``(d_model, d_vocab)`` -> ``(d_vocab, d_model)``
* ``blocks.0.attn.W_Q / W_K / W_V``: ``(n_heads, d_head, d_model)`` -> ``(n_heads, d_model, d_head)``
* ``blocks.0.attn.W_O``: ``(d_model, n_heads * d_head)`` -> ``(n_heads, d_head, d_model)``
* ``blocks.0.mlp.W_in`` / ``W_out``: ``(d_mlp, d_model)`` / ``(d_model, d_mlp)``, transposed
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, NamedTuple

import einops
import torch
from torch import Tensor

from .architecture import FROZEN_ZERO_BIASES, PAPER_TRAINABLE, parameter_shapes

if TYPE_CHECKING:  # TransformerLens is loaded by the code that builds models, not to read a run file
    import transformer_lens

__all__ = [
    "PAPER_KEYS",
    "paper_shapes",
    "is_paper_layout",
    "paper_to_transformer_lens",
    "transformer_lens_to_paper",
    "load_in_state_dict",
]

#: Keys of a paper-layout state dict: the paper model's parameters, which keep their names in both layouts
#: (``blocks.0.attn.mask`` is an optional buffer and ignored).
PAPER_KEYS = PAPER_TRAINABLE


def is_paper_layout(state_dict: Mapping[str, Tensor]) -> bool:
    """True for a paper-layout state dict, False for a TransformerLens one (whose ``W_O`` is 3-D)."""
    if missing := [k for k in PAPER_KEYS if k not in state_dict]:
        raise KeyError(
            f"not a state dict of the grokking model: missing {missing}; keys present: {sorted(state_dict)[:20]}"
        )
    return state_dict["blocks.0.attn.W_O"].ndim == 2


class _Converter(NamedTuple):  # how one weight changes between the layouts, given n_heads
    to_transformer_lens: Callable[[Tensor, int], Tensor]
    to_paper: Callable[[Tensor, int], Tensor]


_SAME = _Converter(lambda t, h: t.clone(), lambda t, h: t.clone())
_TRANSPOSE = _Converter(lambda t, h: t.T.contiguous(), lambda t, h: t.T.contiguous())
_SWAP_LAST = _Converter(lambda t, h: t.transpose(-1, -2).contiguous(), lambda t, h: t.transpose(-1, -2).contiguous())
_HEADS_OUT = _Converter(
    lambda t, h: einops.rearrange(t, "m (h e) -> h e m", h=h).contiguous(),
    lambda t, h: einops.rearrange(t, "h e m -> m (h e)").contiguous(),
)

#: The one table both conversions read, in the order of the converted state dicts: (paper name, TL name, converter).
LAYOUT_TABLE: tuple[tuple[str, str, _Converter], ...] = (
    ("embed.W_E", "embed.W_E", _TRANSPOSE),
    ("pos_embed.W_pos", "pos_embed.W_pos", _SAME),
    ("blocks.0.attn.W_Q", "blocks.0.attn.W_Q", _SWAP_LAST),
    ("blocks.0.attn.W_K", "blocks.0.attn.W_K", _SWAP_LAST),
    ("blocks.0.attn.W_V", "blocks.0.attn.W_V", _SWAP_LAST),
    ("blocks.0.attn.W_O", "blocks.0.attn.W_O", _HEADS_OUT),
    ("blocks.0.mlp.W_in", "blocks.0.mlp.W_in", _TRANSPOSE),
    ("blocks.0.mlp.b_in", "blocks.0.mlp.b_in", _SAME),
    ("blocks.0.mlp.W_out", "blocks.0.mlp.W_out", _TRANSPOSE),
    ("blocks.0.mlp.b_out", "blocks.0.mlp.b_out", _SAME),
    ("unembed.W_U", "unembed.W_U", _SAME),
)


def paper_to_transformer_lens(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Convert a paper-layout state dict to TransformerLens layout (zero attention biases and ``b_U`` added;
    the paper model's attention ``mask`` buffer dropped)."""
    if not is_paper_layout(state_dict):
        raise ValueError("state dict is already in TransformerLens layout")
    n_heads, d_head, d_model = state_dict["blocks.0.attn.W_Q"].shape
    out = {tl: convert.to_transformer_lens(state_dict[paper], n_heads) for paper, tl, convert in LAYOUT_TABLE}
    dtype = out["embed.W_E"].dtype
    zero_shapes = {"blocks.0.attn.b_O": (d_model,), "unembed.b_U": (out["unembed.W_U"].shape[1],)}
    for name in FROZEN_ZERO_BIASES:
        out[name] = torch.zeros(zero_shapes.get(name, (n_heads, d_head)), dtype=dtype)
    return out


@functools.lru_cache(maxsize=16)
def paper_shapes(p: int) -> dict[str, tuple[int, ...]]:
    """The paper-layout shape of each weight for modulus ``p`` (:func:`.architecture.parameter_shapes`, converted)."""
    meta = {name: torch.empty(shape, device="meta") for name, shape in parameter_shapes(p).items()}
    return {name: tuple(t.shape) for name, t in transformer_lens_to_paper(meta).items()}


def transformer_lens_to_paper(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Convert a TransformerLens-layout state dict to the paper layout; non-zero attention biases or ``b_U``
    (which the paper model lacks) raise ``ValueError``."""
    if is_paper_layout(state_dict):
        raise ValueError("state dict is already in the paper layout")
    for name in FROZEN_ZERO_BIASES:
        if name in state_dict and bool(state_dict[name].abs().max() > 0):
            raise ValueError(f"{name} is non-zero; the paper model has no such bias, so it cannot be converted")
    n_heads = state_dict["blocks.0.attn.W_Q"].shape[0]
    return {paper: convert.to_paper(state_dict[tl], n_heads) for paper, tl, convert in LAYOUT_TABLE}


def load_in_state_dict(
    model: transformer_lens.HookedTransformer, state_dict: Mapping[str, Tensor]
) -> transformer_lens.HookedTransformer:
    """Load a paper-layout **or** TransformerLens-layout state dict (detected from the shapes) into ``model``
    in place and return it; a shape that does not fit ``model.cfg`` is named in the error."""
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
    for name in FROZEN_ZERO_BIASES:
        sd.setdefault(name, torch.zeros_like(own[name]))
    weights = {k: v for k, v in sd.items() if k in own and "attn.mask" not in k and not k.endswith("IGNORE")}
    missing = [k for k in own if k not in weights and not k.endswith(("mask", "IGNORE"))]
    if missing:
        raise KeyError(f"the state dict lacks {missing}")
    model.load_state_dict(weights, strict=False)
    return model
