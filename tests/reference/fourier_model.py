"""A hand-built model that computes ``(x + y) mod p`` with the Fourier / trig-identity algorithm of the paper
(Nanda et al. 2023, arXiv 2301.05217): a stand-in for a grokked model when a test needs one and no trained
model is at hand. Test code only; nothing in the package uses it.
"""

from __future__ import annotations

import math

import torch
from transformer_lens import HookedTransformer

from part52_grokking_and_modular_arithmetic.runs.model import make_model


@torch.no_grad()
def make_fourier_model(
    p: int = 113,
    key_freqs: tuple[int, ...] | list[int] = (14, 35, 41, 42, 52),
    neurons_per_freq: int | dict[int, int] | None = None,
    logit_scale: float = 2.0,
    offset: float = 0.35,
) -> HookedTransformer:
    """A course-architecture model whose weights are *set by hand* to compute ``(x + y) mod p``.

    * ``W_Q = W_K = 0``: the ``=`` position attends 1/3 to each position; ``W_E[t]`` holds ``cos(w_k t)``,
      ``sin(w_k t)`` in two dimensions per key frequency (``W_E[=] = W_pos = 0``); head 0 copies them.
    * Neuron ``n`` of frequency ``k`` with phase ``phi_n`` (evenly spaced) computes
      ``ReLU((cos(w_k x + phi_n) + cos(w_k y + phi_n) + offset) / 3)``: a 3x3-block neuron with the quadratic
      term ``cos(w_k(x+y) + 2 phi_n)``.
    * ``W_logit[n, z] ~ cos(w_k z + 2 phi_n)``, so the neurons of frequency k sum to
      ``~cos(w_k (x + y - z))`` and the logits peak at ``z = x + y``.

    Args:
        key_freqs: the frequencies used (at most 16).
        neurons_per_freq: neurons of each frequency (an int for all, or ``{freq: n}``); default: the MLP
            split evenly. Neurons left over are dead (always 0, so unclustered).
        logit_scale: multiplies the unembedding (larger: more confident, smaller loss).
    """
    key_freqs = [int(k) for k in key_freqs]
    model = make_model(p, seed=0)
    cfg = model.cfg
    K = len(key_freqs)
    if not 1 <= K <= min(cfg.d_head, cfg.d_model // 4) // 2:
        raise ValueError(
            f"make_fourier_model supports 1 to {min(cfg.d_head, cfg.d_model // 4) // 2} key frequencies, got {K}"
        )
    if not all(1 <= k <= (p - 1) // 2 for k in key_freqs):
        raise ValueError(f"key frequencies must lie in 1..{(p - 1) // 2}, got {key_freqs}")
    if neurons_per_freq is None:
        neurons_per_freq = cfg.d_mlp // K
    counts = neurons_per_freq if isinstance(neurons_per_freq, dict) else {k: int(neurons_per_freq) for k in key_freqs}
    if sum(counts.values()) > cfg.d_mlp:
        raise ValueError(f"{sum(counts.values())} neurons requested, the MLP has {cfg.d_mlp}")
    attn, mlp = model.blocks[0].attn, model.blocks[0].mlp
    for param in model.parameters():
        param.zero_()
    t = torch.arange(p, dtype=torch.float64)
    out_dim = cfg.d_model // 2  # the MLP writes into the upper half of the residual stream, W_U reads it
    start = 0
    for i, k in enumerate(key_freqs):
        w = 2 * math.pi * k / p
        model.W_E[:p, 2 * i] = torch.cos(w * t).float()
        model.W_E[:p, 2 * i + 1] = torch.sin(w * t).float()
        model.W_U[out_dim + 2 * i, :p] = logit_scale * torch.cos(w * t).float()
        model.W_U[out_dim + 2 * i + 1, :p] = logit_scale * torch.sin(w * t).float()
        n = counts.get(k, 0)
        phases = 2 * math.pi * (torch.arange(n, dtype=torch.float64) + 0.5) / max(n, 1)
        mlp.W_in[2 * i, start : start + n] = torch.cos(phases).float()
        mlp.W_in[2 * i + 1, start : start + n] = -torch.sin(phases).float()
        mlp.b_in[start : start + n] = offset / 3
        mlp.W_out[start : start + n, out_dim + 2 * i] = torch.cos(2 * phases).float()
        mlp.W_out[start : start + n, out_dim + 2 * i + 1] = -torch.sin(2 * phases).float()
        start += n
    attn.W_V[0, : 2 * K, : 2 * K] = torch.eye(2 * K)
    attn.W_O[0, : 2 * K, : 2 * K] = torch.eye(2 * K)
    return model
