"""Checks the course notebook prints about the loaded model, each a small pure function of a model or of
activations, so the notebook's claims are computed, not quoted. Nothing here loads a model or touches the disk.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from .circuit import centred_grid, functional_form_logits, get_effective_weights, infer_p
from .fourier import check_frequencies, fft1d, per_frequency

__all__ = [
    "FORM_STEPS",
    "functional_form_variants",
    "interaction_fraction",
    "antisymmetric_fraction",
    "SingularShare",
    "singular_vector_frequency_share",
    "single_wave_margin",
]

#: The cumulative steps of :func:`functional_form_variants`, in order (name: what that step adds back).
FORM_STEPS: dict[str, str] = {
    "functional form": "ReLU(sum_h a_h W_neur[h, x] + (1 - a_h) W_neur[h, y]) @ W_logit, a_h = sigmoid(W_attn[h, x] - W_attn[h, y])",
    "+ positional embeddings": "t0 = W_E[x] + W_pos[0], t1 = W_E[y] + W_pos[1] in the keys and the values",
    "+ attention to =": "a softmax over all three positions: = also attends to itself and adds its value",
    "+ = residual and biases": "the = token's own residual stream and b_in enter the MLP; b_out, b_U and the attention biases",
    "+ direct path": "the residual stream after attention also goes straight to W_U (not only through the MLP)",
}


def _fractions(part: Tensor, total: Tensor) -> Tensor:
    """``part / total`` per column, 0 where ``total`` is 0 (a column that never varies)."""
    return torch.where(total > 0, part / total.clamp_min(torch.finfo(total.dtype).tiny), torch.zeros_like(total))


def interaction_fraction(acts: Float[Tensor, "batch n"] | Float[Tensor, "p p n"]) -> Float[Tensor, "n"]:
    """Fraction of each column's centred variance (over all p^2 inputs) that is an *interaction* of x and y.

    A centred function ``f(x, y)`` splits orthogonally into ``a(x) + b(y)`` (its 2D Fourier terms with one
    index 0: the first row and column of ``fft2d``) and the rest, the terms ``(i, j)`` with ``i, j > 0`` — the
    products such as ``cos(w x) cos(w y)`` ("quadratic" terms). ``a`` and ``b`` are the row and column means,
    so no basis is needed. Input: ``(p^2, n)`` in ``all_data`` order, or a ``(p, p, n)`` grid.
    Returns ``(n,)`` float64 in [0, 1] (0 for a constant column).
    """
    grid = centred_grid(acts.to(torch.float64))
    interaction = grid - grid.mean(1, keepdim=True) - grid.mean(0, keepdim=True)  # minus the x-only, y-only parts
    return _fractions(interaction.pow(2).sum((0, 1)), grid.pow(2).sum((0, 1)))


def antisymmetric_fraction(acts: Float[Tensor, "batch n"] | Float[Tensor, "p p n"]) -> Float[Tensor, "n"]:
    """Fraction of each column's centred variance in its part that is antisymmetric under ``x <-> y``:
    ``||(f - f^T) / 2||^2 / ||f||^2`` for the centred ``(p, p)`` grid ``f``. 0: ``f(x, y) = f(y, x)`` exactly;
    1: ``f(x, y) = -f(y, x)``. Returns ``(n,)`` float64 (0 for a constant column)."""
    grid = centred_grid(acts.to(torch.float64))
    anti = (grid - grid.transpose(0, 1)) / 2
    return _fractions(anti.pow(2).sum((0, 1)), grid.pow(2).sum((0, 1)))


class SingularShare(NamedTuple):
    """Top right-singular vectors of a ``(n, p)`` matrix and their share in the key frequencies' waves."""

    singular_values: Float[Tensor, "n_top"]  #: the ``n_top`` largest singular values, descending
    key_share: Float[Tensor, "n_top"]  #: fraction of each unit singular vector in span{cos/sin(w_k z): k key}
    best_freq: Tensor  #: ``(n_top,)`` long: the frequency holding most of each singular vector


def singular_vector_frequency_share(matrix: Float[Tensor, "n p"], key_freqs: list[int], n_top: int) -> SingularShare:
    """For the ``n_top`` leading right-singular vectors ``v`` (functions of the last axis, e.g. the output
    ``z`` of ``W_logit``), the squared norm of ``fft1d(v)`` in the cos and sin components of ``key_freqs``
    (each ``v`` has unit norm, so this is a fraction), and the frequency holding most of ``v``."""
    p = matrix.shape[-1]
    if matrix.ndim != 2 or p % 2 == 0:
        raise ValueError(f"expected a (n, p) matrix with odd p, got shape {tuple(matrix.shape)}")
    key_freqs = check_frequencies(key_freqs, p)
    if not 1 <= n_top <= min(matrix.shape):
        raise ValueError(f"n_top must lie in 1..{min(matrix.shape)}, got {n_top}")
    _, S, Vh = torch.linalg.svd(matrix.detach().to(torch.float64), full_matrices=False)
    coeffs = fft1d(Vh[:n_top]).pow(2)  # (n_top, p): const, cos 1, sin 1, ...
    per_freq = per_frequency(coeffs)  # (n_top, n_freqs): frequency k at index k - 1
    key_share = per_freq[:, [k - 1 for k in key_freqs]].sum(-1)
    return SingularShare(singular_values=S[:n_top], key_share=key_share, best_freq=per_freq.argmax(-1) + 1)


def single_wave_margin(p: int, freqs: list[int], weights: list[float] | None = None) -> tuple[float, float]:
    """``g(d) = sum_k c_k cos(2 pi k d / p)`` is largest at ``d = 0`` (the right answer, ``d = x + y - z``).
    Returns ``(g(0), max_{d != 0} g(d))``: how far the runner-up answer lies below the right one."""
    if not freqs:
        raise ValueError("need at least one frequency")
    weights = [1.0] * len(freqs) if weights is None else list(weights)
    if len(weights) != len(freqs):
        raise ValueError(f"need one weight per frequency: {len(freqs)} frequencies, {len(weights)} weights")
    d = torch.arange(p, dtype=torch.float64)
    g = sum(w * torch.cos(2 * math.pi * k * d / p) for k, w in zip(freqs, weights, strict=True))
    return float(g[0]), float(g[1:].max())


# ---- The functional form and the terms it leaves out ---------------------------------------------------------------


@torch.no_grad()
def functional_form_variants(model: HookedTransformer) -> dict[str, Float[Tensor, "p_sq p"]]:
    """Last-position logits (``=`` logit dropped), ``(p^2, p)`` in ``all_data`` order, of the functional form of
    Section 1.3 (:func:`.analysis.functional_form_logits`) and of the forms with the left-out terms added back one
    after another (:data:`FORM_STEPS`). The last, ``"+ direct path"``, equals the model's own logits (up to float
    rounding): one layer, no LayerNorm. Computed from per-token tables, not the p^2-input residual stream."""
    p = infer_p(model)
    W_E, W_pos, W_U = model.W_E.detach(), model.W_pos.detach(), model.W_U.detach()[:, :p]
    attn, mlp = model.blocks[0].attn, model.blocks[0].mlp
    W_Q, W_K, W_V, W_O = (t.detach() for t in (attn.W_Q, attn.W_K, attn.W_V, attn.W_O))  # (h, d, e), W_O (h, e, d)
    b_Q, b_K, b_V, b_O = (t.detach() for t in (attn.b_Q, attn.b_K, attn.b_V, attn.b_O))
    W_in, b_in, W_out, b_out = (t.detach() for t in (mlp.W_in, mlp.b_in, mlp.W_out, mlp.b_out))
    b_U = model.b_U.detach()[:p]
    scale = math.sqrt(W_Q.shape[-1])
    t_eq = W_E[p] + W_pos[2]  # the = query's residual stream (final_pos_resid_initial)
    tables = [W_E[:p] + W_pos[0], W_E[:p] + W_pos[1], t_eq[None]]  # (tokens, d_model) at positions 0, 1, 2

    def form(attend_eq: bool, biases: bool, direct: bool) -> Tensor:
        bq, bk, bv = (b if biases else torch.zeros_like(b) for b in (b_Q, b_K, b_V))
        q = torch.einsum("d,hde->he", t_eq, W_Q) + bq  # (h, e)
        q_bk, bv_O = (q * bk).sum(-1, keepdim=True), torch.einsum("he,hef->hf", bv, W_O)[:, None]
        s_x, s_y, s_eq = (torch.einsum("he,td,hde->ht", q, t, W_K) + q_bk for t in tables)  # (h, tokens)
        o_x, o_y, o_eq = (torch.einsum("td,hde,hef->htf", t, W_V, W_O) + bv_O for t in tables)  # (h, tokens, d)
        scores = torch.stack(torch.broadcast_tensors(s_x[:, :, None], s_y[:, None, :], s_eq[:, None, :]), -1) / scale
        pattern = scores[..., : 3 if attend_eq else 2].softmax(-1)  # (h, x, y, 2 or 3); 2: (sigmoid(s_x - s_y), ...)
        resid = torch.einsum("hxy,hxd->xyd", pattern[..., 0], o_x) + torch.einsum("hxy,hyd->xyd", pattern[..., 1], o_y)
        if attend_eq:
            resid = resid + torch.einsum("hxy,hd->xyd", pattern[..., 2], o_eq[:, 0])
        if biases:
            resid = resid + t_eq + b_O  # the = token's own residual stream and the attention output bias
        resid = resid.reshape(p * p, -1)
        post = torch.relu(resid @ W_in + (b_in if biases else 0))
        logits = post @ (W_out @ W_U)
        if biases:
            logits = logits + b_out @ W_U + b_U
        if direct:
            logits = logits + resid @ W_U
        return logits

    weights = get_effective_weights(model)
    variants = {"functional form": functional_form_logits(weights.W_neur, weights.W_logit, weights.W_attn)}
    flags = [(False, False, False), (True, False, False), (True, True, False), (True, True, True)]
    variants.update({name: form(*f) for name, f in zip(list(FORM_STEPS)[1:], flags, strict=True)})
    return variants
