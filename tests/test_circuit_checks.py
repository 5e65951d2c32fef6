"""circuit_checks: the computations behind the notebook's printed claims, on small models and known functions."""

from __future__ import annotations

import math

import pytest
import torch

from part52_grokking_and_modular_arithmetic.analysis import circuit_checks as cc
from part52_grokking_and_modular_arithmetic.analysis.circuit import get_original_logits
from part52_grokking_and_modular_arithmetic.analysis.fourier import fft2d, fourier_basis
from part52_grokking_and_modular_arithmetic.runs.model import make_model

from reference.fourier_model import make_fourier_model

P = 13


@pytest.fixture(scope="module")
def random_model():
    """An untrained p = 13 model with every bias set to random values, so no term of the form is zero."""
    torch.manual_seed(0)
    m = make_model(P, seed=3)
    with torch.no_grad():
        for name, param in m.named_parameters():
            if name.split(".")[-1].startswith("b_"):
                param.copy_(0.3 * torch.randn_like(param))
    return m


def _grid_fn(f) -> torch.Tensor:
    x = torch.arange(P, dtype=torch.float64)
    return (f(x[:, None], x[None, :]) + torch.zeros(P, P, dtype=torch.float64)).reshape(P * P, 1)


def test_full_form_is_the_model(random_model):
    variants = cc.functional_form_variants(random_model)
    assert list(variants) == list(cc.FORM_STEPS)
    real = get_original_logits(random_model)
    assert torch.allclose(variants["+ direct path"], real, atol=1e-4, rtol=1e-4)
    # every earlier step leaves something out of this model (all its terms are non-zero)
    for name in list(cc.FORM_STEPS)[:-1]:
        assert not torch.allclose(variants[name], real, atol=1e-3), name


def test_functional_form_matches_its_definition(random_model):
    """The first step is exactly ReLU(sum_h a_h W_neur[h, x] + (1 - a_h) W_neur[h, y]) @ W_logit."""
    m = random_model
    W_E, W_U = m.W_E[:-1], m.W_U[:, :-1]
    W_neur = W_E @ m.W_V[0] @ m.W_O[0] @ m.W_in[0]  # (h, p, d_mlp)
    q = (m.W_E[-1] + m.W_pos[2]) @ m.W_Q[0]  # (h, d_head)
    W_attn = torch.einsum("he,hxe->hx", q, W_E @ m.W_K[0]) / math.sqrt(m.cfg.d_head)
    a = torch.sigmoid(W_attn[:, :, None] - W_attn[:, None, :])  # (h, x, y)
    pre = (a[..., None] * W_neur[:, :, None, :] + (1 - a[..., None]) * W_neur[:, None, :, :]).sum(0)
    expected = torch.relu(pre).reshape(P * P, -1) @ (m.W_out[0] @ W_U)
    got = cc.functional_form_variants(m)["functional form"]
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4)


def test_interaction_fraction_on_known_functions():
    w = 2 * math.pi * 3 / P
    additive = _grid_fn(lambda x, y: torch.cos(w * x) + 2 * torch.sin(w * y) + 5)
    product = _grid_fn(lambda x, y: torch.cos(w * x) * torch.cos(w * y))
    mixed = _grid_fn(lambda x, y: torch.cos(w * x) * torch.cos(w * y) + torch.cos(w * x))
    constant = torch.ones(P * P, 1)
    got = cc.interaction_fraction(torch.cat([additive, product, mixed, constant], 1))
    F = fft2d((mixed - mixed.mean()).reshape(P, P, 1))[..., 0]
    expected_mixed = (F[1:, 1:].pow(2).sum() / F.pow(2).sum()).item()
    assert got[0].item() == pytest.approx(0.0, abs=1e-12)
    assert got[1].item() == pytest.approx(1.0, abs=1e-12)
    assert got[2].item() == pytest.approx(expected_mixed, abs=1e-9) and 0.1 < got[2].item() < 0.9
    assert got[3].item() == 0.0


def test_interaction_fraction_agrees_with_fft2d_on_random_data():
    acts = torch.randn(P * P, 7, generator=torch.Generator().manual_seed(1))
    centred = acts - acts.mean(0)
    F = fft2d(centred.reshape(P, P, 7).double())
    expected = F[1:, 1:].pow(2).sum((0, 1)) / F.pow(2).sum((0, 1))
    assert torch.allclose(cc.interaction_fraction(acts), expected, atol=1e-10)
    assert torch.allclose(cc.interaction_fraction(acts.reshape(P, P, 7)), expected, atol=1e-10)


def test_antisymmetric_fraction():
    w = 2 * math.pi / P
    sym = _grid_fn(lambda x, y: torch.cos(w * x) * torch.cos(w * y) + x + y)
    anti = _grid_fn(lambda x, y: torch.cos(w * x) - torch.cos(w * y))
    only_x = _grid_fn(lambda x, y: torch.cos(w * x))  # half symmetric, half antisymmetric
    got = cc.antisymmetric_fraction(torch.cat([sym, anti, only_x], 1))
    assert got.tolist() == pytest.approx([0.0, 1.0, 0.5], abs=1e-12)


def test_bad_shapes_are_reported():
    with pytest.raises(ValueError, match="p\\^2"):
        cc.interaction_fraction(torch.zeros(10, 2))
    with pytest.raises(ValueError, match="n_top"):
        cc.singular_vector_frequency_share(torch.zeros(4, P), [1], n_top=9)
    with pytest.raises(ValueError, match="frequencies must lie in 1 ... 6"):
        cc.singular_vector_frequency_share(torch.zeros(4, P), [7], n_top=2)


def test_singular_vectors_of_a_two_frequency_matrix():
    F = fourier_basis(P, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    # rank 4: rows mix cos/sin of frequencies 2 and 5 only, plus tiny noise
    scales = torch.tensor([4.0, 3.0, 2.0, 1.5], dtype=torch.float64)
    rows = (torch.randn(30, 4, generator=gen, dtype=torch.float64) * scales) @ F[[3, 4, 9, 10]]
    matrix = rows + 1e-6 * torch.randn(30, P, generator=gen, dtype=torch.float64)
    share = cc.singular_vector_frequency_share(matrix, [2, 5], n_top=4)
    assert torch.allclose(share.key_share, torch.ones(4, dtype=torch.float64), atol=1e-6)
    assert set(share.best_freq.tolist()) <= {2, 5}
    assert cc.singular_vector_frequency_share(matrix, [3], n_top=4).key_share.max() < 1e-6
    assert torch.all(share.singular_values[:-1] >= share.singular_values[1:])


def test_single_wave_margin():
    best, runner_up = cc.single_wave_margin(113, [42])
    assert best == pytest.approx(1.0) and runner_up == pytest.approx(math.cos(2 * math.pi / 113))
    best5, runner_up5 = cc.single_wave_margin(113, [14, 35, 41, 42, 52])
    assert best5 == pytest.approx(5.0) and (best5 - runner_up5) > 10 * (best - runner_up)


def test_hand_built_model_is_symmetric_and_has_no_attention_products():
    """make_fourier_model attends 1/3 to every position (W_Q = W_K = 0): its pre-activations are sums of
    functions of x and y, and all its product terms come from the ReLU."""
    m = make_fourier_model(p=P, key_freqs=(2, 5))
    _, cache = m.run_with_cache(
        torch.cat([torch.cartesian_prod(torch.arange(P), torch.arange(P)), torch.full((P * P, 1), P)], 1)
    )
    pre, post = cache["pre", 0][:, -1], cache["post", 0][:, -1]
    assert cc.interaction_fraction(pre).max() < 1e-6
    assert cc.interaction_fraction(post).max() > 0.05
    assert cc.antisymmetric_fraction(post).max() < 1e-8
