"""A fast, exact forward/backward of the grokking transformer at its **last position** only.

Why it is possible. The model has one layer and no LayerNorm, and the loss is read only at position 2 (the
``=`` token). Everything position 2 sees comes from a handful of vectors:

* its own residual ``r2 = W_E[=] + W_pos[2]`` is the same for every input, so its query is a constant;
* the keys and values at positions 0 and 1 depend only on the token there: tables over the vocabulary
  (rows of ``W_E + W_pos[0]`` and ``W_E + W_pos[1]``).

So per head ``h`` the attention scores are ``s0[x, h]``, ``s1[y, h]`` and a constant ``s2[h]`` (a softmax
over 3 keys gives the weights ``a0, a1, a2``), and the residual stream after attention is
``r2 + b_O + sum_h (a0 O0[h, x] + a1 O1[h, y] + a2 O2[h])`` with small tables
``O[h, i, t] = value(position i holds token t, head h) @ W_O[h]``. Everything the residual stream feeds
linearly is folded into the tables: with ``W_cat = [W_in | W_U]`` (d_model, d_mlp + d_vocab_out) the tables
``T = O @ W_cat`` give, in one go, the MLP pre-activations and the direct path to the logits. As the weights
sum to 1, ``a2 = 1 - a0 - a1`` folds position 2 into the other two tables::

    Z[b]   = c + sum_h a0[b,h] (T[h,0,x_b] - T2[h]) + a1[b,h] (T[h,1,y_b] - T2[h])   c = const + sum_h T2[h]
    pre    = Z[:, :d_mlp]            direct = Z[:, d_mlp:]
    logits = relu(pre) @ (W_out @ W_U) + direct + b_out @ W_U

Per example that is a sparse row (8 non-zeros: the x and y entries of 4 heads) times a small table
(``2 * d_vocab * n_heads`` rows): a weighted embedding-bag sum. The only large dense products left are
``relu(pre) @ W_logit`` and its two backward products. The tables are built with ordinary autograd (they are
small); the batch part has a hand-written backward (:class:`_LastPositionLoss`) using sparse structures of
the inputs, which are fixed across epochs (:class:`PairBatch`).

The result is the loss and the gradients of a full ``HookedTransformer`` forward with the float64
cross-entropy at the last position (``tests/test_fast_forward.py`` compares them with TransformerLens'
autograd), for several times fewer FLOPs. Parameters stay in TransformerLens layout: the functions read the
model's own ``nn.Parameter`` s, and ``loss.backward()`` fills their ``.grad`` as a normal forward would.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

__all__ = [
    "PairBatch",
    "LastPositionTables",
    "last_position_tables",
    "last_position_loss",
    "last_position_logits",
]


def _csr(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta" (printed once per process)
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size, check_invariants=False)


def _segments(index: Tensor, n_segments: int) -> tuple[Tensor, Tensor]:
    """(order, offsets): ``index[order]`` sorted (stably), segment ``s`` at ``order[offsets[s]:offsets[s + 1]]``."""
    order = torch.argsort(index, stable=True)
    offsets = torch.zeros(n_segments + 1, dtype=torch.long)
    offsets[1:] = torch.cumsum(torch.bincount(index, minlength=n_segments), 0)
    return order, offsets


def _segment_sum(rows: Tensor, order: Tensor, offsets: Tensor) -> Tensor:
    """Deterministic scatter-add: ``out[s] = sum of rows[order[k]]`` over segment ``s`` (see :func:`_segments`)."""
    return F.embedding_bag(order, rows, offsets[:-1], mode="sum")


@dataclass(frozen=True)
class PairBatch:
    """A fixed set of inputs ``[x, y, =]`` with the index structures the fast forward/backward needs.

    Build it once per data set (e.g. the training pairs) with :meth:`from_tokens`; it is reused every epoch.
    Table rows are numbered ``(h * 2 + i) * d_vocab + t`` (head h, position i in {0, 1}, token t).

    Attributes:
        x, y: ``(batch,)`` first and second tokens.
        labels: ``(batch,)`` correct classes, or None (evaluation of logits only).
        eq_token: the token at the last position (the same for every row).
        n_heads, d_vocab: model sizes the structures were built for.
        rows: ``(batch * 2 * n_heads,)`` the table rows of each example, in the order
            ``[(h0, x), (h0, y), (h1, x), ...]`` (``crow`` delimits the examples, 2 * n_heads each).
        crow: ``(batch + 1,)`` CSR row pointer of the (batch, table rows) matrix of attention weights.
        pattern_csr: that matrix's sparsity pattern (values 1) as a CSR tensor, for the backward's dot products.
        by_row_entry, by_row_example, by_row_offsets: the entries of ``rows`` grouped by table row (their
            positions in ``rows`` and their examples), for the table gradient.
        x_order, x_offsets, y_order, y_offsets: the examples grouped by x and by y (for the score gradients).
    """

    x: Tensor
    y: Tensor
    labels: Tensor | None
    eq_token: int
    n_heads: int
    d_vocab: int
    rows: Tensor
    crow: Tensor
    pattern_csr: Tensor
    by_row_entry: Tensor
    by_row_example: Tensor
    by_row_offsets: Tensor
    x_order: Tensor
    x_offsets: Tensor
    y_order: Tensor
    y_offsets: Tensor

    @property
    def size(self) -> int:
        return int(self.x.shape[0])

    @classmethod
    def from_tokens(
        cls,
        tokens: Int[Tensor, "batch 3"],
        labels: Int[Tensor, "batch"] | None,
        n_heads: int,
        d_vocab: int,
        dtype: torch.dtype = torch.float32,
    ) -> "PairBatch":
        """Structures for the inputs ``tokens`` (rows ``[x, y, =]``, the same last token in every row).

        Args:
            tokens: ``(batch, 3)`` token ids in ``[0, d_vocab)``.
            labels: ``(batch,)`` correct classes (None if only logits will be asked for).
            n_heads, d_vocab: the model's ``cfg.n_heads`` and ``cfg.d_vocab``.
            dtype: dtype of the model's weights (float32 or float64).
        """
        tokens = torch.as_tensor(tokens).to("cpu")
        if tokens.ndim != 2 or tokens.shape[1] != 3 or tokens.shape[0] == 0:
            raise ValueError(f"tokens must have shape (batch, 3) with rows [x, y, =], got {tuple(tokens.shape)}")
        if tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"tokens must be an integer tensor, got {tokens.dtype}")
        tokens = tokens.long()
        if int(tokens.min()) < 0 or int(tokens.max()) >= d_vocab:
            raise ValueError(f"token ids must lie in [0, {d_vocab}), got range [{int(tokens.min())}, {int(tokens.max())}]")
        eq = tokens[:, 2]
        if not bool((eq == eq[0]).all()):
            raise ValueError("the fast forward needs the same token at the last position in every row (the '=' token)")
        if labels is not None:
            labels = torch.as_tensor(labels).to("cpu").long()
            if labels.shape != tokens.shape[:1]:
                raise ValueError(f"labels must have shape ({tokens.shape[0]},), got {tuple(labels.shape)}")
        x, y = tokens[:, 0].contiguous(), tokens[:, 1].contiguous()
        batch = len(x)
        head_base = (2 * d_vocab * torch.arange(n_heads))[None, :, None]  # (1, H, 1)
        rows = (head_base + torch.stack([x, d_vocab + y], dim=1)[:, None, :]).reshape(-1)  # (batch, H, 2), ascending
        n_rows = 2 * d_vocab * n_heads
        crow = torch.arange(0, 2 * n_heads * batch + 1, 2 * n_heads)
        by_row_entry, by_row_offsets = _segments(rows, n_rows)
        x_order, x_offsets = _segments(x, d_vocab)
        y_order, y_offsets = _segments(y, d_vocab)
        return cls(
            x=x,
            y=y,
            labels=labels,
            eq_token=int(eq[0]),
            n_heads=n_heads,
            d_vocab=d_vocab,
            rows=rows,
            crow=crow,
            pattern_csr=_csr(crow, rows, torch.ones(len(rows), dtype=dtype), (batch, n_rows)),
            by_row_entry=by_row_entry,
            by_row_example=by_row_entry // (2 * n_heads),
            by_row_offsets=by_row_offsets,
            x_order=x_order,
            x_offsets=x_offsets,
            y_order=y_order,
            y_offsets=y_offsets,
        )

    def check_model(self, model: HookedTransformer) -> None:
        """Raise ``ValueError`` unless ``model`` is a model these structures (and the fast forward) fit."""
        cfg = model.cfg
        if (cfg.n_heads, cfg.d_vocab) != (self.n_heads, self.d_vocab):
            raise ValueError(
                f"this PairBatch was built for n_heads={self.n_heads}, d_vocab={self.d_vocab}; the model has "
                f"n_heads={cfg.n_heads}, d_vocab={cfg.d_vocab}"
            )
        if cfg.n_layers != 1 or cfg.normalization_type is not None or cfg.act_fn != "relu" or cfg.attn_only:
            raise ValueError("the fast forward supports only the one-layer, LayerNorm-free ReLU model of the course")
        if cfg.positional_embedding_type != "standard" or cfg.n_ctx < 3:
            raise ValueError("the fast forward needs learned ('standard') positional embeddings and n_ctx >= 3")
        if self.pattern_csr.dtype != model.W_E.dtype:
            raise ValueError(f"this PairBatch was built for {self.pattern_csr.dtype} weights; the model has {model.W_E.dtype}")


@dataclass
class LastPositionTables:
    """Everything position 2 needs, computed from the weights (differentiable).

    Shapes (V = d_vocab, H = n_heads, D = d_mlp + d_vocab_out):
        scores: (2, V, H) attention score of position 0 / 1 holding token t (divided by the attention scale);
        score_eq: (H,) score of position 2 on itself;
        table: (H * 2 * V, D) row ``(h * 2 + i) * V + t`` = value(i, t, h) @ W_O[h] @ [W_in | W_U];
        table_eq: (H, D) the same for position 2;
        const: (D,) constant part: (r2 + b_O) @ [W_in | W_U] + [b_in | b_U];
        w_logit: (d_mlp, d_vocab_out) = W_out @ W_U;  logit_bias: (d_vocab_out,) = b_out @ W_U.
    """

    scores: Tensor
    score_eq: Tensor
    table: Tensor
    table_eq: Tensor
    const: Tensor
    w_logit: Tensor
    logit_bias: Tensor
    d_mlp: int


def last_position_tables(model: HookedTransformer, eq_token: int | None = None) -> LastPositionTables:
    """Build the tables of the fast forward from ``model``'s weights (differentiable when grad is enabled).

    Args:
        eq_token: the token at the last position (default: ``d_vocab - 1``, the ``=`` token).
    """
    cfg = model.cfg
    attn, mlp = model.blocks[0].attn, model.blocks[0].mlp
    n_heads, d_head, d_model, d_vocab = cfg.n_heads, cfg.d_head, cfg.d_model, cfg.d_vocab
    eq = d_vocab - 1 if eq_token is None else eq_token
    W_E, W_pos = model.embed.W_E, model.pos_embed.W_pos
    resid = (W_E[None, :, :] + W_pos[:2, None, :]).reshape(2 * d_vocab, d_model)  # positions 0, 1; every token
    r2 = W_E[eq] + W_pos[2]  # (d_model,)
    # scores: <key, query> / scale = resid @ (W_K[h] q[h]) / scale + <b_K[h], q[h]> / scale
    q = torch.einsum("d,hde->he", r2, attn.W_Q) + attn.b_Q  # (H, d_head)
    key_query = torch.einsum("hde,he->dh", attn.W_K, q) / attn.attn_scale  # (d_model, H)
    key_bias = (attn.b_K * q).sum(-1) / attn.attn_scale  # (H,)
    scores = (resid @ key_query + key_bias).view(2, d_vocab, n_heads)
    score_eq = r2 @ key_query + key_bias
    # values, head-major: (H, 2V, d_head); position 2: (H, d_head)
    w_v = attn.W_V.permute(1, 0, 2).reshape(d_model, n_heads * d_head)
    values = (resid @ w_v).view(2 * d_vocab, n_heads, d_head).transpose(0, 1) + attn.b_V[:, None, :]
    value_eq = (r2 @ w_v).view(n_heads, d_head) + attn.b_V
    w_cat = torch.cat([mlp.W_in, model.unembed.W_U], dim=1)  # (d_model, D)
    wo_cat = (attn.W_O.reshape(n_heads * d_head, d_model) @ w_cat).view(n_heads, d_head, -1)  # (H, d_head, D)
    table = torch.bmm(values, wo_cat).reshape(n_heads * 2 * d_vocab, -1)
    table_eq = torch.bmm(value_eq[:, None, :], wo_cat).squeeze(1)
    const = (r2 + attn.b_O) @ w_cat + torch.cat([mlp.b_in, model.unembed.b_U])
    w_logit = mlp.W_out @ model.unembed.W_U
    logit_bias = mlp.b_out @ model.unembed.W_U
    return LastPositionTables(scores, score_eq, table, table_eq, const, w_logit, logit_bias, cfg.d_mlp)


def _attention_weights(scores: Tensor, score_eq: Tensor, batch: PairBatch) -> Tensor:
    """(3, batch, H) softmax over the keys at positions 0, 1, 2 (key position first: a fast softmax layout)."""
    s = torch.stack([scores[0][batch.x], scores[1][batch.y], score_eq.expand(batch.size, -1)])
    return torch.softmax(s, dim=0)


def _folded_tables(table: Tensor, table_eq: Tensor, const: Tensor) -> tuple[Tensor, Tensor]:
    """Fold position 2 into the x/y tables (``a2 = 1 - a0 - a1``): returns (table - T2[h], const + sum_h T2[h])."""
    n_heads, d = table_eq.shape
    folded = (table.view(n_heads, -1, d) - table_eq[:, None, :]).view(-1, d)
    return folded, const + table_eq.sum(0)


def _z(folded: Tensor, folded_const: Tensor, pattern: Tensor, batch: PairBatch) -> tuple[Tensor, Tensor]:
    """Z = const + A @ table (batch, D) as a weighted embedding-bag sum over 2H table rows per example.
    Returns (Z, the weights in ``batch.rows`` order)."""
    weights = pattern[:2].permute(1, 2, 0).reshape(-1)  # (batch, H, 2): [a0[b, h], a1[b, h]] per head
    z = F.embedding_bag(batch.rows, folded, batch.crow[:-1], mode="sum", per_sample_weights=weights)
    return z.add_(folded_const), weights


def _logits(z: Tensor, w_logit: Tensor, logit_bias: Tensor, d_mlp: int) -> tuple[Tensor, Tensor]:
    """logits = relu(pre) @ W_logit + direct + logit_bias; returns (logits, post).

    ``z`` is overwritten: ``post`` is the ReLU applied in place to its first ``d_mlp`` columns (a strided view;
    the matrix products read it where it is)."""
    post = torch.relu_(z[:, :d_mlp])
    return (post @ w_logit).add_(z[:, d_mlp:]).add_(logit_bias), post


#: |d loss / d logit| below this is set to 0 in the float32 backward (see _LastPositionLoss.backward).
FLUSH_BELOW = 1e-30


class _LastPositionLoss(torch.autograd.Function):
    """Float64 cross-entropy at the last position, from the tables; hand-written backward for the batch part."""

    @staticmethod
    def forward(ctx, scores, score_eq, table, table_eq, const, w_logit, logit_bias, d_mlp, batch):  # type: ignore[override]
        folded, folded_const = _folded_tables(table, table_eq, const)
        pattern = _attention_weights(scores, score_eq, batch)
        z, weights = _z(folded, folded_const, pattern, batch)
        logits, post = _logits(z, w_logit, logit_bias, d_mlp)
        # float64 softmax; loss = mean(-log p[label]); d loss / d logits = (p - onehot) / batch, in float64 as
        # autograd computes it through the float64 log-softmax
        probs = torch.softmax(logits.to(torch.float64), dim=1)
        loss = -probs.gather(1, batch.labels[:, None]).log_().mean()
        dlogits = probs
        dlogits[torch.arange(batch.size), batch.labels] -= 1.0
        dlogits /= batch.size
        ctx.batch, ctx.d_mlp = batch, d_mlp
        ctx.save_for_backward(pattern, weights, post, folded, w_logit, dlogits)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):  # type: ignore[override]
        pattern, weights, post, folded, w_logit, dlogits64 = ctx.saved_tensors
        batch, d_mlp = ctx.batch, ctx.d_mlp
        n_heads = pattern.shape[2]
        if bool(grad_loss != 1):
            dlogits64 = dlogits64 * grad_loss
        # (batch, d_vocab_out). Once the model fits its data, wrong-class probabilities fall to 1e-35 and
        # below: cast to float32 (and multiplied by small weights) they become subnormal numbers, which make
        # every matrix product below ~8x slower on x86 CPUs. Entries under FLUSH_BELOW are zero for any purpose
        # (float32 gradients carry ~7 significant digits of values >= 1e-12), so they are flushed here, with
        # no process-wide setting (torch.set_flush_denormal would change the whole process).
        dlogits = dlogits64.to(post.dtype)
        if dlogits.dtype != torch.float64:
            dlogits.masked_fill_(dlogits.abs() < FLUSH_BELOW, 0.0)
        d_w_logit = (dlogits.T @ post).T
        dz = torch.empty(batch.size, folded.shape[1], dtype=post.dtype)  # [d pre | d direct]
        # ReLU backward, written straight into dz (a matmul into the strided view would be slower)
        torch.ops.aten.threshold_backward.grad_input(dlogits @ w_logit.T, post, 0, grad_input=dz[:, :d_mlp])
        dz[:, d_mlp:] = dlogits
        d_const = dz.sum(0)
        d_logit_bias = d_const[d_mlp:]
        # table gradient A^T @ dz: per table row, the weighted sum of the dz rows of the examples that use it
        d_folded = F.embedding_bag(
            batch.by_row_example, dz, batch.by_row_offsets[:-1], mode="sum", per_sample_weights=weights[batch.by_row_entry]
        )
        d_table_eq = d_const - d_folded.view(n_heads, -1, d_folded.shape[1]).sum(1)
        # d loss / d attention weights on x and y: <dz[b], folded table row> at the sparse pattern
        d_a = torch.sparse.sampled_addmm(batch.pattern_csr, dz, folded.T, beta=0.0).values().view(batch.size, n_heads, 2)
        d_a0, d_a1 = d_a[:, :, 0], d_a[:, :, 1]
        a0, a1, a2 = pattern
        dot = a0 * d_a0 + a1 * d_a1  # softmax backward with d a2 = 0 (position 2 is folded into the tables)
        d_s0, d_s1 = a0 * (d_a0 - dot), a1 * (d_a1 - dot)
        d_score_eq = -(a2 * dot).sum(0)
        d_scores = torch.stack([_segment_sum(d_s0, batch.x_order, batch.x_offsets), _segment_sum(d_s1, batch.y_order, batch.y_offsets)])
        return d_scores, d_score_eq, d_folded, d_table_eq, d_const, d_w_logit, d_logit_bias, None, None


def last_position_loss(model: HookedTransformer, batch: PairBatch) -> Float[Tensor, ""]:
    """Mean float64 cross-entropy over all ``d_vocab_out`` logits at the last position, for ``batch``.

    Equal (up to float rounding) to ``cross_entropy_high_precision(model(tokens)[:, -1], labels)``; calling
    ``.backward()`` on it fills the ``.grad`` of the model's parameters with the same gradients, several
    times faster. Under ``torch.no_grad()`` it only evaluates.
    """
    if batch.labels is None:
        raise ValueError("this PairBatch has no labels; build it with labels to compute a loss")
    batch.check_model(model)
    t = last_position_tables(model, batch.eq_token)
    return _LastPositionLoss.apply(t.scores, t.score_eq, t.table, t.table_eq, t.const, t.w_logit, t.logit_bias, t.d_mlp, batch)


@torch.no_grad()
def last_position_logits(model: HookedTransformer, batch: PairBatch | Int[Tensor, "batch 3"]) -> Float[Tensor, "batch d_vocab_out"]:
    """Logits at the last position, ``model(tokens)[:, -1]``, computed with the fast forward (no gradients).

    Args:
        batch: a :class:`PairBatch` or ``(batch, 3)`` tokens ``[x, y, =]``.
    """
    if not isinstance(batch, PairBatch):
        batch = PairBatch.from_tokens(batch, None, model.cfg.n_heads, model.cfg.d_vocab, model.W_E.dtype)
    batch.check_model(model)
    t = last_position_tables(model, batch.eq_token)
    pattern = _attention_weights(t.scores, t.score_eq, batch)
    z, _ = _z(*_folded_tables(t.table, t.table_eq, t.const), pattern, batch)
    return _logits(z, t.w_logit, t.logit_bias, t.d_mlp)[0]
