"""Training configuration: the paper's recipe as defaults (grokking_facts §2), overridable from the CLI."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .data import TASKS

__all__ = ["TrainConfig", "DEFAULT_EPOCHS"]

#: Length of the default run. Chosen so one run shows memorisation, circuit formation *and* cleanup
#: for the default seed (see README "The default training run"); the paper trained 50k epochs.
DEFAULT_EPOCHS = 15_000


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. Stored as plain values in the run file's ``config``."""

    p: int = 113
    fn: str = "add"
    frac_train: float = 0.3
    seed: int = 0  # seeds the split (Python's random) and the init (torch generator)
    lr: float = 1e-3
    weight_decay: float = 1.0
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 10  # linear warm-up starting at lr 0: lr * min(step / warmup_steps, 1)
    epochs: int = DEFAULT_EPOCHS
    save_every: int = 100  # checkpoint interval (epochs)
    test_every: int = 10  # test-loss interval (epochs)
    stop_at_test_loss: float | None = None  # optional early stop once the test loss falls below this

    def __post_init__(self) -> None:
        if self.fn not in TASKS:
            raise ValueError(f"fn must be one of {TASKS}, got {self.fn!r}")
        if self.p < 3 or self.p % 2 == 0:
            raise ValueError(f"p must be an odd prime >= 3, got {self.p}")
        if not 0 < self.frac_train < 1:
            raise ValueError(f"frac_train must lie in (0, 1), got {self.frac_train}")
        for name in ("epochs", "save_every", "test_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        """Plain values only (loadable with ``weights_only=True``)."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        if "betas" in kwargs:
            kwargs["betas"] = tuple(kwargs["betas"])
        return cls(**kwargs)
