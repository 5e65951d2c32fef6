"""One grader per coding exercise of the chapter, called right after it: ``tests.test_fft1d(fft1d)``.

A grader prints ``✅ <exercise>: all checks passed``, or ``⏳ <exercise>: not implemented yet`` while the function
raises ``NotImplementedError`` or returns ``None`` (so "Run all" goes on), and otherwise raises ``GraderError``
saying what was expected: type, shape and dtype first, then where the values differ and by how much, with a hint
when the answer matches a common mistake. It returns ``None``. Expected answers come from the reference solutions
on the model or seeded inputs given; a function that takes the model also runs on a second model (same config,
seeded random weights), so one that reads the notebook's globals instead of its argument fails, saying so.

Each grader takes the student's function (or values) first, then ``p=113`` (the modulus the functions work with)
or the model (``p`` is read from it); ``test_cache_activations(attn_mat, neuron_acts_post, neuron_acts_pre,
cache_or_model)`` takes the cache of ``model.run_with_cache(all_data)`` or the model, ``test_excl_loss(excl_loss,
model, key_freqs, *, train_indices=None, fn="add", frac_train=0.3, seed=0, run=None)`` the task and split of
``run`` (the run data or its file) if given. ``fourier_2d_basis_term`` is called as ``(i, j)``,
``get_trig_sum_directions`` as ``(k)``, ``fit_quadratic_terms`` as ``(values (p, p), k)``.
"""

# ruff: noqa: B023 - the "plausible mistakes" are lambdas evaluated within their loop iteration (no late binding)
from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..analysis import circuit, fourier
from ..runs.config import TASKS
from ..runs.data import make_split, train_test_split
from ..training.losses import score_logits
from .checks import (
    GraderError,
    basis64,
    cache_from,
    call,
    check_key_freqs,
    check_model,
    check_p,
    check_tensor,
    check_train_indices,
    close,
    compare,
    dtype_name,
    generator,
    grader,
    other_model,
    require_values,
    run_recipe,
    shape_str,
    type_name,
)

__test__ = False  # graders for students, not pytest tests

BASIS_NOTE = "this exercise uses the Fourier basis: make sure test_make_fourier_basis passes first."
LAST_ROW = "drop the LAST row of W_E (the = token): W_E[:-1], not W_E[1:]."
OTHER_MODEL = " (on a second model: the same config, seeded random weights)"
IGNORES_MODEL = (
    "that is the answer for the model you passed, not for this one: your function must compute from its `model` "
    "argument, not from the notebook's global `model`, `W_E`, ..."
)


def _pair(result: Any, what: str, names: str) -> tuple[Any, Any]:
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        length = f" of length {len(result)}" if isinstance(result, (tuple, list)) else ""
        raise GraderError(f"{what}: expected a tuple ({names}), got {type(result).__name__}{length}")
    return result[0], result[1]


# -------------------- Section 1 -------------------------------------------------------------------------


@grader("cache_activations")
def test_cache_activations(attn_mat: Any, neuron_acts_post: Any, neuron_acts_pre: Any, cache_or_model: Any) -> None:
    """Check ``attn_mat`` (batch, n_heads, n_ctx), ``neuron_acts_post`` / ``neuron_acts_pre`` (batch, d_mlp) against
    the cache they came from (``model.run_with_cache(all_data)``), or the model (then every p^2 input is run)."""
    cache = cache_from(cache_or_model)
    require_values(attn_mat=attn_mat, neuron_acts_post=neuron_acts_post, neuron_acts_pre=neuron_acts_pre)
    expected = circuit.key_activations_from_cache(cache)
    pattern, post, pre = (cache[name, 0].detach().cpu() for name in ("pattern", "post", "pre"))
    (batch, n_heads, n_ctx), d_mlp, dtype = expected.attn_mat.shape, post.shape[-1], post.dtype
    attn_hints = {
        (batch, n_heads, n_ctx, n_ctx): "that is the full pattern (batch, head, query, key): keep only the last (=) "
        "query position.",
        (batch, n_ctx): "keep the head dimension: one row of attention per head.",
    }
    last = "keep only the last position (the = token), e.g. [:, -1, :]."
    act_hints = {(batch, n_ctx, d_mlp): last, (batch, d_mlp, n_ctx): last}
    got_attn = check_tensor("attn_mat", attn_mat, (batch, n_heads, n_ctx), dtype, attn_hints)
    got_post = check_tensor("neuron_acts_post", neuron_acts_post, (batch, d_mlp), dtype, act_hints)
    got_pre = check_tensor("neuron_acts_pre", neuron_acts_pre, (batch, d_mlp), dtype, act_hints)
    first = "the first position's query row: use the last position (-1), where = sits."
    mistakes = [
        (
            "that is the attention *to* the last position from every query: index the query axis (pattern[:, :, -1, "
            ":]), not the key axis.",
            lambda: pattern[:, :, :, -1],
        ),
        (f"that is {first}", lambda: pattern[:, :, 0, :]),
        (
            "that looks like the attention scores (before the softmax): use the pattern.",
            lambda: cache["attn_scores", 0].detach().cpu()[:, :, -1, :],
        ),
    ]
    compare("attn_mat", got_attn, expected.attn_mat, mistakes=mistakes)
    for label, got, exp, same_kind, other, swapped in [
        ("neuron_acts_post", got_post, expected.neuron_acts_post, post, pre, "pre"),
        ("neuron_acts_pre", got_pre, expected.neuron_acts_pre, pre, post, "post"),
    ]:
        mistakes = [
            (f"those are the {swapped}-activations: 'pre' is before the ReLU, 'post' after it.", lambda: other[:, -1]),
            ("that is the first position: use the last position (-1), where = sits.", lambda: same_kind[:, 0]),
        ]
        compare(label, got, exp, mistakes=mistakes)


@grader("effective_weights")
def test_effective_weights(W_logit: Any, W_neur: Any, W_attn: Any, model: Any) -> None:
    """Check ``W_logit`` (d_mlp, p), ``W_neur`` (n_heads, p, d_mlp) and ``W_attn`` (n_heads, p) of ``model``."""
    check_model(model)
    require_values(W_logit=W_logit, W_neur=W_neur, W_attn=W_attn)
    w = circuit.get_course_weights(model)
    expected = circuit.get_effective_weights(w)
    p, d_mlp, (n_heads, _, d_head), dtype = w.p, w.W_in.shape[-1], w.W_Q.shape, w.W_E.dtype
    full_W_E = f"use W_E without the = row (W_E[:-1], {p} rows), not the full embedding."
    logit_hints = {
        (d_mlp, p + 1): f"drop the = column of the unembedding: W_U[:, :-1] ({p} columns).",
        (p, d_mlp): "W_logit maps neurons to logits: W_out @ W_U, shape (d_mlp, p).",
    }
    neur_hints = {(n_heads, p + 1, d_mlp): full_W_E, (p, d_mlp): "keep one matrix per head: (n_heads, p, d_mlp)."}
    attn_hints = {
        (n_heads, p + 1): full_W_E,
        (p, n_heads): "W_attn is (n_heads, p): one row of key scores per head.",
        (n_heads, n_heads, p): "the heads were broadcast against each other: the query of head h must meet the keys "
        "of the same head h (per-head matmul / einsum over the head axis).",
    }
    got_logit = check_tensor("W_logit", W_logit, (d_mlp, p), dtype, logit_hints)
    got_neur = check_tensor("W_neur", W_neur, (n_heads, p, d_mlp), dtype, neur_hints)
    got_attn = check_tensor("W_attn", W_attn, (n_heads, p), dtype, attn_hints)
    drop_eq = "the unembedding must be the = column-dropped W_U[:, :-1] (drop the last column)."
    compare("W_logit", got_logit, expected.W_logit, mistakes=[(drop_eq, lambda: w.W_out @ w.W_U_full[:, 1:])])
    compare("W_neur", got_neur, expected.W_neur, mistakes=[(LAST_ROW, lambda: w.W_E_full[1:] @ w.W_V @ w.W_O @ w.W_in)])

    def scores(query: Tensor, W_E: Tensor, W_K: Tensor = w.W_K) -> Tensor:
        return torch.einsum("hd,htd->ht", query, torch.einsum("td,hde->hte", W_E, W_K)) / math.sqrt(d_head)

    mistakes = [
        ("divide the scores by sqrt(d_head).", lambda: expected.W_attn * math.sqrt(d_head)),
        ("divide by sqrt(d_head), not d_head.", lambda: expected.W_attn * math.sqrt(d_head) / d_head),
        (
            "final_pos_resid_initial is W_E_full[-1] + W_pos[2] (the = token's embedding plus its position).",
            lambda: scores(w.W_E_full[-1] @ w.W_Q, w.W_E),
        ),
        (
            "query and key were swapped: the query comes from the = position (final_pos_resid_initial @ W_Q), the "
            "keys from the tokens (W_E @ W_K).",
            lambda: scores(w.final_pos_resid_initial @ w.W_K, w.W_E, w.W_Q),
        ),
        (LAST_ROW, lambda: scores(w.final_pos_resid_initial @ w.W_Q, w.W_E_full[1:])),
    ]
    compare("W_attn", got_attn, expected.W_attn, mistakes=mistakes)


def _functional_form_mistakes(
    W_neur: Tensor, W_logit: Tensor, W_attn: Tensor
) -> list[tuple[str, Callable[[], Tensor]]]:
    """Plausible wrong answers of functional_form_logits (all float64, (p^2, p)). (A (y, x) batch order is no
    mistake to look for: the form is symmetric in x and y, alpha_h(y, x) = 1 - alpha_h(x, y).)"""
    n_heads, p = W_attn.shape
    diff = W_attn[:, :, None] - W_attn[:, None, :]  # (h, x, y): score of x minus score of y
    alpha = diff.sigmoid()
    form = lambda a: circuit.functional_form_from_attention(W_neur, W_logit, a)  # noqa: E731

    def mixed(h: int | None = None) -> Tensor:  # (x, y, d_mlp) pre-activations, of one head or summed over heads
        a, W = (alpha, W_neur) if h is None else (alpha[h : h + 1], W_neur[h : h + 1])
        return torch.einsum("hxy,hxn->xyn", a, W) + torch.einsum("hxy,hyn->xyn", 1 - a, W)

    sigmoid = "alpha_h = sigmoid(W_attn[h, x] - W_attn[h, y]): a softmax over the two keys x and y of head h"
    return [
        (
            "alpha is on the wrong token: alpha_h = sigmoid(W_attn[h, x] - W_attn[h, y]) weighs W_neur[h, x] (the "
            "attention to x), 1 - alpha_h weighs W_neur[h, y].",
            lambda: form((-diff).sigmoid()),
        ),
        (
            "apply the ReLU to the pre-activations before multiplying by W_logit.",
            lambda: (mixed() @ W_logit).flatten(0, 1),
        ),
        (
            "sum over the heads INSIDE the ReLU: the MLP sees the sum of all heads' outputs.",
            lambda: sum(torch.relu(mixed(h)) @ W_logit for h in range(n_heads)).flatten(0, 1),
        ),
        (
            f"use the attention: {sigmoid} (you used alpha = 1/2, W_attn not used).",
            lambda: form(torch.full_like(diff, 0.5)),
        ),
        (f"{sigmoid}, not a softmax over the heads.", lambda: form(diff.softmax(0))),
        (f"alpha must lie between 0 and 1: {sigmoid}.", lambda: form(diff)),
        (
            f"{sigmoid}: the sigmoid of the score DIFFERENCE, not of W_attn[h, x] alone.",
            lambda: form(W_attn.sigmoid()[:, :, None].expand_as(diff)),
        ),
        (f"{sigmoid}, not a softmax over all p tokens.", lambda: form(W_attn.softmax(-1)[:, :, None].expand_as(diff))),
    ]


@grader("functional_form_logits")
def test_functional_form_logits(functional_form_logits: Any, model: Any) -> None:
    """Check ``functional_form_logits(W_neur (n_heads, p, d_mlp), W_logit (d_mlp, p), W_attn (n_heads, p)) -> (p^2,
    p)`` on the effective weights of ``model`` and on seeded random weights of the same shapes (with larger
    attention scores, so that every use of ``W_attn`` shows)."""
    p = check_model(model)
    weights = circuit.get_effective_weights(model)
    W_neur, W_logit, W_attn = (t.detach().cpu().float() for t in (weights.W_neur, weights.W_logit, weights.W_attn))
    n_heads, _, d_mlp = W_neur.shape
    gen = generator(6)
    random_weights = (
        torch.randn(n_heads, p, d_mlp, generator=gen),
        torch.randn(d_mlp, p, generator=gen) / math.sqrt(d_mlp),
        2 * torch.randn(n_heads, p, generator=gen),
    )
    hint = "the arguments are (W_neur (n_heads, p, d_mlp), W_logit (d_mlp, p), W_attn (n_heads, p))."
    shape_hints = {
        (p, p, p): "flatten the (x, y) grid into the batch axis: (p^2, p), index x * p + y "
        "(einops.rearrange(logits, 'x y z -> (x y) z')).",
        (p * p, d_mlp): "those are the neuron activations: multiply them by W_logit to get the logits.",
        (p, p, d_mlp): "those are the neuron activations: multiply them by W_logit and flatten (x, y).",
        (n_heads, p * p, p): "sum over the heads (inside the ReLU).",
    }
    for what, args in [
        ("the model's W_neur, W_logit, W_attn", (W_neur, W_logit, W_attn)),
        ("seeded random weights of the same shapes", random_weights),
    ]:
        a64 = tuple(t.double() for t in args)
        expected = circuit.functional_form_logits(*a64)
        result = call(functional_form_logits, args, what, [("", hint)], ("W_neur", "W_logit", "W_attn"))
        got = check_tensor(f"functional_form_logits ({what})", result, (p * p, p), torch.float32, shape_hints)
        atol = 1e-5 * expected.abs().max().item()
        compare(
            "functional_form_logits", got, expected, atol, 1e-4, _functional_form_mistakes(*a64), context=f" ({what})"
        )


@grader("make_fourier_basis")
def test_make_fourier_basis(make_fourier_basis: Any, p: Any = 113) -> None:
    """Check ``make_fourier_basis(p) -> (basis (p, p), names)`` for ``p`` and for a small modulus."""
    p = check_p(p)
    dtype = torch.get_default_dtype()  # (float32 unless the notebook changed it)
    dtype_hint = (
        f"build the basis in {dtype_name(dtype)} (no dtype=torch.float64): the exercises' tensors are "
        f"{dtype_name(dtype)}, and x @ basis.T needs both in the same dtype."
    )
    for q in sorted({p, 7}):
        expected, expected_names = fourier.make_fourier_basis(q)
        expected = expected.double()
        basis, names = _pair(call(make_fourier_basis, (q,), f"p={q}", names=("p",)), f"p={q}", "basis, names")
        got = check_tensor(f"basis (p={q})", basis, (q, q), dtype, dtype_hint=dtype_hint)
        x = torch.arange(q, dtype=torch.float64)
        waves = [f(2 * math.pi * k * x / q) for k in range(1, (q - 1) // 2 + 1) for f in (torch.cos, torch.sin)]
        raw = torch.stack([torch.ones(q, dtype=torch.float64), *waves])
        swapped, const_unnormalised = expected.clone(), expected.clone()
        swapped[1::2], swapped[2::2], const_unnormalised[0] = expected[2::2], expected[1::2], 1.0
        mistakes = [
            ("normalise every row to unit norm (divide each row by its norm), so basis @ basis.T = I.", lambda: raw),
            ("the constant row is not normalised: divide it by its norm (sqrt(p)).", lambda: const_unnormalised),
            ("cos and sin are swapped: row 2k-1 is cos(2 pi k x / p) and row 2k is sin.", lambda: swapped),
            ("your basis is transposed: the basis vectors are the ROWS.", lambda: expected.T),
        ]
        compare(f"basis (p={q})", got, expected, 1e-5, 1e-4, mistakes)
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise GraderError(f"names (p={q}): expected a list of {q} strings, got {type(names).__name__}")
        if len(names) != q:
            raise GraderError(f"names (p={q}): expected {q} names, got {len(names)}")
        for i, (g, e) in enumerate(zip(names, expected_names, strict=True)):
            if g != e:
                raise GraderError(
                    f"names (p={q}): name {i} should be {e!r}, got {g!r} (expected ['const', 'cos 1', 'sin 1', ...])"
                )


@grader("fft1d")
def test_fft1d(fft1d: Any, p: Any = 113) -> None:
    """Check ``fft1d`` on seeded random inputs of shapes (p,), (p, p) and (2, 3, p)."""
    p = check_p(p)
    F, gen = basis64(p), generator(1)
    leading = "fft1d must work on the last dimension of a tensor with any number of leading dimensions."
    for shape in [(p,), (p, p), (2, 3, p)]:
        x = torch.randn(shape, generator=gen)
        x64, what = x.double(), f" for x of shape {shape_str(shape)}"
        got = check_tensor(f"fft1d(x){what}", call(fft1d, (x,), what[5:], [("", leading)], ("x",)), shape, x.dtype)
        mistakes = [
            (
                "you computed F @ x: that transforms the first dimension. Use x @ F.T (the last dimension).",
                lambda: F @ x64,
            ),
            ("multiply by the TRANSPOSE of the basis: x @ F.T (the rows of F are the basis vectors).", lambda: x64 @ F),
            ("transform the last dimension, not the first.", lambda: (F @ x64.transpose(0, -1)).transpose(0, -1)),
        ]
        compare("fft1d(x)", got, x64 @ F.T, mistakes=mistakes, fallback_hint=BASIS_NOTE, context=what)


@grader("fourier_2d_basis_term")
def test_fourier_2d_basis_term(fourier_2d_basis_term: Any, p: Any = 113) -> None:
    """Check ``fourier_2d_basis_term(i, j)`` (a (p, p) grid indexed [x, y]) for several (i, j)."""
    p = check_p(p)
    F = basis64(p)
    for i, j in [(0, 0), (1, 0), (3 % p, 10 % p), (10 % p, 3 % p), (p - 1, 1), (27, 28) if p > 28 else (1, 2)]:
        result = call(fourier_2d_basis_term, (i, j), f"(i, j) = ({i}, {j})", names=("i", "j"))
        flat = {(p * p,): "return the (p, p) grid, not a flattened vector."}
        got = check_tensor(f"fourier_2d_basis_term({i}, {j})", result, (p, p), torch.get_default_dtype(), flat)
        mistakes = [
            (
                "your grid is transposed: the first index i goes with x (the rows, first axis), j with y.",
                lambda: torch.outer(F[j], F[i]),
            ),
            ("use the rows F[i] and F[j] of the basis (not its columns).", lambda: torch.outer(F[:, i], F[:, j])),
        ]
        expected = torch.outer(F[i], F[j])
        compare(f"fourier_2d_basis_term({i}, {j})", got, expected, mistakes=mistakes, fallback_hint=BASIS_NOTE)


@grader("fft2d")
def test_fft2d(fft2d: Any, p: Any = 113) -> None:
    """Check ``fft2d`` on seeded random tensors of shapes (p, p) and (p, p, 4)."""
    p = check_p(p)
    F, gen = basis64(p), generator(2)
    trailing = "fft2d must accept (p, p, ...) with any number of trailing dimensions (einsum with '...')."
    for shape in [(p, p), (p, p, 4)]:
        t = torch.randn(shape, generator=gen)
        t64, what = t.double(), f" for t of shape {shape_str(shape)}"
        expected = torch.einsum("xy...,ix,jy->ij...", t64, F, F)
        got = check_tensor(
            f"fft2d(t){what}", call(fft2d, (t,), what[5:], [("", trailing)], ("tensor",)), shape, t.dtype
        )
        mistakes = [
            ("x and y were swapped: out[i, j] = sum_{x,y} t[x, y] F[i, x] F[j, y].", lambda: expected.transpose(0, 1)),
            (
                "contract with the basis rows (F[i, x]), not with its transpose.",
                lambda: torch.einsum("xy...,xi,yj->ij...", t64, F, F),
            ),
            (
                "transform BOTH input dimensions: you transformed only the first (x).",
                lambda: torch.einsum("xy...,ix->iy...", t64, F),
            ),
            (
                "transform BOTH input dimensions: you transformed only the second (y).",
                lambda: torch.einsum("xy...,jy->xj...", t64, F),
            ),
        ]
        compare("fft2d(t)", got, expected, atol=1e-3, mistakes=mistakes, fallback_hint=BASIS_NOTE, context=what)


# -------------------- Section 2 -------------------------------------------------------------------------


def _synthetic_fourier_neuron_acts(p: int, seed: int = 3) -> Tensor:
    """(p, p, n) 2D-Fourier activations: most neurons concentrated in one frequency's 3x3 block (the first, the
    last and some in between), a few spread over every frequency, all with a little noise."""
    gen, n_freqs = generator(seed), (p - 1) // 2
    freqs = [1, n_freqs, n_freqs, 2, n_freqs // 2, n_freqs - 1] + torch.randint(
        1, n_freqs + 1, (10,), generator=gen
    ).tolist()
    cols = []
    for k in [min(max(k, 1), n_freqs) for k in freqs]:  # (small moduli have few frequencies)
        t = 0.005 * torch.randn(p, p, generator=gen)
        idx = torch.tensor(fourier.frequency_block_indices(k))
        t[idx[:, None], idx[None, :]] += torch.randn(3, 3, generator=gen)
        cols.append(t)
    cols += [torch.randn(p, p, generator=gen) for _ in range(4)]  # no single frequency dominates these
    acts = torch.stack(cols, dim=-1)
    acts[0, 0] = 0.0  # centred activations have no constant term
    return acts


@grader("mean_sq_fourier_coefficients")
def test_mean_sq_fourier_coefficients(mean_sq_fourier_coefficients: Any, p: Any = 113) -> None:
    """Check ``mean_sq_fourier_coefficients(neuron_acts_sq (p, p, d_mlp)) -> (p, p)`` on seeded synthetic
    activations whose neurons have non-zero means (so that centring matters)."""
    p = check_p(p)
    gen, F = generator(7), basis64(p)
    coeffs = _synthetic_fourier_neuron_acts(p).double()  # (p, p, n), no constant term
    n = coeffs.shape[-1]
    acts = (
        torch.einsum("ijn,ix,jy->xyn", coeffs, F, F) + 0.5 + torch.rand(n, generator=gen, dtype=torch.float64)
    ).float()
    acts64 = acts.double()
    expected = circuit.mean_sq_fourier_coefficients(acts64)
    fourier2d = lambda t: torch.einsum("xyn,ix,jy->ijn", t, F, F)  # noqa: E731
    centred = acts64 - acts64.mean((0, 1), keepdim=True)
    coef, raw_sq = fourier2d(centred), fourier2d(acts64).pow(2)
    grid = "the input is the (p, p, d_mlp) grid of activations: transform its first two axes (x, y) with fft2d."
    what = f"neuron_acts_sq of shape {shape_str(acts.shape)}"
    result = call(mean_sq_fourier_coefficients, (acts,), what, [("", grid)], ("neuron_acts_sq",))
    shape_hints = {
        (p, p, n): "average the squared coefficients over the neurons (the last axis).",
        (n,): "average over the neurons (the last axis), not over the (x, y) grid.",
        (p * p,): "return the (p, p) grid of the 2D Fourier terms, not a flattened vector.",
    }
    got = check_tensor("mean_sq_fourier_coefficients", result, (p, p), acts.dtype, shape_hints)
    centre = "subtract each neuron's mean over all p^2 inputs (mean over dims 0 and 1, keepdim=True)"
    mistakes = [
        (f"centre the activations first: {centre} before fft2d.", lambda: raw_sq.mean(-1)),
        ("square the coefficients (.pow(2)), do not take absolute values.", lambda: coef.abs().mean(-1)),
        ("take the MEAN over the neurons, not the sum.", lambda: coef.pow(2).sum(-1)),
        ("square each neuron's coefficients BEFORE averaging over the neurons.", lambda: coef.mean(-1).pow(2)),
        (
            f"centre the activations, not the squared coefficients: {centre}, then fft2d, then square.",
            lambda: (raw_sq - raw_sq.mean((0, 1), keepdim=True)).mean(-1),
        ),
        *[
            (
                f"{centre}, not {over}.",
                lambda dim=dim: fourier2d(acts64 - acts64.mean(dim, keepdim=True)).pow(2).mean(-1),
            )
            for dim, over in [(-1, "the mean over the neurons"), (0, "over x only"), (1, "over y only")]
        ],
        *[
            (
                f"transform BOTH input axes (x and y) with fft2d: you transformed only {axis}.",
                lambda eq=eq: torch.einsum(eq, centred, F).pow(2).mean(-1),
            )
            for axis, eq in [("x", "xyn,ix->iyn"), ("y", "xyn,jy->xjn")]
        ],
        ("out[i, j]: i is the x-basis term, j the y-basis term (yours is transposed).", lambda: expected.T),
        (
            "contract with the basis rows F[i, x] (fft2d), not with its transpose.",
            lambda: torch.einsum("xyn,xi,yj->ijn", centred, F, F).pow(2).mean(-1),
        ),
    ]
    fallback = (
        "it is fft2d of the centred activations, squared, averaged over the neurons (check test_fft2d passes first)."
    )
    atol, context = 1e-5 * expected.abs().max().item(), " (synthetic activations with non-zero means)"
    compare("mean_sq_fourier_coefficients", got, expected, atol, 1e-4, mistakes, fallback, context)


def _quadratic_fit_cases(p: int) -> list[tuple[str, Tensor, int]]:
    """(description, (p, p) float32 values, k): the chapter's ReLU toy at k = 42 (or a middle frequency for another
    p) and at the last frequency, and a seeded random grid with a large mean and every term present."""
    n_freqs, F = (p - 1) // 2, basis64(p)
    cases = []
    for k in sorted({42 if n_freqs >= 42 else max(1, n_freqs // 2), n_freqs}):
        c, what = F[2 * k - 1], f"the ReLU toy ReLU(0.5/sqrt(p) + c(x) + c(y)), k={k}"
        cases.append((what, torch.relu(0.5 / math.sqrt(p) + c[:, None] + c[None, :]), k))
    k = min(14, n_freqs)
    terms = circuit.quadratic_terms(p, k).T.reshape(4, p, p)
    weights = p * torch.tensor([3.0, 0.4, -0.3, 0.5], dtype=torch.float64)  # a mean of 3, waves of amplitude ~0.5
    noise = 0.3 * torch.randn(p, p, generator=generator(8), dtype=torch.float64)
    values = torch.einsum("t,txy->xy", weights, terms) + noise
    cases.append((f"a seeded random grid with a large mean, k={k}", values, k))
    return [(what, values.float(), k) for what, values, k in cases]


@grader("fit_quadratic_terms")
def test_fit_quadratic_terms(fit_quadratic_terms: Any, p: Any = 113) -> None:
    """Check ``fit_quadratic_terms(values (p, p), k) -> (coefficients (4,), r2)`` on the chapter's ReLU toy and on a
    seeded random grid, for several k."""
    p = check_p(p)
    F, x = basis64(p), torch.arange(p, dtype=torch.float64)
    order = "const, cos_k(x), cos_k(y), cos_k(x) cos_k(y)"
    shape_hints = {
        (3,): f"return all four coefficients: {order}.",
        (p * p,): "return the four coefficients, not the fitted values.",
        (p, p): "return the four coefficients, not the fitted grid.",
        (4, 1): "return a flat (4,) tensor (.flatten() the lstsq solution).",
    }
    for what, values, k in _quadratic_fit_cases(p):
        y = values.double().flatten()
        exp_coef, exp_r2 = circuit.fit_quadratic_terms(values.double(), k)
        coefficients, r2 = _pair(
            call(fit_quadratic_terms, (values, k), what, names=("values", "k")), what, "coefficients, r2"
        )
        got_coef = check_tensor(f"coefficients ({what})", coefficients, (4,), "float", shape_hints)  # (any precision)
        if isinstance(r2, Tensor) or not isinstance(r2, numbers.Real) or isinstance(r2, bool):
            extra = ": return r2.item()" if isinstance(r2, Tensor) else ""
            raise GraderError(f"r2 ({what}): expected r2 as a Python float, got {type_name(r2)}{extra}")

        def fit(columns: list[Tensor]) -> tuple[Tensor, float]:
            X = torch.stack(columns, dim=1)
            coef = torch.linalg.lstsq(X, y[:, None]).solution.flatten()
            return coef, 1 - ((y - X @ coef).pow(2).sum() / (y - y.mean()).pow(2).sum()).item()

        def columns(row: int, raw: bool = False) -> list[Tensor]:
            c, one = (torch.cos(2 * math.pi * k * x / p), torch.ones(p, dtype=torch.float64)) if raw else (F[row], F[0])
            return [torch.outer(a, b).flatten() for a, b in [(one, one), (c, one), (one, c), (c, c)]]

        def permuted() -> Tensor:
            orders = [list(o) for o in itertools.permutations(range(4)) if list(o) != [0, 1, 2, 3]]
            return next(exp_coef[o] for o in orders if close(got_coef.double(), exp_coef[o], 1e-4, 1e-4))

        mistakes = [
            (
                "use the unit-norm 2D basis terms (outer products of rows of the Fourier basis, e.g. "
                "fourier_2d_basis_term), not raw cosines.",
                lambda: fit(columns(0, raw=True))[0],
            ),
            (f"the order is {order} (x is the first axis of values).", permuted),
            ("cos k is basis row 2k - 1 (row 2k is sin k).", lambda: fit(columns(2 * k))[0]),
            ("frequency k's cosine is basis row 2k - 1, not row k.", lambda: fit(columns(k))[0]),
            *[
                (f"fit all four terms ({order}).", lambda i=i: exp_coef.index_fill(0, torch.tensor([i]), 0.0))
                for i in range(4)
            ],
        ]
        compare(
            "coefficients", got_coef, exp_coef, 1e-4 * exp_coef.abs().max().item(), 1e-4, mistakes, context=f" ({what})"
        )
        ss_res = (y - circuit.quadratic_terms(p, k) @ exp_coef).pow(2).sum().item()
        ss_tot = (y - y.mean()).pow(2).sum().item()
        r2_of = lambda value: torch.tensor([value], dtype=torch.float64)  # noqa: E731
        not_r2 = "return r2 = 1 - SS_res / SS_tot, not"
        mistakes = [
            (
                "SS_tot is the sum of squares about the MEAN: sum((values - values.mean())**2), not sum(values**2).",
                lambda: r2_of(1 - ss_res / y.pow(2).sum().item()),
            ),
            (f"{not_r2} the residual sum of squares.", lambda: r2_of(ss_res)),
            (f"{not_r2} the fraction left unexplained.", lambda: r2_of(ss_res / ss_tot)),
            (f"{not_r2} the mean squared residual.", lambda: r2_of(ss_res / y.numel())),
            ("r2 is the squared correlation: you returned its square root.", lambda: r2_of(math.sqrt(exp_r2))),
            ("include the cos_k(x) cos_k(y) term in the fit.", lambda: r2_of(fit(columns(2 * k - 1)[:3])[1])),
        ]
        compare("r2", r2_of(float(r2)), r2_of(exp_r2), 1e-5, 1e-4, mistakes, context=f" ({what})")


@grader("find_neuron_freqs")
def test_find_neuron_freqs(find_neuron_freqs: Any, p: Any = 113) -> None:
    """Check ``find_neuron_freqs(fourier_neuron_acts (p, p, n))`` on synthetic neurons (including the last frequency
    (p-1)/2 and neurons no frequency explains)."""
    p = check_p(p)
    acts = _synthetic_fourier_neuron_acts(p)
    n, acts64 = acts.shape[-1], acts.double()
    exp_freqs, exp_frac = circuit.find_neuron_freqs(acts)
    what = f"a synthetic fourier_neuron_acts of shape {shape_str(acts.shape)}"
    result = call(find_neuron_freqs, (acts,), what, names=("fourier_neuron_acts",))
    freqs, frac = _pair(result, "find_neuron_freqs", "neuron_freqs, neuron_frac_explained")
    one = "return one frequency per neuron (the argmax over frequencies)."
    got_freqs = check_tensor("neuron_freqs", freqs, (n,), "int", {((p - 1) // 2, n): one})
    one = "return one fraction per neuron: the fraction of its best frequency."
    got_frac = check_tensor("neuron_frac_explained", frac, (n,), acts.dtype, {((p - 1) // 2, n): one})
    block_sq = fourier.arrange_by_2d_freqs(acts64).pow(2).sum((1, 2))  # (n_freqs, n)
    total_sq = acts64.pow(2).sum((0, 1))
    dropped_last = (block_sq[:-1] / total_sq).argmax(0) + 1
    last = (
        f"neurons of the last frequency ({(p - 1) // 2}) are wrong: include every frequency k = 1 ... (p-1)/2 (a "
        "block helper that stops one early drops it)."
    )
    mistakes = [
        ("add 1 to the argmax: frequency k's block is at index k - 1 (frequencies start at 1).", lambda: exp_freqs - 1),
        (last, lambda: dropped_last),
        (last, lambda: dropped_last - 1),
        (
            "use squared coefficients (.pow(2)), not absolute values.",
            lambda: fourier.arrange_by_2d_freqs(acts64).abs().sum((1, 2)).argmax(0) + 1,
        ),
    ]
    compare("neuron_freqs", got_freqs.double(), exp_freqs.double(), 0.0, 0.0, mistakes)
    best = block_sq.gather(0, exp_freqs[None] - 1)[0]
    mistakes = [
        (
            "use squared coefficients (.pow(2)) in both the block sum and the total.",
            lambda: (
                fourier.arrange_by_2d_freqs(acts64).abs().sum((1, 2)).gather(0, exp_freqs[None] - 1)[0]
                / acts64.abs().sum((0, 1))
            ),
        ),
        (
            "divide by each neuron's OWN total sum of squares (sum over the (p, p) grid), not the total over all "
            "neurons.",
            lambda: best / total_sq.sum(),
        ),
        (
            "divide by the neuron's total sum of squares over the whole (p, p) grid, not by the sum over the "
            "frequency blocks.",
            lambda: best / block_sq.sum(0),
        ),
        ("that is the block's sum of squares: divide it by the neuron's total sum of squares.", lambda: best),
    ]
    compare("neuron_frac_explained", got_frac, exp_frac, 1e-4, 1e-3, mistakes)


@grader("project_onto_direction")
def test_project_onto_direction(project_onto_direction: Any) -> None:
    """Check ``project_onto_direction(batch_vecs (n, ...), v (n,))`` with a unit-norm and a non-unit ``v`` (``v``
    must be used as given: the function assumes unit norm and does not normalise)."""
    gen, n = generator(4), 50
    for what, rest, norm in [
        ("a unit-norm v and batch_vecs of shape (50, 7)", (7,), 1.0),
        ("a unit-norm v and batch_vecs of shape (50, 3, 4)", (3, 4), 1.0),
        ("a v of norm != 1 (use it as given, do not normalise) and batch_vecs of shape (50, 7)", (7,), 2.5),
    ]:
        batch_vecs, v = torch.randn(n, *rest, generator=gen), torch.randn(n, generator=gen)
        v = norm * v / v.norm()
        b64, v64 = batch_vecs.double(), v.double()
        project = lambda u: u.reshape(-1, *[1] * len(rest)) * torch.tensordot(u, b64, dims=([0], [0]))  # noqa: E731
        shape_hints = {
            rest: "return the projected vectors (v times the coefficients), not only the coefficients.",
            (*rest, n): "the batch axis must stay first.",
        }
        result = call(project_onto_direction, (batch_vecs, v), what, names=("batch_vecs", "v"))
        got = check_tensor(f"projection ({what})", result, batch_vecs.shape, batch_vecs.dtype, shape_hints)
        mistakes = [
            (
                "you normalised v: the function assumes v has unit norm and must use it as given (v * (v . batch_vecs)).",
                lambda: project(v64 / v64.norm()),
            ),
            (
                "multiply the coefficients by v again: the projection is v * (v . batch_vecs).",
                lambda: torch.tensordot(v64, b64, dims=([0], [0])).expand_as(b64),
            ),
        ]
        compare("projection", got, project(v64), mistakes=mistakes, context=f" ({what})")


@grader("project_onto_frequency")
def test_project_onto_frequency(project_onto_frequency: Any, p: Any = 113) -> None:
    """Check ``project_onto_frequency(batch_vecs (p^2, m), freq)`` for the first, a middle and the last frequency
    on seeded random vectors."""
    p = check_p(p)
    F, n_freqs = basis64(p), (p - 1) // 2
    batch_vecs = torch.randn(p * p, 3, generator=generator(5))
    b64 = batch_vecs.double()

    def block(k: int) -> list[int]:
        if not 1 <= k <= n_freqs:
            raise IndexError(k)  # no such block: the candidate is skipped
        return [0, 2 * k - 1, 2 * k]

    def project(rows: list[int], cols: list[int]) -> Tensor:
        terms = torch.stack([torch.outer(F[i], F[j]).flatten() for i in rows for j in cols])  # (n_terms, p^2)
        return terms.T @ (terms @ b64)

    rows = "the block of frequency k uses basis rows 0 (const), 2k-1 (cos k) and 2k (sin k)"
    fallback = (
        "it sums project_onto_direction over the 9 flattened 2D basis terms of the block (check "
        "test_project_onto_direction and test_fourier_2d_basis_term pass first)."
    )
    for freq in sorted({1, min(14, n_freqs), n_freqs}):
        idx, label = block(freq), f"project_onto_frequency(batch_vecs, {freq})"
        what = f"batch_vecs of shape {shape_str(batch_vecs.shape)}, freq={freq}"
        result = call(project_onto_frequency, (batch_vecs, freq), what, names=("batch_vecs", "freq"))
        got = check_tensor(label, result, batch_vecs.shape, batch_vecs.dtype)
        mistakes = [
            (
                "include the constant: the block is {const, cos k, sin k} x {const, cos k, sin k} (9 terms), you used "
                "only the 4 cos/sin products.",
                lambda: project(idx[1:], idx[1:]),
            ),
            (
                "the constant-constant term belongs to the block too (9 terms).",
                lambda: project(idx, idx) - project([0], [0]),
            ),
            (f"{rows}; you used rows 2k and 2k+1.", lambda: project(*[[0, 2 * freq, 2 * freq + 1]] * 2)),
            (f"you used frequency k+1's block: {rows}.", lambda: project(block(freq + 1), block(freq + 1))),
            (f"you used frequency k-1's block: {rows}.", lambda: project(block(freq - 1), block(freq - 1))),
        ]
        compare(label, got, project(idx, idx), atol=1e-4, mistakes=mistakes, fallback_hint=fallback)


@grader("get_trig_sum_directions")
def test_get_trig_sum_directions(get_trig_sum_directions: Any, p: Any = 113) -> None:
    """Check ``get_trig_sum_directions(k) -> (cos_dir (p, p), sin_dir (p, p))`` for several k."""
    p = check_p(p)
    x = torch.arange(p, dtype=torch.float64)
    s, d = x[:, None] + x[None, :], x[:, None] - x[None, :]
    identities = {
        "cos": "cos(w(x+y)) = cos wx cos wy - sin wx sin wy",
        "sin": "sin(w(x+y)) = sin wx cos wy + cos wx sin wy",
    }
    for k in sorted({1, min(14, (p - 1) // 2), (p - 1) // 2}):
        result = _pair(call(get_trig_sum_directions, (k,), f"k={k}", names=("k",)), f"k={k}", "cos_dir, sin_dir")
        w = 2 * math.pi * k / p
        plus = {"cos": torch.cos(w * s) * math.sqrt(2) / p, "sin": torch.sin(w * s) * math.sqrt(2) / p}
        minus = {"cos": torch.cos(w * d) * math.sqrt(2) / p, "sin": torch.sin(w * d) * math.sqrt(2) / p}
        for got_raw, (trig, other) in zip(result, [("cos", "sin"), ("sin", "cos")], strict=True):
            label = f"{trig}_dir (k={k})"
            flat = {(p * p,): "return (p, p) grids (they are flattened later)."}
            got = check_tensor(label, got_raw, (p, p), torch.get_default_dtype(), flat)
            mistakes = [
                ("cos_dir and sin_dir are swapped: return (cos_dir, sin_dir).", lambda: plus[other]),
                (
                    "normalise: the direction must have unit norm (divide the sum of the two 2D terms by sqrt(2)).",
                    lambda: plus[trig] * math.sqrt(2),
                ),
                (
                    f"that is the x - y direction: {identities['cos']} and {identities['sin']} (check the signs).",
                    lambda: minus[trig],
                ),
                (f"check the sign: {identities[trig]}.", lambda: -plus[trig]),
            ]
            compare(label, got, plus[trig], atol=1e-5, mistakes=mistakes)


# -------------------- Section 3 -------------------------------------------------------------------------


def _losses(label: str, got: Any, n: int) -> Tensor:
    expected = f"{label}: expected a list of {n} floats (one per key frequency)"
    if isinstance(got, Tensor) and got.ndim != 1:
        raise GraderError(f"{expected}, got a tensor of shape {shape_str(got.shape)}")
    if not isinstance(got, (Tensor, list, tuple)):
        raise GraderError(f"{expected}, got a {type(got).__name__}")
    try:
        values = torch.tensor([float(v) for v in got], dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        raise GraderError(f"{expected} ({e})") from None
    if values.numel() != n:
        raise GraderError(f"{label}: expected {n} losses (one per key frequency), got {values.numel()}")
    return values


@grader("excl_loss")
def test_excl_loss(
    excl_loss: Any,
    model: Any,
    key_freqs: Any,
    *,
    train_indices: Any = None,
    fn: Any = "add",
    frac_train: Any = 0.3,
    seed: Any = 0,
    run: Any = None,
) -> None:
    """Check ``excl_loss(model, key_freqs)`` against the reference computed from ``model`` (train loss with each
    key frequency's cos/sin(x+y) logit directions removed, no bias correction), then on a second model.

    The task and split are ``fn`` / ``frac_train`` / ``seed`` (``train_indices`` overrides the split), or those of
    ``run``: the run object, a run-file dict or the path of a run file."""
    p = check_model(model)
    key_freqs = check_key_freqs(key_freqs, p)  # (the student's function receives this list of ints)
    if run is not None:
        fn, frac_train, seed = run_recipe(run, p)
    if fn not in TASKS:
        raise GraderError(f"fn: expected one of {TASKS} (the task the model was trained on), got {fn!r}")
    try:
        split = make_split(p, frac_train, seed, fn)  # labels of the run's task (its seed draws fn="rand") and split
    except (TypeError, ValueError) as e:
        raise GraderError(f"frac_train={frac_train!r}, seed={seed!r}: {e}") from None
    train = check_train_indices(split.train_indices if train_indices is None else train_indices, p)

    def expected_for(m: torch.nn.Module) -> tuple[Tensor, Tensor]:  # (the logits with =, the losses)
        with torch.no_grad():
            full = m(split.all_data.to(m.cfg.device))[:, -1].detach().cpu()
        return full, torch.tensor(
            circuit.excl_loss_from_logits(full[:, :p], key_freqs, train, split.labels), dtype=torch.float64
        )

    full, expected = expected_for(model)
    eq_logit = f"the model's logits have d_vocab = {p + 1} columns, the last for the = token: drop it (model(all_data)[:, -1, :-1]); p = d_vocab - 1 = {p}."
    hints = [(rf"\b{p + 1}\b", eq_logit)]
    what = f"the model and key_freqs={key_freqs}"
    got = _losses("excl_loss", call(excl_loss, (model, key_freqs), what, hints, ("model", "key_freqs")), len(key_freqs))

    # (bias correction is no mistake to look for: the removed directions have zero mean over the batch)
    def variant(mode: str = "train", dirs: str = "cos sin", with_eq: bool = False, train: Tensor = train) -> Tensor:
        logits = full if with_eq else full[:, :p]
        out = []
        for k in key_freqs:
            removed = logits
            for name, direction in zip(("cos", "sin"), fourier.get_trig_sum_directions(k, p), strict=True):
                if name in dirs:
                    d = direction.flatten().to(logits)
                    removed = removed - d[:, None] * (d @ logits)[None, :]
            out.append(score_logits(removed, split.labels, mode=mode, train_indices=train))
        return torch.tensor(out, dtype=torch.float64)

    both = "remove BOTH the cos and the sin (x+y) directions"
    mistakes = [
        ("score on the TRAIN pairs only (mode='train'), not on all pairs.", lambda: variant(mode="all")),
        ("score on the TRAIN pairs, not the test pairs.", lambda: variant(mode="test")),
        (f"{both} (you removed only cos).", lambda: variant(dirs="cos")),
        (f"{both} (you removed only sin).", lambda: variant(dirs="sin")),
        ("drop the = logit (the last column) before scoring.", lambda: variant(with_eq=True)),
        (
            "those are the losses of the unchanged logits: subtract each frequency's projections.",
            lambda: variant(dirs=""),
        ),
        (
            "you scored the chapter's default train pairs (frac_train=0.3, seed=0), but this model's run used another "
            "split (the train pairs the grader was given): use that run's train indices.",
            lambda: variant(train=train_test_split(p, 0.3, 0)[0]),
        ),
    ]
    compare("excl_loss", got, expected, 1e-9, 1e-3, mistakes, context=f" (key_freqs {key_freqs})")
    other = other_model(model)
    expected_other = expected_for(other)[1]  # (computed before the student's function runs on it)
    what = f"a second model and key_freqs={key_freqs}"
    got = _losses("excl_loss", call(excl_loss, (other, key_freqs), what, hints, ("model", "key_freqs")), len(key_freqs))
    compare("excl_loss", got, expected_other, 1e-9, 1e-3, [(IGNORES_MODEL, lambda: expected)], context=OTHER_MODEL)


@grader("fourier_embed")
def test_fourier_embed(fourier_embed: Any, model: Any) -> None:
    """Check ``fourier_embed(model) -> (p,)``: squared norm of each Fourier component of W_E[:-1] (on ``model`` and
    on a second model)."""
    p = check_model(model)
    F, models = basis64(p), [model, other_model(model)]
    W_E_fulls = [m.W_E.detach().cpu().double() for m in models]
    expected = [(F @ W[:-1]).pow(2).sum(1) for W in W_E_fulls]
    d_model = W_E_fulls[0].shape[1]
    shape_hints = {
        (d_model,): "sum the squares over d_model (dim 1): one value per Fourier component.",
        (p, d_model): "square and sum over d_model: one value per Fourier component.",
    }
    rows = [("", f"W_E has p + 1 = {p + 1} rows; drop the = row with W_E[:-1].")]
    for m, W_E_full, exp, context in zip(models, W_E_fulls, expected, ["", OTHER_MODEL], strict=True):
        result = call(fourier_embed, (m,), "the model" + context, rows, ("model",))
        got = check_tensor(f"fourier_embed(model){context}", result, (p,), model.W_E.dtype, shape_hints)
        W_E = W_E_full[:-1]
        mistakes = [
            *([(IGNORES_MODEL, lambda: expected[0])] if context else []),
            (
                "multiply by the basis F, not its transpose: fourier_basis @ W_E[:-1].",
                lambda: (F.T @ W_E).pow(2).sum(1),
            ),
            ("square the coefficients before summing (squared norms, .pow(2).sum(1)).", lambda: (F @ W_E).norm(dim=1)),
            (LAST_ROW, lambda: (F @ W_E_full[1:]).pow(2).sum(1)),
            ("drop the = ROW of W_E (W_E[:-1]), keep every d_model column.", lambda: (F @ W_E[:, :-1]).pow(2).sum(1)),
        ]
        compare("fourier_embed(model)", got, exp, 1e-5 * exp.abs().max().item(), 1e-4, mistakes, BASIS_NOTE, context)


@grader("embed_SVD")
def test_embed_SVD(embed_SVD: Any, model: Any) -> None:
    """Check ``embed_SVD(model)``: singular values (descending) of W_E without the = row (on ``model`` and on a
    second model)."""
    p = check_model(model)
    models = [model, other_model(model)]
    W_E_fulls = [m.W_E.detach().cpu().double() for m in models]
    expected = [torch.linalg.svdvals(W[:-1]) for W in W_E_fulls]
    d_model = W_E_fulls[0].shape[1]
    n = min(p, d_model)
    only = "return only the singular values (S of U, S, Vh), not"
    shape_hints = {
        (min(p + 1, d_model),): "the = row is still in: drop the = token's ROW of W_E (W_E[:-1]), not a d_model "
        "column (W_E[:, :-1]).",
        (p, p): f"{only} a matrix.",
        (p, n): f"{only} U.",
        (n, d_model): f"{only} Vh.",
    }
    for m, W_E_full, S, context in zip(models, W_E_fulls, expected, ["", OTHER_MODEL], strict=True):
        result = call(embed_SVD, (m,), "the model" + context, names=("model",))
        got = check_tensor(f"embed_SVD(model){context}", result, (n,), model.W_E.dtype, shape_hints)
        mistakes = [
            *([(IGNORES_MODEL, lambda: expected[0])] if context else []),
            ("return the singular values themselves, not their squares.", lambda: S.pow(2)),
            ("return the singular values in descending order (as torch.linalg.svd gives them).", lambda: S.flip(0)),
            (LAST_ROW, lambda: torch.linalg.svdvals(W_E_full[1:])),
        ]
        compare("embed_SVD(model)", got, S, 1e-4 * S.max().item(), 1e-3, mistakes, context=context)


__all__ = [name for name in dir() if name.startswith("test_")]
