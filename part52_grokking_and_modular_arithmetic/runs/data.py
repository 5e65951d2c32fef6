"""The modular-arithmetic data set: every input pair, the task's labels and the paper's train/test split.

A batch index is always ``x * p + y``: the ``p^2`` rows reshape to a ``(p, p)`` grid indexed ``[x, y]``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Bool, Int
from torch import Tensor

from .config import TASKS, TrainConfig

__all__ = [
    "TASKS",
    "task_function",
    "make_all_data",
    "make_labels",
    "train_test_split",
    "train_test_masks",
    "Split",
    "make_split",
]


def task_function(fn: str, p: int, seed: int = 0) -> Callable[[Tensor, Tensor], Tensor]:
    """``f(x, y) -> z`` (elementwise on integer tensors) for task ``fn``: ``add`` ``(x + y) mod p`` (the
    chapter's), ``subtract``, ``x2xyy2`` ``(x^2 + xy + y^2) mod p``, or ``rand`` (a table seeded by ``seed``)."""
    if fn == "add":
        return lambda x, y: (x + y) % p
    if fn == "subtract":
        return lambda x, y: (x - y) % p
    if fn == "x2xyy2":
        return lambda x, y: (x * x + x * y + y * y) % p
    if fn == "rand":
        table = torch.from_numpy(np.random.default_rng(seed).integers(0, p, size=(p, p)))
        return lambda x, y: table.to(x.device)[x, y]
    raise ValueError(f"unknown task {fn!r}; expected one of {TASKS}")


def make_all_data(p: int = 113) -> Int[Tensor, "p_sq 3"]:
    """All ``p^2`` inputs ``[x, y, =]`` in row-major (x, y) order; the ``=`` token has id ``p``."""
    x = torch.arange(p).repeat_interleave(p)
    y = torch.arange(p).repeat(p)
    return torch.stack([x, y, torch.full_like(x, p)], dim=1)


def make_labels(
    all_data: Int[Tensor, "batch 3"], p: int | None = None, fn: str = "add", seed: int = 0
) -> Int[Tensor, "batch"]:
    """Labels ``fn(x, y)`` for each row of ``all_data`` (p defaults to the ``=`` token id)."""
    if p is None:
        p = int(all_data[0, 2])
    return task_function(fn, p, seed)(all_data[:, 0], all_data[:, 1])


def train_test_split(
    p: int = 113, frac_train: float = 0.3, seed: int = 0
) -> tuple[Int[Tensor, "n_train"], Int[Tensor, "n_test"]]:
    """The paper's split as indices ``x * p + y``, in shuffled order (the released code's recipe: the pairs
    row-major, ``random.Random(seed).shuffle``, the first ``int(frac_train * p^2)`` are train)."""
    if not 0.0 < frac_train < 1.0:
        raise ValueError(f"frac_train must lie strictly between 0 and 1, got {frac_train}")
    pairs = [(i, j) for i in range(p) for j in range(p)]
    random.Random(seed).shuffle(pairs)
    indices = torch.tensor([i * p + j for i, j in pairs], dtype=torch.long)
    return indices[: int(frac_train * len(pairs))], indices[int(frac_train * len(pairs)) :]


def _train_mask(train_indices: Int[Tensor, "n_train"], p: int) -> Bool[Tensor, "p_sq"]:
    is_train = torch.zeros(p * p, dtype=torch.bool)
    is_train[train_indices] = True
    return is_train


def train_test_masks(
    p: int = 113, frac_train: float = 0.3, seed: int = 0
) -> tuple[Bool[Tensor, "p_sq"], Bool[Tensor, "p_sq"]]:
    """Boolean masks over the ``p^2`` rows of ``all_data``: ``(is_train, is_test)``."""
    is_train = _train_mask(train_test_split(p, frac_train, seed)[0], p)
    return is_train, ~is_train


@dataclass(frozen=True, eq=False)
class Split:
    """A run's data set: inputs, the task's labels and the train/test split, built by :func:`make_split`."""

    p: int
    fn: str
    frac_train: float
    seed: int
    all_data: Int[Tensor, "p_sq 3"]  #: every input ``[x, y, =]``, row ``x * p + y``
    labels: Int[Tensor, "p_sq"]  #: ``fn(x, y)`` for each row of ``all_data``
    train_indices: Int[Tensor, "n_train"]  #: rows of the train pairs, in the paper's shuffled order
    test_indices: Int[Tensor, "n_test"]  #: the other rows, in the same shuffled order
    is_train: Bool[Tensor, "p_sq"]  #: mask over the rows of ``all_data``
    is_test: Bool[Tensor, "p_sq"]  #: ``~is_train``

    @classmethod
    def from_config(cls, config: TrainConfig) -> Split:
        return make_split(config.p, config.frac_train, config.seed, config.fn)


def make_split(p: int = 113, frac_train: float = 0.3, seed: int = 0, fn: str = "add") -> Split:
    """The data set of a run: all inputs, the labels of task ``fn`` (seeded by ``seed`` for ``"rand"``) and the
    paper's train/test split (:func:`train_test_split`)."""
    all_data = make_all_data(p)
    train, test = train_test_split(p, frac_train, seed)
    is_train = _train_mask(train, p)
    return Split(
        p=p,
        fn=fn,
        frac_train=frac_train,
        seed=seed,
        all_data=all_data,
        labels=make_labels(all_data, p, fn, seed),
        train_indices=train,
        test_indices=test,
        is_train=is_train,
        is_test=~is_train,
    )
