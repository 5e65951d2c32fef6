"""Tests of the student grader (package tests.py): every grader passes the reference solution, fails plausible
wrong answers with the right hint, and reports a NotImplementedError stub as "not implemented yet"."""

from __future__ import annotations

import math

import einops
import numpy as np
import pytest
import torch

from part52_grokking_and_modular_arithmetic import solutions
from part52_grokking_and_modular_arithmetic import tests as grader  # never import the test_* names directly
from part52_grokking_and_modular_arithmetic.analysis import circuit, fourier
from part52_grokking_and_modular_arithmetic.runs.data import make_all_data, make_labels, train_test_split
from part52_grokking_and_modular_arithmetic.training.losses import score_logits

from grader_checks import expect_failure, expect_not_implemented, expect_pass, stub
from reference.fourier_model import make_fourier_model

P = 113
KEY_FREQS = [14, 35, 41, 42, 52]
Fb = fourier.fourier_basis(P)


@pytest.fixture(scope="module")
def fourier_model():
    """Hand-built model implementing the algorithm: removing a key frequency changes the loss a lot."""
    return make_fourier_model(P, KEY_FREQS)


@pytest.fixture(scope="module")
def cache(model):
    with torch.no_grad():
        _, c = model.run_with_cache(make_all_data(P))
    return c


def test_grader_error_is_an_assertion_error_and_module_is_not_collected():
    assert issubclass(grader.GraderError, AssertionError)
    assert grader.__test__ is False


# ------------------------------------------------------------------------------------------------ Fourier basis


def test_make_fourier_basis(capsys):
    g = grader.test_make_fourier_basis
    expect_pass(lambda: g(solutions.make_fourier_basis), "make_fourier_basis", capsys)
    expect_not_implemented(lambda: g(stub), "make_fourier_basis", capsys)

    def unnormalised(p):
        x = torch.arange(p)
        rows, names = [torch.ones(p)], ["const"]
        for k in range(1, p // 2 + 1):
            rows += [torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)]
            names += [f"cos {k}", f"sin {k}"]
        return torch.stack(rows), names

    def swapped(p):
        basis, names = fourier.make_fourier_basis(p)
        basis[1::2], basis[2::2] = basis[2::2].clone(), basis[1::2].clone()
        return basis, names

    def bad_names(p):
        basis, names = fourier.make_fourier_basis(p)
        return basis, ["const"] + [f"cos{i}" for i in range(1, p)]

    expect_failure(lambda: g(unnormalised), "basis (p=7)", "normalise every row")
    expect_failure(lambda: g(swapped), "cos and sin are swapped")
    expect_failure(
        lambda: g(lambda p: (fourier.make_fourier_basis(p)[0].T, fourier.make_fourier_basis(p)[1])), "transposed"
    )
    expect_failure(lambda: g(bad_names), "name 1 should be 'cos 1', got 'cos1'")
    expect_failure(lambda: g(lambda p: fourier.make_fourier_basis(p)[0]), "expected a tuple (basis, names)")
    expect_failure(lambda: g(lambda p: (fourier.make_fourier_basis(p)[0].long(), [])), "floating-point", "int64")


def test_fft1d(capsys):
    g = grader.test_fft1d
    expect_pass(lambda: g(solutions.fft1d), "fft1d", capsys)
    expect_not_implemented(lambda: g(stub), "fft1d", capsys)
    expect_failure(lambda: g(lambda x: Fb @ x), "shape (113, 113)", "F @ x")
    expect_failure(lambda: g(lambda x: x @ Fb), "TRANSPOSE")
    expect_failure(lambda: g(lambda x: (x @ Fb.T).numpy()), "expected a torch.Tensor", "torch.as_tensor")
    msg = expect_failure(
        lambda: g(lambda x: torch.einsum("ab,b->a", Fb, x)), "raised RuntimeError", "any number of leading"
    )
    assert "x of shape (113, 113)" in msg


def test_a_function_returning_none_counts_as_not_implemented(capsys):
    assert grader.test_fft1d(lambda x: None) is None
    assert "return` missing" in capsys.readouterr().out


def test_grader_keeps_the_students_exception_as_cause():
    def broken(x):
        raise ValueError("boom")

    with pytest.raises(grader.GraderError) as info:
        grader.test_fft1d(broken)
    assert "raised ValueError: boom" in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)


def test_fourier_2d_basis_term(capsys):
    g = grader.test_fourier_2d_basis_term
    expect_pass(lambda: g(solutions.fourier_2d_basis_term), "fourier_2d_basis_term", capsys)
    expect_not_implemented(lambda: g(stub), "fourier_2d_basis_term", capsys)
    expect_failure(lambda: g(lambda i, j: torch.outer(Fb[j], Fb[i])), "fourier_2d_basis_term(1, 0)", "transposed")
    expect_failure(
        lambda: g(lambda i, j: torch.outer(Fb[i], Fb[j]).flatten()), "expected shape (113, 113), got (12769,)"
    )


def test_fft2d(capsys):
    g = grader.test_fft2d
    expect_pass(lambda: g(solutions.fft2d), "fft2d", capsys)
    expect_not_implemented(lambda: g(stub), "fft2d", capsys)
    expect_failure(lambda: g(lambda t: solutions.fft2d(t).transpose(0, 1)), "x and y were swapped")
    expect_failure(lambda: g(lambda t: torch.einsum("xy...,xi,yj->ij...", t, Fb, Fb)), "basis rows")
    expect_failure(lambda: g(lambda t: torch.einsum("xy...,ix->iy...", t, Fb)), "only the first")
    expect_failure(
        lambda: g(lambda t: torch.einsum("xy,ix,jy->ij", t, Fb, Fb)), "t of shape (113, 113, 4)", "trailing dimensions"
    )


# ------------------------------------------------------------------------------------------------ Section 2


def _freqs_reference(acts, blocks=None, plus=1, power=2, denominator="own"):
    by_freq = fourier.arrange_by_2d_freqs(acts)
    if blocks is not None:
        by_freq = by_freq[:blocks]
    block = by_freq.abs().pow(power).sum((1, 2))
    total = acts.abs().pow(power).sum((0, 1))
    frac = block / (total if denominator == "own" else 1.0)
    best, idx = frac.max(0)
    return idx + plus, best


def test_find_neuron_freqs(capsys):
    g = grader.test_find_neuron_freqs
    expect_pass(lambda: g(solutions.find_neuron_freqs), "find_neuron_freqs", capsys)
    expect_not_implemented(lambda: g(stub), "find_neuron_freqs", capsys)
    expect_failure(lambda: g(lambda a: _freqs_reference(a, plus=0)), "neuron_freqs", "add 1 to the argmax")
    expect_failure(lambda: g(lambda a: _freqs_reference(a, blocks=(P - 1) // 2 - 1)), "last frequency (56)")
    expect_failure(lambda: g(lambda a: _freqs_reference(a, power=1)), "squared coefficients")
    expect_failure(
        lambda: g(lambda a: _freqs_reference(a, denominator="none")), "neuron_frac_explained", "divide it by"
    )
    expect_failure(lambda: g(lambda a: (_freqs_reference(a)[0].float(), _freqs_reference(a)[1])), "integer tensor")


def test_project_onto_direction(capsys):
    g = grader.test_project_onto_direction
    expect_pass(lambda: g(solutions.project_onto_direction), "project_onto_direction", capsys)
    expect_not_implemented(lambda: g(stub), "project_onto_direction", capsys)

    def normalising(batch_vecs, v):
        return solutions.project_onto_direction(batch_vecs, v / v.norm())

    expect_failure(lambda: g(normalising), "norm != 1", "you normalised v")
    expect_failure(
        lambda: g(lambda b, v: torch.tensordot(v, b, dims=([0], [0]))),
        "expected shape (50, 7), got (7,)",
        "not only the coefficients",
    )


def test_project_onto_frequency(capsys):
    g = grader.test_project_onto_frequency
    expect_pass(lambda: g(solutions.project_onto_frequency), "project_onto_frequency", capsys)
    expect_not_implemented(lambda: g(stub), "project_onto_frequency", capsys)

    def four_terms(batch_vecs, freq):
        out = torch.zeros_like(batch_vecs)
        for i in (2 * freq - 1, 2 * freq):
            for j in (2 * freq - 1, 2 * freq):
                out += solutions.project_onto_direction(batch_vecs, torch.outer(Fb[i], Fb[j]).flatten())
        return out

    expect_failure(lambda: g(four_terms), "include the constant")

    def next_block(batch_vecs, freq):
        return solutions.project_onto_frequency(batch_vecs, freq + 1 if freq < 56 else freq)

    expect_failure(lambda: g(next_block), "frequency k+1's block")


def test_get_trig_sum_directions(capsys):
    g = grader.test_get_trig_sum_directions
    expect_pass(lambda: g(solutions.get_trig_sum_directions), "get_trig_sum_directions", capsys)
    expect_not_implemented(lambda: g(stub), "get_trig_sum_directions", capsys)
    expect_failure(lambda: g(lambda k: solutions.get_trig_sum_directions(k)[::-1]), "cos_dir (k=1)", "swapped")

    def unnormalised(k):
        c, s = solutions.get_trig_sum_directions(k)
        return c * math.sqrt(2), s * math.sqrt(2)

    def minus(k):
        c, s = 2 * k - 1, 2 * k
        t = fourier.fourier_2d_basis_term
        return (t(c, c) + t(s, s)) / math.sqrt(2), (t(s, c) - t(c, s)) / math.sqrt(2)

    expect_failure(lambda: g(unnormalised), "unit norm")
    expect_failure(lambda: g(minus), "x - y direction")


# ------------------------------------------------------------------------------------------------ Section 3


@pytest.fixture(scope="module")
def fourier_logits(fourier_model):
    return fourier_model, circuit.get_original_logits(fourier_model)


def excl_loss_variant(known, *, mode="train", directions=("cos", "sin"), train=None):
    """A student's excl_loss (possibly wrong), reusing the precomputed logits of the fourier model (``known``:
    (model, logits)) to keep the test quick; other models (the grader's second model) are run."""
    labels = make_labels(make_all_data(P), P)
    if train is None:
        train, _ = train_test_split(P, 0.3, 0)

    def excl_loss(model, key_freqs):
        same_model = torch.equal(model.W_E, known[0].W_E) and torch.equal(model.W_U, known[0].W_U)
        logits = known[1] if same_model else circuit.get_original_logits(model)
        out = []
        for k in key_freqs:
            cos_dir, sin_dir = (d.flatten() for d in fourier.get_trig_sum_directions(k))
            new = logits.clone()
            for name, d in (("cos", cos_dir), ("sin", sin_dir)):
                if name in directions:
                    new = new - solutions.project_onto_direction(logits, d)
            out.append(score_logits(new, labels, mode=mode, train_indices=train))
        return out

    return excl_loss


def test_excl_loss(fourier_model, fourier_logits, capsys):
    g, model = grader.test_excl_loss, fourier_model
    expect_pass(lambda: g(solutions.excl_loss, model, KEY_FREQS), "excl_loss", capsys)
    expect_not_implemented(lambda: g(stub, model, KEY_FREQS), "excl_loss", capsys)
    expect_failure(lambda: g(excl_loss_variant(fourier_logits, mode="all"), model, KEY_FREQS), "TRAIN pairs only")
    expect_failure(lambda: g(excl_loss_variant(fourier_logits, directions=("cos",)), model, KEY_FREQS), "only cos")
    expect_failure(
        lambda: g(lambda m, k: excl_loss_variant(fourier_logits)(m, k)[:-1], model, KEY_FREQS), "expected 5 losses"
    )
    # another split: the grader follows the split it is told about
    other_train, _ = train_test_split(P, 0.5, 1)
    expect_pass(
        lambda: g(excl_loss_variant(fourier_logits, train=other_train), model, KEY_FREQS, train_indices=other_train),
        "excl_loss",
        capsys,
    )
    expect_failure(
        lambda: g(excl_loss_variant(fourier_logits), model, KEY_FREQS, frac_train=0.5, seed=1),
        "wrong values",
        "default train pairs",
    )


def test_fourier_embed(model, capsys):
    g = grader.test_fourier_embed
    expect_pass(lambda: g(solutions.fourier_embed, model), "fourier_embed", capsys)
    expect_not_implemented(lambda: g(stub, model), "fourier_embed", capsys)
    expect_failure(lambda: g(lambda m: (Fb.T @ m.W_E[:-1]).pow(2).sum(1), model), "not its transpose")
    expect_failure(lambda: g(lambda m: (Fb @ m.W_E[:-1]).norm(dim=1), model), "square the coefficients")
    expect_failure(lambda: g(lambda m: (Fb @ m.W_E[1:]).pow(2).sum(1), model), "LAST row")
    expect_failure(lambda: g(lambda m: (Fb @ m.W_E).pow(2).sum(1), model), "raised RuntimeError", "W_E[:-1]")
    expect_failure(lambda: g(lambda m: (Fb @ m.W_E[:-1]).pow(2).sum(0), model), "got (128,)", "over d_model")


def test_embed_SVD(model, capsys):
    g = grader.test_embed_SVD
    expect_pass(lambda: g(solutions.embed_SVD, model), "embed_SVD", capsys)
    expect_not_implemented(lambda: g(stub, model), "embed_SVD", capsys)
    expect_failure(lambda: g(lambda m: torch.linalg.svd(m.W_E[:, :-1]).S, model), "got (114,)", "not a d_model column")
    expect_failure(lambda: g(lambda m: torch.linalg.svdvals(m.W_E[:-1]).pow(2), model), "not their squares")
    expect_failure(lambda: g(lambda m: torch.linalg.svd(m.W_E[:-1]).U, model), "not U")


# ------------------------------------------------------------------------------------------------ Section 1 values


def test_cache_activations(model, cache, capsys):
    g = grader.test_cache_activations
    ref = solutions.key_activations_from_cache(cache)
    expect_pass(lambda: g(*ref, cache), "cache_activations", capsys)
    expect_pass(lambda: g(*ref, model), "cache_activations", capsys)
    expect_not_implemented(lambda: g(None, None, None, cache), "cache_activations", capsys)
    pattern = cache["pattern", 0]
    expect_failure(
        lambda: g(pattern[:, :, :, -1], ref.neuron_acts_post, ref.neuron_acts_pre, cache),
        "attn_mat",
        "*to* the last position",
    )
    expect_failure(lambda: g(pattern, ref.neuron_acts_post, ref.neuron_acts_pre, cache), "full pattern")
    expect_failure(
        lambda: g(ref.attn_mat, ref.neuron_acts_pre, ref.neuron_acts_post, cache), "neuron_acts_post", "pre-activations"
    )
    expect_failure(lambda: g(ref.attn_mat, cache["post", 0][:, 0], ref.neuron_acts_pre, cache), "first position")
    expect_failure(lambda: g(ref.attn_mat, cache["post", 0], ref.neuron_acts_pre, cache), "keep only the last position")


def test_effective_weights(model, capsys):
    g = grader.test_effective_weights
    ref = solutions.get_effective_weights(model)
    w = circuit.get_course_weights(model)
    expect_pass(lambda: g(*ref, model), "effective_weights", capsys)
    expect_not_implemented(lambda: g(ref.W_logit, None, ref.W_attn, model), "effective_weights", capsys)
    expect_failure(lambda: g(ref.W_logit, ref.W_neur, ref.W_attn * math.sqrt(32), model), "W_attn", "sqrt(d_head)")
    expect_failure(lambda: g(w.W_out @ w.W_U_full, ref.W_neur, ref.W_attn, model), "W_logit", "drop the = column")
    full_neur = w.W_E_full @ w.W_V @ w.W_O @ w.W_in
    expect_failure(lambda: g(ref.W_logit, full_neur, ref.W_attn, model), "W_neur", "without the = row")
    broadcast = w.final_pos_resid_initial @ w.W_Q @ w.W_K.transpose(-1, -2) @ w.W_E.T / math.sqrt(32)
    assert broadcast.shape == (4, 4, P)
    expect_failure(lambda: g(ref.W_logit, ref.W_neur, broadcast, model), "broadcast against each other")
    expect_failure(lambda: g(ref.W_logit, ref.W_neur, ref.W_attn.T, model), "one row of key scores per head")
    swapped = einops.einsum(w.final_pos_resid_initial @ w.W_K, w.W_E @ w.W_Q, "h d, h t d -> h t") / math.sqrt(32)
    expect_failure(lambda: g(ref.W_logit, ref.W_neur, swapped, model), "query and key were swapped")
    expect_failure(lambda: g(ref.W_logit.numpy(), ref.W_neur, ref.W_attn, model), "torch.Tensor")
    assert isinstance(ref.W_logit.numpy(), np.ndarray)
