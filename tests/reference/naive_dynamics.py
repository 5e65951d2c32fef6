"""The Section 3 progress measures computed the slow, obvious way: the test reference for
``dynamics.compute_dynamics`` (and the baseline of ``benchmarks/benchmark_dynamics.py``).

Everything a bug could hide in is written again here from the definitions (Nanda et al. 2023, arXiv
2301.05217), sharing no code with the engine it checks:

* the inputs, the labels of each task and the paper's train/test split (Python ``random.Random(seed)``
  shuffle of the row-major pairs, the first ``int(frac_train * p^2)`` are train);
* the Fourier basis (a few lines of ``cos``/``sin``), the ``cos/sin(w_k(x + y))`` directions, the 2D Fourier
  transform of each neuron and its 3x3 frequency blocks, each neuron's frequency;
* the float64 cross-entropy, the bias correction of restricted logits and the Gini coefficient (as a mean
  absolute difference, not the sorted-weights formula the engine uses).

Only the model and the loading of weights are shared: each checkpoint goes into a TransformerLens
``HookedTransformer`` (``model.make_model`` + ``layout.load_in_state_dict``; the parameter names are
``architecture.PAPER_TRAINABLE``) and ``run_with_cache`` runs on all ``p^2`` inputs.
The result is a ``dynamics.TrainingDynamics`` (the engine's result type), so the two compare field by field.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from part52_grokking_and_modular_arithmetic.analysis.dynamics import TrainingDynamics
from part52_grokking_and_modular_arithmetic.runs.architecture import PAPER_TRAINABLE
from part52_grokking_and_modular_arithmetic.runs.layout import load_in_state_dict
from part52_grokking_and_modular_arithmetic.runs.model import make_model

#: The paper model's parameters, in the order of ``TrainingDynamics.param_names``.
PAPER_PARAMETERS = PAPER_TRAINABLE

# --------------------------------------------------------------------------------------------------------
# Data: inputs, labels, split
# --------------------------------------------------------------------------------------------------------


def all_inputs(p: int) -> Tensor:
    """``(p^2, 3)`` rows ``[x, y, =]`` with ``=`` the token ``p``, row ``x * p + y``."""
    return torch.tensor([[x, y, p] for x in range(p) for y in range(p)], dtype=torch.long)


def labels_for(p: int, fn: str = "add", seed: int = 0) -> Tensor:
    """``(p^2,)`` the answer of task ``fn`` for every input, row ``x * p + y``.

    ``add``: (x + y) mod p; ``subtract``: (x - y) mod p; ``x2xyy2``: (x^2 + xy + y^2) mod p; ``rand``: the
    table ``numpy.random.default_rng(seed).integers(0, p, size=(p, p))`` read at ``[x, y]``.
    """
    if fn == "rand":
        table = np.random.default_rng(seed).integers(0, p, size=(p, p))
        return torch.tensor([int(table[x, y]) for x in range(p) for y in range(p)], dtype=torch.long)
    rules = {
        "add": lambda x, y: (x + y) % p,
        "subtract": lambda x, y: (x - y) % p,
        "x2xyy2": lambda x, y: (x * x + x * y + y * y) % p,
    }
    if fn not in rules:
        raise ValueError(f"unknown task {fn!r}; the reference knows {sorted(rules) + ['rand']}")
    return torch.tensor([rules[fn](x, y) for x in range(p) for y in range(p)], dtype=torch.long)


def paper_split(p: int, frac_train: float = 0.3, seed: int = 0) -> Tensor:
    """The paper's train indices (into the row-major inputs): shuffle the pairs ``(x, y)`` listed row-major with
    ``random.Random(seed)`` and keep the first ``int(frac_train * p^2)``."""
    pairs = [(x, y) for x in range(p) for y in range(p)]
    random.Random(seed).shuffle(pairs)
    return torch.tensor([x * p + y for x, y in pairs[: int(frac_train * p * p)]], dtype=torch.long)


def _config_value(config: Any, name: str, default: Any) -> Any:
    """``config[name]`` for a dict, ``config.name`` for a config object, ``default`` when absent."""
    if config is None:
        return default
    if isinstance(config, Mapping):
        return config.get(name, default)
    return getattr(config, name, default)


def run_split_and_labels(run_data: Mapping, p: int) -> tuple[Tensor, Tensor]:
    """``(is_train (p^2,) bool, labels (p^2,))`` of a run: its stored ``train_indices`` if any, else the paper
    split from its config (``frac_train`` 0.3, ``seed`` 0 when absent, as in the paper's released run); the
    task and the ``rand`` table's seed from the config (``add`` / 0 when absent)."""
    config = run_data.get("config") if hasattr(run_data, "get") else None
    fn = str(_config_value(config, "fn", "add"))
    seed = int(_config_value(config, "seed", 0))
    if "train_indices" in run_data:
        train = torch.as_tensor(run_data["train_indices"]).long()
    else:
        train = paper_split(p, float(_config_value(config, "frac_train", 0.3)), seed)
    is_train = torch.zeros(p * p, dtype=torch.bool)
    is_train[train] = True
    return is_train, labels_for(p, fn, seed)


# --------------------------------------------------------------------------------------------------------
# Fourier basis, directions, losses, Gini
# --------------------------------------------------------------------------------------------------------


def fourier_rows(p: int) -> Tensor:
    """``(p, p)`` float64 orthonormal basis of R^p as rows: constant, then ``cos(w_k x)``, ``sin(w_k x)`` for
    ``k = 1 .. (p-1)/2``, ``w_k = 2 pi k / p``."""
    x = torch.arange(p, dtype=torch.float64)
    rows = [torch.full((p,), 1 / math.sqrt(p), dtype=torch.float64)]
    for k in range(1, (p - 1) // 2 + 1):
        rows.append(torch.cos(2 * math.pi * k * x / p) * math.sqrt(2 / p))
        rows.append(torch.sin(2 * math.pi * k * x / p) * math.sqrt(2 / p))
    return torch.stack(rows)


def trig_directions(key_freqs: Sequence[int], p: int) -> Tensor:
    """``(2 K, p^2)`` float64 unit vectors ``cos(w_k(x + y))``, ``sin(w_k(x + y))`` over the inputs (row
    ``x * p + y``) for each key frequency in turn; orthonormal for distinct ``k``."""
    s = torch.tensor([x + y for x in range(p) for y in range(p)], dtype=torch.float64)
    rows = []
    for k in key_freqs:
        for trig in (torch.cos, torch.sin):
            v = trig(2 * math.pi * k * s / p)
            rows.append(v / v.norm())
    return torch.stack(rows)


def project(x: Tensor, directions: Tensor) -> Tensor:
    """Projection of the columns of ``x`` (batch axis first) onto the span of orthonormal ``directions``."""
    return directions.T @ (directions @ x)


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy with a float64 log-softmax."""
    return -logits.double().log_softmax(-1)[torch.arange(len(labels)), labels].mean()


def gini_by_differences(values: Tensor) -> Tensor:
    """Gini coefficient of non-negative vectors along the last dim: ``sum_ij |c_i - c_j| / (2 N sum c)``.

    (Equal to Hurley & Rickard's sorted-weights form ``1 - 2 sum_k (c_k / |c|_1)(N - k + 1/2) / N``.)"""
    n = values.shape[-1]
    diffs = (values[..., :, None] - values[..., None, :]).abs().sum((-1, -2))
    return diffs / (2 * n * values.sum(-1))


# --------------------------------------------------------------------------------------------------------
# One checkpoint
# --------------------------------------------------------------------------------------------------------


def checkpoint_metrics(
    model, inputs: Tensor, is_train: Tensor, labels: Tensor, key_freqs: Sequence[int], neuron_freqs: Tensor | None
) -> dict[str, Tensor]:
    """Every per-checkpoint metric of ``model`` (float64 tensors, ``neuron_best_freq`` long)."""
    p = int(inputs[0, 2])
    F = fourier_rows(p)
    M = trig_directions(key_freqs, p)
    logits_all, cache = model.run_with_cache(inputs)
    logits = logits_all[:, -1, :p].double()  # the `=` logit dropped
    pre = cache["blocks.0.mlp.hook_pre"][:, -1].double()  # (p^2, d_mlp)
    post = cache["blocks.0.mlp.hook_post"][:, -1].double()
    pattern = cache["blocks.0.attn.hook_pattern"][:, :, -1, :].double()  # (p^2, n_heads, 3): from `=`
    train, test = is_train, ~is_train
    out: dict[str, Tensor] = {}

    out["train_loss"] = cross_entropy(logits[train], labels[train])
    out["test_loss"] = cross_entropy(logits[test], labels[test])
    out["all_loss"] = cross_entropy(logits, labels)
    excluded = []
    for j in range(len(key_freqs)):
        removed = logits - project(logits, M[2 * j : 2 * j + 2])
        excluded.append(cross_entropy(removed[train], labels[train]))
    out["excluded_loss"] = torch.stack(excluded)
    removed_all = logits - project(logits, M)
    out["excluded_loss_all_keys"] = cross_entropy(removed_all[train], labels[train])
    restricted = project(logits, M)
    restricted = restricted + (logits - restricted).mean(0, keepdim=True)  # bias correction
    out["restricted_loss"] = cross_entropy(restricted, labels)
    out["restricted_loss_train"] = cross_entropy(restricted[train], labels[train])
    out["restricted_loss_test"] = cross_entropy(restricted[test], labels[test])

    for name, acts in (("trig_frac_pre", pre), ("trig_frac_post", post), ("trig_frac_logits", logits)):
        centred = acts - acts.mean(0)
        out[name] = project(centred, M).pow(2).sum() / centred.pow(2).sum()

    # each neuron's 2D Fourier transform and the share of its 3x3 block {const, cos k, sin k}^2 per frequency
    grid = (post - post.mean(0)).reshape(p, p, -1)
    coefs = (F @ grid.permute(2, 0, 1) @ F.T).permute(1, 2, 0)  # [i, j, n] = sum_xy F[i, x] F[j, y] grid[x, y, n]
    total = coefs.pow(2).sum((0, 1))
    n_freqs = (p - 1) // 2
    fracs = []
    for k in range(1, n_freqs + 1):
        idx = torch.tensor([0, 2 * k - 1, 2 * k])
        block = coefs[idx][:, idx].pow(2).sum((0, 1))
        fracs.append(torch.where(total > 0, block / total.clamp_min(1e-300), torch.zeros_like(block)))
    fracs = torch.stack(fracs)  # (n_freqs, d_mlp)
    frac_best, best = fracs.max(0)
    out["neuron_best_freq"], out["neuron_frac_best_freq"] = best + 1, frac_best
    if neuron_freqs is not None:
        out["neuron_frac_final_freq"] = fracs[neuron_freqs - 1, torch.arange(fracs.shape[1])]
    out["neuron_fire_frac"] = (post > 0).double().mean(0)
    out["attention_to_pos"] = pattern.mean(0)

    W_E = model.W_E.detach().double()[:p]  # the `=` row dropped
    W_logit = model.W_out[0].detach().double() @ model.W_U.detach().double()[:, :p]
    out["fourier_embed"] = (F @ W_E).pow(2).sum(-1)
    out["fourier_logit"] = (W_logit @ F.T).pow(2).sum(0)
    out["embed_singular_values"] = torch.linalg.svdvals(W_E)
    params = dict(model.named_parameters())
    out["sum_sq_weights"] = torch.stack([params[name].detach().double().pow(2).sum() for name in PAPER_PARAMETERS])
    return out


def _per_frequency(values: Tensor) -> Tensor:
    """``(..., p)`` -> ``(..., (p-1)/2)``: the cos entry plus the sin entry of each frequency."""
    return values[..., 1::2] + values[..., 2::2]


# --------------------------------------------------------------------------------------------------------
# A whole run
# --------------------------------------------------------------------------------------------------------


def compute_dynamics_naive(
    run_data: Mapping | str | os.PathLike,
    key_freqs: Sequence[int] | Tensor,
    *,
    neuron_freqs: Tensor | None = None,
    final_checkpoint: int = -1,
    stride: int = 1,
    progress: bool = False,
) -> TrainingDynamics:
    """The metrics of ``dynamics.compute_dynamics`` for every ``stride``-th checkpoint of a run, one
    ``run_with_cache`` per checkpoint. ``neuron_freqs`` default: each neuron's best frequency in checkpoint
    ``final_checkpoint``. ``progress`` is accepted for symmetry with the engine and ignored. No cache."""
    if isinstance(run_data, (str, os.PathLike)):
        run_data = torch.load(run_data, map_location="cpu", weights_only=True)
    state_dicts = run_data["state_dicts"]
    p = int(state_dicts[0]["unembed.W_U"].shape[1]) - 1  # W_U is (d_model, p + 1) in both layouts
    key_freqs = [int(k) for k in key_freqs]
    if not key_freqs or len(set(key_freqs)) != len(key_freqs) or not all(1 <= k <= (p - 1) // 2 for k in key_freqs):
        raise ValueError(f"key_freqs must be distinct frequencies in 1..{(p - 1) // 2}, got {key_freqs}")
    is_train, labels = run_split_and_labels(run_data, p)
    inputs = all_inputs(p)
    indices = list(range(0, len(state_dicts), stride))
    if not -len(state_dicts) <= final_checkpoint < len(state_dicts):
        raise IndexError(f"final_checkpoint {final_checkpoint} is out of range for {len(state_dicts)} checkpoints")
    final = final_checkpoint % len(state_dicts)
    model = make_model(p, seed=0)
    model.eval()
    rows = []
    with torch.inference_mode():
        if neuron_freqs is None:
            load_in_state_dict(model, state_dicts[final])
            neuron_freqs = checkpoint_metrics(model, inputs, is_train, labels, key_freqs, None)["neuron_best_freq"]
        neuron_freqs = torch.as_tensor(neuron_freqs).long()
        for i in indices:
            load_in_state_dict(model, state_dicts[i])
            rows.append(checkpoint_metrics(model, inputs, is_train, labels, key_freqs, neuron_freqs))
    m = {name: torch.stack([row[name] for row in rows]) for name in rows[0]}
    fourier_embed_per_freq = _per_frequency(m["fourier_embed"])
    return TrainingDynamics(
        epochs=torch.tensor([int(run_data["epochs"][i]) for i in indices], dtype=torch.long),
        p=p,
        key_freqs=key_freqs,
        neuron_freqs=neuron_freqs,
        restricted_loss_ratio=m["restricted_loss_test"] / m["test_loss"],
        fourier_embed_per_freq=fourier_embed_per_freq,
        gini_embed=gini_by_differences(fourier_embed_per_freq.sqrt()),
        gini_logit=gini_by_differences(_per_frequency(m["fourier_logit"]).sqrt()),
        param_names=list(PAPER_PARAMETERS),
        total_sum_sq_weights=m["sum_sq_weights"].sum(-1),
        **m,
    )
