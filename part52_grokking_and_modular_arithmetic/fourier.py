"""The Fourier basis over Z_p and everything expressed in it.

Conventions (one place for them, imported everywhere else):

* The 1D basis is a ``(p, p)`` matrix ``F`` whose **rows** are unit-norm basis vectors:
  row 0 is the constant, row ``2k-1`` is ``cos(2*pi*k*x/p)`` and row ``2k`` is ``sin(2*pi*k*x/p)``
  for ``k = 1 ... (p-1)/2``. ``F`` is orthogonal, so ``F @ F.T == I``.
* ``fft1d(v) = v @ F.T`` acts on the last dimension.
* ``fft2d(T)[i, j, ...] = sum_{x,y} T[x, y, ...] F[i, x] F[j, y]`` (first index <-> first input x).
* The 2D basis term ``(i, j)`` is the outer product ``F[i] (x) F[j]``.
* Directions in R^{p^2} (a batch index is ``x * p + y``) are flattened ``(p, p)`` grids.

``p`` is always read from the shapes of the inputs (or passed explicitly); nothing here assumes 113.
"""

from __future__ import annotations

import functools
import math

import einops
import torch
from jaxtyping import Float
from torch import Tensor

__all__ = [
    "make_fourier_basis",
    "fourier_basis",
    "fourier_basis_names",
    "n_frequencies",
    "fft1d",
    "fft1d_given_dim",
    "fourier_2d_basis_term",
    "fft2d",
    "arrange_by_2d_freqs",
    "frequency_block_indices",
    "project_onto_direction",
    "project_onto_frequency",
    "get_trig_sum_directions",
    "trig_sum_directions_matrix",
]


def _check_p(p: int) -> None:
    if not isinstance(p, int) or p < 3 or p % 2 == 0:
        raise ValueError(f"p must be an odd integer >= 3 (a prime such as 113), got {p!r}")


def n_frequencies(p: int) -> int:
    """Number of non-constant frequencies, ``(p - 1) // 2`` (56 for p = 113)."""
    _check_p(p)
    return (p - 1) // 2


def _fourier_basis_float64(p: int) -> tuple[Tensor, list[str]]:
    _check_p(p)
    x = torch.arange(p, dtype=torch.float64)
    rows = [torch.ones(p, dtype=torch.float64)]
    names = ["const"]
    for k in range(1, n_frequencies(p) + 1):
        rows.append(torch.cos(2 * math.pi * k * x / p))
        rows.append(torch.sin(2 * math.pi * k * x / p))
        names.extend([f"cos {k}", f"sin {k}"])
    basis = torch.stack(rows)
    return basis / basis.norm(dim=1, keepdim=True), names


def make_fourier_basis(p: int) -> tuple[Float[Tensor, "p p"], list[str]]:
    """Build the orthonormal Fourier basis of R^p and the names of its rows.

    Returns:
        basis: ``(p, p)`` float32; row 0 constant, rows ``2k-1`` / ``2k`` are cos / sin of frequency k,
            each row normalised to unit norm.
        names: ``["const", "cos 1", "sin 1", ..., "cos K", "sin K"]`` with ``K = (p-1)/2``.
    """
    basis, names = _fourier_basis_float64(p)
    return basis.float(), names


@functools.lru_cache(maxsize=8)
def _cached_basis(p: int) -> tuple[Tensor, tuple[str, ...]]:
    basis, names = _fourier_basis_float64(p)
    return basis, tuple(names)


def fourier_basis(p: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Tensor:
    """The ``(p, p)`` basis of :func:`make_fourier_basis` in ``dtype`` (built in float64, cached per ``p``;
    a fresh copy is returned)."""
    return _cached_basis(p)[0].to(dtype=dtype, device=device, copy=True)


def fourier_basis_names(p: int) -> list[str]:
    """The row names of the basis: ``["const", "cos 1", "sin 1", ...]``."""
    return list(_cached_basis(p)[1])


def _basis_like(t: Tensor, p: int) -> Tensor:
    dtype = t.dtype if t.is_floating_point() else torch.float32
    return fourier_basis(p, dtype=dtype, device=t.device)


def fft1d(x: Float[Tensor, "... p"]) -> Float[Tensor, "... p"]:
    """Coefficients of ``x`` in the Fourier basis along its **last** dimension: ``x @ F.T``."""
    p = x.shape[-1]
    return x @ _basis_like(x, p).T


def fft1d_given_dim(tensor: Float[Tensor, "..."], dim: int) -> Float[Tensor, "..."]:
    """Like :func:`fft1d`, but along dimension ``dim`` (which must have odd size p)."""
    moved = tensor.transpose(dim, -1)
    return fft1d(moved).transpose(dim, -1)


def fourier_2d_basis_term(i: int, j: int, p: int = 113) -> Float[Tensor, "p p"]:
    """The 2D basis function ``F[i] (x) F[j]`` as a ``(p, p)`` grid indexed ``[x, y]``."""
    basis = fourier_basis(p)
    if not (0 <= i < p and 0 <= j < p):
        raise IndexError(f"basis indices must lie in [0, {p}), got ({i}, {j})")
    return basis[i][:, None] * basis[j][None, :]


def fft2d(tensor: Float[Tensor, "p p *rest"]) -> Float[Tensor, "p p *rest"]:
    """2D Fourier transform over the first two (input x, input y) dimensions.

    ``out[i, j, ...] = sum_{x, y} tensor[x, y, ...] * F[i, x] * F[j, y]``.
    """
    p = tensor.shape[0]
    if tensor.ndim < 2 or tensor.shape[1] != p:
        raise ValueError(f"fft2d expects a tensor of shape (p, p, ...), got {tuple(tensor.shape)}")
    basis = _basis_like(tensor, p)
    return torch.einsum("xy...,ix,jy->ij...", tensor, basis, basis)


def frequency_block_indices(k: int) -> list[int]:
    """Basis rows that belong to frequency ``k``'s 3x3 block: ``[0, 2k-1, 2k]`` (const, cos k, sin k)."""
    if k < 1:
        raise ValueError(f"frequencies start at 1 (frequency k's block is index k-1 of arrange_by_2d_freqs), got {k}")
    return [0, 2 * k - 1, 2 * k]


def arrange_by_2d_freqs(tensor: Float[Tensor, "p p *rest"]) -> Float[Tensor, "n_freqs 3 3 *rest"]:
    """Gather, for **every** frequency ``k = 1 ... (p-1)/2``, the 3x3 block of a 2D-Fourier tensor.

    ``out[k-1, a, b, ...] = tensor[idx[a], idx[b], ...]`` with ``idx = [0, 2k-1, 2k]``.
    (The published helper stopped at ``k = (p-1)/2 - 1``; this one keeps the last frequency.)
    """
    p = tensor.shape[0]
    idx = torch.tensor([frequency_block_indices(k) for k in range(1, n_frequencies(p) + 1)], device=tensor.device)
    return tensor[idx[:, :, None], idx[:, None, :]]


def project_onto_direction(
    batch_vecs: Float[Tensor, "batch *rest"], v: Float[Tensor, "batch"]
) -> Float[Tensor, "batch *rest"]:
    """Project every column of ``batch_vecs`` onto the direction ``v`` along the batch axis.

    ``v`` is assumed to have unit norm (it is *not* normalised here). Returns ``v (v . batch_vecs)``.
    """
    if v.ndim != 1 or v.shape[0] != batch_vecs.shape[0]:
        raise ValueError(
            f"v must be a vector as long as the batch axis ({batch_vecs.shape[0]}), got shape {tuple(v.shape)}"
        )
    coeffs = torch.tensordot(v.to(batch_vecs.dtype), batch_vecs, dims=([0], [0]))  # (*rest)
    return v.to(batch_vecs.dtype).reshape(-1, *([1] * coeffs.ndim)) * coeffs


def project_onto_frequency(batch_vecs: Float[Tensor, "batch *rest"], freq: int) -> Float[Tensor, "batch *rest"]:
    """Project onto the 9 2D basis terms of frequency ``freq``'s block (batch axis has size p^2)."""
    p = math.isqrt(batch_vecs.shape[0])
    if p * p != batch_vecs.shape[0]:
        raise ValueError(f"the batch axis must have size p^2 (one row per (x, y) pair), got {batch_vecs.shape[0]}")
    if not 1 <= freq <= n_frequencies(p):
        raise ValueError(f"freq must lie in 1 ... {n_frequencies(p)} for p = {p}, got {freq}")
    idx = frequency_block_indices(freq)
    basis = _basis_like(batch_vecs, p)
    block = basis[idx]  # (3, p): const, cos freq, sin freq
    terms = einops.rearrange(torch.einsum("ax,by->abxy", block, block), "a b x y -> (a b) (x y)")
    # the 9 terms are orthonormal, so the projection onto their span is the sum of the projections
    coeffs = torch.tensordot(terms, batch_vecs, dims=([1], [0]))  # (9, *rest)
    return torch.tensordot(terms.T, coeffs, dims=([1], [0]))


def get_trig_sum_directions(k: int, p: int = 113) -> tuple[Float[Tensor, "p p"], Float[Tensor, "p p"]]:
    """Unit-norm ``(p, p)`` grids of ``cos(w(x+y))`` and ``sin(w(x+y))``, ``w = 2 pi k / p``.

    Built from the 2D basis terms (see the module docstring for the basis convention):
    ``cos_dir = (term(2k-1, 2k-1) - term(2k, 2k)) / sqrt 2`` and
    ``sin_dir = (term(2k, 2k-1) + term(2k-1, 2k)) / sqrt 2``.
    """
    if not 1 <= k <= n_frequencies(p):
        raise ValueError(f"frequency k must lie in 1 ... {n_frequencies(p)} for p = {p}, got {k}")
    c, s = 2 * k - 1, 2 * k
    cos_dir = (fourier_2d_basis_term(c, c, p) - fourier_2d_basis_term(s, s, p)) / math.sqrt(2)
    sin_dir = (fourier_2d_basis_term(s, c, p) + fourier_2d_basis_term(c, s, p)) / math.sqrt(2)
    return cos_dir, sin_dir


def trig_sum_directions_matrix(
    key_freqs: list[int], p: int = 113, dtype: torch.dtype = torch.float32
) -> Float[Tensor, "n_dirs p_sq"]:
    """Stack the flattened cos/sin(w(x+y)) directions of every key frequency: ``(2 * len(key_freqs), p*p)``.

    The rows are orthonormal, so ``M.T @ (M @ X)`` projects ``X`` (batch axis first) onto their span.
    With ``dtype=torch.float64`` the directions are built in float64 throughout.
    """
    basis = fourier_basis(p, dtype=dtype) if dtype != torch.float32 else None
    rows = []
    for k in key_freqs:
        k = int(k)
        if basis is None:
            cos_dir, sin_dir = get_trig_sum_directions(k, p)
        else:
            if not 1 <= k <= n_frequencies(p):
                raise ValueError(f"frequency k must lie in 1 ... {n_frequencies(p)} for p = {p}, got {k}")
            c, s = basis[2 * k - 1], basis[2 * k]
            cos_dir = (torch.outer(c, c) - torch.outer(s, s)) / math.sqrt(2)
            sin_dir = (torch.outer(s, c) + torch.outer(c, s)) / math.sqrt(2)
        rows += [cos_dir.flatten(), sin_dir.flatten()]
    return torch.stack(rows)
