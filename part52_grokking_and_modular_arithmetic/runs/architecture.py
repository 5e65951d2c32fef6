"""The paper model's architecture (Nanda et al. 2023, arXiv 2301.05217): its sizes, parameter names and shapes
in the TransformerLens layout. Plain data, no torch: the memory and disk estimates (and ``--help``) use it
without loading a library; :mod:`.model` builds the ``HookedTransformer`` from it."""

from __future__ import annotations

import functools
import math

__all__ = ["ARCHITECTURE", "PAPER_TRAINABLE", "FROZEN_ZERO_BIASES", "parameter_shapes", "n_params"]

#: 1 layer, 4 heads of 32, d_model 128, d_mlp 512, 3 positions ``[x, y, =]``; no LayerNorm, ReLU.
ARCHITECTURE = dict(n_layers=1, n_heads=4, d_model=128, d_head=32, d_mlp=512, n_ctx=3)
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
FROZEN_ZERO_BIASES = ("blocks.0.attn.b_Q", "blocks.0.attn.b_K", "blocks.0.attn.b_V", "blocks.0.attn.b_O", "unembed.b_U")


@functools.lru_cache(maxsize=16)
def parameter_shapes(p: int) -> dict[str, tuple[int, ...]]:
    """The TransformerLens-layout shape of each of :data:`PAPER_TRAINABLE` for modulus ``p`` (vocabulary and
    output ``p + 1``), from :data:`ARCHITECTURE` (a test compares them with a built model)."""
    a = ARCHITECTURE
    h, m, e, mlp, v = a["n_heads"], a["d_model"], a["d_head"], a["d_mlp"], p + 1
    qkv = (h, m, e)
    shapes = [(v, m), (a["n_ctx"], m), qkv, qkv, qkv, (h, e, m), (m, mlp), (mlp,), (mlp, m), (m,), (m, v)]
    return dict(zip(PAPER_TRAINABLE, shapes, strict=True))


def n_params(p: int) -> int:
    """Number of trained parameters for modulus ``p`` (226,816 at p = 113)."""
    return sum(math.prod(s) for s in parameter_shapes(p).values())
