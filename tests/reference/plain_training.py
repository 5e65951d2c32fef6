"""The textbook training loop: a full ``HookedTransformer`` forward on every position, the float64 cross-entropy
of the last position, autograd. The tests check the package's trainer against it and
``benchmarks/benchmark_training.py`` times the trainer against it. It does not use the package's last-position
module (the code under test); it shares only the model, the optimizer recipe and the data."""

from __future__ import annotations

import torch
from torch import Tensor
from transformer_lens import HookedTransformer

from part52_grokking_and_modular_arithmetic.runs.config import TrainConfig
from part52_grokking_and_modular_arithmetic.runs.data import make_all_data, make_labels, train_test_split
from part52_grokking_and_modular_arithmetic.runs.model import make_model
from part52_grokking_and_modular_arithmetic.training.losses import cross_entropy_high_precision
from part52_grokking_and_modular_arithmetic.training.train import make_optimizer

__all__ = ["plain_hooked_transformer_step", "plain_train", "train_split_tokens"]


def train_split_tokens(config: TrainConfig) -> tuple[Tensor, Tensor]:
    """The training pairs ``(tokens (n_train, 3), labels (n_train,))`` of ``config``."""
    all_data = make_all_data(config.p)
    labels = make_labels(all_data, config.p, config.fn, config.seed)
    train, _ = train_test_split(config.p, config.frac_train, config.seed)
    return all_data[train], labels[train]


def plain_hooked_transformer_step(
    model: HookedTransformer,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    tokens: Tensor,
    labels: Tensor,
) -> float:
    """One full-batch epoch the textbook way: ``model(tokens)`` (every position), the float64 cross-entropy of
    the last position, autograd, an optimizer and scheduler step. ``tokens`` (batch, 3), ``labels`` (batch,).
    Returns the loss before the update."""
    loss = cross_entropy_high_precision(model(tokens)[:, -1], labels)
    loss.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def plain_train(
    config: TrainConfig, epochs: int | None = None, *, dtype: torch.dtype = torch.float32, device: str = "cpu"
) -> tuple[HookedTransformer, list[float]]:
    """Train ``epochs`` (default ``config.epochs``) epochs in memory with the plain step, in ``dtype`` (float64:
    to compare two implementations without float32 noise). Returns (model, train loss of every epoch)."""
    model = make_model(config.p, seed=config.seed, device=device)
    if dtype != model.W_E.dtype:
        model = model.to(dtype, print_details=False)
    optimizer, scheduler = make_optimizer(model, config)
    tokens, labels = (t.to(device) for t in train_split_tokens(config))
    losses = [
        plain_hooked_transformer_step(model, optimizer, scheduler, tokens, labels)
        for _ in range(config.epochs if epochs is None else epochs)
    ]
    return model, losses
