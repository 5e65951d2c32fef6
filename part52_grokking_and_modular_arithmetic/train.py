"""Train the grokking model with the paper's recipe and record its checkpoint history.

The recipe (grokking_facts §2; defaults in :class:`~.config.TrainConfig`): paper init seeded by ``seed``;
the paper's split; full batch (every epoch is one AdamW step on all training pairs); AdamW with lr 1e-3,
weight decay 1.0 on every trained parameter, betas (0.9, 0.98), eps 1e-8; a linear warm-up over 10 steps
that starts at lr 0; the float64 cross-entropy over all ``p + 1`` logits at the last position.

:func:`train` computes each step with :mod:`.fast_forward` (the same gradients as a full
``HookedTransformer`` forward, several times faster) and writes the run file of :mod:`.checkpoints`:

* ``train_losses[e]``: the loss of epoch ``e``'s step, measured before its update (as in the paper);
* ``test_losses[i]``: the test loss at epoch ``i * test_every`` (measured at the same weights);
* ``state_dicts[k]`` (paper layout) at ``epochs[k]``, every ``save_every`` epochs from epoch 0: the weights
  at which that epoch's losses were measured. As in the course's hub file, a run of ``E`` epochs has ``E``
  train losses and its last checkpoint at the last multiple of ``save_every`` below ``E``;
* ``config`` (``TrainConfig.to_dict()``), ``train_indices``, and ``resume``: the weights after the last
  completed update (TransformerLens layout) with the optimizer and scheduler state, so an interrupted run
  continues exactly where it stopped and a finished one can be extended to more epochs.

:func:`plain_hooked_transformer_step` is the textbook loop (a full ``HookedTransformer`` forward, autograd):
the reference the tests and ``benchmarks/benchmark_training.py`` compare against.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from .checkpoints import atomic_save, safe_load, validate_run_data
from .config import TrainConfig
from .data import make_all_data, make_labels, train_test_split
from .fast_forward import PairBatch, last_position_logits, last_position_loss
from .layout import transformer_lens_to_paper
from .losses import cross_entropy_high_precision
from .model import PAPER_TRAINABLE, make_model

__all__ = [
    "train",
    "keep_freed_memory",
    "make_optimizer",
    "trained_parameters",
    "fast_train_step",
    "plain_hooked_transformer_step",
    "reference_train",
    "TrainingData",
    "RUN_FORMAT_VERSION",
]

#: Version of the ``resume`` record this module writes.
RUN_FORMAT_VERSION = 1

#: Keys of ``TrainConfig`` that may differ between a stored run and a request to continue it.
_EXTENDABLE = ("epochs",)


# ---------------------------------------------------------------------------------------------------------
# the recipe
def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep freed memory in this process instead of returning it to the OS at once.

    Every epoch allocates and frees the same few tens of MB of tensors. By default glibc maps large blocks
    afresh and trims the heap after each free, so every epoch pays page faults on all of it: 10-20% of an
    epoch on a busy machine. Raising the mmap threshold (to 32 MB) and the trim threshold (to 512 MB) keeps
    the memory for reuse. Process-wide and harmless (freed memory, up to 512 MB, stays mapped); a no-op
    outside Linux/glibc. Returns True if the settings were applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 512 << 20))
    except (OSError, AttributeError):
        return False


class TrainingData:
    """Tokens, labels and split of a configuration, plus the fast-forward structures of both halves."""

    def __init__(self, config: TrainConfig, model: HookedTransformer):
        p = config.p
        all_data = make_all_data(p)
        labels = make_labels(all_data, p, config.fn, config.seed)
        self.train_indices, self.test_indices = train_test_split(p, config.frac_train, config.seed)
        self.train_tokens, self.train_labels = all_data[self.train_indices], labels[self.train_indices]
        self.test_tokens, self.test_labels = all_data[self.test_indices], labels[self.test_indices]
        cfg, dtype = model.cfg, model.W_E.dtype
        self.train_batch = PairBatch.from_tokens(self.train_tokens, self.train_labels, cfg.n_heads, cfg.d_vocab, dtype)
        self.test_batch = PairBatch.from_tokens(self.test_tokens, self.test_labels, cfg.n_heads, cfg.d_vocab, dtype)


def trained_parameters(model: HookedTransformer) -> list[torch.nn.Parameter]:
    """The 11 parameters the paper trains (``model.PAPER_TRAINABLE``, in that order)."""
    params = dict(model.named_parameters())
    return [params[name] for name in PAPER_TRAINABLE]


def make_optimizer(model: HookedTransformer, config: TrainConfig) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the paper's parameters (weight decay on all of them) and the warm-up schedule
    ``lr * min(step / warmup_steps, 1)``, stepped once per epoch (the first update has lr 0)."""
    kwargs = dict(lr=config.lr, betas=tuple(config.betas), eps=1e-8, weight_decay=config.weight_decay)
    params = trained_parameters(model)
    try:  # one fused kernel per tensor (torch >= 2.4 on CPU)
        optimizer = torch.optim.AdamW(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        optimizer = torch.optim.AdamW(params, foreach=True, **kwargs)
    warmup = config.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(step / warmup, 1.0) if warmup > 0 else 1.0)
    return optimizer, scheduler


def _update(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def fast_train_step(
    model: HookedTransformer,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    batch: PairBatch,
) -> float:
    """One full-batch epoch with the fast forward/backward; returns the loss before the update."""
    loss = last_position_loss(model, batch)
    loss.backward()
    _update(optimizer, scheduler)
    return loss.item()


def plain_hooked_transformer_step(
    model: HookedTransformer,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    tokens: Int[Tensor, "batch 3"],
    labels: Int[Tensor, "batch"],
) -> float:
    """One full-batch epoch the textbook way: ``model(tokens)`` (every position), the float64
    cross-entropy of the last position, autograd. Returns the loss before the update."""
    loss = cross_entropy_high_precision(model(tokens)[:, -1], labels)
    loss.backward()
    _update(optimizer, scheduler)
    return loss.item()


def reference_train(
    config: TrainConfig, epochs: int | None = None, *, fast: bool = False, dtype: torch.dtype = torch.float32
) -> tuple[HookedTransformer, list[float]]:
    """Train ``epochs`` (default ``config.epochs``) epochs in memory, without any bookkeeping, with the plain
    ``HookedTransformer`` step (or ``fast=True``: the fast step), in ``dtype`` (float64: to compare two
    implementations without float32 noise). Returns (model, train loss of every epoch)."""
    model = make_model(config.p, seed=config.seed)
    if dtype != model.W_E.dtype:
        model = model.to(dtype, print_details=False)
    optimizer, scheduler = make_optimizer(model, config)
    data = TrainingData(config, model)
    losses = []
    for _ in range(config.epochs if epochs is None else epochs):
        if fast:
            losses.append(fast_train_step(model, optimizer, scheduler, data.train_batch))
        else:
            losses.append(plain_hooked_transformer_step(model, optimizer, scheduler, data.train_tokens, data.train_labels))
    return model, losses


@torch.no_grad()
def _test_loss(model: HookedTransformer, data: TrainingData) -> float:
    return cross_entropy_high_precision(last_position_logits(model, data.test_batch), data.test_labels).item()


# ---------------------------------------------------------------------------------------------------------
# the run record
class _Run:
    """Histories of one run, kept in memory and written as the run-data dict of :mod:`.checkpoints`."""

    def __init__(self, config: TrainConfig, train_indices: Tensor):
        self.config = config
        self.train_indices = train_indices
        self.state_dicts: list[dict[str, Tensor]] = []
        self.epochs: list[int] = []
        self.train_losses: list[float] = []
        self.test_losses: list[float] = []
        self.stopped_early = False
        self.elapsed_s = 0.0

    @classmethod
    def from_data(cls, config: TrainConfig, data: dict) -> "_Run":
        run = cls(config, torch.as_tensor(data["train_indices"]))
        run.state_dicts = list(data["state_dicts"])
        run.epochs = [int(e) for e in data["epochs"]]
        run.train_losses = [float(x) for x in data["train_losses"]]
        run.test_losses = [float(x) for x in data["test_losses"]]
        run.stopped_early = bool(data["resume"]["stopped_early"])
        run.elapsed_s = float(data["resume"].get("elapsed_s", 0.0))
        return run

    def to_data(self, done: int, model: HookedTransformer, optimizer, scheduler) -> dict:
        """The run after ``done`` completed updates (records of a later epoch are left out), with the current
        weights and optimizer state. An early-stopped run keeps the records of its last epoch."""
        limit = done + 1 if self.stopped_early else done
        n_test = (limit + self.config.test_every - 1) // self.config.test_every
        keep = [i for i, e in enumerate(self.epochs) if e < limit]
        finished = self.stopped_early or done >= self.config.epochs
        return {
            "state_dicts": [self.state_dicts[i] for i in keep],
            "epochs": [self.epochs[i] for i in keep],
            "train_losses": self.train_losses[:limit],
            "test_losses": self.test_losses[:n_test],
            "config": self.config.to_dict(),
            "train_indices": self.train_indices.clone(),
            "resume": {
                "format": RUN_FORMAT_VERSION,
                "epochs_done": done,
                "finished": finished,
                "stopped_early": self.stopped_early,
                "elapsed_s": self.elapsed_s,
                "params": {name: param.detach().clone() for name, param in zip(PAPER_TRAINABLE, trained_parameters(model))},
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
            },
        }


def _config_difference(stored: dict, config: TrainConfig) -> list[str]:
    mine = config.to_dict()
    theirs = TrainConfig.from_dict(stored).to_dict()
    return [f"{k}: file {theirs[k]!r} vs requested {mine[k]!r}" for k in mine if k not in _EXTENDABLE and theirs[k] != mine[k]]


def _load_existing(path: Path, config: TrainConfig) -> dict:
    """Load ``path`` and check that it holds a run of ``config`` that can be returned or continued."""
    data = safe_load(path)
    validate_run_data(data, source=str(path))
    stored = data.get("config")
    if not isinstance(stored, dict) or not isinstance(data.get("resume"), dict) or "train_indices" not in data:
        raise ValueError(
            f"{path} holds run data that was not written by train() (no config/resume record, e.g. the course's hub "
            f"file); refusing to overwrite it. Pass another `out` path or move the file away."
        )
    diff = _config_difference(stored, config)
    if diff:
        raise ValueError(
            f"{path} holds a run with a different configuration ({'; '.join(diff)}); refusing to overwrite it. "
            f"Pass another `out` path, move the file away, or train with the stored configuration."
        )
    done = int(data["resume"]["epochs_done"])
    if done > config.epochs:
        raise ValueError(f"{path} holds a run of {done:,} epochs, more than the {config.epochs:,} requested")
    return data


# ---------------------------------------------------------------------------------------------------------
def train(
    config: TrainConfig = TrainConfig(),
    out: str | os.PathLike | None = None,
    *,
    resume: bool = True,
    progress: bool = True,
    save_interval_s: float | int = 60.0,
    callback: Callable[[int, float, float | None], None] | None = None,
) -> dict:
    """Train a model with ``config`` and return its run data (the :mod:`.checkpoints` format).

    Args:
        config: the recipe (defaults: the paper's).
        out: file to write the run to (atomically). Written when a checkpoint epoch is reached and at least
            ``save_interval_s`` seconds have passed since the last write, at the end, and when training is
            interrupted (``KeyboardInterrupt`` or an exception at an epoch boundary). None: keep it in memory.
        resume: if ``out`` holds an unfinished run of the same config, continue it (bit-identical to an
            uninterrupted run with the same number of torch threads: float32 sums, and so the trajectory,
            depend on it); a finished one is returned as it is; a run of the same config with fewer epochs is
            extended. ``resume=False`` trains from scratch and overwrites a run of the same config.
            A file holding a different configuration is never overwritten (``ValueError``).
        progress: show a progress bar (epoch, train loss, test loss).
        save_interval_s: minimum seconds between writes of ``out`` (0: at every checkpoint). The file grows by
            ~1 MB per checkpoint (p = 113), so writing it every 100 epochs would dominate a fast run.
        callback: called after every epoch as ``callback(epoch, train_loss, test_loss_or_None)``; an exception
            it raises stops training (the run is written first, so it can be resumed).

    Returns:
        ``{"state_dicts", "epochs", "train_losses", "test_losses", "config", "train_indices", "resume"}``.
    """
    path = Path(out) if out is not None else None
    existing = _load_existing(path, config) if path is not None and path.exists() else None
    if existing is not None and resume and existing["resume"]["finished"]:
        if existing["resume"]["stopped_early"] or int(existing["resume"]["epochs_done"]) >= config.epochs:
            return existing

    keep_freed_memory()
    model = make_model(config.p, seed=config.seed)
    optimizer, scheduler = make_optimizer(model, config)
    data = TrainingData(config, model)
    if existing is not None and resume:
        run = _Run.from_data(config, existing)
        if not torch.equal(run.train_indices, data.train_indices):
            raise ValueError(f"{path}: its train_indices differ from the split of this config; refusing to continue it")
        state = existing["resume"]
        with torch.no_grad():
            for name, param in zip(PAPER_TRAINABLE, trained_parameters(model)):
                param.copy_(state["params"][name])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = int(state["epochs_done"])
    else:
        run = _Run(config, data.train_indices)
        start = 0
    del existing

    def write(done: int) -> None:
        if path is not None:
            atomic_save(run.to_data(done, model, optimizer, scheduler), path)

    done, updating = start, False
    last_write = time.monotonic()
    t_start = time.monotonic()
    elapsed_before = run.elapsed_s
    bar = tqdm(total=config.epochs, initial=start, disable=not progress, desc="training", unit="epoch", dynamic_ncols=True)
    try:
        for epoch in range(start, config.epochs):
            test_loss = None
            if epoch % config.test_every == 0:
                test_loss = _test_loss(model, data)
                run.test_losses.append(test_loss)
            if epoch % config.save_every == 0:
                run.state_dicts.append(transformer_lens_to_paper(model.state_dict()))
                run.epochs.append(epoch)
            loss = last_position_loss(model, data.train_batch)
            loss.backward()
            train_loss = loss.item()
            run.train_losses.append(train_loss)
            if test_loss is not None:
                bar.set_postfix(train=f"{train_loss:.3g}", test=f"{test_loss:.3g}", refresh=False)
                if config.stop_at_test_loss is not None and test_loss < config.stop_at_test_loss:
                    if run.epochs[-1] != epoch:
                        run.state_dicts.append(transformer_lens_to_paper(model.state_dict()))
                        run.epochs.append(epoch)
                    optimizer.zero_grad(set_to_none=True)
                    run.stopped_early = True
                    break
            updating = True
            _update(optimizer, scheduler)
            done, updating = epoch + 1, False
            bar.update(1)
            if callback is not None:
                callback(epoch, train_loss, test_loss)
            if done % config.save_every == 0 and time.monotonic() - last_write >= save_interval_s:
                run.elapsed_s = elapsed_before + time.monotonic() - t_start
                write(done)
                last_write = time.monotonic()
    except BaseException:
        if not updating:  # at an epoch boundary: the weights and optimizer match `done`
            run.elapsed_s = elapsed_before + time.monotonic() - t_start
            write(done)
        raise
    finally:
        bar.close()
    run.elapsed_s = elapsed_before + time.monotonic() - t_start
    result = run.to_data(done, model, optimizer, scheduler)
    if path is not None:
        atomic_save(result, path)
    return result
