"""Progress measures over every checkpoint of a training run (course Section 3), computed fast and cached.

Instead of one ``run_with_cache`` per checkpoint, :func:`compute_dynamics` stacks a chunk of checkpoints and
computes only what the metrics need: the last position's activations (:mod:`..training.last_position`), and each
neuron's 3x3 Fourier blocks from four marginal sums (over ``y``, over ``x``, along ``x + y`` and ``x - y``:
the ``{cos k, sin k}^2`` part spans ``cos/sin(w_k(x +- y))``), ``O(p^2 d_mlp)`` instead of a full ``fft2d``.
Checked against ``tests/reference/naive_dynamics.py``. With ``cache=True`` the result is kept in
:func:`cache_dir` under a digest of everything it depends on (an unwritable cache only warns). Usage::

    dyn = compute_dynamics(run_data, key_freqs, cache=True)
    dyn.epochs, dyn.test_loss, dyn.excluded_loss[:, 0], dyn.gini_embed, dyn.attention_to_pos[:, head, 0]
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from ..runs.checkpoints import CorruptCheckpointError, atomic_save, safe_load
from ..runs.layout import PAPER_KEYS, paper_to_transformer_lens
from ..runs.run_data import RunData, as_run_data
from ..training import last_position
from ..training.losses import bias_correct, cross_entropy_high_precision
from .fourier import (
    check_frequencies,
    fft1d,
    fft1d_given_dim,
    frequency_block_indices,
    n_frequencies,
    per_frequency,
    trig_directions_matrix,
)

__all__ = ["ENV_CACHE_DIR", "TrainingDynamics", "cache_dir", "compute_dynamics", "gini"]

#: Bump when a metric's definition changes: old caches are then recomputed.
_METRIC_VERSION = 1
#: The environment variable that names the cache folder (see :func:`cache_dir`).
ENV_CACHE_DIR = "PART52_CACHE_DIR"


@dataclass(frozen=True)
class TrainingDynamics:
    """Metrics of every analysed checkpoint; first axis = checkpoint (``n_ckpt``), in the run's order.

    Losses are float64 mean cross-entropies over the ``p`` number logits (``=`` dropped, so slightly below the
    logged loss near initialisation). Losses, fractions, attention and sums of squares are float64; Fourier
    norms, Gini coefficients and singular values are in the compute ``dtype``; epochs and frequencies int64.

    Attributes:
        epochs: ``(n_ckpt,)`` epoch of each checkpoint (the x-axis of every plot).
        p: the modulus (inferred from the weights).
        key_freqs: the key frequencies (fixed from the final model) used by the trig metrics.
        neuron_freqs: ``(d_mlp,)`` each neuron's frequency (best 3x3 block in the final model, or as passed).
        train_loss, test_loss, all_loss: ``(n_ckpt,)`` loss on the train / test / all pairs.
        excluded_loss: ``(n_ckpt, n_keys)`` train loss without the logits' ``cos/sin(w_k(x+y))`` part of each key
            frequency (columns in ``key_freqs`` order); no bias correction.
        excluded_loss_all_keys: ``(n_ckpt,)`` the same with every key frequency removed at once.
        restricted_loss, restricted_loss_train, restricted_loss_test: ``(n_ckpt,)`` loss of the logits restricted
            to the key ``cos/sin(w_k(x+y))`` directions, bias-corrected, on all / train / test pairs.
        restricted_loss_ratio: ``(n_ckpt,)`` ``restricted_loss_test / test_loss`` (both on the test pairs).
        fourier_embed: ``(n_ckpt, p)`` ``(F @ W_E[:-1]).pow(2).sum(-1)`` (``=`` row dropped).
        fourier_embed_per_freq: ``(n_ckpt, n_freqs)`` cos + sin squared norms of frequency ``k = 1..n_freqs``.
        fourier_logit: ``(n_ckpt, p)`` the same for ``W_logit = W_out @ W_U`` (``=`` column dropped) along its
            output dimension.
        gini_embed, gini_logit: ``(n_ckpt,)`` :func:`gini` of the per-frequency norms (``sqrt`` of cos + sin,
            constant left out) of ``W_E`` and ``W_logit``.
        embed_singular_values: ``(n_ckpt, min(p, d_model))`` singular values of ``W_E`` without the ``=`` row.
        trig_frac_pre, trig_frac_post, trig_frac_logits: ``(n_ckpt,)`` fraction of the centred variance (all
            ``p^2`` inputs) of the neuron pre-/post-activations and logits in the key ``cos/sin(w_k(x+y))`` span.
        neuron_frac_final_freq: ``(n_ckpt, d_mlp)`` fraction of each neuron's centred post-activation inside
            the 3x3 Fourier block of its ``neuron_freqs``.
        neuron_best_freq, neuron_frac_best_freq: ``(n_ckpt, d_mlp)`` the frequency whose block explains most of
            the neuron at that checkpoint, and that fraction. A neuron that never varies gets fraction 0.
        neuron_fire_frac: ``(n_ckpt, d_mlp)`` fraction of the ``p^2`` inputs on which the neuron fires (> 0).
        attention_to_pos: ``(n_ckpt, n_heads, 3)`` mean attention from ``=`` to positions 0, 1, 2.
        param_names: names of the weights in ``sum_sq_weights`` (the paper model's 11 parameters).
        sum_sq_weights: ``(n_ckpt, n_params)`` sum of squared weights per parameter.
        total_sum_sq_weights: ``(n_ckpt,)`` their total.
    """

    epochs: Int[Tensor, "n_ckpt"]
    p: int
    key_freqs: list[int]
    neuron_freqs: Int[Tensor, "d_mlp"]
    train_loss: Float[Tensor, "n_ckpt"]
    test_loss: Float[Tensor, "n_ckpt"]
    all_loss: Float[Tensor, "n_ckpt"]
    excluded_loss: Float[Tensor, "n_ckpt n_keys"]
    excluded_loss_all_keys: Float[Tensor, "n_ckpt"]
    restricted_loss: Float[Tensor, "n_ckpt"]
    restricted_loss_train: Float[Tensor, "n_ckpt"]
    restricted_loss_test: Float[Tensor, "n_ckpt"]
    restricted_loss_ratio: Float[Tensor, "n_ckpt"]
    fourier_embed: Float[Tensor, "n_ckpt p"]
    fourier_embed_per_freq: Float[Tensor, "n_ckpt n_freqs"]
    fourier_logit: Float[Tensor, "n_ckpt p"]
    gini_embed: Float[Tensor, "n_ckpt"]
    gini_logit: Float[Tensor, "n_ckpt"]
    embed_singular_values: Float[Tensor, "n_ckpt n_sv"]
    trig_frac_pre: Float[Tensor, "n_ckpt"]
    trig_frac_post: Float[Tensor, "n_ckpt"]
    trig_frac_logits: Float[Tensor, "n_ckpt"]
    neuron_frac_final_freq: Float[Tensor, "n_ckpt d_mlp"]
    neuron_best_freq: Int[Tensor, "n_ckpt d_mlp"]
    neuron_frac_best_freq: Float[Tensor, "n_ckpt d_mlp"]
    neuron_fire_frac: Float[Tensor, "n_ckpt d_mlp"]
    attention_to_pos: Float[Tensor, "n_ckpt n_heads 3"]
    param_names: list[str]
    sum_sq_weights: Float[Tensor, "n_ckpt n_params"]
    total_sum_sq_weights: Float[Tensor, "n_ckpt"]

    def __len__(self) -> int:
        return int(self.epochs.shape[0])

    def to_dict(self) -> dict[str, Any]:
        """Plain tensors, ints, lists: saveable and loadable with ``weights_only=True``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainingDynamics":
        missing = {f.name for f in dataclasses.fields(cls)} - set(d)
        if missing:
            raise KeyError(f"training-dynamics dict lacks {sorted(missing)}")
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls)})


def gini(values: Float[Tensor, "*batch n"]) -> Float[Tensor, "*batch"]:
    """Gini coefficient (Hurley & Rickard) of non-negative vectors along the last dimension (values' dtype).

    For sorted ``c_1 <= ... <= c_N``: ``G = 1 - 2 * sum_k (c_k / ||c||_1) * (N - k + 1/2) / N``.
    All equal -> 0; a single non-zero entry -> ``1 - 1/N``. An all-zero vector gives NaN (undefined).
    """
    if (values < 0).any():
        raise ValueError("gini expects non-negative values (norms)")
    n = values.shape[-1]
    c, _ = values.sort(dim=-1)
    k = torch.arange(1, n + 1, dtype=c.dtype, device=c.device)
    return 1 - 2 * (c / c.sum(-1, keepdim=True) * (n - k + 0.5) / n).sum(-1)


def _fourier_norm_gini(sq_norms: Float[Tensor, "*batch p"]) -> Float[Tensor, "*batch"]:
    return gini(per_frequency(sq_norms).clamp_min(0).sqrt())


def _safe_ratio(num: Tensor, den: Tensor) -> Tensor:
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), torch.zeros_like(num))


class _RunSetup(NamedTuple):
    p: int
    labels: Tensor
    train_indices: Tensor
    test_indices: Tensor
    indices: list[int]
    epochs: Tensor
    fn: str
    fn_seed: int


def _setup(run: RunData, stride: int) -> _RunSetup:
    """Labels and split are the run's own (:attr:`RunData.split`: its recipe, stored or inferred)."""
    if stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride}")
    split = run.split
    if bool(split.is_train.all()):
        raise ValueError("the split has no test pairs")
    indices = list(range(0, len(run.state_dicts), stride))
    epochs = torch.as_tensor([run.epochs[i] for i in indices], dtype=torch.long)
    test_indices = split.is_test.nonzero().flatten()  # ascending, as the engine has always summed them
    return _RunSetup(
        run.p, split.labels, split.train_indices, test_indices, indices, epochs, run.config.fn, run.config.seed
    )


# ---- Cache ---------------------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """``$PART52_CACHE_DIR`` when set, else ``part52_grokking_and_modular_arithmetic`` in ``$XDG_CACHE_HOME`` or
    ``~/.cache``: the folder for cached results (created when first written)."""
    if os.environ.get(ENV_CACHE_DIR):
        return Path(os.environ[ENV_CACHE_DIR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "part52_grokking_and_modular_arithmetic"


def _weights_digest(state_dict: Mapping[str, Tensor]) -> str:
    h = hashlib.sha1(usedforsecurity=False)
    for name in PAPER_KEYS:
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        if t.numel():
            h.update(memoryview(t.view(torch.uint8).numpy()))
    return h.hexdigest()


_SAME_WEIGHTS_NOTE = (
    "all {n} analysed checkpoints hold the same weights (epochs {first}-{last}): this file is one model (e.g. a "
    "released final model), not a training history, so every progress measure is flat. To see the training "
    "dynamics, use a run file with the checkpoint history (the course's hub file, or train one with "
    "`python -m part52_grokking_and_modular_arithmetic train`)."
)


def _cache_key(setup: _RunSetup, digests: dict[int, str], final_index: int, **options: Any) -> str:
    """A digest of everything the result depends on (``options``: JSON values)."""
    parts = {
        "version": _METRIC_VERSION,
        "epochs": setup.epochs.tolist(),
        "weights": [digests[i] for i in setup.indices],
        "final_checkpoint": digests[final_index],
        "train_indices": hashlib.sha256(setup.train_indices.sort().values.numpy().tobytes()).hexdigest(),
        "fn": [setup.fn, setup.fn_seed],
        **options,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _read_cache(path: Path, key: str) -> TrainingDynamics | None:
    try:
        if not path.is_file():
            return None
        blob = safe_load(path)
    except (CorruptCheckpointError, OSError) as e:
        warnings.warn(f"ignoring unreadable dynamics cache {path} ({e}); recomputing", stacklevel=3)
        return None
    if not isinstance(blob, Mapping) or blob.get("key") != key:
        return None
    try:
        return TrainingDynamics.from_dict(blob["metrics"])
    except (KeyError, TypeError) as e:
        warnings.warn(f"ignoring dynamics cache {path} in an old format ({e}); recomputing", stacklevel=3)
        return None


def _write_cache(path: Path, key: str, result: TrainingDynamics) -> None:
    """Write the cache atomically; a failure warns in one line and is not raised."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save({"key": key, "metric_version": _METRIC_VERSION, "metrics": result.to_dict()}, path)
    except (OSError, RuntimeError) as e:
        warnings.warn(
            f"could not write the dynamics cache {path} ({' '.join(str(e).split())}); the result is returned "
            f"but will be recomputed next time: set {ENV_CACHE_DIR} or pass cache=<a writable folder>",
            stacklevel=3,
        )


# ---- Batched engine ------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _diagonal_index(p: int) -> tuple[Tensor, Tensor]:
    """For each flattened ``[x, y]`` grid position (``x * p + y``): ``(x + y) mod p`` and ``(x - y) mod p``."""
    x = torch.arange(p)
    return ((x[:, None] + x[None, :]) % p).flatten(), ((x[:, None] - x[None, :]) % p).flatten()


def _diagonal_sums(grid: Float[Tensor, "C p p n"], *, diffs: bool = True) -> list[Float[Tensor, "C p n"]]:
    """Sums of each ``[x, y]`` grid along ``x + y = s (mod p)`` and (``diffs``) along ``x - y = d (mod p)``."""
    C, p, _, n = grid.shape
    flat = grid.reshape(C, p * p, n)
    indices = _diagonal_index(p)[: 2 if diffs else 1]
    return [grid.new_zeros(C, p, n).index_add_(1, index.to(grid.device), flat) for index in indices]


def _fourier_of_marginal(marginal: Float[Tensor, "C p n"]) -> Float[Tensor, "C n p"]:
    """1D Fourier coefficients of a marginal sum, divided by ``sqrt p``, as float64 ``(C, n, p)``: the 2D
    coefficients of ``F[i] (x) F[0]`` (sum over y), ``F[0] (x) F[j]`` (sum over x), and of the unit directions
    ``cos/sin(w_k(x +- y))`` (``[2k-1]``/``[2k]`` of the sums along ``x +- y``), which span the 2x2 block of k.
    """
    p = marginal.shape[1]
    return fft1d(marginal.transpose(1, 2).double()) / math.sqrt(p)


def _trig_sum_energy(sums_fourier: Float[Tensor, "C n p"], key_freqs: list[int]) -> Float[Tensor, "C"]:
    """Squared norm of the projection onto the key frequencies' cos/sin(w(x+y)) directions."""
    idx = [i for k in key_freqs for i in frequency_block_indices(k)[1:]]
    return sums_fourier[..., idx].pow(2).sum((-1, -2))


def _centre_(grid: Float[Tensor, "C p p n"]) -> Float[Tensor, "C p p n"]:
    """Subtract, in place, each column's mean over the ``p^2`` inputs; returns ``grid``."""
    return grid.sub_(grid.mean((1, 2), keepdim=True))


def _centred_energy(grid: Float[Tensor, "C p p n"]) -> Float[Tensor, "C"]:
    """``sum_{x, y, n} (grid - mean over (x, y))^2`` per checkpoint (float64 result; ``grid`` is not changed)."""
    centred = _centre_(grid.clone())
    return torch.stack([torch.dot(c, c) for c in centred.view(grid.shape[0], -1)]).double()


def _neuron_block_fractions(
    centred: Float[Tensor, "C p p d_mlp"],
) -> tuple[Float[Tensor, "C n_freqs d_mlp"], Float[Tensor, "C d_mlp p"], Float[Tensor, "C d_mlp"]]:
    """Fraction of each neuron's centred activations inside the 3x3 Fourier block of every frequency ``k``
    (0 for a constant neuron), from four marginal sums. Returns ``(fractions, fourier of the x + y sums,
    each neuron's float64 sum of squares)``."""
    rows, cols, sums, diffs = (
        _fourier_of_marginal(m) for m in (centred.sum(2), centred.sum(1), *_diagonal_sums(centred))
    )
    total = (centred * centred).sum((1, 2)).double()  # (C, n): the sum over all 2D coefficients (Parseval)
    # coef[0, 0] and, per frequency, coef[0, cos k], coef[0, sin k], coef[cos k, 0], coef[sin k, 0], then the 2x2 part
    energy = cols[..., :1].pow(2) + per_frequency(cols.pow(2) + rows.pow(2) + sums.pow(2) + diffs.pow(2))
    return _safe_ratio(energy, total[..., None]).clamp(0, 1).transpose(1, 2), sums, total


@functools.lru_cache(maxsize=4)
def _trig_matrix(key_freqs: tuple[int, ...], p: int) -> Tensor:
    return trig_directions_matrix(key_freqs, p)


def _chunk_metrics(
    state_dicts: Sequence[Mapping[str, Tensor]],
    setup: _RunSetup,
    key_freqs: list[int],
    neuron_freqs: Tensor | None,
    device: torch.device,
    dtype: torch.dtype,
) -> dict[str, Tensor]:
    """All per-checkpoint metrics of one chunk (every value ``(C, ...)``, on the CPU); ``neuron_frac_final_freq``
    only with ``neuron_freqs``."""
    p, C = setup.p, len(state_dicts)
    w = last_position.stack_weights([paper_to_transformer_lens(sd) for sd in state_dicts], device, dtype)
    pairs = last_position.Pairs.all_pairs(p, C, device=w["embed.W_E"].device)
    lp = last_position.forward(w, pairs, n_out=p)  # the `=` class dropped
    pattern = lp.pattern.view(C, p, p, -1, 3).permute(0, 3, 1, 2, 4)  # (C, head, x, y, key position)
    pre, direct, W_logit = lp.pre.view(C, p, p, -1), lp.direct.view(C, p, p, p), lp.w_logit
    d_mlp = pre.shape[-1]
    del lp
    out: dict[str, Tensor] = {}

    # activations: trig-direction fractions, neuron blocks, attention
    pre_sums = _fourier_of_marginal(_diagonal_sums(pre, diffs=False)[0])
    out["trig_frac_pre"] = _safe_ratio(_trig_sum_energy(pre_sums, key_freqs), _centred_energy(pre))
    post = pre.relu_()  # pre is not used after this line
    del pre
    out["neuron_fire_frac"] = post.sign().sum((1, 2)).double() / (p * p)
    logits = direct.add_(torch.bmm(post.reshape(C, p * p, d_mlp), W_logit).view(C, p, p, p))  # (C, x, y, z)
    del direct
    centred = _centre_(post)  # post is not used after this line
    del post
    fracs, post_sums, post_energy = _neuron_block_fractions(centred)  # fracs: (C, n_freqs, d_mlp)
    del centred
    out["trig_frac_post"] = _safe_ratio(_trig_sum_energy(post_sums, key_freqs), post_energy.sum(-1))
    frac_best, best = fracs.max(dim=1)
    out["neuron_best_freq"], out["neuron_frac_best_freq"] = best + 1, frac_best
    if neuron_freqs is not None:
        index = (neuron_freqs.to(fracs.device) - 1)[None, None, :].expand(C, 1, d_mlp)
        out["neuron_frac_final_freq"] = fracs.gather(1, index)[:, 0]
    out["attention_to_pos"] = pattern.double().mean((2, 3))
    del pattern

    # logits: trig fraction, losses, excluded and restricted losses
    M = _trig_matrix(tuple(key_freqs), p).to(device=device, dtype=dtype)  # (2K, p^2), orthonormal rows
    coefs = torch.einsum("dq,cqz->cdz", M, logits.reshape(C, p * p, p))  # (C, 2K, p)
    out["trig_frac_logits"] = _safe_ratio(coefs.double().pow(2).sum((1, 2)), _centred_energy(logits))
    logits = logits.reshape(C, p * p, p)
    train_idx = setup.train_indices.to(device)
    test_idx = setup.test_indices.to(device)
    labels = setup.labels.to(device)
    y_train, y_test = labels[train_idx], labels[test_idx]
    n_train, n_test = len(train_idx), len(test_idx)
    M_train = M[:, train_idx]  # (2K, n_train)
    L_train_all, L_test_all = logits[:, train_idx], logits[:, test_idx]
    vals: dict[str, list[Tensor]] = collections.defaultdict(list)

    def add(name: str, train: Tensor, test: Tensor) -> None:  # the train and test losses, and their mean on all
        vals[name + "_train"].append(train)
        vals[name + "_test"].append(test)
        vals[name].append((n_train * train + n_test * test) / (n_train + n_test))

    for c in range(C):
        L_train, L_test = L_train_all[c], L_test_all[c]
        add("loss", cross_entropy_high_precision(L_train, y_train), cross_entropy_high_precision(L_test, y_test))
        excl = []
        for j in range(len(key_freqs)):
            proj = M_train[2 * j : 2 * j + 2].T @ coefs[c, 2 * j : 2 * j + 2]  # (n_train, p)
            excl.append(cross_entropy_high_precision(L_train - proj, y_train))
        vals["excluded_loss"].append(torch.stack(excl))
        vals["excluded_loss_all_keys"].append(cross_entropy_high_precision(L_train - M_train.T @ coefs[c], y_train))
        restricted = bias_correct(M.T @ coefs[c], logits[c])  # (p^2, p)
        restricted_train = cross_entropy_high_precision(restricted[train_idx], y_train)
        add("restricted_loss", restricted_train, cross_entropy_high_precision(restricted[test_idx], y_test))
    del logits, L_train_all, L_test_all
    out.update({k: torch.stack(v) for k, v in vals.items()})
    out["train_loss"], out["test_loss"], out["all_loss"] = out.pop("loss_train"), out.pop("loss_test"), out.pop("loss")

    # weights: Fourier norms, singular values, sums of squares
    W_E = w["embed.W_E"][:, :p]  # (C, p, d_model): `=` row dropped
    out["fourier_embed"] = fft1d_given_dim(W_E, 1).pow(2).sum(-1)
    out["fourier_logit"] = fft1d(W_logit).pow(2).sum(1)
    out["embed_singular_values"] = torch.linalg.svdvals(W_E)
    out["sum_sq_weights"] = torch.stack(
        [torch.stack([sd[name].detach().double().pow(2).sum() for name in PAPER_KEYS]) for sd in state_dicts]
    )
    return {k: v.cpu() for k, v in out.items()}


def compute_dynamics(
    run_data: RunData | Mapping | str | os.PathLike,
    key_freqs: Sequence[int] | Tensor,
    *,
    cache: bool | str | os.PathLike = False,
    neuron_freqs: Int[Tensor, "d_mlp"] | None = None,
    final_checkpoint: int = -1,
    stride: int = 1,
    chunk_size: int | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> TrainingDynamics:
    """Every Section-3 progress measure for the checkpoints of a run, as a :class:`TrainingDynamics` (CPU).

    Args:
        run_data: a :class:`~..runs.run_data.RunData`, a run-data dict or the path of a run file.
        key_freqs: the key frequencies, fixed once from the final (analysed) model.
        cache: ``True``: read from / write (atomically) to :func:`cache_dir`; a folder: there; ``False``: none.
            An unwritable cache warns in one line and the result is still returned.
        neuron_freqs: ``(d_mlp,)`` each neuron's frequency (1-based); default: each neuron's best 3x3 block in
            checkpoint ``final_checkpoint`` (an index, default the last; the course's model is 400 of the hub file).
        stride: analyse every ``stride``-th checkpoint (1 = all).
        chunk_size: checkpoints processed together (~100 MB each for p = 113); default 1 on a CPU (bigger
            temporaries only cost page faults), 32 on a GPU.
        device, dtype: where and in which precision activations are computed (losses are always float64).
        progress: show a ``tqdm`` bar (``True`` leaves it to tqdm, which honours ``TQDM_DISABLE=1``).

    Identical checkpoints are computed once; if all are identical (one model), a ``UserWarning`` says so.
    """
    run = as_run_data(run_data)
    setup = _setup(run, stride)
    p, state_dicts = setup.p, run.state_dicts
    key_freqs = check_frequencies(key_freqs, p)
    if not key_freqs or len(set(key_freqs)) != len(key_freqs):
        raise ValueError(f"key_freqs must name at least one frequency, without duplicates, got {key_freqs}")
    device = torch.device(device)
    if chunk_size is None:
        chunk_size = 1 if device.type == "cpu" else 32
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
    final_index = final_checkpoint + len(state_dicts) if final_checkpoint < 0 else final_checkpoint
    if not 0 <= final_index < len(state_dicts):
        raise IndexError(
            f"final_checkpoint {final_checkpoint} is out of range for a run of {len(state_dicts)} checkpoints"
        )
    if neuron_freqs is not None:
        neuron_freqs = torch.as_tensor(neuron_freqs).long()
        d_mlp = state_dicts[0]["blocks.0.mlp.b_in"].shape[0]
        if neuron_freqs.shape != (d_mlp,) or not ((neuron_freqs >= 1) & (neuron_freqs <= n_frequencies(p))).all():
            raise ValueError(f"neuron_freqs must be a ({d_mlp},) tensor of frequencies in 1..{n_frequencies(p)}")

    # Identical checkpoints (a file holding one model many times) are computed once: their curves are flat.
    digests = {i: _weights_digest(state_dicts[i]) for i in {*setup.indices, final_index}}
    groups: dict[str, int] = {}
    inverse = [groups.setdefault(digests[i], len(groups)) for i in setup.indices]
    distinct = [setup.indices[inverse.index(g)] for g in range(len(groups))]  # the first checkpoint of each group
    if len(distinct) == 1 and len(setup.indices) > 1:  # said on a cache hit too
        note = _SAME_WEIGHTS_NOTE.format(n=len(setup.indices), first=int(setup.epochs[0]), last=int(setup.epochs[-1]))
        warnings.warn(note, UserWarning, stacklevel=2)

    path = key = None
    if cache:
        frozen = None if neuron_freqs is None else neuron_freqs.tolist()
        key = _cache_key(setup, digests, final_index, key_freqs=key_freqs, neuron_freqs=frozen, dtype=str(dtype))
        path = (cache_dir() if cache is True else Path(cache).expanduser()) / f"dynamics-{key[:32]}.pt"
        cached = _read_cache(path, key)
        if cached is not None:
            return cached

    with torch.inference_mode():
        if neuron_freqs is None:
            final = _chunk_metrics([state_dicts[final_index]], setup, key_freqs, None, device, dtype)
            neuron_freqs = final["neuron_best_freq"][0]
        parts = []
        bar_options = {"desc": "training dynamics", "unit": "ckpt", **({} if progress else {"disable": True})}
        with tqdm(total=len(distinct), **bar_options) as bar:
            for start in range(0, len(distinct), chunk_size):
                chunk = [state_dicts[i] for i in distinct[start : start + chunk_size]]
                parts.append(_chunk_metrics(chunk, setup, key_freqs, neuron_freqs, device, dtype))
                bar.update(len(chunk))
        inverse = torch.tensor(inverse)  # one row per analysed checkpoint again
        cat = {k: torch.cat([part[k] for part in parts])[inverse] for k in parts[0]}

    sq = cat.pop("sum_sq_weights")
    result = TrainingDynamics(
        epochs=setup.epochs.clone(),
        p=p,
        key_freqs=key_freqs,
        neuron_freqs=neuron_freqs.cpu().long(),
        restricted_loss_ratio=cat["restricted_loss_test"] / cat["test_loss"],
        fourier_embed_per_freq=per_frequency(cat["fourier_embed"]),
        gini_embed=_fourier_norm_gini(cat["fourier_embed"]),
        gini_logit=_fourier_norm_gini(cat["fourier_logit"]),
        param_names=list(PAPER_KEYS),
        sum_sq_weights=sq,
        total_sum_sq_weights=sq.sum(-1),
        **cat,
    )
    if path is not None:
        _write_cache(path, key, result)
    return result
