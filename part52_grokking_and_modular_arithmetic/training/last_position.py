"""The grokking transformer at its **last position** only: one exact, fast forward with a leading axis R.

The model has one layer and no LayerNorm, and its output is read only at position 2 (``=``). So the query
there is a constant (``r2 = W_E[=] + W_pos[2]``), and the keys and values at positions 0 and 1 are tables over
the vocabulary. Per head the attention scores are ``s0[x, h]``, ``s1[y, h]`` and a constant ``s2[h]``; with
``a2 = 1 - a0 - a1`` position 2 folds into the other two tables, and everything the residual stream feeds
linearly (``W_cat = [W_in | W_U]``) folds into them too (``T[h, i, t] = value(i, t, h) @ W_O[h]``)::

    Z[b]   = c + sum_h a0[b,h] (T[h,0,x_b] - T2[h]) + a1[b,h] (T[h,1,y_b] - T2[h])   c = const + sum_h T2[h]
    pre    = Z[:, :d_mlp]            direct = Z[:, d_mlp:]
    logits = relu(pre) @ (W_out @ W_U) + direct + b_out @ W_U

a weighted embedding-bag sum per example, several times fewer FLOPs than a ``HookedTransformer`` forward.

``w[name]`` is ``(R, ...)`` for the TransformerLens parameter ``name`` (R runs, or R checkpoints of one run);
:func:`model_weights` gives ``R = 1`` views of a model's own parameters, so ``loss.backward()`` fills their
``.grad``. Each run has its own pairs (:class:`Pairs`, padded with weight 0). The batch part has a hand-written
backward (:class:`_WeightedBags`), 1.2-1.35x faster on a CPU than autograd through the same tables
(``hand_written=False``; ``benchmarks/benchmark_last_position_backward.py``). The loss is
:func:`~.losses.cross_entropy_per_run`. Nothing here changes process-wide settings.

Reference: Nanda et al. 2023, "Progress measures for grokking via mechanistic interpretability",
arXiv 2301.05217 (the model); TransformerLens' ``HookedTransformer`` (the weight layout).
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import no_type_check

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from ..runs.architecture import FROZEN_ZERO_BIASES, PAPER_TRAINABLE
from .losses import cross_entropy_per_run

__all__ = [
    "WEIGHT_NAMES",
    "FLUSH_BELOW",
    "Pairs",
    "Tables",
    "LastPosition",
    "check_model",
    "model_weights",
    "stack_weights",
    "tables",
    "forward",
    "logits",
    "losses",
    "model_loss",
    "model_logits",
]

#: The TransformerLens parameters the last position reads (the paper's and TransformerLens' zero biases).
WEIGHT_NAMES: tuple[str, ...] = PAPER_TRAINABLE + FROZEN_ZERO_BIASES

#: |d loss / d logit| at or below this is set to 0 in the float32 backward (a hook; 0 disables it): subnormal
#: gradients of a fitted model make the backward several times slower on x86 CPUs
#: (``benchmarks/benchmark_confident_backward.py``), and ``torch.set_flush_denormal`` is process-wide.
FLUSH_BELOW = 1e-30


def check_model(model) -> None:
    """Raise ``ValueError`` unless ``model`` is a ``HookedTransformer`` this module computes exactly: one layer,
    no LayerNorm, ReLU MLP, learned positions, ``n_ctx >= 3``, attention scores scaled by ``sqrt(d_head)``."""
    cfg = model.cfg
    if cfg.n_layers != 1 or cfg.normalization_type is not None or cfg.act_fn != "relu" or cfg.attn_only:
        raise ValueError(
            "the last-position forward supports only the one-layer, LayerNorm-free ReLU model of the course"
        )
    if cfg.positional_embedding_type != "standard" or cfg.n_ctx < 3:
        raise ValueError("the last-position forward needs learned ('standard') positional embeddings and n_ctx >= 3")
    scale = float(model.blocks[0].attn.attn_scale)
    if not math.isclose(scale, math.sqrt(cfg.d_head), rel_tol=1e-6):
        raise ValueError(
            f"the last-position forward needs attention scores scaled by sqrt(d_head); this model uses {scale}"
        )


def model_weights(model) -> dict[str, Tensor]:
    """The model's own parameters as ``name -> (1, ...)`` views (R = 1): gradients flow to the parameters."""
    check_model(model)
    params = dict(model.named_parameters())
    return {name: params[name].unsqueeze(0) for name in WEIGHT_NAMES}


def stack_weights(
    state_dicts: Sequence[Mapping[str, Tensor]],
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> dict[str, Tensor]:
    """Stack R TransformerLens-layout state dicts: ``name -> (R, ...)`` for every name in :data:`WEIGHT_NAMES`."""
    if len(state_dicts) == 0:
        raise ValueError("stack_weights needs at least one state dict")
    missing = [n for n in WEIGHT_NAMES if n not in state_dicts[0]]
    if missing:
        raise ValueError(f"the state dicts must be in TransformerLens layout; missing {missing}")
    return {name: torch.stack([sd[name] for sd in state_dicts]).to(device=device, dtype=dtype) for name in WEIGHT_NAMES}


def _sizes(w: Mapping[str, Tensor]) -> tuple[int, int, int, int]:
    """(R, d_vocab, n_heads, d_head) of stacked weights, after checking they are stacked."""
    W_E, W_Q = w["embed.W_E"], w["blocks.0.attn.W_Q"]
    if W_E.ndim != 3 or W_Q.ndim != 4:
        raise ValueError(
            f"weights must be stacked with a leading axis R (W_E (R, d_vocab, d_model), W_Q (R, n_heads, d_model, d_head)); "
            f"got W_E {tuple(W_E.shape)}, W_Q {tuple(W_Q.shape)}. Use model_weights(model) or stack_weights(...)"
        )
    return W_E.shape[0], W_E.shape[1], W_Q.shape[1], W_Q.shape[3]


@dataclass(frozen=True)
class Pairs:
    """Input pairs ``[x, y, =]`` per run, padded to a common length ``B`` (all on one device): ``x``, ``y``,
    ``labels`` (or None) ``(R, B)`` (padding 0); ``weight`` ``(R, B)`` 0 for padding; ``lengths`` the real pairs
    of each run (first in each row); ``eq_token`` the last token; ``d_vocab`` the vocabulary checked, or None."""

    x: Int[Tensor, "R B"]
    y: Int[Tensor, "R B"]
    labels: Int[Tensor, "R B"] | None
    weight: Float[Tensor, "R B"]
    lengths: tuple[int, ...]
    eq_token: int
    d_vocab: int | None = None
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def n_runs(self) -> int:
        return int(self.x.shape[0])

    @property
    def size(self) -> int:  # the padded length B
        return int(self.x.shape[1])

    @property
    def device(self) -> torch.device:
        return self.x.device

    def to(self, device: torch.device | str) -> "Pairs":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Pairs(
            move(self.x), move(self.y), move(self.labels), move(self.weight), self.lengths, self.eq_token, self.d_vocab
        )

    def select(self, runs: Sequence[int] | slice) -> "Pairs":
        """The pairs of some runs (in the given order), trimmed to the longest of them."""
        chosen = list(range(self.n_runs))[runs] if isinstance(runs, slice) else [int(r) for r in runs]
        if not chosen or not all(0 <= r < self.n_runs for r in chosen):
            raise ValueError(f"runs must be a non-empty selection of 0..{self.n_runs - 1}, got {runs!r}")
        lengths = tuple(self.lengths[r] for r in chosen)
        index, size = torch.tensor(chosen, device=self.device), max(lengths)
        take = lambda t: None if t is None else t[index, :size]  # noqa: E731
        return Pairs(
            take(self.x), take(self.y), take(self.labels), take(self.weight), lengths, self.eq_token, self.d_vocab
        )

    @classmethod
    def from_tokens(
        cls,
        tokens: Tensor | Sequence[Tensor],
        labels: Tensor | Sequence[Tensor] | None = None,
        d_vocab: int | None = None,
        device: torch.device | str | None = None,
    ) -> "Pairs":
        """Pairs from tokens: ``(B, 3)`` (one run), ``(R, B, 3)`` or a list of R ``(B_r, 3)`` tensors (padded
        with weight 0), rows ``[x, y, =]``. ``labels`` are shaped like ``tokens`` without the last axis (None:
        logits only); ``d_vocab``, if given, bounds the token ids; ``device`` defaults to the tokens'."""
        if isinstance(tokens, Tensor):
            if tokens.ndim == 2:
                tokens = tokens[None]
                labels = None if labels is None else torch.as_tensor(labels)[None]
            if tokens.ndim != 3 or tokens.shape[2] != 3 or tokens.shape[1] == 0:
                raise ValueError(
                    f"tokens must have shape (B, 3) or (R, B, 3) with rows [x, y, =], got {tuple(tokens.shape)}"
                )
            runs = list(tokens.unbind(0))
            run_labels = None if labels is None else list(torch.as_tensor(labels).unbind(0))
        else:
            runs = [torch.as_tensor(t) for t in tokens]
            run_labels = None if labels is None else [torch.as_tensor(lab) for lab in labels]
            if len(runs) == 0:
                raise ValueError("tokens must hold at least one run")
        if run_labels is not None and len(run_labels) != len(runs):
            raise ValueError(f"labels must hold one tensor per run ({len(runs)}), got {len(run_labels)}")
        device = runs[0].device if device is None else torch.device(device)
        eq_token = None
        for r, t in enumerate(runs):
            if t.ndim != 2 or t.shape[1] != 3 or t.shape[0] == 0:
                raise ValueError(f"run {r}: tokens must have shape (B_r, 3) with rows [x, y, =], got {tuple(t.shape)}")
            if t.dtype not in (torch.int64, torch.int32):
                raise ValueError(f"run {r}: tokens must be an integer tensor, got {t.dtype}")
            lo, hi = int(t.min()), int(t.max())
            if lo < 0 or (d_vocab is not None and hi >= d_vocab):
                raise ValueError(f"run {r}: token ids must lie in [0, {d_vocab}), got range [{lo}, {hi}]")
            eq = t[:, 2]
            if eq_token is None:
                eq_token = int(eq[0])
            if not bool((eq == eq_token).all()):
                raise ValueError(
                    "the last-position forward needs the same token at the last position in every row (the '=' token)"
                )
            if run_labels is not None and tuple(run_labels[r].shape) != (t.shape[0],):
                raise ValueError(f"run {r}: labels must have shape ({t.shape[0]},), got {tuple(run_labels[r].shape)}")
        n_runs, size = len(runs), max(t.shape[0] for t in runs)
        x = torch.zeros(n_runs, size, dtype=torch.long, device=device)
        y = torch.zeros_like(x)
        lab = None if run_labels is None else torch.zeros_like(x)
        weight = torch.zeros(n_runs, size, device=device)
        for r, t in enumerate(runs):
            n = t.shape[0]
            x[r, :n], y[r, :n], weight[r, :n] = t[:, 0], t[:, 1], 1.0
            if lab is not None:
                lab[r, :n] = run_labels[r]
        return cls(x, y, lab, weight, tuple(int(t.shape[0]) for t in runs), eq_token, d_vocab)

    @classmethod
    def all_pairs(cls, p: int, n_runs: int = 1, device: torch.device | str | None = None) -> "Pairs":
        """All ``p^2`` pairs ``[x, y, p]`` in the order ``x * p + y`` (no labels), for each of ``n_runs`` runs."""
        x = torch.arange(p, device=device).repeat_interleave(p)
        y = torch.arange(p, device=device).repeat(p)
        weight = torch.ones(n_runs, p * p, device=device)
        return cls(x.expand(n_runs, -1), y.expand(n_runs, -1), None, weight, (p * p,) * n_runs, p, p + 1)


@dataclass
class Tables:
    """Everything position 2 needs, from stacked weights (differentiable). Shapes (V = d_vocab, H = n_heads;
    ``T[h, i, t] = value(i, t, h) @ W_O[h]``, ``T2[h]`` the same for position 2):
        scores: (R, 2, V, H) attention score of position 0 / 1 holding token t (divided by sqrt(d_head));
        score_eq: (R, H) score of position 2 on itself;
        folded_pre: (R, H, 2, V, d_mlp) ``(T[h, i, t] - T2[h]) @ W_in`` (position 2 folded in);
        folded_out: (R, H, 2, V, n_out) ``(T[h, i, t] - T2[h]) @ W_U``;
        const_pre: (R, d_mlp) ``(r2 + b_O + sum_h T2[h]) @ W_in + b_in``;
        const_out: (R, n_out) ``(r2 + b_O + sum_h T2[h]) @ W_U + b_U + b_out @ W_U``;
        w_logit: (R, d_mlp, n_out) ``W_out @ W_U``.
    """

    scores: Tensor
    score_eq: Tensor
    folded_pre: Tensor
    folded_out: Tensor
    const_pre: Tensor
    const_out: Tensor
    w_logit: Tensor | None


def tables(w: Mapping[str, Tensor], eq_token: int, n_out: int | None = None) -> Tables:
    """The tables of the last position from stacked weights ``w`` (``name -> (R, ...)``); ``n_out`` keeps the
    first ``n_out`` output classes (default: all)."""
    R, V, H, d_head = _sizes(w)
    W_E, W_pos = w["embed.W_E"], w["pos_embed.W_pos"]
    W_Q, W_K, W_V, W_O = (w[f"blocks.0.attn.{n}"] for n in ("W_Q", "W_K", "W_V", "W_O"))
    b_Q, b_K, b_V, b_O = (w[f"blocks.0.attn.{n}"] for n in ("b_Q", "b_K", "b_V", "b_O"))
    W_in, b_in, W_out, b_out = (w[f"blocks.0.mlp.{n}"] for n in ("W_in", "b_in", "W_out", "b_out"))
    W_U, b_U = w["unembed.W_U"], w["unembed.b_U"]
    if n_out is not None:
        W_U, b_U = W_U[..., :n_out], b_U[..., :n_out]
    d_model = W_E.shape[2]
    resid = (W_E[:, None, :, :] + W_pos[:, :2, None, :]).reshape(R, 2 * V, d_model)  # positions 0, 1; every token
    r2 = (W_E[:, eq_token] + W_pos[:, 2])[:, None, :]  # (R, 1, d_model)
    scale = math.sqrt(d_head)
    # scores: <key, query> / scale = resid @ (W_K[h] q[h]) / scale + <b_K[h], q[h]> / scale
    q = torch.matmul(r2[:, None], W_Q)[:, :, 0] + b_Q  # (R, H, d_head)
    key_query = torch.matmul(W_K, q[..., None])[..., 0].transpose(1, 2) / scale  # (R, d_model, H)
    key_bias = ((b_K * q).sum(-1) / scale)[:, None, :]  # (R, 1, H)
    scores = torch.baddbmm(key_bias, resid, key_query).view(R, 2, V, H)
    score_eq = torch.baddbmm(key_bias, r2, key_query)[:, 0]
    # values, head-major, with position 2 folded in (``a2 = 1 - a0 - a1``): value(i, t) - value(2); b_V cancels
    w_v = W_V.permute(0, 2, 1, 3).reshape(R, d_model, H * d_head)
    values_folded = torch.bmm(resid - r2, w_v).view(R, 2 * V, H, d_head).transpose(1, 2)  # (R, H, 2V, d_head)
    value_eq = torch.bmm(r2, w_v) + b_V.reshape(R, 1, H * d_head)  # (R, 1, H * d_head)
    w_o = W_O.reshape(R, H * d_head, d_model)
    # the residual stream at position 2 if every head attended to position 2 alone
    resid_eq = r2 + b_O[:, None, :] + torch.bmm(value_eq, w_o)  # (R, 1, d_model)

    @no_type_check  # per-call closure: not re-instrumented by the tests' type checker at each call
    def fold(w_next: Tensor) -> tuple[Tensor, Tensor]:
        """(R, H, 2, V, n) tables ``(T - T2[h]) @ w_next`` and (R, n) ``(r2 + b_O + sum_h T2[h]) @ w_next``."""
        wo_next = torch.bmm(w_o, w_next).view(R, H, d_head, -1)  # (R, H, d_head, n)
        folded = torch.matmul(values_folded, wo_next).view(R, H, 2, V, -1)
        return folded, torch.bmm(resid_eq, w_next)[:, 0]

    folded_pre, const_pre = fold(W_in)
    folded_out, const_out = fold(W_U)
    return Tables(
        scores,
        score_eq,
        folded_pre,
        folded_out,
        const_pre + b_in,
        const_out + b_U + torch.bmm(b_out[:, None, :], W_U)[:, 0],
        torch.bmm(W_out, W_U),
    )


@dataclass
class LastPosition:
    """The last position of R models on their pairs (B per run):
    pattern: (R, B, H, 3) attention of ``=`` to positions 0, 1, 2, per head.
    pre: (R, B, d_mlp) MLP pre-activations.
    direct: (R, B, n_out) the logits' direct path (everything but the MLP output, incl. ``b_out @ W_U``).
    w_logit: (R, d_mlp, n_out) ``W_out @ W_U``: logits = ``direct + relu(pre) @ w_logit``.
    """

    pattern: Tensor
    pre: Tensor
    direct: Tensor
    w_logit: Tensor


def _check_pairs(t: Tables, pairs: Pairs) -> None:
    R, V = t.scores.shape[0], t.scores.shape[2]
    if pairs.n_runs != R:
        raise ValueError(f"the pairs hold {pairs.n_runs} run(s), the weights {R}")
    if pairs.x.device != t.scores.device:
        raise ValueError(f"the pairs are on {pairs.x.device}, the weights on {t.scores.device}; use pairs.to(device)")
    if pairs.d_vocab is not None and pairs.d_vocab != V:
        raise ValueError(f"these pairs were built for d_vocab={pairs.d_vocab}; the weights have d_vocab={V}")
    if pairs.eq_token >= V:
        raise ValueError(f"the '=' token {pairs.eq_token} is outside the vocabulary of size {V}")


@dataclass(frozen=True)
class _Structures:
    """Index structures of a :class:`Pairs` for the backward (fixed across epochs): ``pattern_csr`` the
    (R*B, R*H*2V) sparsity pattern of the attention weights; ``by_row_*`` group :func:`_rows` by table row,
    ``x_*``/``y_*`` group the examples by ``r * V + x`` and ``r * V + y`` (segment sums)."""

    pattern_csr: Tensor
    by_row_entry: Tensor
    by_row_example: Tensor
    by_row_offsets: Tensor
    x_order: Tensor
    x_offsets: Tensor
    y_order: Tensor
    y_offsets: Tensor


#: ``warnings.catch_warnings`` changes the process' filters: held while it does (pairs may be set up in threads)
_WARNINGS_LOCK = threading.Lock()


def _csr(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    with _WARNINGS_LOCK, warnings.catch_warnings():  # "sparse CSR support is in beta" (printed once per process)
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size, check_invariants=False)


def _segments(index: Tensor, n_segments: int) -> tuple[Tensor, Tensor]:
    """(order, offsets): ``index[order]`` sorted (stably), segment ``s`` at ``order[offsets[s]:offsets[s + 1]]``."""
    order = torch.argsort(index, stable=True)
    offsets = torch.zeros(n_segments + 1, dtype=torch.long, device=index.device)
    offsets[1:] = torch.cumsum(torch.bincount(index, minlength=n_segments), 0)
    return order, offsets


def _segment_sum(rows: Tensor, order: Tensor, offsets: Tensor) -> Tensor:
    """Deterministic scatter-add: ``out[s] = sum of rows[order[k]]`` over segment ``s`` (see :func:`_segments`)."""
    return F.embedding_bag(order, rows, offsets[:-1], mode="sum")


def _rows(pairs: Pairs, n_heads: int, d_vocab: int) -> tuple[Tensor, Tensor]:
    """(rows (R*B*2H,), bags (R*B,)): the table rows ``((r * H + h) * 2 + i) * V + t`` of each example, in the
    order ``[(h0, x), (h0, y), (h1, x), ...]`` (ascending), and where each example starts. Kept on the pairs."""
    key = ("rows", n_heads, d_vocab)
    found = pairs._cache.get(key)
    if found is None:
        R, H, V, device = pairs.n_runs, n_heads, d_vocab, pairs.device
        run = torch.arange(R, device=device)[:, None]
        base = (run[:, :, None] * H + torch.arange(H, device=device)) * (2 * V)  # (R, 1, H)
        rows = torch.stack([base + pairs.x[:, :, None], base + V + pairs.y[:, :, None]], dim=-1).reshape(-1)
        found = pairs._cache[key] = (rows, torch.arange(0, rows.numel(), 2 * H, device=device))
    return found


def _structures(pairs: Pairs, n_heads: int, d_vocab: int, dtype: torch.dtype) -> _Structures:
    """The backward's :class:`_Structures` of ``pairs``, built once and kept on the pairs (they never change)."""
    key = ("backward", n_heads, d_vocab, dtype)
    found = pairs._cache.get(key)
    if found is not None:
        return found
    R, B, H, V = pairs.n_runs, pairs.size, n_heads, d_vocab
    device = pairs.device
    run = torch.arange(R, device=device)[:, None]
    rows, _ = _rows(pairs, H, V)
    crow = torch.arange(0, rows.numel() + 1, 2 * H, device=device)
    by_row_entry, by_row_offsets = _segments(rows, R * H * 2 * V)
    x_order, x_offsets = _segments((run * V + pairs.x).reshape(-1), R * V)
    y_order, y_offsets = _segments((run * V + pairs.y).reshape(-1), R * V)
    found = _Structures(
        pattern_csr=_csr(crow, rows, torch.ones(rows.numel(), dtype=dtype, device=device), (R * B, R * H * 2 * V)),
        by_row_entry=by_row_entry,
        by_row_example=by_row_entry // (2 * H),
        by_row_offsets=by_row_offsets,
        x_order=x_order,
        x_offsets=x_offsets,
        y_order=y_order,
        y_offsets=y_offsets,
    )
    pairs._cache[key] = found
    return found


def _bags(t: Tables, pairs: Pairs) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(pattern (3, R, B, H) (key position first), pre (R * B, d_mlp), direct (R * B, n_out), the attention
    weights in :func:`_rows` order): constant + the attention-weighted x and y table rows of every head (weighted
    embedding-bag sums). ``pre`` and ``direct`` are flat ``(R * B, n)`` tensors (not views of one another)."""
    _check_pairs(t, pairs)
    R, _, V, H = t.scores.shape
    B = pairs.size
    rows, bags = _rows(pairs, H, V)
    run = torch.arange(R, device=pairs.device)[:, None]
    # key position first: a softmax over the leading axis of 3 is several times faster than over a last axis of 3
    s = torch.stack(
        [t.scores[run, 0, pairs.x], t.scores[run, 1, pairs.y], t.score_eq[:, None, :].expand(R, B, H)], dim=0
    )
    pattern = torch.softmax(s, dim=0)  # (3, R, B, H)
    weights = pattern[:2].permute(1, 2, 3, 0).reshape(-1)  # [a0[r, b, h], a1[r, b, h]] in `rows` order

    @no_type_check  # per-call closure: not re-instrumented by the tests' type checker at each call
    def bag(table: Tensor, const: Tensor) -> Tensor:
        n = table.shape[-1]
        z = F.embedding_bag(rows, table.reshape(-1, n), bags, mode="sum", per_sample_weights=weights)
        z.view(R, B, n).add_(const[:, None, :])
        return z

    return pattern, bag(t.folded_pre, t.const_pre), bag(t.folded_out, t.const_out), weights


class _WeightedBags(torch.autograd.Function):
    """``(pre, direct)`` from the tables (:func:`_bags`), with a backward using the pairs' index structures."""

    @staticmethod
    def forward(ctx, scores, score_eq, folded_pre, folded_out, const_pre, const_out, pairs):  # type: ignore[override]
        # (detached: with inputs that require grad, torch picks slower kernels that keep buffers for autograd)
        t = Tables(
            *(x.detach() for x in (scores, score_eq, folded_pre, folded_out, const_pre, const_out)), w_logit=None
        )
        pattern, pre, direct, weights = _bags(t, pairs)
        ctx.st = _structures(pairs, scores.shape[3], scores.shape[2], folded_pre.dtype)
        ctx.shape = tuple(scores.shape)
        ctx.save_for_backward(pattern, weights, t.folded_pre, t.folded_out)
        return pre, direct

    @staticmethod
    def backward(ctx, d_pre, d_out):  # type: ignore[override]
        pattern, weights, folded_pre, folded_out = ctx.saved_tensors
        st = ctx.st
        R, _, V, H = ctx.shape
        d_pre, d_out = d_pre.contiguous(), d_out.contiguous()  # (R * B, d_mlp), (R * B, n_out)
        B, d_mlp, n_out = d_pre.shape[0] // R, d_pre.shape[1], d_out.shape[1]
        d_const_pre, d_const_out = d_pre.view(R, B, d_mlp).sum(1), d_out.view(R, B, n_out).sum(1)
        # table gradients A^T @ d: per table row, the weighted sum of the rows of the examples that use it
        entry_weights = weights[st.by_row_entry]

        @no_type_check  # per-call closure: not re-instrumented by the tests' type checker at each call
        def table_grad(d: Tensor) -> Tensor:
            return F.embedding_bag(
                st.by_row_example, d, st.by_row_offsets[:-1], mode="sum", per_sample_weights=entry_weights
            )

        d_folded_pre = table_grad(d_pre).view(folded_pre.shape)
        d_folded_out = table_grad(d_out).view(folded_out.shape)
        # d loss / d attention weights on x and y: <d[b], folded table row> at the sparse pattern
        d_a = torch.sparse.sampled_addmm(st.pattern_csr, d_pre, folded_pre.view(-1, d_mlp).T, beta=0.0).values()
        d_a = d_a + torch.sparse.sampled_addmm(st.pattern_csr, d_out, folded_out.view(-1, n_out).T, beta=0.0).values()
        d_a = d_a.view(R, B, H, 2)
        d_a0, d_a1 = d_a[..., 0], d_a[..., 1]
        a0, a1, a2 = pattern.unbind(0)
        dot = a0 * d_a0 + a1 * d_a1  # softmax backward with d a2 = 0 (position 2 is folded into the tables)
        d_s0, d_s1 = (a0 * (d_a0 - dot)).view(R * B, H), (a1 * (d_a1 - dot)).view(R * B, H)
        d_score_eq = -(a2 * dot).sum(1)
        d_scores = torch.stack(
            [
                _segment_sum(d_s0, st.x_order, st.x_offsets).view(R, V, H),
                _segment_sum(d_s1, st.y_order, st.y_offsets).view(R, V, H),
            ],
            dim=1,
        )
        return d_scores, d_score_eq, d_folded_pre, d_folded_out, d_const_pre, d_const_out, None


def _flush_small(grad: Tensor) -> Tensor:
    """``grad`` with entries below :data:`FLUSH_BELOW` in magnitude set to 0 (float32/16 only)."""
    if FLUSH_BELOW > 0 and grad.dtype != torch.float64:
        return F.hardshrink(grad, FLUSH_BELOW)  # 0 where |grad| <= FLUSH_BELOW
    return grad


def forward(w: Mapping[str, Tensor], pairs: Pairs, n_out: int | None = None) -> LastPosition:
    """Attention pattern, MLP pre-activations and direct-path logits at the last position (differentiable) of
    stacked weights ``w`` on R runs of B ``pairs``; ``n_out`` keeps the first ``n_out`` classes (default: all)."""
    t = tables(w, pairs.eq_token, n_out)
    pattern, pre, direct, _ = _bags(t, pairs)
    R, B = pairs.n_runs, pairs.size
    return LastPosition(pattern.permute(1, 2, 3, 0).contiguous(), pre.view(R, B, -1), direct.view(R, B, -1), t.w_logit)


def _logits(t: Tables, pairs: Pairs, hand_written: bool = True) -> Tensor:
    """``direct + relu(pre) @ w_logit`` (via :class:`_WeightedBags` if gradients are needed and ``hand_written``)."""
    inputs = (t.scores, t.score_eq, t.folded_pre, t.folded_out, t.const_pre, t.const_out)
    needs_grad = torch.is_grad_enabled() and any(x.requires_grad for x in (*inputs, t.w_logit))
    if needs_grad and hand_written:
        pre, direct = _WeightedBags.apply(*inputs, pairs)
    else:
        _, pre, direct, _ = _bags(t, pairs)
    R, B = pairs.n_runs, pairs.size
    # the ReLU in place on the fresh (R * B, d_mlp) buffer itself (not on a view of it: autograd would then copy
    # the gradients of the views through zero-filled buffers); `direct` is used out of place for the same reason
    out = torch.baddbmm(direct.view(R, B, -1), pre.relu_().view(R, B, -1), t.w_logit)
    if out.requires_grad and FLUSH_BELOW > 0:
        out.register_hook(_flush_small)
    return out


def logits(w: Mapping[str, Tensor], pairs: Pairs, n_out: int | None = None) -> Float[Tensor, "R B n_out"]:
    """Logits at the last position, ``model(tokens)[:, -1]`` for each of the R models (padding rows included)."""
    return _logits(tables(w, pairs.eq_token, n_out), pairs)


def losses(w: Mapping[str, Tensor], pairs: Pairs, *, hand_written: bool = True) -> Float[Tensor, "R"]:
    """Per-run mean float64 cross-entropy over all output classes at the last position (padding excluded).

    ``losses(w, pairs).sum().backward()`` gives each run's weights the gradient of its own mean loss.
    ``hand_written=False``: plain autograd through the same tables (same gradients; for benchmarks and tests).
    """
    if pairs.labels is None:
        raise ValueError("these Pairs have no labels; build them with labels to compute a loss")
    out = _logits(tables(w, pairs.eq_token), pairs, hand_written)
    return cross_entropy_per_run(out, pairs.labels, pairs.lengths)


def model_loss(model, pairs: Pairs) -> Float[Tensor, ""]:
    """``cross_entropy_high_precision(model(tokens)[:, -1], labels)`` of one model (``R = 1``), several times faster,
    up to rounding; ``.backward()`` fills the model's ``.grad``."""
    return losses(model_weights(model), pairs)[0]


def model_logits(model, pairs: Pairs | Int[Tensor, "B 3"]) -> Float[Tensor, "B d_vocab_out"]:
    """``model(tokens)[:, -1]`` of one model, computed at the last position only (no gradients)."""
    if not isinstance(pairs, Pairs):
        pairs = Pairs.from_tokens(pairs, d_vocab=model.cfg.d_vocab, device=model.W_E.device)
    with torch.no_grad():
        return logits(model_weights(model), pairs)[0]
