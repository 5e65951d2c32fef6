"""The run object: a run file's content, parsed and checked once.

A run file (our trainer's, or the course's hub file) is a dict with the keys of :data:`FILE_KEYS`. Reading
one (:meth:`RunData.from_file`, :meth:`RunData.from_dict`, :func:`as_run_data`) checks it in one ordered pass
— structure, config, split, weights, indices, histories — and yields a :class:`RunData`, which every consumer
takes as it is. The hub file stores no config: its recipe is inferred (the paper's, Nanda et al. 2023, arXiv
2301.05217, with ``p`` and the intervals read from the file). A RunData also reads like the run-file dict it
wraps (``run["state_dicts"]``, ``run.get("config")``), read-only; ``run.model()`` is the analysed checkpoint.
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, get_args

import torch
from torch import Tensor

from .architecture import PAPER_TRAINABLE, parameter_shapes
from .checkpoints import CorruptCheckpointError, safe_load
from .config import ANALYSED_EPOCH, TrainConfig
from .data import Split
from .layout import PAPER_KEYS, is_paper_layout, load_in_state_dict, paper_shapes
from .model import make_model

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

__all__ = [
    "ANALYSED_EPOCH",
    "FILE_KEYS",
    "REQUIRED_KEYS",
    "RESUME_FORMAT_VERSION",
    "HUB_RECIPE",
    "SourceKind",
    "RunSource",
    "RunStatus",
    "RunData",
    "run_status",
    "as_run_data",
    "load_run_data",
    "validate_run_data",
    "infer_config",
    "analysed_index_of",
    "model_from_checkpoint",
]

#: The keys of a run file and what each holds: the file format's one description.
FILE_KEYS = {
    "state_dicts": "one paper-layout state dict per checkpoint",
    "epochs": "the epoch of each checkpoint, strictly increasing",
    "train_losses": "the train loss of every epoch",
    "test_losses": "the test loss every config.test_every epochs",
    "config": "our runs only: the recipe, TrainConfig.to_dict()",
    "train_indices": "our runs only: the train split as indices x * p + y, in the paper's shuffled order",
    "resume": "our runs only: the trainer's record (epochs_done, finished, diverged, state to continue)",
}
REQUIRED_KEYS = ("state_dicts", "epochs", "train_losses", "test_losses")
#: Newest version of the ``resume`` record this package reads (``resume["format"]``; written by ``train``).
RESUME_FORMAT_VERSION = 1
#: The recipe of the hub run: the paper's mainline, 50k epochs, a checkpoint every 100, a test loss every 10.
HUB_RECIPE: dict = dict(TrainConfig().to_dict(), epochs=50_000, save_every=100, test_every=10)

SourceKind = Literal["local", "hub-cache", "hub", "trained", "memory"]


@dataclass(frozen=True)
class RunSource:
    """Where a run came from: ``kind`` (``location``: the file; ``detail``: ``repo/filename`` for the hub, why
    for a trained run). ``str()`` is the sentence the course prints, e.g. ``"local file: PATH"``."""

    kind: SourceKind
    location: str = ""
    detail: str = ""

    def __post_init__(self) -> None:
        if self.kind not in get_args(SourceKind):
            raise ValueError(f"RunSource kind must be local, hub-cache, hub, trained or memory, got {self.kind!r}")

    def __str__(self) -> str:
        if self.kind == "local":
            return f"local file: {self.location}"
        if self.kind in ("hub-cache", "hub"):
            label = "hub file (cached)" if self.kind == "hub-cache" else "hub file (downloaded)"
            return f"{label}: {self.detail} at {self.location}"
        if self.kind == "trained":
            return f"trained locally: {self.location}" + (f" ({self.detail})" if self.detail else "")
        return "in memory" + (f": {self.detail}" if self.detail else "")


class RunStatus(NamedTuple):
    """Whether a run needs more training (a diverged one is never continued), with a one-line ``detail``."""

    state: Literal["finished", "unfinished", "diverged"]
    detail: str


def run_status(run: Mapping, config: TrainConfig | None = None) -> RunStatus:
    """The one decision whether a run (a RunData or a checked dict) is finished: by the trainer's ``resume`` record
    (and a requested ``config``'s length), else by the stored config; the hub file (no ``config``) is finished."""
    resume, stored = run.get("resume"), run.get("config")
    resume = resume if isinstance(resume, Mapping) else {}
    if resume.get("diverged"):
        return RunStatus("diverged", f"diverged at epoch {resume.get('diverged_at')} ({resume.get('diverged_loss')})")
    stored = stored if isinstance(stored, Mapping) else {}
    target = config.epochs if config is not None else stored.get("epochs")
    if "finished" in resume:
        done, early = int(resume.get("epochs_done", len(run["train_losses"]))), bool(resume.get("stopped_early"))
        finished = bool(resume["finished"]) and (early or config is None or done >= config.epochs)
    else:
        done, stop, tests = len(run["train_losses"]), stored.get("stop_at_test_loss"), run["test_losses"]
        early = stop is not None and len(tests) > 0 and float(tests[-1]) < float(stop)
        finished = target is None or done >= int(target) or early
    if finished:
        return RunStatus("finished", f"{done:,} epochs" + (" (stopped early)" if early else ""))
    return RunStatus("unfinished", f"{done:,} of {int(target):,} epochs done" if target else f"{done:,} epochs done")


def _p_of(state_dict: Mapping[str, Tensor]) -> int:
    """``p`` from a checkpoint in either layout: the vocabulary is ``p + 1`` (``=`` is token ``p``)."""
    w_e = state_dict["embed.W_E"]  # (d_model, d_vocab) in the paper layout, (d_vocab, d_model) in TransformerLens'
    return int(w_e.shape[1] if is_paper_layout(state_dict) else w_e.shape[0]) - 1


def infer_config(data: Mapping, p: int | None = None) -> TrainConfig:
    """The recipe of a run-file dict: its stored ``config``, else (the hub file) :data:`HUB_RECIPE` fitted to it."""
    if isinstance(data.get("config"), Mapping):
        return TrainConfig.from_dict(dict(data["config"]))
    n_epochs, n_test, epochs = len(data["train_losses"]), len(data["test_losses"]), list(data["epochs"])
    save_every = int(epochs[1]) - int(epochs[0]) if len(epochs) > 1 else n_epochs
    return TrainConfig.from_dict(
        dict(
            HUB_RECIPE,
            p=_p_of(data["state_dicts"][0]) if p is None else p,
            epochs=max(n_epochs, 1),
            save_every=max(save_every, 1),
            test_every=max(1, math.ceil(n_epochs / n_test)) if n_test else 1,
        )
    )


def analysed_index_of(epochs: list[int] | Tensor, epoch: int = ANALYSED_EPOCH) -> int:
    """Index of the checkpoint at ``epoch`` (default: the one the course analyses), else of the last one."""
    values = [int(e) for e in epochs]
    if not values:
        raise ValueError("the run holds no checkpoints")
    return values.index(epoch) if epoch in values else len(values) - 1


def model_from_checkpoint(
    state_dicts: list[Mapping[str, Tensor]], index: int, device: str | torch.device = "cpu"
) -> HookedTransformer:
    """Checkpoint ``index`` of ``state_dicts`` (either layout) as the paper's ``HookedTransformer``."""
    try:
        index = operator.index(index)  # ints, numpy and 0-d tensor integers
    except TypeError:
        raise TypeError(f"checkpoint index must be an integer, got {index!r}") from None
    if not -len(state_dicts) <= index < len(state_dicts):
        raise IndexError(f"checkpoint index {index} out of range: the run has {len(state_dicts)} checkpoints")
    state_dict = state_dicts[index]
    return load_in_state_dict(make_model(_p_of(state_dict), seed=None, device=device), state_dict)


# ---- the one pass of checks; each raises CorruptCheckpointError with one line starting with `where` ----
def _fail(where: str, what: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(f"{where}: {what}")


def _check_tensor(t: Any, shape: tuple[int, ...], what: str, where: str) -> None:
    if not isinstance(t, Tensor) or tuple(t.shape) != shape or not t.is_floating_point():
        got = f"{tuple(t.shape)} of {t.dtype}" if isinstance(t, Tensor) else type(t).__name__
        raise _fail(where, f"{what} must be a float tensor of shape {shape}, got {got}")
    # one float64 sum (no overflow for float32 weights; nan/inf propagate), then the exact count
    if torch.isfinite(t.sum(dtype=torch.float64)) or not (bad := int((~torch.isfinite(t)).sum())):
        return
    kinds = "/".join(k for k, f in (("nan", torch.isnan), ("inf", torch.isinf)) if bool(f(t).any()))
    raise _fail(
        where,
        f"{what} holds {bad:,} non-finite values ({kinds}) of {t.numel():,}: the run diverged or the file was "
        "damaged; these weights cannot be analysed",
    )


def _check_structure(data: Any, where: str) -> list[int]:
    if not isinstance(data, Mapping):
        raise _fail(where, f"expected a dict with keys {REQUIRED_KEYS}, got {type(data).__name__}")
    if missing := [k for k in REQUIRED_KEYS if k not in data]:
        raise _fail(where, f"missing keys {missing} (has {sorted(data)})")
    state_dicts, epochs = data["state_dicts"], data["epochs"]
    if not isinstance(state_dicts, (list, tuple)) or len(state_dicts) == 0:
        raise _fail(where, "'state_dicts' must be a non-empty list of state dicts")
    if len(epochs) != len(state_dicts):
        raise _fail(where, f"{len(state_dicts)} state dicts but {len(epochs)} epochs")
    if len(data["train_losses"]) == 0:
        raise _fail(where, "'train_losses' is empty")
    try:
        values = [int(e) for e in epochs]
    except (TypeError, ValueError):
        raise _fail(where, f"'epochs' must be a list of integers, got {list(epochs)[:5]!r}") from None
    if values[0] < 0 or any(b <= a for a, b in zip(values, values[1:], strict=False)):
        raise _fail(where, f"'epochs' must be integers >= 0 that increase strictly, got {values[:6]}")
    return values


def _check_histories(data: Mapping, config: TrainConfig, epochs: list[int], where: str) -> None:
    # a checkpoint every save_every epochs (an early stop adds its last epoch), a test loss every test_every
    n, n_test = len(data["train_losses"]), -(-len(data["train_losses"]) // config.test_every)
    regular = list(range(0, n, config.save_every))
    if (epochs != regular and epochs[:-1] != regular) or epochs[-1] >= n:
        raise _fail(
            where,
            f"checkpoints at epochs {epochs[:4]}… do not match the stored config (every {config.save_every} epochs "
            f"over {n:,} epochs: {regular[:4]}…); the file is inconsistent",
        )
    if len(data["test_losses"]) != n_test:
        raise _fail(
            where,
            f"{len(data['test_losses']):,} test losses stored, but {n:,} epochs with a test every "
            f"{config.test_every} make {n_test:,}; the file is inconsistent",
        )


def _check_resume(resume: Any, p: int, stored: TrainConfig | None, n_train_losses: int, where: str) -> None:
    """The trainer's ``resume`` record: counters, and for an unfinished run the state to continue."""
    where = f"{where}: resume record"
    if not isinstance(resume, Mapping):
        raise _fail(where, f"must be a dict, got {type(resume).__name__}")
    done, version = resume.get("epochs_done"), resume.get("format", 1)
    if isinstance(done, bool) or not isinstance(done, int) or done < 0:
        raise _fail(where, f"'epochs_done' must be an integer >= 0, got {done!r}")
    if not isinstance(resume.get("finished"), bool):
        raise _fail(where, f"'finished' must be True or False, got {resume.get('finished')!r}")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= RESUME_FORMAT_VERSION:
        raise _fail(
            where,
            f"format {version!r}, but this package reads formats 1 to {RESUME_FORMAT_VERSION}: it was written by "
            "another version; update the package or use another path",
        )
    if resume["finished"] or resume.get("diverged"):
        return  # nothing to continue
    if stored is not None and done >= stored.epochs:
        raise _fail(
            where,
            f"marked unfinished after {done:,} epochs, but the stored config asks for {stored.epochs:,}; the file "
            "is inconsistent",
        )
    if n_train_losses != done:
        raise _fail(where, f"{done:,} epochs done but {n_train_losses:,} train losses stored")
    if missing := [k for k in ("params", "optimizer", "scheduler") if not isinstance(resume.get(k), Mapping)]:
        raise _fail(
            where,
            f"the run is unfinished but lacks {missing}, so it cannot be continued; train again with --no-resume "
            "(resume=False) or choose another --out/out path",
        )
    shapes = [parameter_shapes(p)[name] for name in PAPER_TRAINABLE]
    for name, shape in zip(PAPER_TRAINABLE, shapes, strict=True):
        _check_tensor(resume["params"].get(name), shape, f"parameter {name!r} (p = {p})", where)
    groups, per_param = resume["optimizer"].get("param_groups"), resume["optimizer"].get("state")
    if (
        not isinstance(groups, list)
        or len(groups) != 1
        or list(groups[0].get("params", [])) != list(range(len(shapes)))
    ):
        raise _fail(where, f"optimizer state: expected one parameter group of the {len(shapes)} trained parameters")
    if not isinstance(per_param, Mapping):
        raise _fail(where, "optimizer state: 'state' must be a dict")
    for i, moments in per_param.items():
        if not isinstance(i, int) or not 0 <= i < len(shapes) or not isinstance(moments, Mapping):
            raise _fail(where, f"optimizer state: unexpected entry {i!r}")
        for key in ("exp_avg", "exp_avg_sq"):
            _check_tensor(moments.get(key), shapes[i], f"optimizer state: {key} of parameter {i}", where)
    if missing := [k for k in ("last_epoch", "base_lrs", "lr_lambdas") if k not in resume["scheduler"]]:
        raise _fail(where, f"the scheduler state lacks {missing}")


@dataclass(frozen=True, eq=False)
class RunData(Mapping):
    """A checked checkpoint history, built by :meth:`from_file`, :meth:`from_dict` or :func:`as_run_data` (the
    constructor does not check). ``split``: inputs ``(p^2, 3)``, labels ``(p^2,)``, train/test indices, masks."""

    config: TrainConfig
    config_stored: bool
    split: Split
    state_dicts: list
    epochs: list[int]
    train_losses: Any
    test_losses: Any
    resume: Mapping | None
    source: RunSource
    p: int
    _data: Mapping = field(repr=False)

    @classmethod
    def from_dict(cls, data: Mapping, source: RunSource | None = None, *, p: int | None = None) -> RunData:
        """Check a run-file dict in one ordered pass and wrap it (no copy); ``p``: the modulus the weights must
        have. Raises :class:`~.checkpoints.CorruptCheckpointError` (one line, saying what was expected)."""
        source = source if source is not None else RunSource("memory")
        where = source.location or str(source)
        epochs = _check_structure(data, where)
        first = data["state_dicts"][0]
        if not isinstance(first, Mapping) or any(k not in first for k in PAPER_KEYS):
            raise _fail(where, f"state dicts must hold the paper-layout keys {PAPER_KEYS}")
        if not is_paper_layout(first):
            raise _fail(where, "state dicts must be in the paper layout (W_O of shape (d_model, n_heads*d_head))")
        p = _p_of(first) if p is None else p
        stored = "config" in data  # the recipe: stored (it must match the weights) or inferred; then the split
        try:
            config = TrainConfig.from_dict(data["config"]) if stored else infer_config(data, p)
        except ValueError as e:
            raise _fail(where, str(e) if stored else f"could not infer the run's recipe: {e}") from None
        if config.p != p:
            raise _fail(
                where,
                f"the stored config says p = {config.p}, but the weights are for p = {p} (embed.W_E has {p + 1} "
                "vocabulary columns); the file is inconsistent",
            )
        split = Split.from_config(config)
        shapes = paper_shapes(p)
        for i, sd in enumerate(data["state_dicts"]):
            for name, shape in shapes.items():
                t = sd.get(name) if isinstance(sd, Mapping) else None
                _check_tensor(t, shape, f"state dict {i} (epoch {epochs[i]}): {name} (p = {p})", where)
        if "train_indices" in data:
            idx = torch.as_tensor(data["train_indices"])
            if not stored:
                raise _fail(where, "'train_indices' stored without the 'config' that defines the split")
            if idx.ndim != 1 or (idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= p * p)):
                raise _fail(where, f"'train_indices' must be a 1-D tensor of indices in [0, {p * p})")
            if not torch.equal(idx.long(), split.train_indices):
                raise _fail(
                    where,
                    f"'train_indices' ({len(idx):,} pairs) are not the split of the stored config (frac_train="
                    f"{config.frac_train}, seed={config.seed}: {len(split.train_indices):,} pairs); the file is "
                    "inconsistent",
                )
        resume = data.get("resume")
        if "resume" in data:
            _check_resume(resume, p, config if stored else None, len(data["train_losses"]), where)
            if stored:
                _check_histories(data, config, epochs, where)
        return cls(
            config=config,
            config_stored=stored,
            split=split,
            state_dicts=data["state_dicts"],
            epochs=epochs,
            train_losses=data["train_losses"],
            test_losses=data["test_losses"],
            resume=resume,
            source=source,
            p=p,
            _data=data,
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike, source: RunSource | None = None, *, p: int | None = None) -> RunData:
        """Read a run file (verified, weights-only: :func:`~.checkpoints.safe_load`) and check it once."""
        return cls.from_dict(safe_load(path), source if source is not None else RunSource("local", str(path)), p=p)

    def with_source(self, source: RunSource) -> RunData:
        """The same run (nothing checked again), described as coming from ``source``."""
        return replace(self, source=source)

    @property
    def analysed_index(self) -> int:
        """The checkpoint the course analyses: epoch 40,000 when present, else the last one."""
        return analysed_index_of(self.epochs)

    @property
    def analysed_epoch(self) -> int:
        return self.epochs[self.analysed_index]

    def model(self, i: int | None = None, device: str | torch.device = "cpu") -> HookedTransformer:
        """Checkpoint ``i`` (default :attr:`analysed_index`) as a ``HookedTransformer`` on ``device``."""
        return model_from_checkpoint(self.state_dicts, self.analysed_index if i is None else i, device)

    @property
    def status(self) -> RunStatus:
        return run_status(self)

    @property
    def finished(self) -> bool:
        return self.status.state == "finished"

    # a read-only dict view of the run file
    def __getitem__(self, key: str) -> Any:
        if key in FILE_KEYS and key in self._data:
            return self._data[key]
        hint = {"source": " (use run.source)", "p": " (use run.p)"}.get(key, "") if isinstance(key, str) else ""
        raise KeyError(f"{key!r}: not in this run file{hint}; it holds {list(self)}")

    def __iter__(self) -> Iterator[str]:
        return (k for k in FILE_KEYS if k in self._data)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    __eq__ = object.__eq__  # identity: comparing tensors elementwise has no single truth value
    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return (
            f"RunData(p={self.p}, fn={self.config.fn!r}, {len(self.state_dicts)} checkpoints at epochs "
            f"{self.epochs[0]}…{self.epochs[-1]}, {len(self.train_losses):,} epochs trained, "
            f"config {'stored' if self.config_stored else 'inferred'}, source={str(self.source)!r})"
        )


def as_run_data(run: RunData | Mapping | str | os.PathLike, source: RunSource | None = None) -> RunData:
    """A :class:`RunData` from a RunData (as it is), a run-file dict or a run file's path (checked once)."""
    if isinstance(run, RunData):
        return run
    if isinstance(run, (str, os.PathLike)):
        return RunData.from_file(run, source)
    if isinstance(run, Mapping):
        return RunData.from_dict(run, source)
    raise TypeError(f"expected run data: a RunData, a run-file dict or a file path, got {type(run).__name__}")


def load_run_data(path: str | os.PathLike, p: int | None = None) -> dict:
    """Read and check a run file; the plain dict (the trainer's format)."""
    data = safe_load(path)
    RunData.from_dict(data, RunSource("local", str(path)), p=p)
    return data


def validate_run_data(data: Any, source: str = "run data", p: int | None = None) -> int:
    """Check a run-file dict (:meth:`RunData.from_dict`); its modulus ``p``. Prefer building the RunData."""
    return RunData.from_dict(data, RunSource("memory", source) if source else None, p=p).p
