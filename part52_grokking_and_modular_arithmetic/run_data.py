"""The run object: one validated description of a training run's checkpoint history.

:class:`RunData` is what :func:`~.provision.load_full_run_data` returns and what the notebook, the graders, the
Section 3 engine (:func:`~.dynamics.compute_dynamics`) and the report read. It holds, checked once when it is
built (:func:`~.checkpoints.validate_run_data`):

* ``config``: the run's recipe (:class:`~.config.TrainConfig`) — stored in our own runs; for the course's hub
  file, which stores none, inferred (``config_stored`` is then False): the paper's recipe (Nanda et al. 2023,
  arXiv 2301.05217) with ``p`` read from the weights and the lengths and intervals read from the histories;
* ``split``: the inputs, labels and train/test split of that recipe (:func:`~.data.make_split`);
* ``state_dicts`` (paper layout), ``epochs``, ``train_losses``, ``test_losses`` and the optional ``resume``
  record of the trainer;
* ``source``: where it came from, a :class:`RunSource`;
* ``p``, ``analysed_index`` (the epoch-40,000 checkpoint the course analyses, else the last one) and
  ``model(i)``, the checkpoint ``i`` as a ``HookedTransformer``.

It also reads like the run-file dict it wraps (``run["state_dicts"]``, ``"train_indices" in run``,
``run.get("config")``), read-only, so code written for the dict keeps working. The file format itself is
described in :mod:`.checkpoints`; the trainer writes and returns plain dicts.

    run = RunData.from_file("full_run_data.pth")
    model = run.model()                    # the analysed checkpoint
    run.split.labels[run.split.train_indices]
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from .config import ANALYSED_EPOCH, TrainConfig
from .data import Split

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

__all__ = [
    "ANALYSED_EPOCH",
    "HUB_RECIPE",
    "SourceKind",
    "RunSource",
    "RunData",
    "as_run_data",
    "infer_config",
    "analysed_index_of",
    "model_from_checkpoint",
]

#: The recipe of the hub run: the paper's mainline, 50k epochs, a checkpoint every 100, a test loss every 10.
HUB_RECIPE: dict = dict(TrainConfig().to_dict(), epochs=50_000, save_every=100, test_every=10)

SourceKind = Literal["local", "hub-cache", "hub", "trained", "memory"]
#: The keys a run file may hold; a RunData reads like a dict of those it has.
_FILE_KEYS = ("state_dicts", "epochs", "train_losses", "test_losses", "config", "train_indices", "resume")


@dataclass(frozen=True)
class RunSource:
    """Where a run came from.

    ``kind``: ``"local"`` (a file; ``location`` is its path), ``"hub-cache"`` / ``"hub"`` (the course's hub file,
    found in the Hugging Face cache / downloaded; ``location`` is the cached file, ``detail`` ``repo/filename``),
    ``"trained"`` (trained locally into ``location``; ``detail`` says why) or ``"memory"`` (built from a dict).
    ``str()`` gives the sentence the course prints, e.g. ``"local file: PATH"``.
    """

    kind: SourceKind
    location: str = ""
    detail: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("local", "hub-cache", "hub", "trained", "memory"):
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


def _p_of(state_dict: Mapping[str, Tensor]) -> int:
    """``p`` from a checkpoint in either layout: the vocabulary is ``p + 1`` (``=`` is token ``p``)."""
    from .layout import is_paper_layout

    w_e = state_dict["embed.W_E"]  # (d_model, d_vocab) in the paper layout, (d_vocab, d_model) in TransformerLens'
    return int(w_e.shape[1] if is_paper_layout(state_dict) else w_e.shape[0]) - 1


def infer_config(data: Mapping, p: int | None = None) -> TrainConfig:
    """The recipe of a run-file dict: its stored ``config``, or — for the hub file, which stores none — the
    paper's recipe (:data:`HUB_RECIPE`) with ``p`` read from the weights, the length from ``train_losses``, the
    checkpoint interval from ``epochs`` and the test interval from the number of ``test_losses``."""
    if isinstance(data.get("config"), Mapping):
        return TrainConfig.from_dict(dict(data["config"]))
    if p is None:
        p = _p_of(data["state_dicts"][0])
    n_epochs = len(data["train_losses"])
    epochs = [int(e) for e in data["epochs"]]
    save_every = epochs[1] - epochs[0] if len(epochs) > 1 else max(n_epochs, 1)
    n_test = len(data["test_losses"])
    test_every = max(1, math.ceil(n_epochs / n_test)) if n_test else 1
    return TrainConfig.from_dict(
        dict(HUB_RECIPE, p=p, epochs=max(n_epochs, 1), save_every=max(save_every, 1), test_every=test_every)
    )


def analysed_index_of(epochs: list[int] | Tensor, epoch: int = ANALYSED_EPOCH) -> int:
    """Index of the checkpoint at ``epoch`` (default 40,000: the model the course analyses), or of the last
    checkpoint when the run has no such epoch."""
    values = [int(e) for e in epochs]
    if not values:
        raise ValueError("the run holds no checkpoints")
    return values.index(epoch) if epoch in values else len(values) - 1


def model_from_checkpoint(
    state_dicts: list[Mapping[str, Tensor]], index: int, device: str | torch.device = "cpu"
) -> HookedTransformer:
    """Checkpoint ``index`` of ``state_dicts`` (paper or TransformerLens layout) as a ``HookedTransformer`` with
    the paper's architecture; ``p`` is read from the weights. ``IndexError`` names the number of checkpoints."""
    from .layout import load_in_state_dict
    from .model import make_model

    try:
        index = operator.index(index)  # ints, numpy and 0-d tensor integers
    except TypeError:
        raise TypeError(f"checkpoint index must be an integer, got {index!r}") from None
    if not -len(state_dicts) <= index < len(state_dicts):
        raise IndexError(f"checkpoint index {index} out of range: the run has {len(state_dicts)} checkpoints")
    state_dict = state_dicts[index]
    return load_in_state_dict(make_model(_p_of(state_dict), seed=None, device=device), state_dict)


@dataclass(frozen=True, eq=False)
class RunData(Mapping):
    """A validated checkpoint history (see the module docstring). Build it with :meth:`from_file`,
    :meth:`from_dict` or :func:`as_run_data`; never by hand (the constructor does not validate).

    Attributes:
        config: the recipe (stored, or inferred for the hub file: ``config_stored`` False).
        split: inputs ``(p^2, 3)``, labels ``(p^2,)``, train/test indices and masks (:class:`~.data.Split`).
        state_dicts: one paper-layout state dict per checkpoint.
        epochs: the epoch of each checkpoint.
        train_losses: one per epoch; test_losses: one per ``config.test_every`` epochs.
        resume: the trainer's resume record, or None (hub file).
        source: where the run came from (:class:`RunSource`).
        p: the modulus.
    """

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

    # ---- construction (validated once) -------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping, source: RunSource | None = None, *, p: int | None = None) -> "RunData":
        """Validate a run-file dict (:func:`~.checkpoints.validate_run_data`) and wrap it (no copy).
        Raises :class:`~.checkpoints.CorruptCheckpointError` saying what was expected."""
        from .checkpoints import CorruptCheckpointError, validate_run_data

        source = source if source is not None else RunSource("memory")
        where = source.location or str(source)
        p = validate_run_data(data, source=where, p=p)
        try:
            config = infer_config(data, p)
        except ValueError as e:
            raise CorruptCheckpointError(f"{where}: could not infer the run's recipe: {e}") from None
        split = Split.from_config(config)  # stored train_indices were checked against it by validate_run_data
        resume = data.get("resume")
        return cls(
            config=config,
            config_stored=isinstance(data.get("config"), Mapping),
            split=split,
            state_dicts=data["state_dicts"],
            epochs=[int(e) for e in data["epochs"]],
            train_losses=data["train_losses"],
            test_losses=data["test_losses"],
            resume=resume if isinstance(resume, Mapping) else None,
            source=source,
            p=p,
            _data=data,
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike, source: RunSource | None = None, *, p: int | None = None) -> "RunData":
        """Load a run file safely (``torch.load(weights_only=True)``) and validate it once. ``source``
        defaults to ``RunSource("local", path)``."""
        from .checkpoints import safe_load

        return cls.from_dict(safe_load(path), source if source is not None else RunSource("local", str(path)), p=p)

    def with_source(self, source: RunSource) -> "RunData":
        """The same run (nothing validated again), described as coming from ``source``."""
        return replace(self, source=source)

    # ---- what the course reads ----------------------------------------------------------------------
    @property
    def analysed_index(self) -> int:
        """Index of the checkpoint the course analyses: epoch 40,000 when present (index 400 of the hub
        file), else the last checkpoint."""
        return analysed_index_of(self.epochs)

    @property
    def analysed_epoch(self) -> int:
        return self.epochs[self.analysed_index]

    def model(self, i: int | None = None, device: str | torch.device = "cpu") -> HookedTransformer:
        """Checkpoint ``i`` (default :attr:`analysed_index`; negative counts from the end) as a
        ``HookedTransformer`` on ``device``."""
        return model_from_checkpoint(self.state_dicts, self.analysed_index if i is None else i, device)

    @property
    def source_kind(self) -> str:
        return self.source.kind

    @property
    def finished(self) -> bool:
        """Whether the run needs no more training (see :func:`~.checkpoints.run_is_complete`)."""
        from .checkpoints import run_is_complete

        return run_is_complete(self._data)

    # ---- read-only dict view of the run file ----------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        if key in _FILE_KEYS and key in self._data:
            return self._data[key]
        hint = {"source": " (use run.source)", "p": " (use run.p)"}.get(key, "") if isinstance(key, str) else ""
        raise KeyError(f"{key!r}: not in this run file{hint}; it holds {list(self)}")

    def __iter__(self) -> Iterator[str]:
        return (k for k in _FILE_KEYS if k in self._data)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __contains__(self, key: object) -> bool:
        return key in _FILE_KEYS and key in self._data

    __eq__ = object.__eq__  # identity: comparing tensors elementwise has no single truth value
    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return (
            f"RunData(p={self.p}, fn={self.config.fn!r}, {len(self.state_dicts)} checkpoints at epochs "
            f"{self.epochs[0]}…{self.epochs[-1]}, {len(self.train_losses):,} epochs trained, "
            f"config {'stored' if self.config_stored else 'inferred'}, source={str(self.source)!r})"
        )


def as_run_data(run: RunData | Mapping | str | os.PathLike, source: RunSource | None = None) -> RunData:
    """A :class:`RunData` from a RunData (returned as it is: validated already), a run-file dict (validated)
    or the path of a run file (loaded safely and validated)."""
    if isinstance(run, RunData):
        return run
    if isinstance(run, (str, os.PathLike)):
        return RunData.from_file(run, source)
    if isinstance(run, Mapping):
        return RunData.from_dict(run, source)
    raise TypeError(f"expected run data: a RunData, a run-file dict or a file path, got {type(run).__name__}")
