"""The Fourier basis over Z_p and everything expressed in it.

Conventions (one place for them, imported everywhere else):

* The 1D basis is a ``(p, p)`` matrix ``F`` whose **rows** are unit-norm basis vectors: row 0 is the constant,
  row ``2k-1`` is ``cos(2 pi k x / p)`` and row ``2k`` is ``sin(2 pi k x / p)`` for ``k = 1 ... (p-1)/2``.
  ``F`` is orthogonal, so ``F @ F.T == I``.
* ``fft1d(v) = v @ F.T`` acts on the last dimension.
* ``fft2d(T)[i, j, ...] = sum_{x,y} T[x, y, ...] F[i, x] F[j, y]`` (first index <-> first input x).
* The 2D basis term ``(i, j)`` is the outer product ``F[i] (x) F[j]``.
* Directions in R^{p^2} (a batch index is ``x * p + y``) are flattened ``(p, p)`` grids.

``p`` is always read from the shapes of the inputs (or passed explicitly); nothing here assumes 113.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable

import einops
import torch
from jaxtyping import Float
from torch import Tensor

__all__ = [
    "make_fourier_basis",
    "fourier_basis",
    "fourier_basis_names",
    "n_frequencies",
    "check_frequencies",
    "per_frequency",
    "fft1d",
    "fft1d_given_dim",
    "fourier_2d_basis_term",
    "fft2d",
    "arrange_by_2d_freqs",
    "frequency_block_indices",
    "project_onto_direction",
    "project_onto_frequency",
    "get_trig_sum_directions",
    "get_trig_difference_directions",
    "trig_directions_matrix",
]


def n_frequencies(p: int) -> int:
    """Number of non-constant frequencies, ``(p - 1) // 2`` (56 for p = 113)."""
    if not isinstance(p, int) or p < 3 or p % 2 == 0:
        raise ValueError(f"p must be an odd integer >= 3 (a prime such as 113), got {p!r}")
    return (p - 1) // 2


def check_frequencies(freqs: Iterable[int] | Tensor, p: int) -> list[int]:
    """``freqs`` as a list of ints, each checked to lie in ``1 ... (p-1)/2``."""
    out = [int(k) for k in freqs]
    bad = [k for k in out if not 1 <= k <= n_frequencies(p)]
    if bad:
        raise ValueError(f"frequencies must lie in 1 ... {n_frequencies(p)} for p = {p}, got {bad}")
    return out


@functools.lru_cache(maxsize=8)
def _cached_basis(p: int) -> tuple[Tensor, tuple[str, ...]]:
    """The float64 basis and its row names, built once per ``p`` (callers copy the tensor)."""
    x = torch.arange(p, dtype=torch.float64)
    rows, names = [torch.ones(p, dtype=torch.float64)], ["const"]
    for k in range(1, n_frequencies(p) + 1):
        rows += [torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)]
        names += [f"cos {k}", f"sin {k}"]
    basis = torch.stack(rows)
    return basis / basis.norm(dim=1, keepdim=True), tuple(names)


def fourier_basis(p: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Tensor:
    """The ``(p, p)`` basis of :func:`make_fourier_basis` in ``dtype`` (built in float64; a fresh copy)."""
    return _cached_basis(p)[0].to(dtype=dtype, device=device, copy=True)


def fourier_basis_names(p: int) -> list[str]:
    """The row names of the basis: ``["const", "cos 1", "sin 1", ..., "cos K", "sin K"]``, ``K = (p-1)/2``."""
    return list(_cached_basis(p)[1])


def make_fourier_basis(p: int) -> tuple[Float[Tensor, "p p"], list[str]]:
    """The orthonormal Fourier basis of R^p, ``(p, p)`` float32 (row 0 constant, rows ``2k-1`` / ``2k`` the
    cos / sin of frequency k, each of unit norm), and the names of its rows (:func:`fourier_basis_names`)."""
    return fourier_basis(p), fourier_basis_names(p)


def per_frequency(component_values: Float[Tensor, "*batch p"]) -> Float[Tensor, "*batch n_freqs"]:
    """Add the cos and sin entries of each frequency ``k = 1 ... (p-1)/2`` (index ``k - 1``); drop the constant."""
    return component_values[..., 1::2] + component_values[..., 2::2]


def _basis_like(t: Tensor, p: int) -> Tensor:
    return fourier_basis(p, dtype=t.dtype if t.is_floating_point() else torch.float32, device=t.device)


def fft1d(x: Float[Tensor, "... p"]) -> Float[Tensor, "... p"]:
    """Coefficients of ``x`` in the Fourier basis along its **last** dimension: ``x @ F.T`` (``x``'s dtype)."""
    return x @ _basis_like(x, x.shape[-1]).T


def fft1d_given_dim(tensor: Float[Tensor, "..."], dim: int) -> Float[Tensor, "..."]:
    """Like :func:`fft1d`, but along dimension ``dim`` (which must have odd size p)."""
    return fft1d(tensor.transpose(dim, -1)).transpose(dim, -1)


def fourier_2d_basis_term(i: int, j: int, p: int = 113) -> Float[Tensor, "p p"]:
    """The 2D basis function ``F[i] (x) F[j]`` as a ``(p, p)`` float32 grid indexed ``[x, y]``."""
    if not (0 <= i < p and 0 <= j < p):
        raise IndexError(f"basis indices must lie in [0, {p}), got ({i}, {j})")
    basis = fourier_basis(p)
    return torch.outer(basis[i], basis[j])


def fft2d(tensor: Float[Tensor, "p p *rest"]) -> Float[Tensor, "p p *rest"]:
    """2D Fourier transform over the first two (input x, input y) dimensions, in ``tensor``'s dtype:
    ``out[i, j, ...] = sum_{x, y} tensor[x, y, ...] * F[i, x] * F[j, y]``."""
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
    """Gather, for **every** frequency ``k = 1 ... (p-1)/2``, the 3x3 block of a 2D-Fourier tensor:
    ``out[k-1, a, b, ...] = tensor[idx[a], idx[b], ...]`` with ``idx = [0, 2k-1, 2k]``."""
    p = tensor.shape[0]
    idx = torch.tensor([frequency_block_indices(k) for k in range(1, n_frequencies(p) + 1)], device=tensor.device)
    return tensor[idx[:, :, None], idx[:, None, :]]


def project_onto_direction(
    batch_vecs: Float[Tensor, "batch *rest"], v: Float[Tensor, "batch"]
) -> Float[Tensor, "batch *rest"]:
    """Project every column of ``batch_vecs`` onto the direction ``v`` along the batch axis:
    ``v (v . batch_vecs)``. ``v`` is assumed to have unit norm (it is *not* normalised here)."""
    if v.ndim != 1 or v.shape[0] != batch_vecs.shape[0]:
        raise ValueError(
            f"v must be a vector as long as the batch axis ({batch_vecs.shape[0]}), got shape {tuple(v.shape)}"
        )
    v = v.to(batch_vecs.dtype)
    coeffs = torch.tensordot(v, batch_vecs, dims=([0], [0]))  # (*rest)
    return v.reshape(-1, *([1] * coeffs.ndim)) * coeffs


def project_onto_frequency(batch_vecs: Float[Tensor, "batch *rest"], freq: int) -> Float[Tensor, "batch *rest"]:
    """Project onto the 9 2D basis terms of frequency ``freq``'s block (the batch axis has size p^2)."""
    p = math.isqrt(batch_vecs.shape[0])
    if p * p != batch_vecs.shape[0]:
        raise ValueError(f"the batch axis must have size p^2 (one row per (x, y) pair), got {batch_vecs.shape[0]}")
    check_frequencies([freq], p)
    block = _basis_like(batch_vecs, p)[frequency_block_indices(freq)]  # (3, p): const, cos freq, sin freq
    terms = einops.rearrange(torch.einsum("ax,by->abxy", block, block), "a b x y -> (a b) (x y)")
    # the 9 terms are orthonormal, so the projection onto their span is the sum of the projections
    coeffs = torch.tensordot(terms, batch_vecs, dims=([1], [0]))  # (9, *rest)
    return torch.tensordot(terms.T, coeffs, dims=([1], [0]))


def _trig_directions(k: int, p: int, sign: int) -> tuple[Tensor, Tensor]:
    """float64 unit ``(p, p)`` grids of ``cos(w(x + sign y))`` and ``sin(w(x + sign y))``, ``w = 2 pi k / p``."""
    check_frequencies([k], p)
    basis = _cached_basis(p)[0]
    c, s = basis[2 * k - 1], basis[2 * k]
    # cos(a +- b) = cos a cos b -+ sin a sin b and sin(a +- b) = sin a cos b +- cos a sin b, each term of norm 1
    cos_dir = (torch.outer(c, c) - sign * torch.outer(s, s)) / math.sqrt(2)
    sin_dir = (torch.outer(s, c) + sign * torch.outer(c, s)) / math.sqrt(2)
    return cos_dir, sin_dir


def get_trig_sum_directions(k: int, p: int = 113) -> tuple[Float[Tensor, "p p"], Float[Tensor, "p p"]]:
    """Unit-norm ``(p, p)`` float32 grids (indexed ``[x, y]``) of ``cos(w(x+y))`` and ``sin(w(x+y))``,
    ``w = 2 pi k / p``: ``(term(2k-1, 2k-1) - term(2k, 2k)) / sqrt 2``, ``(term(2k, 2k-1) + term(2k-1, 2k)) / sqrt 2``
    (2D basis terms, see the module docstring)."""
    cos_dir, sin_dir = _trig_directions(k, p, +1)
    return cos_dir.float(), sin_dir.float()


def get_trig_difference_directions(k: int, p: int = 113) -> tuple[Float[Tensor, "p p"], Float[Tensor, "p p"]]:
    """Unit-norm ``(p, p)`` float32 grids (indexed ``[x, y]``) of ``cos(w(x-y))`` and ``sin(w(x-y))``,
    ``w = 2 pi k / p``, orthogonal to the :func:`get_trig_sum_directions` (the same terms, opposite signs)."""
    cos_dir, sin_dir = _trig_directions(k, p, -1)
    return cos_dir.float(), sin_dir.float()


def trig_directions_matrix(
    key_freqs: Iterable[int] | Tensor, p: int = 113, dtype: torch.dtype = torch.float32, *, difference: bool = False
) -> Float[Tensor, "n_dirs p_sq"]:
    """The flattened ``cos/sin(w_k(x+y))`` directions (``difference=True``: ``x-y``) of every key frequency:
    ``(2 * len(key_freqs), p*p)`` orthonormal rows of ``dtype``, so ``M.T @ (M @ X)`` projects ``X`` onto them."""
    sign = -1 if difference else +1
    rows = [d.flatten() for k in check_frequencies(key_freqs, p) for d in _trig_directions(k, p, sign)]
    return torch.stack(rows).to(dtype)
