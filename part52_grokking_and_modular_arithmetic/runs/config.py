"""The training recipe (:class:`TrainConfig`): the paper's defaults, every field checked with a one-line error.

Torch-free on purpose: the command line imports it to check its options before torch loads.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "TASKS",
    "TrainConfig",
    "DEFAULT_EPOCHS",
    "ANALYSED_EPOCH",
    "RECIPE_FIELDS",
    "check_odd_prime",
    "check_field",
    "config_differences",
    "smallest_factor",
    "is_prime",
]

#: The task functions of the original code, by name (see :func:`.data.task_function`).
TASKS = ("add", "subtract", "x2xyy2", "rand")
#: Length of the default run: it shows memorisation, circuit formation and cleanup (the paper trained 50k epochs).
DEFAULT_EPOCHS = 15_000
#: The epoch of the checkpoint the course analyses (Nanda et al. 2023, arXiv 2301.05217; else the last one).
ANALYSED_EPOCH = 40_000
#: The fields that decide what a run learns (the others: how long it runs and what is recorded).
RECIPE_FIELDS = ("p", "fn", "frac_train", "seed", "lr", "weight_decay", "betas", "warmup_steps")

_WHY_PRIME = (
    "p must be an odd prime: the task and the Fourier analysis need arithmetic mod p to be a field "
    "(every nonzero residue invertible, one Fourier basis of p frequencies)"
)


def smallest_factor(n: int, limit: int = 10**6) -> int | None:
    """The smallest prime factor of ``n >= 2`` if it is at most ``limit``, else None."""
    f = 2
    while f * f <= n and f <= limit:
        if n % f == 0:
            return f
        f += 1 if f == 2 else 2
    return n if f * f > n else None


def is_prime(n: int) -> bool:
    """Deterministic Miller-Rabin (exact for every n < 3.3e24; a strong probable-prime test beyond)."""
    small = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)
    if n < 2 or any(n % q == 0 for q in small):
        return n in small
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in small:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def check_odd_prime(p: object) -> int:
    """``p`` as an int if it is an odd prime, else ``ValueError`` saying why (``9 is not prime (9 = 3 × 3)``)."""
    if isinstance(p, bool) or not isinstance(p, numbers.Integral):
        raise ValueError(f"p must be an integer (an odd prime such as 113), got {p!r} ({type(p).__name__})")
    p = int(p)
    if p < 3:
        raise ValueError(f"{p} is too small; {_WHY_PRIME}")
    if not is_prime(p):
        f = smallest_factor(p)
        shown = f"{p} = {f} × {p // f}" if f is not None else "it has a factor above 10^6"
        raise ValueError(f"{p} is {'even' if f == 2 else 'not prime'} ({shown}); {_WHY_PRIME}")
    return p


#: Integer fields: their minimum. Real fields: (low, high, low open, high open, in words).
_MINIMUM = {"seed": 0, "warmup_steps": 0, "epochs": 1, "save_every": 1, "test_every": 1}
_RANGES = {
    "frac_train": (0.0, 1.0, True, True, "in (0, 1)"),
    "lr": (0.0, math.inf, True, True, "> 0"),
    "weight_decay": (0.0, math.inf, False, True, ">= 0"),
    "beta": (0.0, 1.0, False, True, "in [0, 1)"),
    "stop_at_test_loss": (0.0, math.inf, True, True, "> 0"),
}


def check_field(name: str, value: object) -> None:
    """Raise ``ValueError`` (one line) unless ``value`` is valid for field ``name`` (``"beta"``: one beta)."""
    if name == "p":
        check_odd_prime(value)
    elif name == "fn":
        if value not in TASKS:
            raise ValueError(f"fn must be one of {TASKS}, got {value!r}")
    elif name in _MINIMUM:
        low = _MINIMUM[name]
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r} ({type(value).__name__})")
        if value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value}")
    elif name in _RANGES:
        low, high, low_open, high_open, what = _RANGES[name]
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number {what}, got {value!r}")
        if value < low or (low_open and value == low) or value > high or (high_open and value == high):
            raise ValueError(f"{name} must be {what}, got {value}")
    elif name == "betas":
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {value!r}")
        for beta in value:
            check_field("beta", beta)
    else:
        raise KeyError(f"no field {name!r} in TrainConfig")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (the paper's recipe by default)."""

    p: int = 113
    fn: str = "add"
    frac_train: float = 0.3
    seed: int = 0  # seeds the split (Python's random) and the init (torch generator)
    lr: float = 1e-3
    weight_decay: float = 1.0
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 10  # linear warm-up from lr 0: see warmup_factor
    epochs: int = DEFAULT_EPOCHS
    save_every: int = 100  # checkpoint interval (epochs)
    test_every: int = 10  # test-loss interval (epochs)
    stop_at_test_loss: float | None = None  # optional early stop once the test loss falls below this
    #: AdamW's epsilon (torch's default, as in the paper's code): fixed, not a stored field.
    eps: ClassVar[float] = 1e-8

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not (f.name == "stop_at_test_loss" and value is None):
                check_field(f.name, value)

    def warmup_factor(self, step: int | float) -> float:
        """The learning-rate multiplier of update ``step`` (0, 1, ...): ``min(step / warmup_steps, 1)``."""
        return min(step / self.warmup_steps, 1.0) if self.warmup_steps > 0 else 1.0

    def to_dict(self) -> dict:
        """Plain values only (loadable with ``weights_only=True``)."""
        return dict(dataclasses.asdict(self), betas=list(self.betas))

    @classmethod
    def from_dict(cls, d: object) -> TrainConfig:
        """The config stored in a run file (unknown keys ignored); ``ValueError`` naming a field not valid."""
        if not isinstance(d, dict):
            raise ValueError(f"a stored config must be a dict of plain values, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        if isinstance(kwargs.get("betas"), (list, tuple)):
            kwargs["betas"] = tuple(kwargs["betas"])
        try:
            for name, value in kwargs.items():  # first: a wrong type is a ValueError even under run-time type checks
                if not (name == "stop_at_test_loss" and value is None):
                    check_field(name, value)
            return cls(**kwargs)
        except ValueError as e:
            raise ValueError(f"invalid stored config: {e}") from None


def config_differences(
    stored: TrainConfig, wanted: TrainConfig, fields: tuple[str, ...] | None = None, label: str = "requested"
) -> list[str]:
    """The one "same run?" comparison: ``["seed: file 0, requested 5", ...]`` for each of ``fields`` (default:
    every field but ``epochs``, which a run may be extended in) where the two differ."""
    a, b = stored.to_dict(), wanted.to_dict()
    fields = fields if fields is not None else tuple(k for k in a if k != "epochs")
    return [f"{k}: file {a[k]!r}, {label} {b[k]!r}" for k in fields if a[k] != b[k]]
