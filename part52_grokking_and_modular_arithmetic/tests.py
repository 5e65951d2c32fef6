"""The student grader: one check per coding exercise of the chapter.

Call it from the notebook right after an exercise, e.g. ``tests.test_fft1d(fft1d)``. Every grader

* prints ``✅ <exercise>: all checks passed`` and returns ``True`` when your answer is right;
* prints ``⏳ <exercise>: not implemented yet ...`` and returns ``False`` (no exception) while your function
  still raises ``NotImplementedError`` or returns ``None`` (or a value you must compute is still ``None``), so
  "Run all" goes on;
* raises :class:`GraderError` (an ``AssertionError``) otherwise, saying what was expected: the type, shape
  and dtype first, then where the values differ and by how much, plus a hint when your result matches a
  common mistake.

Model-dependent graders compute the expected answer from the model you pass (with the reference solutions in
``solutions.py``), so they work for any trained model, not only the course's. Random inputs are seeded.

Grader calls (argument lists)
=============================

Section 1 — periodicity and the Fourier basis::

    test_cache_activations(attn_mat, neuron_acts_post, neuron_acts_pre, cache_or_model)
        # cache_or_model: the ActivationCache of model.run_with_cache(all_data), or the model itself
        # (then all p^2 inputs, all_data order, are run)
    test_effective_weights(W_logit, W_neur, W_attn, model)
    test_make_fourier_basis(make_fourier_basis, p=113)
    test_fft1d(fft1d, p=113)
    test_fourier_2d_basis_term(fourier_2d_basis_term, p=113)   # calls fourier_2d_basis_term(i, j)
    test_fft2d(fft2d, p=113)

Section 2 — circuits and feature analysis::

    test_find_neuron_freqs(find_neuron_freqs, p=113)
    test_project_onto_direction(project_onto_direction)
    test_project_onto_frequency(project_onto_frequency, p=113)
    test_get_trig_sum_directions(get_trig_sum_directions, p=113)   # calls get_trig_sum_directions(k)

Section 3 — analysis during training::

    test_excl_loss(excl_loss, model, key_freqs, *, train_indices=None, fn="add", frac_train=0.3, seed=0)
        # calls excl_loss(model, key_freqs); the expected losses use the train pairs given by train_indices,
        # else data.train_test_split(p, frac_train, seed)
    test_fourier_embed(fourier_embed, model)
    test_embed_SVD(embed_SVD, model)

``p`` is the modulus the student's functions were written for (the notebook's global, 113 in the chapter);
model-dependent graders read it from the model (``model.cfg.d_vocab - 1``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from . import analysis, fourier
from .data import make_all_data, make_labels, train_test_split
from .losses import score_logits

__all__ = [
    "GraderError",
    "test_cache_activations",
    "test_effective_weights",
    "test_make_fourier_basis",
    "test_fft1d",
    "test_fourier_2d_basis_term",
    "test_fft2d",
    "test_find_neuron_freqs",
    "test_project_onto_direction",
    "test_project_onto_frequency",
    "test_get_trig_sum_directions",
    "test_excl_loss",
    "test_fourier_embed",
    "test_embed_SVD",
]

__test__ = False  # these are graders for students, not pytest tests

ATOL = 1e-4
RTOL = 1e-4


class GraderError(AssertionError):
    """A wrong answer; the message says what was expected and, when it can tell, which mistake it was."""


class _NotImplementedYet(Exception):
    """Internal: the student's code still raises NotImplementedError (or a value is still None)."""


# --------------------------------------------------------------------------------------------------------
# Machinery
# --------------------------------------------------------------------------------------------------------


def _grader(exercise: str):
    """Wrap a check: success / not-implemented printing, and the exercise name in every failure message."""

    def decorate(check: Callable[..., None]) -> Callable[..., bool]:
        @functools.wraps(check)
        def run(*args: Any, **kwargs: Any) -> bool:
            try:
                check(*args, **kwargs)
            except _NotImplementedYet as e:
                detail = f" ({e})" if str(e) else ""
                print(f"⏳ {exercise}: not implemented yet{detail} — fill it in and run this cell again.")
                return False
            except GraderError as e:
                # keep the student's own exception (if any) attached, drop the grader's internal context
                raise GraderError(f"❌ {exercise}: {e}") from e.__cause__
            print(f"✅ {exercise}: all checks passed")
            return True

        run.__test__ = False  # type: ignore[attr-defined]
        return run

    return decorate


def _call(fn: Callable, args: tuple, what: str, error_hint: str = "") -> Any:
    """Call the student's function; NotImplementedError means "not done yet", any other error is reported
    with what the function was called on (the original traceback stays attached)."""
    if fn is None:
        raise _NotImplementedYet("got None instead of a function")
    if not callable(fn):
        raise GraderError(f"expected your function, got a {type(fn).__name__}")
    try:
        result = fn(*args)
        if result is None:
            raise _NotImplementedYet("your function returned None: is a `return` missing?")
        return result
    except NotImplementedError:
        raise _NotImplementedYet() from None
    except (GraderError, _NotImplementedYet):
        raise
    except Exception as e:  # noqa: BLE001 - the student's code may raise anything
        hint = f"\n   Hint: {error_hint}" if error_hint else ""
        raise GraderError(f"calling your function on {what} raised {type(e).__name__}: {e}{hint}") from e


def _require_values(**values: Any) -> None:
    missing = [name for name, v in values.items() if v is None or v is Ellipsis]
    if missing:
        raise _NotImplementedYet(f"{', '.join(missing)} still None")


def _shape(t: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in t) + ("," if len(t) == 1 else "") + ")"


def _check_tensor(
    label: str,
    got: Any,
    shape: Sequence[int],
    *,
    kind: str = "float",
    shape_hints: dict[tuple[int, ...], str] | None = None,
) -> Tensor:
    """Type, shape and dtype checks (in that order); returns the tensor detached on the CPU."""
    if not isinstance(got, Tensor):
        extra = " (convert it with torch.as_tensor)" if type(got).__module__.startswith("numpy") else ""
        raise GraderError(f"{label}: expected a torch.Tensor of shape {_shape(shape)}, got a {type(got).__name__}{extra}")
    if tuple(got.shape) != tuple(shape):
        hint = (shape_hints or {}).get(tuple(got.shape), "")
        raise GraderError(
            f"{label}: expected shape {_shape(shape)}, got {_shape(got.shape)}" + (f"\n   Hint: {hint}" if hint else "")
        )
    if kind == "float" and not got.is_floating_point():
        raise GraderError(f"{label}: expected a floating-point tensor (e.g. torch.float32), got dtype {got.dtype}")
    if kind == "int" and (got.is_floating_point() or got.is_complex() or got.dtype == torch.bool):
        raise GraderError(f"{label}: expected an integer tensor (torch.long), got dtype {got.dtype}")
    return got.detach().cpu()


def _close(a: Tensor, b: Tensor, atol: float, rtol: float) -> bool:
    if a.shape != b.shape:
        return False
    dtype = torch.promote_types(a.dtype, b.dtype)
    return torch.allclose(a.to(dtype), b.to(dtype), atol=atol, rtol=rtol)


def _compare(
    label: str,
    got: Tensor,
    expected: Tensor,
    *,
    atol: float = ATOL,
    rtol: float = RTOL,
    mistakes: Iterable[tuple[str, Callable[[], Tensor]]] = (),
    fallback_hint: str = "",
    context: str = "",
) -> None:
    """Raise a GraderError locating the largest difference, with the hint of the first mistake whose result
    equals ``got`` (candidates are computed only on failure; one that cannot be built is skipped)."""
    expected = expected.detach().cpu()
    dtype = torch.promote_types(got.dtype, expected.dtype)  # float32 answers are compared in float32 (fast)
    if torch.allclose(got.to(dtype), expected.to(dtype), atol=atol, rtol=rtol):
        return
    got64, exp64 = got.double(), expected.double()
    diff = (got64 - exp64).abs()
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, math.inf), diff)
    flat = int(diff.flatten().argmax())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape)) if diff.ndim else ()
    n_off = int((diff > atol + rtol * exp64.abs()).sum())
    where = f" at index {index}" if index else ""
    msg = (
        f"{label}{context}: wrong values{where}: expected {exp64.flatten()[flat].item():.6g}, got "
        f"{got64.flatten()[flat].item():.6g} (max abs diff {diff.max().item():.3g}; {n_off} of {diff.numel()} "
        f"entries outside the tolerance atol={atol:g}, rtol={rtol:g})"
    )
    hints = []
    for hint, make in mistakes:  # the first mistake that reproduces the student's answer wins
        try:
            candidate = make()
        except Exception:  # noqa: BLE001 - a candidate that cannot be built simply does not match
            continue
        if _close(got64, candidate.detach().cpu(), atol, rtol):
            hints.append(hint)
            break
    if not hints and fallback_hint:
        hints.append(fallback_hint)
    msg += "".join(f"\n   Hint: {h}" for h in hints)
    raise GraderError(msg)


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _basis64(p: int) -> Tensor:
    return fourier.fourier_basis(p, dtype=torch.float64)


_BASIS_NOTE = "this exercise uses the Fourier basis: make sure test_make_fourier_basis passes first."


# --------------------------------------------------------------------------------------------------------
# Section 1
# --------------------------------------------------------------------------------------------------------


@_grader("cache_activations")
def test_cache_activations(attn_mat: Any, neuron_acts_post: Any, neuron_acts_pre: Any, cache_or_model: Any) -> None:
    """Check ``attn_mat`` (batch, n_heads, n_ctx), ``neuron_acts_post`` / ``neuron_acts_pre`` (batch, d_mlp).

    ``cache_or_model``: the ``ActivationCache`` your values came from (``model.run_with_cache(all_data)``), or
    the model (then every p^2 input is run, in ``all_data`` order).
    """
    _require_values(attn_mat=attn_mat, neuron_acts_post=neuron_acts_post, neuron_acts_pre=neuron_acts_pre)
    if isinstance(cache_or_model, torch.nn.Module):
        model = cache_or_model
        hooks = ("blocks.0.attn.hook_pattern", "blocks.0.attn.hook_attn_scores", "blocks.0.mlp.hook_post", "blocks.0.mlp.hook_pre")
        with torch.no_grad():
            _, cache = model.run_with_cache(make_all_data(analysis.infer_p(model)).to(model.cfg.device),
                                            names_filter=lambda name: name in hooks)
    else:
        cache = cache_or_model
    expected = analysis.key_activations_from_cache(cache)
    pattern = cache["pattern", 0].detach().cpu()
    post_all, pre_all = cache["post", 0].detach().cpu(), cache["pre", 0].detach().cpu()
    batch, n_heads, n_ctx = expected.attn_mat.shape
    d_mlp = expected.neuron_acts_post.shape[-1]

    got_attn = _check_tensor(
        "attn_mat", attn_mat, (batch, n_heads, n_ctx),
        shape_hints={
            (batch, n_heads, n_ctx, n_ctx): "that is the full pattern (batch, head, query, key): keep only the "
            "last (=) query position.",
            (batch, n_ctx): "keep the head dimension: one row of attention per head.",
        },
    )
    act_hints = {
        (batch, n_ctx, d_mlp): "keep only the last position (the = token), e.g. [:, -1, :].",
        (batch, d_mlp, n_ctx): "keep only the last position (the = token), e.g. [:, -1, :].",
    }
    got_post = _check_tensor("neuron_acts_post", neuron_acts_post, (batch, d_mlp), shape_hints=act_hints)
    got_pre = _check_tensor("neuron_acts_pre", neuron_acts_pre, (batch, d_mlp), shape_hints=act_hints)

    _compare(
        "attn_mat", got_attn, expected.attn_mat.detach(),
        mistakes=[
            ("that is the attention *to* the last position from every query: index the query axis "
             "(pattern[:, :, -1, :]), not the key axis.", lambda: pattern[:, :, :, -1]),
            ("that is the first position's query row: use the last position (-1), where = sits.",
             lambda: pattern[:, :, 0, :]),
            ("that looks like the attention scores (before the softmax): use the pattern.",
             lambda: cache["attn_scores", 0].detach().cpu()[:, :, -1, :]),
        ],
    )
    for label, got, exp, other in [
        ("neuron_acts_post", got_post, expected.neuron_acts_post, pre_all),
        ("neuron_acts_pre", got_pre, expected.neuron_acts_pre, post_all),
    ]:
        swapped = "pre" if label.endswith("post") else "post"
        _compare(
            label, got, exp.detach(),
            mistakes=[
                (f"those are the {swapped}-activations: 'pre' is before the ReLU, 'post' after it.",
                 lambda other=other: other[:, -1, :]),
                ("that is the first position: use the last position (-1), where = sits.",
                 lambda label=label: (post_all if label.endswith("post") else pre_all)[:, 0, :]),
            ],
        )


@_grader("effective_weights")
def test_effective_weights(W_logit: Any, W_neur: Any, W_attn: Any, model: torch.nn.Module) -> None:
    """Check ``W_logit`` (d_mlp, p), ``W_neur`` (n_heads, p, d_mlp) and ``W_attn`` (n_heads, p) of ``model``."""
    _require_values(W_logit=W_logit, W_neur=W_neur, W_attn=W_attn)
    w = analysis.get_course_weights(model)
    expected = analysis.effective_weights_from(w)
    p, d_mlp, n_heads = w.p, w.W_in.shape[-1], w.W_Q.shape[0]
    d_head = w.W_Q.shape[-1]
    full_W_E = f"use W_E without the = row (W_E[:-1], {p} rows), not the full embedding."

    got_logit = _check_tensor(
        "W_logit", W_logit, (d_mlp, p),
        shape_hints={
            (d_mlp, p + 1): f"drop the = column of the unembedding: W_U[:, :-1] ({p} columns).",
            (p, d_mlp): "W_logit maps neurons to logits: W_out @ W_U, shape (d_mlp, p).",
        },
    )
    got_neur = _check_tensor(
        "W_neur", W_neur, (n_heads, p, d_mlp),
        shape_hints={(n_heads, p + 1, d_mlp): full_W_E, (p, d_mlp): "keep one matrix per head: (n_heads, p, d_mlp)."},
    )
    got_attn = _check_tensor(
        "W_attn", W_attn, (n_heads, p),
        shape_hints={
            (n_heads, p + 1): full_W_E,
            (p, n_heads): "W_attn is (n_heads, p): one row of key scores per head.",
            (n_heads, n_heads, p): "the heads were broadcast against each other: the query of head h must meet "
            "the keys of the same head h (per-head matmul / einsum over the head axis).",
        },
    )
    _compare(
        "W_logit", got_logit, expected.W_logit,
        mistakes=[("the unembedding must be the = column-dropped W_U[:, :-1] (drop the last column).",
                   lambda: w.W_out @ w.W_U_full[:, 1:])],
    )
    _compare(
        "W_neur", got_neur, expected.W_neur,
        mistakes=[("drop the LAST row of W_E (the = token): W_E[:-1], not W_E[1:].",
                   lambda: w.W_E_full[1:] @ w.W_V @ w.W_O @ w.W_in)],
    )
    query = w.final_pos_resid_initial @ w.W_Q
    keys_of = lambda W_E: torch.einsum("td,hde->hte", W_E, w.W_K)  # noqa: E731
    _compare(
        "W_attn", got_attn, expected.W_attn,
        mistakes=[
            ("divide the scores by sqrt(d_head).", lambda: expected.W_attn * math.sqrt(d_head)),
            ("divide by sqrt(d_head), not d_head.", lambda: expected.W_attn * math.sqrt(d_head) / d_head),
            ("final_pos_resid_initial is W_E_full[-1] + W_pos[2] (the = token's embedding plus its position).",
             lambda: torch.einsum("hd,htd->ht", w.W_E_full[-1] @ w.W_Q, keys_of(w.W_E)) / math.sqrt(d_head)),
            ("query and key were swapped: the query comes from the = position (final_pos_resid_initial @ W_Q), "
             "the keys from the tokens (W_E @ W_K).",
             lambda: torch.einsum("hd,htd->ht", w.final_pos_resid_initial @ w.W_K, torch.einsum("td,hde->hte", w.W_E, w.W_Q))
             / math.sqrt(d_head)),
            ("drop the LAST row of W_E (the = token): W_E[:-1], not W_E[1:].",
             lambda: torch.einsum("hd,htd->ht", query, keys_of(w.W_E_full[1:])) / math.sqrt(d_head)),
        ],
    )


@_grader("make_fourier_basis")
def test_make_fourier_basis(make_fourier_basis: Callable, p: int = 113) -> None:
    """Check ``make_fourier_basis(p) -> (basis (p, p), names)`` for ``p`` and for a small modulus."""
    for q in sorted({p, 7}):
        result = _call(make_fourier_basis, (q,), f"p={q}")
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise GraderError(f"p={q}: expected a tuple (basis, names), got {type(result).__name__}"
                              + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else ""))
        basis, names = result
        expected, expected_names = fourier.make_fourier_basis(q)
        expected = expected.double()
        got = _check_tensor(f"basis (p={q})", basis, (q, q))
        x = torch.arange(q, dtype=torch.float64)
        raw_rows = [torch.ones(q, dtype=torch.float64)]
        for k in range(1, (q - 1) // 2 + 1):
            raw_rows += [torch.cos(2 * math.pi * k * x / q), torch.sin(2 * math.pi * k * x / q)]
        raw = torch.stack(raw_rows)
        swapped = expected.clone()
        swapped[1::2], swapped[2::2] = expected[2::2], expected[1::2]
        const_unnormalised = expected.clone()
        const_unnormalised[0] = 1.0
        _compare(
            f"basis (p={q})", got, expected, atol=1e-5, rtol=1e-4,
            mistakes=[
                ("normalise every row to unit norm (divide each row by its norm), so basis @ basis.T = I.", lambda: raw),
                ("the constant row is not normalised: divide it by its norm (sqrt(p)).", lambda: const_unnormalised),
                ("cos and sin are swapped: row 2k-1 is cos(2 pi k x / p) and row 2k is sin.", lambda: swapped),
                ("your basis is transposed: the basis vectors are the ROWS.", lambda: expected.T),
            ],
        )
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise GraderError(f"names (p={q}): expected a list of {q} strings, got {type(names).__name__}")
        if len(names) != q:
            raise GraderError(f"names (p={q}): expected {q} names, got {len(names)}")
        for i, (g, e) in enumerate(zip(names, expected_names)):
            if g != e:
                raise GraderError(f"names (p={q}): name {i} should be {e!r}, got {g!r} (expected "
                                  f"['const', 'cos 1', 'sin 1', 'cos 2', ...])")


@_grader("fft1d")
def test_fft1d(fft1d: Callable, p: int = 113) -> None:
    """Check ``fft1d`` on seeded random inputs of shapes (p,), (p, p) and (2, 3, p)."""
    F = _basis64(p)
    gen = _generator(1)
    for shape in [(p,), (p, p), (2, 3, p)]:
        x = torch.randn(shape, generator=gen)
        got = _check_tensor(f"fft1d(x) for x of shape {_shape(shape)}", _call(fft1d, (x,), f"x of shape {_shape(shape)}",
                            "fft1d must work on the last dimension of a tensor with any number of leading dimensions."),
                            shape)
        x64 = x.double()
        _compare(
            "fft1d(x)", got, x64 @ F.T, context=f" for x of shape {_shape(shape)}",
            mistakes=[
                ("you computed F @ x: that transforms the first dimension. Use x @ F.T (the last dimension).",
                 lambda: F @ x64),
                ("multiply by the TRANSPOSE of the basis: x @ F.T (the rows of F are the basis vectors).",
                 lambda: x64 @ F),
                ("transform the last dimension, not the first.", lambda: (F @ x64.transpose(0, -1)).transpose(0, -1)),
            ],
            fallback_hint=_BASIS_NOTE,
        )


@_grader("fourier_2d_basis_term")
def test_fourier_2d_basis_term(fourier_2d_basis_term: Callable, p: int = 113) -> None:
    """Check ``fourier_2d_basis_term(i, j)`` (a (p, p) grid indexed [x, y]) for several (i, j)."""
    F = _basis64(p)
    last = p - 1
    for i, j in [(0, 0), (1, 0), (3, 10), (10, 3), (last, 1), (2 * 14 - 1, 2 * 14) if p > 28 else (1, 2)]:
        got = _check_tensor(f"fourier_2d_basis_term({i}, {j})", _call(fourier_2d_basis_term, (i, j), f"(i, j) = ({i}, {j})"),
                            (p, p), shape_hints={(p * p,): "return the (p, p) grid, not a flattened vector."})
        _compare(
            f"fourier_2d_basis_term({i}, {j})", got, torch.outer(F[i], F[j]),
            mistakes=[
                ("your grid is transposed: the first index i goes with x (the rows, first axis), j with y.",
                 lambda: torch.outer(F[j], F[i])),
                ("use the rows F[i] and F[j] of the basis (not its columns).", lambda: torch.outer(F[:, i], F[:, j])),
            ],
            fallback_hint=_BASIS_NOTE,
        )


@_grader("fft2d")
def test_fft2d(fft2d: Callable, p: int = 113) -> None:
    """Check ``fft2d`` on seeded random tensors of shapes (p, p) and (p, p, 4)."""
    F = _basis64(p)
    gen = _generator(2)
    for shape in [(p, p), (p, p, 4)]:
        t = torch.randn(shape, generator=gen)
        t64 = t.double()
        expected = torch.einsum("xy...,ix,jy->ij...", t64, F, F)
        got = _check_tensor(f"fft2d(t) for t of shape {_shape(shape)}", _call(fft2d, (t,), f"t of shape {_shape(shape)}",
                            "fft2d must accept (p, p, ...) with any number of trailing dimensions (einsum with '...')."),
                            shape)
        _compare(
            "fft2d(t)", got, expected, atol=1e-3, context=f" for t of shape {_shape(shape)}",
            mistakes=[
                ("x and y were swapped: out[i, j] = sum_{x,y} t[x, y] F[i, x] F[j, y].", lambda: expected.transpose(0, 1)),
                ("contract with the basis rows (F[i, x]), not with its transpose.",
                 lambda: torch.einsum("xy...,xi,yj->ij...", t64, F, F)),
                ("transform BOTH input dimensions: you transformed only the first (x).",
                 lambda: torch.einsum("xy...,ix->iy...", t64, F)),
                ("transform BOTH input dimensions: you transformed only the second (y).",
                 lambda: torch.einsum("xy...,jy->xj...", t64, F)),
            ],
            fallback_hint=_BASIS_NOTE,
        )


# --------------------------------------------------------------------------------------------------------
# Section 2
# --------------------------------------------------------------------------------------------------------


def _synthetic_fourier_neuron_acts(p: int, seed: int = 3) -> Tensor:
    """(p, p, n) 2D-Fourier activations: most neurons concentrated in one frequency's 3x3 block (the first,
    the last and some in between), a few spread over every frequency, all with a little noise."""
    gen = _generator(seed)
    n_freqs = (p - 1) // 2
    freqs = [1, n_freqs, n_freqs, 2, n_freqs // 2, n_freqs - 1] + torch.randint(1, n_freqs + 1, (10,), generator=gen).tolist()
    cols = []
    for k in freqs:
        t = 0.005 * torch.randn(p, p, generator=gen)
        idx = torch.tensor(fourier.frequency_block_indices(k))
        t[idx[:, None], idx[None, :]] += torch.randn(3, 3, generator=gen)
        t[0, 0] = 0.0  # centred activations have no constant term
        cols.append(t)
    for _ in range(4):  # no single frequency dominates these
        t = torch.randn(p, p, generator=gen)
        t[0, 0] = 0.0
        cols.append(t)
    return torch.stack(cols, dim=-1)


@_grader("find_neuron_freqs")
def test_find_neuron_freqs(find_neuron_freqs: Callable, p: int = 113) -> None:
    """Check ``find_neuron_freqs(fourier_neuron_acts (p, p, n))`` on synthetic neurons (including the last
    frequency (p-1)/2 and neurons no frequency explains)."""
    acts = _synthetic_fourier_neuron_acts(p)
    n = acts.shape[-1]
    result = _call(find_neuron_freqs, (acts.clone(),), f"a synthetic fourier_neuron_acts of shape {_shape(acts.shape)}")
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise GraderError(f"expected a tuple (neuron_freqs, neuron_frac_explained), got {type(result).__name__}")
    got_freqs = _check_tensor("neuron_freqs", result[0], (n,), kind="int",
                              shape_hints={((p - 1) // 2, n): "return one frequency per neuron (the argmax over frequencies)."})
    got_frac = _check_tensor("neuron_frac_explained", result[1], (n,),
                             shape_hints={((p - 1) // 2, n): "return one fraction per neuron: the fraction of its best frequency."})
    exp_freqs, exp_frac = analysis.find_neuron_freqs(acts)

    block_sq = fourier.arrange_by_2d_freqs(acts.double()).pow(2).sum((1, 2))  # (n_freqs, n)
    total_sq = acts.double().pow(2).sum((0, 1))
    if not torch.equal(got_freqs.long(), exp_freqs):
        bad = int((got_freqs.long() != exp_freqs).nonzero()[0])
        hints = []
        if torch.equal(got_freqs.long(), exp_freqs - 1):
            hints.append("add 1 to the argmax: frequency k's block is at index k - 1 (frequencies start at 1).")
        dropped_last = (block_sq[:-1] / total_sq).argmax(0) + 1
        if torch.equal(got_freqs.long(), dropped_last) or torch.equal(got_freqs.long(), dropped_last - 1):
            hints.append(f"neurons of the last frequency ({(p - 1) // 2}) are wrong: include every frequency "
                         f"k = 1 ... (p-1)/2 (a block helper that stops one early drops it).")
        abs_based = fourier.arrange_by_2d_freqs(acts.double()).abs().sum((1, 2)).argmax(0) + 1
        if not hints and torch.equal(got_freqs.long(), abs_based):
            hints.append("use squared coefficients (.pow(2)), not absolute values.")
        raise GraderError(
            f"neuron_freqs: wrong frequency for neuron {bad}: expected {int(exp_freqs[bad])}, got {int(got_freqs[bad])} "
            f"({int((got_freqs.long() != exp_freqs).sum())} of {n} neurons wrong)" + "".join(f"\n   Hint: {h}" for h in hints)
        )
    best = exp_freqs - 1
    _compare(
        "neuron_frac_explained", got_frac, exp_frac, atol=1e-4, rtol=1e-3,
        mistakes=[
            ("use squared coefficients (.pow(2)) in both the block sum and the total.",
             lambda: fourier.arrange_by_2d_freqs(acts.double()).abs().sum((1, 2)).gather(0, best[None])[0]
             / acts.double().abs().sum((0, 1))),
            ("divide by each neuron's OWN total sum of squares (sum over the (p, p) grid), not the total over all neurons.",
             lambda: block_sq.gather(0, best[None])[0] / total_sq.sum()),
            ("divide by the neuron's total sum of squares over the whole (p, p) grid, not by the sum over the "
             "frequency blocks.", lambda: block_sq.gather(0, best[None])[0] / block_sq.sum(0)),
            ("that is the block's sum of squares: divide it by the neuron's total sum of squares.",
             lambda: block_sq.gather(0, best[None])[0]),
        ],
    )


@_grader("project_onto_direction")
def test_project_onto_direction(project_onto_direction: Callable) -> None:
    """Check ``project_onto_direction(batch_vecs (n, ...), v (n,))`` with a unit-norm and a non-unit ``v``
    (``v`` must be used as given: the function assumes unit norm and does not normalise)."""
    gen = _generator(4)
    n = 50
    cases = [
        ("a unit-norm v and batch_vecs of shape (50, 7)", torch.randn(n, 7, generator=gen), True),
        ("a unit-norm v and batch_vecs of shape (50, 3, 4)", torch.randn(n, 3, 4, generator=gen), True),
        ("a v of norm != 1 (use it as given, do not normalise) and batch_vecs of shape (50, 7)",
         torch.randn(n, 7, generator=gen), False),
    ]
    for what, batch_vecs, unit in cases:
        v = torch.randn(n, generator=gen)
        if unit:
            v = v / v.norm()
        else:
            v = 2.5 * v / v.norm()
        rest = tuple(batch_vecs.shape[1:])
        got = _check_tensor(f"projection ({what})", _call(project_onto_direction, (batch_vecs.clone(), v.clone()), what),
                            batch_vecs.shape,
                            shape_hints={rest: "return the projected vectors (v times the coefficients), not only the "
                                         "coefficients.", (*rest, n): "the batch axis must stay first."})
        b64, v64 = batch_vecs.double(), v.double()
        coeffs = torch.tensordot(v64, b64, dims=([0], [0]))
        expected = v64.reshape(-1, *[1] * coeffs.ndim) * coeffs
        v_hat = v64 / v64.norm()
        _compare(
            "projection", got, expected, context=f" ({what})",
            mistakes=[
                ("you normalised v: the function assumes v has unit norm and must use it as given "
                 "(v * (v . batch_vecs)).",
                 lambda: v_hat.reshape(-1, *[1] * coeffs.ndim) * torch.tensordot(v_hat, b64, dims=([0], [0]))),
                ("multiply the coefficients by v again: the projection is v * (v . batch_vecs).",
                 lambda: coeffs.expand_as(b64)),
            ],
        )


@_grader("project_onto_frequency")
def test_project_onto_frequency(project_onto_frequency: Callable, p: int = 113) -> None:
    """Check ``project_onto_frequency(batch_vecs (p^2, m), freq)`` for the first, a middle and the last
    frequency on seeded random vectors."""
    gen = _generator(5)
    F = _basis64(p)
    n_freqs = (p - 1) // 2
    batch_vecs = torch.randn(p * p, 3, generator=gen)
    b64 = batch_vecs.double()

    def block_rows(k: int) -> list[int]:
        if not 1 <= k <= n_freqs:
            raise IndexError(k)  # no such block: the candidate is skipped
        return [0, 2 * k - 1, 2 * k]

    def project(rows: list[int], cols: list[int]) -> Tensor:
        terms = torch.stack([torch.outer(F[i], F[j]).flatten() for i in rows for j in cols])  # (n_terms, p^2)
        return terms.T @ (terms @ b64)

    for freq in sorted({1, min(14, n_freqs), n_freqs}):
        idx = block_rows(freq)
        got = _check_tensor(f"project_onto_frequency(batch_vecs, {freq})",
                            _call(project_onto_frequency, (batch_vecs.clone(), freq),
                                  f"batch_vecs of shape {_shape(batch_vecs.shape)}, freq={freq}"),
                            batch_vecs.shape)
        rows = "the block of frequency k uses basis rows 0 (const), 2k-1 (cos k) and 2k (sin k)"
        mistakes = [
            ("include the constant: the block is {const, cos k, sin k} x {const, cos k, sin k} (9 terms), "
             "you used only the 4 cos/sin products.", lambda: project(idx[1:], idx[1:])),
            ("the constant-constant term belongs to the block too (9 terms).",
             lambda: project(idx, idx) - project([0], [0])),
            (f"{rows}; you used rows 2k and 2k+1.", lambda: project(*[[0, 2 * freq, 2 * freq + 1]] * 2)),
            (f"you used frequency k+1's block: {rows}.", lambda: project(block_rows(freq + 1), block_rows(freq + 1))),
            (f"you used frequency k-1's block: {rows}.", lambda: project(block_rows(freq - 1), block_rows(freq - 1))),
        ]
        _compare(
            f"project_onto_frequency(batch_vecs, {freq})", got, project(idx, idx), atol=1e-4,
            mistakes=mistakes,
            fallback_hint="it sums project_onto_direction over the 9 flattened 2D basis terms of the block "
            "(check test_project_onto_direction and test_fourier_2d_basis_term pass first).",
        )


@_grader("get_trig_sum_directions")
def test_get_trig_sum_directions(get_trig_sum_directions: Callable, p: int = 113) -> None:
    """Check ``get_trig_sum_directions(k) -> (cos_dir (p, p), sin_dir (p, p))`` for several k."""
    n_freqs = (p - 1) // 2
    x = torch.arange(p, dtype=torch.float64)
    for k in sorted({1, min(14, n_freqs), n_freqs}):
        result = _call(get_trig_sum_directions, (k,), f"k={k}")
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise GraderError(f"k={k}: expected a tuple (cos_dir, sin_dir), got {type(result).__name__}")
        w = 2 * math.pi * k / p
        s = x[:, None] + x[None, :]
        cos_exp = torch.cos(w * s) * math.sqrt(2) / p
        sin_exp = torch.sin(w * s) * math.sqrt(2) / p
        cos_minus = torch.cos(w * (x[:, None] - x[None, :])) * math.sqrt(2) / p
        sin_minus = torch.sin(w * (x[:, None] - x[None, :])) * math.sqrt(2) / p
        for label, got_raw, exp, other, minus, identity in [
            ("cos_dir", result[0], cos_exp, sin_exp, cos_minus, "cos(w(x+y)) = cos wx cos wy - sin wx sin wy"),
            ("sin_dir", result[1], sin_exp, cos_exp, sin_minus, "sin(w(x+y)) = sin wx cos wy + cos wx sin wy"),
        ]:
            got = _check_tensor(f"{label} (k={k})", got_raw, (p, p),
                                shape_hints={(p * p,): "return (p, p) grids (they are flattened later)."})
            _compare(
                f"{label} (k={k})", got, exp, atol=1e-5,
                mistakes=[
                    ("cos_dir and sin_dir are swapped: return (cos_dir, sin_dir).", lambda other=other: other),
                    ("normalise: the direction must have unit norm (divide the sum of the two 2D terms by sqrt(2)).",
                     lambda exp=exp: exp * math.sqrt(2)),
                    ("that is the x - y direction: cos(w(x+y)) = cos wx cos wy - sin wx sin wy and "
                     "sin(w(x+y)) = sin wx cos wy + cos wx sin wy (check the signs).", lambda minus=minus: minus),
                    (f"check the sign: {identity}.", lambda exp=exp: -exp),
                ],
            )


# --------------------------------------------------------------------------------------------------------
# Section 3
# --------------------------------------------------------------------------------------------------------


def _as_float_list(label: str, got: Any, n: int) -> Tensor:
    if isinstance(got, Tensor):
        if got.ndim != 1:
            raise GraderError(f"{label}: expected a list of {n} floats (one per key frequency), "
                              f"got a tensor of shape {_shape(got.shape)}")
        values = got.detach().cpu().double()
    elif isinstance(got, (list, tuple)):
        try:
            values = torch.tensor([float(v) for v in got], dtype=torch.float64)
        except (TypeError, ValueError) as e:
            raise GraderError(f"{label}: expected a list of floats, one per key frequency ({e})") from None
    else:
        raise GraderError(f"{label}: expected a list of {n} floats (one per key frequency), got a {type(got).__name__}")
    if values.numel() != n:
        raise GraderError(f"{label}: expected {n} losses (one per key frequency), got {values.numel()}")
    return values


@_grader("excl_loss")
def test_excl_loss(
    excl_loss: Callable,
    model: torch.nn.Module,
    key_freqs: Sequence[int],
    *,
    train_indices: Tensor | None = None,
    fn: str = "add",
    frac_train: float = 0.3,
    seed: int = 0,
) -> None:
    """Check ``excl_loss(model, key_freqs)`` against the reference computed from ``model`` (train loss with
    each key frequency's cos/sin(x+y) logit directions removed, no bias correction)."""
    key_freqs = [int(k) for k in key_freqs]
    got = _as_float_list("excl_loss", _call(excl_loss, (model, key_freqs), f"the model and key_freqs={key_freqs}"),
                         len(key_freqs))
    p = analysis.infer_p(model)
    if train_indices is None:
        train_indices = train_test_split(p, frac_train, seed)[0]
    all_data = make_all_data(p).to(model.cfg.device)
    labels = make_labels(all_data, p, fn=fn)
    with torch.no_grad():
        full = model(all_data)[:, -1].detach()  # the one forward pass the grader makes
    original = full[:, :p]
    expected = torch.tensor(analysis.excl_loss_from_logits(original, key_freqs, train_indices, labels), dtype=torch.float64)
    if torch.allclose(got, expected, rtol=1e-3, atol=1e-9):
        return

    # (bias correction is no mistake to look for: the removed directions have zero mean over the batch)
    def variant(*, mode: str = "train", dirs: str = "both", full_logits: bool = False, train: Tensor = train_indices) -> Tensor:
        logits_all = full if full_logits else original
        out = []
        for k in key_freqs:
            cos_dir, sin_dir = (d.flatten().to(logits_all) for d in fourier.get_trig_sum_directions(k, p))
            removed = logits_all
            for d, use in [(cos_dir, dirs in ("both", "cos")), (sin_dir, dirs in ("both", "sin"))]:
                if use:
                    removed = removed - d[:, None] * (d @ logits_all)[None, :]
            out.append(score_logits(removed, labels, mode=mode, train_indices=train))
        return torch.tensor(out, dtype=torch.float64)

    _compare(
        "excl_loss", got, expected, atol=1e-9, rtol=1e-3, context=f" (key_freqs {key_freqs})",
        mistakes=[
            ("score on the TRAIN pairs only (mode='train'), not on all pairs.", lambda: variant(mode="all")),
            ("score on the TRAIN pairs, not the test pairs.", lambda: variant(mode="test")),
            ("remove BOTH the cos and the sin (x+y) directions (you removed only cos).", lambda: variant(dirs="cos")),
            ("remove BOTH the cos and the sin (x+y) directions (you removed only sin).", lambda: variant(dirs="sin")),
            ("drop the = logit (the last column) before scoring.", lambda: variant(full_logits=True)),
            ("those are the losses of the unchanged logits: subtract each frequency's projections.",
             lambda: variant(dirs="none")),
            ("you scored the chapter's default train pairs (frac_train=0.3, seed=0), but this model's run used "
             "another split (the train pairs the grader was given): use that run's train indices.",
             lambda: variant(train=train_test_split(p, 0.3, 0)[0])),
        ],
    )


@_grader("fourier_embed")
def test_fourier_embed(fourier_embed: Callable, model: torch.nn.Module) -> None:
    """Check ``fourier_embed(model) -> (p,)``: squared norm of each Fourier component of W_E[:-1]."""
    p = analysis.infer_p(model)
    W_E_full = model.W_E.detach().cpu().double()
    F = _basis64(p)
    got = _check_tensor(
        "fourier_embed(model)",
        _call(fourier_embed, (model,), "the model", f"W_E has p + 1 = {p + 1} rows; drop the = row with W_E[:-1]."),
        (p,),
        shape_hints={(W_E_full.shape[1],): "sum the squares over d_model (dim 1): one value per Fourier component.",
                     (p, W_E_full.shape[1]): "square and sum over d_model: one value per Fourier component."},
    )
    W_E = W_E_full[:-1]
    expected = (F @ W_E).pow(2).sum(1)
    scale = expected.abs().max().item()
    _compare(
        "fourier_embed(model)", got, expected, atol=1e-5 * scale, rtol=1e-4,
        mistakes=[
            ("multiply by the basis F, not its transpose: fourier_basis @ W_E[:-1].", lambda: (F.T @ W_E).pow(2).sum(1)),
            ("square the coefficients before summing (squared norms, .pow(2).sum(1)).", lambda: (F @ W_E).norm(dim=1)),
            ("drop the LAST row of W_E (the = token): W_E[:-1], not W_E[1:].", lambda: (F @ W_E_full[1:]).pow(2).sum(1)),
            ("drop the = ROW of W_E (W_E[:-1]), keep every d_model column.", lambda: (F @ W_E[:, :-1]).pow(2).sum(1)),
        ],
        fallback_hint=_BASIS_NOTE,
    )


@_grader("embed_SVD")
def test_embed_SVD(embed_SVD: Callable, model: torch.nn.Module) -> None:
    """Check ``embed_SVD(model)``: singular values (descending) of W_E without the = row."""
    p = analysis.infer_p(model)
    W_E_full = model.W_E.detach().cpu().double()
    d_model = W_E_full.shape[1]
    n = min(p, d_model)
    got = _check_tensor(
        "embed_SVD(model)", _call(embed_SVD, (model,), "the model"), (n,),
        shape_hints={
            (min(p + 1, d_model),): "the = row is still in: drop the = token's ROW of W_E (W_E[:-1]), not a d_model "
            "column (W_E[:, :-1]).",
            (p, p): "return only the singular values (S of U, S, Vh), not a matrix.",
            (p, n): "return only the singular values (S of U, S, Vh), not U.",
            (n, d_model): "return only the singular values (S of U, S, Vh), not Vh.",
        },
    )
    S = torch.linalg.svdvals(W_E_full[:-1])
    _compare(
        "embed_SVD(model)", got, S, atol=1e-4 * S.max().item(), rtol=1e-3,
        mistakes=[
            ("return the singular values themselves, not their squares.", lambda: S.pow(2)),
            ("return the singular values in descending order (as torch.linalg.svd gives them).", lambda: S.flip(0)),
            ("drop the LAST row of W_E (the = token): W_E[:-1], not W_E[1:].", lambda: torch.linalg.svdvals(W_E_full[1:])),
        ],
    )
