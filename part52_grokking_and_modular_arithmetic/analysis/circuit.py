"""Analysis of a trained modular-arithmetic model: the computations of the course's Sections 1-3, in course order.

Pure functions of a model or of tensors; ``p`` is read from the model (``d_vocab - 1``, ``=`` is token ``p``)
or from tensor shapes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import NamedTuple

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import ActivationCache, HookedTransformer

from ..runs.data import make_all_data, make_split
from ..training.losses import cross_entropy_high_precision, score_logits
from .fourier import (
    arrange_by_2d_freqs,
    check_frequencies,
    fft2d,
    fourier_basis,
    project_onto_frequency,
    trig_directions_matrix,
)

__all__ = [
    "CLUSTER_THRESHOLD",
    "UNCLUSTERED",
    "KEY_CLUSTER_MIN_FRACTION",
    "infer_p",
    "CourseWeights",
    "get_course_weights",
    "get_original_logits",
    "KeyActivations",
    "key_activations_from_cache",
    "get_key_activations",
    "EffectiveWeights",
    "get_effective_weights",
    "functional_form_from_attention",
    "functional_form_logits",
    "centred_grid",
    "get_fourier_neuron_acts",
    "mean_sq_fourier_coefficients",
    "find_neuron_freqs",
    "neuron_clusters",
    "key_frequencies",
    "sum_difference_shares",
    "trig_logits",
    "projected_neuron_acts",
    "NeuronAnalysis",
    "analyse_neurons",
    "neuron_surgery_losses",
    "ReluQuadraticFit",
    "quadratic_terms",
    "fit_quadratic_terms",
    "relu_quadratic_fit",
    "excl_loss",
    "excl_loss_from_logits",
    "fourier_embed",
    "embed_SVD",
]

#: A neuron belongs to a frequency's cluster when that frequency's 3x3 block explains at least this fraction
#: of its centred activations' squared 2D Fourier coefficients (paper: 0.85).
CLUSTER_THRESHOLD = 0.85
#: Cluster label of the neurons no single frequency explains (the "always firing" group).
UNCLUSTERED = -1
#: :func:`key_frequencies` keeps a frequency whose cluster holds at least this fraction of the MLP neurons.
KEY_CLUSTER_MIN_FRACTION = 0.01


# ---- Course helper values ------------------------------------------------------------------------------------------


def infer_p(model: HookedTransformer) -> int:
    """The modulus of a course model: ``d_vocab - 1`` (the last token, id ``p``, is ``=``)."""
    cfg = model.cfg
    p = cfg.d_vocab - 1
    if cfg.d_vocab_out not in (cfg.d_vocab, p):
        raise ValueError(
            f"not a modular-arithmetic course model: d_vocab={cfg.d_vocab} (expected p + 1) but "
            f"d_vocab_out={cfg.d_vocab_out} (expected p + 1 or p)"
        )
    if p < 3 or p % 2 == 0:
        raise ValueError(f"model.cfg.d_vocab - 1 = {p} is not an odd modulus >= 3")
    return p


@dataclass(frozen=True)
class CourseWeights:
    """The chapter's helper variables, read from layer 0 of a model (TransformerLens layout, detached copies).

    ``W_E`` and ``W_U`` have the ``=`` token dropped (``W_E_full[:-1]`` / ``W_U_full[:, :-1]``), as in the
    chapter. ``final_pos_resid_initial = W_E_full[-1] + W_pos[2]`` is the residual stream at the ``=``
    position before attention.
    """

    p: int
    W_E: Float[Tensor, "p d_model"]
    W_U: Float[Tensor, "d_model p"]
    W_E_full: Float[Tensor, "d_vocab d_model"]
    W_U_full: Float[Tensor, "d_model d_vocab_out"]
    W_pos: Float[Tensor, "n_ctx d_model"]
    W_Q: Float[Tensor, "n_heads d_model d_head"]
    W_K: Float[Tensor, "n_heads d_model d_head"]
    W_V: Float[Tensor, "n_heads d_model d_head"]
    W_O: Float[Tensor, "n_heads d_head d_model"]
    W_in: Float[Tensor, "d_model d_mlp"]
    b_in: Float[Tensor, "d_mlp"]
    W_out: Float[Tensor, "d_mlp d_model"]
    b_out: Float[Tensor, "d_model"]
    final_pos_resid_initial: Float[Tensor, "d_model"]

    def as_dict(self) -> dict[str, object]:
        """The fields as a plain dict (e.g. ``globals().update(weights.as_dict())`` in a notebook)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@torch.no_grad()
def get_course_weights(model: HookedTransformer) -> CourseWeights:
    """Read the chapter's helper variables from ``model`` (see :class:`CourseWeights`)."""
    p = infer_p(model)
    block = model.blocks[0]
    W_E_full, W_U_full, W_pos = (t.detach().clone() for t in (model.W_E, model.W_U, model.W_pos))
    attn = {name: getattr(block.attn, name).detach().clone() for name in ("W_Q", "W_K", "W_V", "W_O")}
    mlp = {name: getattr(block.mlp, name).detach().clone() for name in ("W_in", "b_in", "W_out", "b_out")}
    return CourseWeights(
        p=p,
        W_E=W_E_full[:-1],
        W_U=W_U_full[:, :p],
        W_E_full=W_E_full,
        W_U_full=W_U_full,
        W_pos=W_pos,
        final_pos_resid_initial=W_E_full[-1] + W_pos[-1],
        **attn,
        **mlp,
    )


def _all_data_for(model: HookedTransformer, all_data: Int[Tensor, "batch 3"] | None) -> Tensor:
    return (make_all_data(infer_p(model)) if all_data is None else all_data).to(model.cfg.device)


@torch.no_grad()
def get_original_logits(
    model: HookedTransformer, all_data: Int[Tensor, "batch 3"] | None = None
) -> Float[Tensor, "batch p"]:
    """Last-position logits over ``all_data`` (default: all p^2 inputs), ``=`` logit dropped: ``(batch, p)``
    in the model's dtype."""
    return model(_all_data_for(model, all_data))[:, -1, : infer_p(model)]


# ---- Activations and effective weights -----------------------------------------------------------------------------


class KeyActivations(NamedTuple):
    """The activations the chapter studies, at the last (``=``) position, one row per input."""

    attn_mat: Float[Tensor, "batch n_heads n_ctx"]  #: attention paid by the ``=`` query to each key position
    neuron_acts_post: Float[Tensor, "batch d_mlp"]  #: MLP activations after the ReLU
    neuron_acts_pre: Float[Tensor, "batch d_mlp"]  #: MLP activations before the ReLU


_KEY_HOOKS = ("blocks.0.attn.hook_pattern", "blocks.0.mlp.hook_post", "blocks.0.mlp.hook_pre")


def key_activations_from_cache(cache: ActivationCache) -> KeyActivations:
    """Slice the key activations out of a ``run_with_cache`` cache (the chapter's exercise 1.1):
    ``cache["pattern", 0][:, :, -1, :]``, ``cache["post", 0][:, -1, :]``, ``cache["pre", 0][:, -1, :]``."""
    return KeyActivations(
        attn_mat=cache["pattern", 0][:, :, -1, :],
        neuron_acts_post=cache["post", 0][:, -1, :],
        neuron_acts_pre=cache["pre", 0][:, -1, :],
    )


@torch.no_grad()
def get_key_activations(model: HookedTransformer, all_data: Int[Tensor, "batch 3"] | None = None) -> KeyActivations:
    """Run ``model`` on ``all_data`` (default: all p^2 inputs, batch index ``x*p + y``) and return
    ``(attn_mat (batch, n_heads, n_ctx), neuron_acts_post (batch, d_mlp), neuron_acts_pre (batch, d_mlp))``."""
    _, cache = model.run_with_cache(_all_data_for(model, all_data), names_filter=lambda name: name in _KEY_HOOKS)
    return KeyActivations(*(t.clone() for t in key_activations_from_cache(cache)))


class EffectiveWeights(NamedTuple):
    """The products of weight matrices through which the model's algorithm reads most clearly."""

    W_logit: Float[Tensor, "d_mlp p"]  #: ``W_out @ W_U``: a neuron's direct effect on each output logit
    W_neur: Float[Tensor, "n_heads p d_mlp"]  #: ``W_E @ W_V @ W_O @ W_in``: token -> neuron through each head's OV
    W_attn: Float[Tensor, "n_heads p"]  #: ``=``-query score of each token key, ``/ sqrt(d_head)``


def get_effective_weights(model: HookedTransformer | CourseWeights) -> EffectiveWeights:
    """``(W_logit (d_mlp, p), W_neur (n_heads, p, d_mlp), W_attn (n_heads, p))`` of ``model`` (or of its
    :class:`CourseWeights`), in the model's dtype.

    ``W_attn[h, t] = final_pos_resid_initial @ W_Q[h] @ W_K[h].T @ W_E[t] / sqrt(d_head)`` — the transposes
    are per head (``.T`` on the 3-D ``W_K`` would reverse all its axes).
    """
    w = model if isinstance(model, CourseWeights) else get_course_weights(model)
    query = w.final_pos_resid_initial @ w.W_Q  # (n_heads, d_head)
    keys = w.W_E @ w.W_K  # (n_heads, p, d_head): every token's key, per head
    return EffectiveWeights(
        W_logit=w.W_out @ w.W_U,
        W_neur=w.W_E @ w.W_V @ w.W_O @ w.W_in,  # broadcasts over heads
        W_attn=einops.einsum(query, keys, "h d, h t d -> h t") / math.sqrt(w.W_Q.shape[-1]),
    )


def functional_form_from_attention(
    W_neur: Float[Tensor, "n_heads p d_mlp"],
    W_logit: Float[Tensor, "d_mlp p"],
    alpha: Float[Tensor, "n_heads p p"],
) -> Float[Tensor, "p_sq p"]:
    """``ReLU(sum_h alpha[h, x, y] W_neur[h, x] + (1 - alpha[h, x, y]) W_neur[h, y]) @ W_logit`` for every
    (x, y), batch index ``x * p + y``: ``(p^2, p)``. ``alpha[h, x, y]`` is the attention head ``h``'s ``=`` query
    pays to ``x`` (the rest goes to ``y``)."""
    from_x = einops.einsum(alpha, W_neur, "h x y, h x n -> x y n")
    from_y = einops.einsum(1 - alpha, W_neur, "h x y, h y n -> x y n")
    return einops.rearrange(torch.relu(from_x + from_y) @ W_logit, "x y z -> (x y) z")


def functional_form_logits(
    W_neur: Float[Tensor, "n_heads p d_mlp"],
    W_logit: Float[Tensor, "d_mlp p"],
    W_attn: Float[Tensor, "n_heads p"],
) -> Float[Tensor, "p_sq p"]:
    """The ``(p^2, p)`` logits (batch index ``x * p + y``, dtype of the inputs) of the model's derived
    functional form (the chapter's exercise 1.5, biases left out):
    ``ReLU(sum_h alpha_h W_neur[h, x] + (1 - alpha_h) W_neur[h, y]) @ W_logit`` with
    ``alpha_h = sigmoid(W_attn[h, x] - W_attn[h, y])``: the attention the ``=`` query pays to ``x`` when its
    attention to ``=`` itself is ignored (a softmax over two keys is the sigmoid of their score difference).
    """
    alpha = torch.sigmoid(W_attn[:, :, None] - W_attn[:, None, :])  # (n_heads, x, y)
    return functional_form_from_attention(W_neur, W_logit, alpha)


# ---- Neuron frequencies and clusters -------------------------------------------------------------------------------


def centred_grid(acts: Float[Tensor, "p_sq n"] | Float[Tensor, "p p n"]) -> Float[Tensor, "p p n"]:
    """``(p^2, n)`` rows in ``x * p + y`` order, or a ``(p, p, n)`` grid -> the ``(p, p, n)`` grid indexed
    ``[x, y]`` (``acts``' dtype), each column minus its mean over the p^2 inputs."""
    if acts.ndim == 2 and math.isqrt(acts.shape[0]) ** 2 == acts.shape[0]:
        acts = einops.rearrange(acts, "(x y) n -> x y n", x=math.isqrt(acts.shape[0]))
    if acts.ndim != 3 or acts.shape[0] != acts.shape[1]:
        raise ValueError(
            "expected one row per (x, y) pair (p^2 rows, batch index x*p + y) or a (p, p, n) grid, "
            f"got shape {tuple(acts.shape)}"
        )
    return acts - acts.mean((0, 1), keepdim=True)


def get_fourier_neuron_acts(neuron_acts: Float[Tensor, "p_sq d_mlp"]) -> Float[Tensor, "p p d_mlp"]:
    """Centre activations over the p^2 inputs (subtract each neuron's mean), reshape to the ``[x, y]`` grid
    and take the 2D Fourier transform: ``(p, p, d_mlp)`` in ``neuron_acts``' dtype."""
    return fft2d(centred_grid(neuron_acts))


def mean_sq_fourier_coefficients(
    neuron_acts_sq: Float[Tensor, "p p d_mlp"] | Float[Tensor, "p_sq d_mlp"],
) -> Float[Tensor, "p p"]:
    """Mean over neurons of the squared 2D Fourier coefficients of the centred activations (the chapter's
    exercise 2.2): ``(p, p)`` in the input's dtype, indexed by (x-basis, y-basis) term. Input: the
    ``(p, p, d_mlp)`` grid (or ``(p^2, d_mlp)`` rows). Sparse for a grokked model: const, linear and
    quadratic terms of a few frequencies."""
    return fft2d(centred_grid(neuron_acts_sq)).pow(2).mean(-1)


def find_neuron_freqs(
    fourier_neuron_acts: Float[Tensor, "p p d_mlp"],
) -> tuple[Int[Tensor, "d_mlp"], Float[Tensor, "d_mlp"]]:
    """Each neuron's best frequency (``(d_mlp,)`` long, in ``1 ... (p-1)/2``) and the fraction of its sum of
    squares its 3x3 block ``{const, cos k, sin k}^2`` holds (``(d_mlp,)``, input dtype; 0 for a dead neuron).
    Feed *centred* activations (:func:`get_fourier_neuron_acts`), else the constant sits in every block."""
    if fourier_neuron_acts.ndim != 3 or fourier_neuron_acts.shape[0] != fourier_neuron_acts.shape[1]:
        raise ValueError(f"expected a (p, p, d_mlp) tensor, got shape {tuple(fourier_neuron_acts.shape)}")
    block_sq = arrange_by_2d_freqs(fourier_neuron_acts).pow(2).sum((1, 2))  # (n_freqs, d_mlp)
    total_sq = fourier_neuron_acts.pow(2).sum((0, 1))  # (d_mlp,)
    neuron_frac_explained, block_index = (block_sq / total_sq.clamp_min(torch.finfo(total_sq.dtype).tiny)).max(0)
    return block_index + 1, neuron_frac_explained


def neuron_clusters(
    neuron_freqs: Int[Tensor, "d_mlp"],
    neuron_frac_explained: Float[Tensor, "d_mlp"],
    threshold: float = CLUSTER_THRESHOLD,
) -> dict[int, Int[Tensor, "n"]]:
    """Group neurons by frequency: ``{freq: neuron indices}`` (ascending frequency); neurons whose best
    frequency explains less than ``threshold`` go to :data:`UNCLUSTERED` (``-1``, listed last when present).
    Only non-empty clusters appear."""
    labels = torch.where(neuron_frac_explained >= threshold, neuron_freqs, UNCLUSTERED)
    order = sorted(set(labels.tolist()) - {UNCLUSTERED}) + ([UNCLUSTERED] if (labels == UNCLUSTERED).any() else [])
    return {int(k): torch.nonzero(labels == k).flatten() for k in order}


def key_frequencies(
    model: HookedTransformer | None = None,
    *,
    clusters: dict[int, Tensor] | None = None,
    d_mlp: int | None = None,
    min_fraction: float = KEY_CLUSTER_MIN_FRACTION,
) -> list[int]:
    """The frequencies a model computes with (ascending): those whose neuron cluster holds at least
    ``min_fraction`` of the MLP neurons (default 1%: 6 of 512). The neurons decide, not the embedding, which can
    carry unused frequencies; lower ``min_fraction`` to see a cluster still forming, and check with
    :func:`excl_loss`. Pass ``model``, or ``clusters`` (from :func:`neuron_clusters`) with ``d_mlp``."""
    if clusters is None:
        if model is None:
            raise ValueError("key_frequencies needs a model or clusters")
        post = get_key_activations(model).neuron_acts_post
        clusters, d_mlp = neuron_clusters(*find_neuron_freqs(get_fourier_neuron_acts(post))), model.cfg.d_mlp
    if d_mlp is None:
        raise ValueError("key_frequencies(clusters=...) also needs d_mlp (the number of MLP neurons)")
    return sorted(int(k) for k, idx in clusters.items() if k != UNCLUSTERED and len(idx) >= min_fraction * d_mlp)


def sum_difference_shares(
    grid: Float[Tensor, "p p n"] | Float[Tensor, "p p"], key_freqs: Sequence[int] | Tensor
) -> tuple[float, float]:
    """``(sum_share, difference_share)``: the fractions of the centred ``grid`` (``(p, p)`` or ``(p, p, n)``,
    indexed ``[x, y, ...]``) in the ``cos/sin(w_k(x+y))`` and in the ``cos/sin(w_k(x-y))`` directions of the key
    frequencies, summed over the columns (float64 floats; both 0 for a constant grid). The directions are
    orthonormal, so the shares add up to at most 1; ``cos(w x) cos(w y)`` gives (0.5, 0.5)."""
    if grid.ndim != 3 and not (grid.ndim == 2 and grid.shape[0] == grid.shape[1]):
        raise ValueError(f"expected a (p, p) or (p, p, n) grid indexed [x, y, ...], got shape {tuple(grid.shape)}")
    acts = centred_grid(grid.detach().to(torch.float64).reshape(*grid.shape[:2], -1))
    p = acts.shape[0]
    X = acts.reshape(p * p, -1)
    total = X.pow(2).sum()
    if total == 0:
        return 0.0, 0.0
    M = [trig_directions_matrix(key_freqs, p, torch.float64, difference=d).to(X.device) for d in (False, True)]
    return float((M[0] @ X).pow(2).sum() / total), float((M[1] @ X).pow(2).sum() / total)


# ---- Logit surgery (Section 2) -------------------------------------------------------------------------------------


def _p_from_logits(logits: Tensor) -> int:
    p = logits.shape[-1]
    if logits.ndim != 2 or logits.shape[0] != p * p:
        raise ValueError(
            f"expected (p^2, p) last-position logits (= dropped) over all inputs, got {tuple(logits.shape)}"
        )
    return p


def trig_logits(logits: Float[Tensor, "p_sq p"], key_freqs: Sequence[int] | Tensor) -> Float[Tensor, "p_sq p"]:
    """Keep only the components of ``logits`` (along the batch axis) in the ``cos/sin(w_k(x+y))`` directions
    of the key frequencies (``logits``' dtype; no bias correction)."""
    M = trig_directions_matrix(key_freqs, _p_from_logits(logits)).to(logits)  # (2K, p^2), orthonormal rows
    return M.T @ (M @ logits)


def projected_neuron_acts(
    neuron_acts_post: Float[Tensor, "p_sq d_mlp"],
    clusters: dict[int, Tensor],
    *,
    keep_unclustered: bool = True,
) -> Float[Tensor, "p_sq d_mlp"]:
    """Replace every clustered neuron's activations by their projection onto its own frequency's 3x3 block
    (``fourier.project_onto_frequency``); the :data:`UNCLUSTERED` neurons are kept as they are
    (``keep_unclustered``) or zeroed."""
    new = torch.zeros_like(neuron_acts_post)
    for k, idx in clusters.items():
        if k != UNCLUSTERED:
            new[:, idx] = project_onto_frequency(neuron_acts_post[:, idx], k)
        elif keep_unclustered:
            new[:, idx] = neuron_acts_post[:, idx]
    return new


class NeuronAnalysis(NamedTuple):
    """What the Section-2 surgery needs from a model, computed once over all p^2 inputs."""

    original_logits: Float[Tensor, "p_sq p"]  #: last-position logits, ``=`` dropped
    neuron_acts_post: Float[Tensor, "p_sq d_mlp"]
    neuron_freqs: Int[Tensor, "d_mlp"]
    neuron_frac_explained: Float[Tensor, "d_mlp"]
    clusters: dict  #: ``{freq: neuron indices}``, see :func:`neuron_clusters`
    W_logit: Float[Tensor, "d_mlp p"]


@torch.no_grad()
def analyse_neurons(model: HookedTransformer, threshold: float = CLUSTER_THRESHOLD) -> NeuronAnalysis:
    """Run ``model`` once on all inputs and gather logits, neuron activations, frequencies and clusters."""
    logits, cache = model.run_with_cache(
        _all_data_for(model, None), names_filter=lambda name: name == "blocks.0.mlp.hook_post"
    )
    post = cache["post", 0][:, -1, :].clone()
    freqs, frac = find_neuron_freqs(get_fourier_neuron_acts(post))
    return NeuronAnalysis(
        original_logits=logits[:, -1, : infer_p(model)],
        neuron_acts_post=post,
        neuron_freqs=freqs,
        neuron_frac_explained=frac,
        clusters=neuron_clusters(freqs, frac, threshold),
        W_logit=get_effective_weights(model).W_logit,
    )


@torch.no_grad()
def neuron_surgery_losses(
    model: HookedTransformer | NeuronAnalysis,
    key_freqs: Sequence[int] | None = None,
    *,
    fn: str = "add",
    seed: int = 0,
) -> dict[str, object]:
    """The Section-2 losses on all p^2 pairs, all but ``original`` bias-corrected (the batch mean of
    ``original - new`` added back): ``original``; ``restricted`` (only the key frequencies' ``cos/sin(w_k(x+y))``
    logit directions); ``projected_neurons`` / ``projected_neurons_without_unclustered``
    (``projected_neuron_acts(...) @ W_logit``); ``cluster_ablation`` (``{freq: loss}`` without one cluster's
    ``acts[:, cluster] @ W_logit[cluster]``); ``key_freqs`` (default :func:`key_frequencies`). ``model`` may be
    its :class:`NeuronAnalysis`; ``fn``/``seed``: the run's task (``seed`` draws ``rand``)."""
    a = model if isinstance(model, NeuronAnalysis) else analyse_neurons(model)
    if key_freqs is None:
        key_freqs = key_frequencies(clusters=a.clusters, d_mlp=a.W_logit.shape[0])
    original = a.original_logits
    labels = make_split(_p_from_logits(original), seed=seed, fn=fn).labels.to(original.device)

    def score(logits: Tensor) -> float:
        return score_logits(logits, labels, bias_correction=True, original_logits=original)

    def projected(keep_unclustered: bool) -> Tensor:
        return projected_neuron_acts(a.neuron_acts_post, a.clusters, keep_unclustered=keep_unclustered) @ a.W_logit

    def ablated(k: int) -> Tensor:
        idx = a.clusters.get(int(k), torch.zeros(0, dtype=torch.long))
        return original - a.neuron_acts_post[:, idx] @ a.W_logit[idx]

    return {
        "key_freqs": [int(k) for k in key_freqs],
        "original": score_logits(original, labels),
        "restricted": score(trig_logits(original, key_freqs)),
        "projected_neurons": score(projected(True)),
        "projected_neurons_without_unclustered": score(projected(False)),
        "cluster_ablation": {int(k): score(ablated(k)) for k in key_freqs},
    }


# ---- The ReLU quadratic-term toy fit (Section 2.3) -----------------------------------------------------------------


class ReluQuadraticFit(NamedTuple):
    """Least-squares fit of a ReLU of cosines on the 2D basis terms const, cos x, cos y, cos x cos y."""

    coefficients: Float[Tensor, "4"]  #: on the unit-norm 2D terms (0,0), (cos k, 0), (0, cos k), (cos k, cos k)
    r2: float  #: fraction of the ReLU's variance explained by the four terms
    r2_without_quadratic: float  #: the same without the cos x cos y term


def quadratic_terms(p: int, k: int) -> Float[Tensor, "p_sq 4"]:
    """The unit-norm 2D basis terms const, cos_k(x), cos_k(y), cos_k(x) cos_k(y) (in that order), flattened
    (``x * p + y``) into the orthonormal columns of a ``(p^2, 4)`` float64 matrix."""
    (k,) = check_frequencies([k], p)
    F = fourier_basis(p, dtype=torch.float64)
    rows = [(0, 0), (2 * k - 1, 0), (0, 2 * k - 1), (2 * k - 1, 2 * k - 1)]  # (x-basis row, y-basis row)
    return torch.stack([torch.outer(F[i], F[j]).flatten() for i, j in rows], dim=1)


def _least_squares(X: Tensor, target: Tensor) -> tuple[Tensor, float]:
    coef = torch.linalg.lstsq(X, target[:, None]).solution.flatten()
    ss_tot = (target - target.mean()).pow(2).sum()
    if ss_tot == 0:
        raise ValueError("the values are constant: r^2 is undefined")
    return coef, 1 - ((target - X @ coef).pow(2).sum() / ss_tot).item()


def fit_quadratic_terms(values: Float[Tensor, "p p"], k: int) -> tuple[Float[Tensor, "4"], float]:
    """Least-squares fit of a ``(p, p)`` grid (indexed ``[x, y]``) on the :func:`quadratic_terms` (exercise 2.3):
    the ``(4,)`` float64 coefficients and ``r2 = 1 - SS_res / SS_tot`` (about the mean) as a Python float."""
    if values.ndim != 2 or values.shape[0] != values.shape[1]:
        raise ValueError(f"expected a (p, p) grid, got shape {tuple(values.shape)}")
    return _least_squares(quadratic_terms(values.shape[0], int(k)), values.double().flatten())


def relu_quadratic_fit(k: int = 42, p: int = 113, offset: float = 0.5) -> ReluQuadraticFit:
    """Why neurons carry a quadratic (cos x cos y) term: :func:`fit_quadratic_terms` of
    ``ReLU(offset/sqrt(p) + c(x) + c(y))``, ``c`` the unit-norm cos-k basis row (no model; float64). For k = 42,
    p = 113: coefficients 9.190, 6.807, 6.807, 3.566, r^2 0.966, and 0.849 without the quadratic term."""
    terms = quadratic_terms(p, k)
    cos_k = fourier_basis(p, dtype=torch.float64)[2 * k - 1]
    values = torch.relu(offset / math.sqrt(p) + cos_k[:, None] + cos_k[None, :])
    coefficients, r2 = fit_quadratic_terms(values, k)
    _, r2_without = _least_squares(terms[:, :3], values.flatten())
    return ReluQuadraticFit(coefficients=coefficients, r2=r2, r2_without_quadratic=r2_without)


# ---- Progress measures (Section 3) ---------------------------------------------------------------------------------


def excl_loss_from_logits(
    logits: Float[Tensor, "p_sq p"],
    key_freqs: Sequence[int] | Tensor,
    train_indices: Int[Tensor, "n_train"],
    labels: Int[Tensor, "p_sq"],
) -> list[float]:
    """:func:`excl_loss` from precomputed last-position logits (``=`` dropped) over all p^2 inputs."""
    _p_from_logits(logits)
    train_indices = train_indices.to(logits.device)
    train_labels = labels.to(logits.device)[train_indices]
    return [
        cross_entropy_high_precision((logits - trig_logits(logits, [k]))[train_indices], train_labels).item()
        for k in key_freqs
    ]


@torch.no_grad()
def excl_loss(
    model: HookedTransformer,
    key_freqs: Sequence[int] | Tensor,
    *,
    train_indices: Int[Tensor, "n_train"] | None = None,
    fn: str = "add",
    frac_train: float = 0.3,
    seed: int = 0,
) -> list[float]:
    """Excluded loss per key frequency: the train loss after removing frequency k's ``cos/sin(w_k(x+y))``
    directions from the last-position logits (``=`` dropped) over all p^2 inputs (float64 cross-entropy, no
    bias correction — which would change nothing: those directions have zero mean over the inputs).
    Train pairs: ``train_indices``, else the split of ``frac_train`` / ``seed``; labels of task ``fn`` (``seed``
    draws the ``rand`` table) — both from :func:`~..runs.data.make_split`."""
    original = get_original_logits(model)
    split = make_split(_p_from_logits(original), frac_train, seed, fn)
    if train_indices is None:
        train_indices = split.train_indices
    return excl_loss_from_logits(original, key_freqs, train_indices, split.labels)


@torch.no_grad()
def fourier_embed(model: HookedTransformer) -> Float[Tensor, "p"]:
    """Squared norm of each Fourier component of the embedding (``=`` row dropped), in ``W_E``'s dtype:
    ``(F @ W_E[:-1]).pow(2).sum(1)``, indexed like the basis (const, cos 1, sin 1, ...).
    ``fourier.per_frequency`` of it gives each frequency's cos + sin norm."""
    W_E = model.W_E.detach()[:-1]
    return (fourier_basis(infer_p(model), dtype=W_E.dtype, device=W_E.device) @ W_E).pow(2).sum(1)


@torch.no_grad()
def embed_SVD(model: HookedTransformer) -> Float[Tensor, "n_sv"]:
    """Singular values (descending, ``W_E``'s dtype) of the embedding without the ``=`` row, ``W_E[:-1]``
    (p, d_model)."""
    return torch.linalg.svdvals(model.W_E.detach()[:-1])
