"""Turn a run of our trainer into a file in the course hub file's format, for end-to-end tests of the online path.

The hub file (``callummcdougall/grokking_full_run_data``, ``full_run_data.pth``; Nanda et al. 2023) holds only
``state_dicts`` (paper layout, with the attention ``mask`` buffer), ``epochs`` (one checkpoint per 100
epochs), ``train_losses`` (one per epoch, 50,000) and ``test_losses`` (one per 10 epochs): no ``config``, no
split. The course analyses its epoch-40,000 checkpoint (index 400).

:func:`to_hub_format` keeps every real checkpoint of a shorter run (ours: 15,000 epochs) and pads the history to
the hub's length with the run's final model, so the epoch-40,000 checkpoint exists and is that final model.
The padding repeats the *same* tensors, which ``torch.save`` stores once: the file is no bigger than the run's
own checkpoints.
"""

from __future__ import annotations

import torch

from part52_grokking_and_modular_arithmetic.runs.layout import is_paper_layout, transformer_lens_to_paper

__all__ = ["HUB_EPOCHS", "HUB_SAVE_EVERY", "HUB_TEST_EVERY", "to_hub_format", "same_model_hub_format"]

HUB_EPOCHS = 50_000
HUB_SAVE_EVERY = 100
HUB_TEST_EVERY = 10


def _paper_with_mask(state_dict: dict) -> dict:
    """A paper-layout copy of a checkpoint (converted from TransformerLens layout if needed) with the ``(3, 3)``
    causal ``mask`` buffer the released files carry."""
    weights = {k: v for k, v in state_dict.items() if not k.endswith(("mask", "IGNORE"))}
    sd = dict(weights) if is_paper_layout(weights) else transformer_lens_to_paper(weights)
    n_ctx = sd["pos_embed.W_pos"].shape[0]
    sd["blocks.0.attn.mask"] = torch.tril(torch.ones(n_ctx, n_ctx))
    return sd


def _test_every(run: dict) -> int:
    """The run's test-loss interval: its config's ``test_every``, else judged from the list lengths."""
    cfg = run.get("config") or {}
    if "test_every" in cfg:
        return int(cfg["test_every"])
    return max(1, round(len(run["train_losses"]) / max(1, len(run["test_losses"]))))


def to_hub_format(
    run: dict, *, epochs: int = HUB_EPOCHS, save_every: int = HUB_SAVE_EVERY, test_every: int = HUB_TEST_EVERY
) -> dict:
    """The hub file's format made from ``run`` (a run-data dict of our trainer, checkpoints every ``save_every``).

    Returns ``{"state_dicts", "epochs", "train_losses", "test_losses"}``: checkpoints at ``0, save_every, …,
    epochs - save_every`` (the run's own ones, then its final model repeated), one train loss per epoch and one
    test loss per ``test_every`` epochs (the run's curves, then their last value). Raises ``ValueError`` when the
    run's checkpoints are not every ``save_every`` epochs from 0 or the run is longer than ``epochs``.
    """
    run_epochs = [int(e) for e in run["epochs"]]
    if run_epochs != [save_every * i for i in range(len(run_epochs))]:
        raise ValueError(
            f"expected checkpoints every {save_every} epochs from 0, got epochs {run_epochs[:4]}…{run_epochs[-2:]}"
        )
    n_ckpt = epochs // save_every
    if len(run_epochs) > n_ckpt or len(run["train_losses"]) > epochs:
        raise ValueError(
            f"the run ({len(run['train_losses'])} epochs) is longer than the hub-format history ({epochs} epochs)"
        )
    own = [_paper_with_mask(sd) for sd in run["state_dicts"]]
    state_dicts = own + [own[-1]] * (n_ckpt - len(own))  # the same tensors: stored once by torch.save

    train = [float(x) for x in run["train_losses"]]
    train += [train[-1]] * (epochs - len(train))
    ours_every, ours = _test_every(run), [float(x) for x in run["test_losses"]]
    test = [ours[min(e // ours_every, len(ours) - 1)] for e in range(0, epochs, test_every)]
    return {
        "state_dicts": state_dicts,
        "epochs": [save_every * i for i in range(n_ckpt)],
        "train_losses": train,
        "test_losses": test,
    }


def same_model_hub_format(run: dict, n_checkpoints: int = 5) -> dict:
    """A hub-format file whose checkpoints are all the run's final model (like a released final model)."""
    final = _paper_with_mask(run["state_dicts"][-1])
    return {
        "state_dicts": [final] * n_checkpoints,
        "epochs": [HUB_SAVE_EVERY * i for i in range(n_checkpoints)],
        "train_losses": [float(run["train_losses"][-1])] * (HUB_SAVE_EVERY * n_checkpoints),
        "test_losses": [float(run["test_losses"][-1])] * (HUB_SAVE_EVERY * n_checkpoints // HUB_TEST_EVERY),
    }


def default_run_hub_bytes(run_path) -> bytes:
    """``torch.save`` bytes of :func:`to_hub_format` applied to the run file at ``run_path``."""
    import io

    from part52_grokking_and_modular_arithmetic.runs.run_data import load_run_data

    buf = io.BytesIO()
    torch.save(to_hub_format(load_run_data(run_path)), buf)
    return buf.getvalue()
