"""The three restored exercises: the references in circuit.py (functional_form_logits,
mean_sq_fourier_coefficients, fit_quadratic_terms) checked independently, and their graders: each passes the
reference and a notebook-style float32 answer, names the usual mistakes, and reports a stub as not implemented."""

from __future__ import annotations

import math

import einops
import pytest
import torch

from part52_grokking_and_modular_arithmetic import solutions
from part52_grokking_and_modular_arithmetic import tests as grader  # never import the test_* names directly
from part52_grokking_and_modular_arithmetic.analysis import circuit, fourier
from part52_grokking_and_modular_arithmetic.grading import graders
from part52_grokking_and_modular_arithmetic.runs.model import make_model

from grader_checks import expect_failure, expect_pass, expect_right_answers_pass_and_stub_waits
from reference.fourier_model import make_fourier_model

P = 113
Fb = fourier.fourier_basis(P)


# ------------------------------------------------------------------------------------------------ references


def test_functional_form_logits_matches_a_loop_over_inputs():
    gen = torch.Generator().manual_seed(0)
    n_heads, p, d_mlp = 3, 5, 7
    W_neur = torch.randn(n_heads, p, d_mlp, generator=gen, dtype=torch.float64)
    W_logit = torch.randn(d_mlp, p, generator=gen, dtype=torch.float64)
    W_attn = torch.randn(n_heads, p, generator=gen, dtype=torch.float64)
    got = circuit.functional_form_logits(W_neur, W_logit, W_attn)
    assert got.shape == (p * p, p)
    for x in range(p):
        for y in range(p):
            pre = torch.zeros(d_mlp, dtype=torch.float64)
            for h in range(n_heads):
                # softmax over the two keys x and y of head h
                weights = torch.softmax(torch.stack([W_attn[h, x], W_attn[h, y]]), dim=0)
                pre += weights[0] * W_neur[h, x] + weights[1] * W_neur[h, y]
            torch.testing.assert_close(got[x * p + y], torch.relu(pre) @ W_logit)


def test_mean_sq_fourier_coefficients_grid_and_flat_forms_agree():
    p = 13
    gen = torch.Generator().manual_seed(1)
    acts = torch.randn(p, p, 5, generator=gen, dtype=torch.float64) + 4.0  # a non-zero mean
    got = circuit.mean_sq_fourier_coefficients(acts)
    assert got.shape == (p, p)
    torch.testing.assert_close(got, circuit.mean_sq_fourier_coefficients(acts.reshape(p * p, 5)))
    assert got[0, 0].abs() < 1e-12  # centred: no constant term
    # Parseval: the coefficients carry the mean centred sum of squares
    torch.testing.assert_close(got.sum(), (acts - acts.mean((0, 1))).pow(2).sum((0, 1)).mean())
    with pytest.raises((ValueError, TypeError)):  # TypeError: the run-time shape check of the annotations
        circuit.mean_sq_fourier_coefficients(torch.zeros(p, p + 1, 2))


def test_fit_quadratic_terms_reproduces_the_relu_toy():
    c = fourier.fourier_basis(P, dtype=torch.float64)[2 * 42 - 1]
    toy = torch.relu(0.5 / math.sqrt(P) + c[:, None] + c[None, :])
    coefficients, r2 = circuit.fit_quadratic_terms(toy, 42)
    assert isinstance(r2, float) and coefficients.shape == (4,) and coefficients.is_floating_point()
    assert [round(v, 3) for v in coefficients.tolist()] == [9.190, 6.807, 6.807, 3.566]
    assert round(r2, 3) == 0.966
    fit = circuit.relu_quadratic_fit(42, P)  # the toy goes through the same fit
    torch.testing.assert_close(fit.coefficients, coefficients)
    assert fit.r2 == r2 and round(fit.r2_without_quadratic, 3) == 0.849


def test_fit_quadratic_terms_recovers_known_coefficients():
    p, k = 13, 4
    terms = circuit.quadratic_terms(p, k)  # (p^2, 4), orthonormal columns
    torch.testing.assert_close(terms.T @ terms, torch.eye(4, dtype=torch.float64))
    torch.testing.assert_close(
        terms[:, 3].reshape(p, p), fourier.fourier_2d_basis_term(2 * k - 1, 2 * k - 1, p).double()
    )
    true = torch.tensor([5.0, -1.0, 2.0, 0.5], dtype=torch.float64)
    coefficients, r2 = circuit.fit_quadratic_terms((terms @ true).reshape(p, p), k)
    torch.testing.assert_close(coefficients, true)
    assert r2 == pytest.approx(1.0)
    with pytest.raises(ValueError, match="constant"):
        circuit.fit_quadratic_terms(torch.ones(p, p), k)
    with pytest.raises(ValueError, match=r"1 ?\.{2,3} ?6"):
        circuit.fit_quadratic_terms(torch.randn(p, p), 7)


# ------------------------------------------------------------------------------------------------ functional form


def student_functional_form(mistake: str | None = None):
    """A student's functional_form_logits in float32, optionally with one mistake."""

    def functional_form_logits(W_neur, W_logit, W_attn):
        n_heads, p, _ = W_neur.shape
        diff = W_attn[:, :, None] - W_attn[:, None, :]
        alpha = {
            "alpha_on_y": torch.sigmoid(-diff),
            "alpha_half": torch.full_like(diff, 0.5),
            "softmax_heads": diff.softmax(0),
            "no_sigmoid": diff,
        }.get(mistake, torch.sigmoid(diff))
        if mistake == "relu_per_head":
            out = 0
            for h in range(n_heads):
                pre = alpha[h, :, :, None] * W_neur[h][:, None, :] + (1 - alpha[h, :, :, None]) * W_neur[h][None, :, :]
                out = out + torch.relu(pre) @ W_logit
            return out.reshape(p * p, p)
        pre = einops.einsum(alpha, W_neur, "h x y, h x n -> x y n") + einops.einsum(
            1 - alpha, W_neur, "h x y, h y n -> x y n"
        )
        if mistake != "no_relu":
            pre = torch.relu(pre)
        logits = pre @ W_logit
        return logits if mistake == "grid" else logits.reshape(p * p, p)

    return functional_form_logits


@pytest.fixture(scope="module")
def small_model():
    """A random p = 31 model (the grader works for any p; a small one keeps the many failing calls quick)."""
    m = make_model(31, seed=2)
    with torch.no_grad():
        m.W_U.mul_(30)
    return m


def test_functional_form_grader_passes_on_the_course_model(model, capsys):
    g = grader.test_functional_form_logits
    expect_pass(lambda: g(solutions.functional_form_logits, model), "functional_form_logits", capsys)
    expect_pass(lambda: g(student_functional_form(), model), "functional_form_logits", capsys)
    expect_failure(
        lambda: g(student_functional_form("grid"), model),
        "expected shape (12769, 113), got (113, 113, 113)",
        "flatten the (x, y) grid",
    )


def test_functional_form_grader(small_model, capsys):
    g, model, p = grader.test_functional_form_logits, small_model, 31
    expect_right_answers_pass_and_stub_waits(
        lambda fn: g(fn, model), "functional_form_logits", capsys, student_functional_form()
    )
    for mistake, fragment in [
        ("alpha_on_y", "alpha is on the wrong token"),
        ("no_relu", "apply the ReLU"),
        ("relu_per_head", "sum over the heads INSIDE the ReLU"),
        ("alpha_half", "W_attn not used"),
        ("softmax_heads", "not a softmax over the heads"),
        ("no_sigmoid", "alpha must lie between 0 and 1"),
    ]:
        expect_failure(
            lambda mistake=mistake: g(student_functional_form(mistake), model), "functional_form_logits", fragment
        )
    # the form is symmetric in x and y (alpha_h(y, x) = 1 - alpha_h(x, y)): a (y, x) batch order is no mistake
    yx = student_functional_form()
    expect_pass(
        lambda: g(lambda *w: yx(*w).reshape(p, p, p).transpose(0, 1).reshape(p * p, p), model),
        "functional_form_logits",
        capsys,
    )


def test_functional_form_grader_catches_attention_mistakes_on_a_model_without_attention(capsys):
    """The hand-built model has W_Q = W_K = 0 (alpha = 1/2 everywhere): the random-weights case still catches
    an answer that ignores W_attn."""
    fourier_model = make_fourier_model(31, [3, 7])
    g = grader.test_functional_form_logits
    expect_pass(lambda: g(solutions.functional_form_logits, fourier_model), "functional_form_logits", capsys)
    expect_failure(
        lambda: g(student_functional_form("alpha_half"), fourier_model), "seeded random weights", "W_attn not used"
    )


# ------------------------------------------------------------------------------------------------ mean squared coefficients


def student_mean_sq(mistake: str | None = None):
    def mean_sq_fourier_coefficients(neuron_acts_sq):
        acts = neuron_acts_sq
        if mistake != "no_centring":
            acts = acts - acts.mean((0, 1), keepdim=True)
        if mistake == "x_only":
            coef = einops.einsum(acts, Fb, "x y n, i x -> i y n")
        else:
            coef = solutions.fft2d(acts)
        if mistake == "abs":
            return coef.abs().mean(-1)
        if mistake == "sum":
            return coef.pow(2).sum(-1)
        if mistake == "mean_first":
            return coef.mean(-1).pow(2)
        if mistake == "transposed":
            return coef.pow(2).mean(-1).T
        return coef.pow(2).mean(-1)

    return mean_sq_fourier_coefficients


def test_mean_sq_fourier_coefficients_grader(capsys):
    g = grader.test_mean_sq_fourier_coefficients
    name = "mean_sq_fourier_coefficients"
    expect_right_answers_pass_and_stub_waits(g, name, capsys, solutions.mean_sq_fourier_coefficients, student_mean_sq())
    for mistake, fragment in [
        ("no_centring", "centre the activations first"),
        ("abs", "do not take absolute values"),
        ("sum", "MEAN over the neurons, not the sum"),
        ("mean_first", "BEFORE averaging over the neurons"),
        ("x_only", "you transformed only x"),
        ("transposed", "yours is transposed"),
    ]:
        expect_failure(lambda mistake=mistake: g(student_mean_sq(mistake)), name, fragment)

    def squared_then_centred(acts):
        sq = solutions.fft2d(acts).pow(2)
        return (sq - sq.mean((0, 1), keepdim=True)).mean(-1)

    expect_failure(lambda: g(squared_then_centred), "centre the activations, not the squared coefficients")
    expect_failure(lambda: g(lambda a: solutions.fft2d(a - a.mean((0, 1))).pow(2)), "got (113, 113, 20)", "average")


# ------------------------------------------------------------------------------------------------ quadratic fit


def student_fit(mistake: str | None = None):
    """A student's fit_quadratic_terms in float32, from fourier_2d_basis_term, optionally with one mistake."""

    def fit_quadratic_terms(values, k):
        p = values.shape[0]
        pairs = [(0, 0), (2 * k - 1, 0), (0, 2 * k - 1), (2 * k - 1, 2 * k - 1)]
        terms = [solutions.fourier_2d_basis_term(i, j, p).flatten() for i, j in pairs]
        if mistake == "raw_cos":
            c = torch.cos(2 * math.pi * k * torch.arange(p) / p)
            one = torch.ones(p)
            terms = [torch.outer(a, b).flatten() for a, b in [(one, one), (c, one), (one, c), (c, c)]]
        if mistake == "dropped":
            terms = terms[:3]
        if mistake == "order":
            terms = [terms[3], terms[0], terms[1], terms[2]]
        X = torch.stack(terms, dim=1)
        y = values.flatten()
        coefficients = torch.linalg.lstsq(X, y[:, None]).solution.flatten()
        ss_res = (y - X @ coefficients).pow(2).sum()
        ss_tot = (y - y.mean()).pow(2).sum() if mistake != "r2_about_zero" else y.pow(2).sum()
        if mistake == "residual":
            return coefficients, ss_res.item()
        if mistake == "r2_tensor":
            return coefficients, 1 - ss_res / ss_tot
        if mistake == "zero_quadratic":
            coefficients = coefficients.clone()
            coefficients[3] = 0.0
        return coefficients, (1 - ss_res / ss_tot).item()

    return fit_quadratic_terms


def test_fit_quadratic_terms_grader(capsys):
    g = grader.test_fit_quadratic_terms
    name = "fit_quadratic_terms"
    expect_right_answers_pass_and_stub_waits(g, name, capsys, solutions.fit_quadratic_terms, student_fit())
    expect_failure(lambda: g(student_fit("raw_cos")), "coefficients", "ReLU toy", "unit-norm 2D basis terms")
    expect_failure(lambda: g(student_fit("dropped")), "expected shape (4,), got (3,)", "all four coefficients")
    expect_failure(lambda: g(student_fit("zero_quadratic")), "fit all four terms")
    expect_failure(lambda: g(student_fit("order")), "the order is const, cos_k(x), cos_k(y)")
    expect_failure(lambda: g(student_fit("r2_about_zero")), "r2", "about the MEAN")
    expect_failure(lambda: g(student_fit("residual")), "r2", "not the residual sum of squares")
    expect_failure(lambda: g(student_fit("r2_tensor")), "Python float", ".item()")
    expect_failure(lambda: g(lambda v, k: student_fit()(v, k)[0]), "expected a tuple (coefficients, r2)")


def test_new_graders_are_listed():
    for name in ["test_functional_form_logits", "test_mean_sq_fourier_coefficients", "test_fit_quadratic_terms"]:
        assert name in grader.__all__ and name.removeprefix("test_") in getattr(graders, name).__doc__
    for name in ["functional_form_logits", "mean_sq_fourier_coefficients", "fit_quadratic_terms"]:
        assert name in solutions.__all__ and f":func:`analysis.{name}`" in solutions.__doc__
    # the solutions table names only functions that exist
    import re

    from part52_grokking_and_modular_arithmetic.analysis import circuit as A
    from part52_grokking_and_modular_arithmetic.analysis import fourier as Fo

    for module, name in re.findall(r":func:`(analysis|fourier)\.(\w+)`", solutions.__doc__):
        assert hasattr({"analysis": A, "fourier": Fo}[module], name), name
