"""The Fourier toolkit against independent formulas and properties."""

import math

import pytest
import torch
from jaxtyping import TypeCheckError

from part52_grokking_and_modular_arithmetic.analysis import fourier as F

BAD_INPUT = (ValueError, TypeCheckError)


@pytest.mark.parametrize("p", [5, 23, 113])
def test_basis_is_orthonormal_with_course_row_order(p):
    basis, names = F.make_fourier_basis(p)
    assert basis.shape == (p, p) and basis.dtype == torch.float32
    torch.testing.assert_close(basis @ basis.T, torch.eye(p), atol=1e-5, rtol=0)
    x = torch.arange(p, dtype=torch.float64)
    k = (p - 1) // 2
    expected_cos = torch.cos(2 * math.pi * k * x / p)
    expected_sin = torch.sin(2 * math.pi * k * x / p)
    torch.testing.assert_close(basis[2 * k - 1].double(), expected_cos / expected_cos.norm(), atol=1e-6, rtol=0)
    torch.testing.assert_close(basis[2 * k].double(), expected_sin / expected_sin.norm(), atol=1e-6, rtol=0)
    assert names[:3] == ["const", "cos 1", "sin 1"] and names[-2:] == [f"cos {k}", f"sin {k}"]
    assert len(names) == p


@pytest.mark.parametrize("p", [4, 1, 0])
def test_basis_rejects_even_or_tiny_p(p):
    with pytest.raises(ValueError, match="odd"):
        F.make_fourier_basis(p)


def test_fft1d_of_sparse_sum_has_exactly_those_coefficients():
    basis, _ = F.make_fourier_basis(113)
    v = basis[3] + 2 * basis[50] - 0.5 * basis[112]
    coeffs = F.fft1d(v)
    nonzero = (coeffs.abs() > 1e-4).nonzero().flatten().tolist()
    assert nonzero == [3, 50, 112]
    torch.testing.assert_close(coeffs[[3, 50, 112]], torch.tensor([1.0, 2.0, -0.5]), atol=1e-5, rtol=0)


def test_fft1d_acts_on_last_dim_for_any_leading_shape():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 23)
    basis, _ = F.make_fourier_basis(23)
    torch.testing.assert_close(F.fft1d(x), torch.einsum("abx,kx->abk", x, basis), atol=1e-5, rtol=0)


def test_fft1d_given_dim_matches_moving_the_dim():
    torch.manual_seed(1)
    t = torch.randn(23, 7)
    torch.testing.assert_close(F.fft1d_given_dim(t, 0), F.fft1d(t.T).T)


def test_2d_basis_term_is_outer_product_first_index_x():
    basis, _ = F.make_fourier_basis(23)
    term = F.fourier_2d_basis_term(3, 8, p=23)
    torch.testing.assert_close(term, torch.outer(basis[3], basis[8]))
    assert term.norm().item() == pytest.approx(1.0, abs=1e-5)


def test_fft2d_of_sum_of_terms_shows_those_cells():
    p = 23
    t = F.fourier_2d_basis_term(1, 2, p) + 3 * F.fourier_2d_basis_term(5, 0, p) - F.fourier_2d_basis_term(22, 22, p)
    out = F.fft2d(t)
    cells = sorted(map(tuple, (out.abs() > 1e-4).nonzero().tolist()))
    assert cells == [(1, 2), (5, 0), (22, 22)]
    assert out[5, 0].item() == pytest.approx(3.0, abs=1e-5)


def test_fft2d_handles_trailing_dims_and_is_invertible():
    torch.manual_seed(2)
    p = 11
    t = torch.randn(p, p, 4, dtype=torch.float64)
    basis = F.fourier_basis(p, dtype=torch.float64)
    out = F.fft2d(t)
    back = torch.einsum("ij...,ix,jy->xy...", out, basis, basis)
    torch.testing.assert_close(back, t)
    with pytest.raises(BAD_INPUT):  # jaxtyping's TypeCheckError under pytest, ValueError for users
        F.fft2d(torch.randn(11, 12))


def test_arrange_by_2d_freqs_covers_every_frequency_including_the_last():
    p = 13
    t = torch.arange(p * p, dtype=torch.float32).reshape(p, p)
    blocks = F.arrange_by_2d_freqs(t)
    assert blocks.shape == ((p - 1) // 2, 3, 3)
    for k in range(1, (p - 1) // 2 + 1):
        idx = [0, 2 * k - 1, 2 * k]
        torch.testing.assert_close(blocks[k - 1], t[idx][:, idx])


def test_project_onto_direction_does_not_normalise():
    torch.manual_seed(3)
    batch = torch.randn(10, 3)
    v = torch.randn(10)
    torch.testing.assert_close(F.project_onto_direction(batch, v), v[:, None] @ (v @ batch)[None, :])
    with pytest.raises(BAD_INPUT):  # jaxtyping's TypeCheckError under pytest, ValueError for users
        F.project_onto_direction(batch, torch.randn(9))


def test_project_onto_frequency_is_the_sum_of_nine_projections():
    torch.manual_seed(4)
    p, k = 11, 5
    batch = torch.randn(p * p, 3)
    expected = sum(
        F.project_onto_direction(batch, F.fourier_2d_basis_term(i, j, p).flatten())
        for i in [0, 2 * k - 1, 2 * k]
        for j in [0, 2 * k - 1, 2 * k]
    )
    torch.testing.assert_close(F.project_onto_frequency(batch, k), expected, atol=1e-5, rtol=0)
    # a projection is idempotent
    once = F.project_onto_frequency(batch, k)
    torch.testing.assert_close(F.project_onto_frequency(once, k), once, atol=1e-5, rtol=0)


@pytest.mark.parametrize("k", [1, 14, 56])
def test_trig_sum_directions_are_normalised_cos_sin_of_x_plus_y(k):
    p = 113
    cos_dir, sin_dir = F.get_trig_sum_directions(k, p)
    x = torch.arange(p, dtype=torch.float64)
    grid = 2 * math.pi * k * (x[:, None] + x[None, :]) / p
    for got, wave in [(cos_dir, torch.cos(grid)), (sin_dir, torch.sin(grid))]:
        torch.testing.assert_close(got.double(), wave / wave.norm(), atol=1e-6, rtol=0)
    assert abs((cos_dir * sin_dir).sum().item()) < 1e-5


@pytest.mark.parametrize("k", [1, 14, 56])
def test_trig_difference_directions_are_normalised_cos_sin_of_x_minus_y(k):
    p = 113
    cos_dir, sin_dir = F.get_trig_difference_directions(k, p)
    assert cos_dir.shape == sin_dir.shape == (p, p) and cos_dir.dtype == torch.float32
    x = torch.arange(p, dtype=torch.float64)
    grid = 2 * math.pi * k * (x[:, None] - x[None, :]) / p  # first index x
    for got, wave in [(cos_dir, torch.cos(grid)), (sin_dir, torch.sin(grid))]:
        torch.testing.assert_close(got.double(), wave / wave.norm(), atol=1e-6, rtol=0)
    # orthogonal to each other and to the x + y directions of every frequency
    sums = F.trig_directions_matrix([1, k, 56], p, torch.float64)
    diffs = torch.stack([cos_dir.flatten(), sin_dir.flatten()]).double()
    assert (sums @ diffs.T).abs().max() < 1e-6 and abs((cos_dir * sin_dir).sum().item()) < 1e-5


@pytest.mark.parametrize("difference", [False, True])
def test_trig_directions_matrix_rows_are_orthonormal_and_float64_matches_float32(difference):
    m = F.trig_directions_matrix([2, 9, 11], p=23, difference=difference)
    assert m.shape == (6, 23 * 23) and m.dtype == torch.float32
    torch.testing.assert_close(m @ m.T, torch.eye(6), atol=1e-5, rtol=0)
    get = F.get_trig_difference_directions if difference else F.get_trig_sum_directions
    torch.testing.assert_close(m[2:4], torch.stack([d.flatten() for d in get(9, 23)]))
    m64 = F.trig_directions_matrix([3, 11], p=23, dtype=torch.float64, difference=difference)
    assert m64.dtype == torch.float64
    torch.testing.assert_close(m64 @ m64.T, torch.eye(4, dtype=torch.float64), atol=1e-12, rtol=0)


def test_frequency_out_of_range_is_a_clear_error():
    for bad in (F.get_trig_sum_directions, F.get_trig_difference_directions):
        with pytest.raises(ValueError, match=r"1 \.\.\. 11 for p = 23, got \[12\]"):
            bad(12, p=23)
    with pytest.raises(ValueError, match=r"1 \.\.\. 11"):
        F.trig_directions_matrix([3, 0], p=23)
    assert F.check_frequencies(torch.tensor([3, 11]), 23) == [3, 11]


def test_per_frequency_adds_cos_and_sin_and_drops_the_constant():
    values = torch.arange(7.0)  # const, cos1, sin1, cos2, sin2, cos3, sin3
    torch.testing.assert_close(F.per_frequency(values), torch.tensor([3.0, 7.0, 11.0]))
    torch.testing.assert_close(
        F.per_frequency(torch.stack([values, 2 * values])), torch.tensor([[3.0, 7, 11], [6, 14, 22]])
    )
