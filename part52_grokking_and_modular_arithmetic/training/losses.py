"""The loss, defined once: float64 cross-entropy (float32 cannot represent losses below ~1e-7, which gives late
loss spikes: Nanda et al. 2023, arXiv 2301.05217), and scoring of last-position logits on the split."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

__all__ = ["cross_entropy_high_precision", "cross_entropy_per_run", "score_logits", "bias_correct"]

Mode = Literal["all", "train", "test"]


class _Float64NLL(torch.autograd.Function):
    """Per-example float64 ``nll = log(sum(exp(x - max))) - (x[label] - max)``; backward ``(softmax - onehot) * d
    nll`` in the logits' dtype. ~1.4x faster than autograd (``benchmarks/benchmark_loss_backward.py``)."""

    @staticmethod
    def forward(ctx, logits: Tensor, labels: Tensor) -> Tensor:  # type: ignore[override]
        # the max is exact in any dtype; subtracting a float64 tensor promotes the difference to float64
        shifted = logits - logits.detach().amax(dim=-1, keepdim=True).to(torch.float64)
        picked = shifted.gather(-1, labels[..., None])
        exps = shifted.exp_()  # in place: `shifted` is a fresh float64 tensor
        total = exps.sum(dim=-1, keepdim=True)
        ctx.save_for_backward(exps, total, labels)
        ctx.dtype = logits.dtype
        return (total.log() - picked)[..., 0]

    @staticmethod
    def backward(ctx, d_nll: Tensor):  # type: ignore[override]
        exps, total, labels = ctx.saved_tensors
        scale = d_nll[..., None]
        d_logits = exps * (scale / total)  # softmax * d nll
        d_logits.scatter_add_(-1, labels[..., None], -scale)
        return d_logits.to(ctx.dtype), None


def _nll_float64(logits: Float[Tensor, "*batch vocab"], labels: Int[Tensor, "*batch"]) -> Float[Tensor, "*batch"]:
    """Per-example negative log-likelihood from a float64 log-softmax (the one place the loss is computed)."""
    return _Float64NLL.apply(logits, labels)


def cross_entropy_high_precision(
    logits: Float[Tensor, "batch vocab"], labels: Int[Tensor, "batch"]
) -> Float[Tensor, ""]:
    """Mean cross-entropy with a float64 log-softmax (a float64 scalar); gradients flow to ``logits`` in their
    dtype."""
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (batch, vocab), got {tuple(logits.shape)}")
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"labels must have shape ({logits.shape[0]},), got {tuple(labels.shape)}")
    return _nll_float64(logits, labels).mean()


def cross_entropy_per_run(
    logits: Float[Tensor, "runs batch vocab"], labels: Int[Tensor, "runs batch"], lengths: Sequence[int]
) -> Float[Tensor, "runs"]:
    """``cross_entropy_high_precision(logits[r, :lengths[r]], labels[r, :lengths[r]])`` for every run ``r`` at
    once (padding is never read), as a float64 ``(R,)`` tensor."""
    if logits.ndim != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"logits must have shape (runs, batch, vocab) and labels (runs, batch); got {tuple(logits.shape)} "
            f"and {tuple(labels.shape)}"
        )
    n_runs, size = labels.shape
    if len(lengths) != n_runs or not all(0 < int(n) <= size for n in lengths):
        raise ValueError(f"lengths must give 1..{size} real rows for each of the {n_runs} runs, got {list(lengths)}")
    n = torch.as_tensor(list(lengths), device=logits.device)
    real = torch.arange(size, device=logits.device) < n[:, None]
    nll = torch.where(real, _nll_float64(logits, labels), 0.0)
    return nll.sum(dim=1) / n.to(torch.float64)


def bias_correct(
    logits: Float[Tensor, "batch vocab"], original_logits: Float[Tensor, "batch vocab"]
) -> Float[Tensor, "batch vocab"]:
    """Add back the batch mean of ``original_logits - logits`` (the constant direction a projection removed)."""
    if original_logits.shape != logits.shape:
        raise ValueError(f"original_logits must match logits {tuple(logits.shape)}, got {tuple(original_logits.shape)}")
    return logits + (original_logits - logits).mean(0, keepdim=True)


def score_logits(
    logits: Float[Tensor, "*batch vocab"],
    labels: Int[Tensor, "n_pairs"],
    *,
    mode: Mode = "all",
    train_indices: Int[Tensor, "n_train"] | None = None,
    bias_correction: bool = False,
    original_logits: Float[Tensor, "*batch vocab"] | None = None,
) -> float:
    """Loss of ``(p^2, vocab)`` (or ``(p, p, vocab)``) last-position logits, index ``x*p + y``, on all pairs
    (``mode="all"``) or the ``"train"`` / ``"test"`` ones (needs ``train_indices``); ``bias_correction`` adds back
    the mean of ``original_logits - logits`` first."""
    if logits.ndim == 3:
        logits = logits.reshape(-1, logits.shape[-1])
    if original_logits is not None and original_logits.ndim == 3:
        original_logits = original_logits.reshape(-1, original_logits.shape[-1])
    if bias_correction:
        if original_logits is None:
            raise ValueError("bias_correction=True needs original_logits")
        logits = bias_correct(logits, original_logits)
    if mode == "all":
        return cross_entropy_high_precision(logits, labels).item()
    if mode not in ("train", "test"):
        raise ValueError(f"mode must be 'all', 'train' or 'test', got {mode!r}")
    if train_indices is None:
        raise ValueError(f"mode={mode!r} needs train_indices")
    is_train = torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
    is_train[train_indices.to(logits.device)] = True
    mask = is_train if mode == "train" else ~is_train
    return cross_entropy_high_precision(logits[mask], labels[mask]).item()
