"""Training configuration: the paper's recipe as defaults, overridable from the CLI.

Every field is validated on construction (:meth:`TrainConfig.__post_init__`) with a one-line error that says
what was expected; the command line reuses the same checks (:func:`check_field`) for its options, and a
stored ``config`` is checked the same way when a run file is loaded (:meth:`TrainConfig.from_dict`).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

from .data import TASKS

__all__ = [
    "TrainConfig",
    "DEFAULT_EPOCHS",
    "ANALYSED_EPOCH",
    "check_odd_prime",
    "check_field",
    "smallest_factor",
    "is_prime",
]

#: Length of the default run. Chosen so one run shows memorisation, circuit formation *and* cleanup
#: for the default seed (see README "The default training run"); the paper trained 50k epochs.
DEFAULT_EPOCHS = 15_000
#: The epoch of the checkpoint the course analyses (Nanda et al. 2023, arXiv 2301.05217): index 400 of the hub
#: file; a run without it is analysed at its last checkpoint.
ANALYSED_EPOCH = 40_000

_WHY_PRIME = (
    "p must be an odd prime: the task and the Fourier analysis need arithmetic mod p to be a field "
    "(every nonzero residue invertible, one Fourier basis of p frequencies)"
)


def smallest_factor(n: int, limit: int = 10**6) -> int | None:
    """The smallest prime factor of ``n >= 2`` if it is at most ``limit`` (``n`` itself when ``n`` is a small
    prime), else None."""
    if n % 2 == 0:
        return 2
    f = 3
    while f * f <= n and f <= limit:
        if n % f == 0:
            return f
        f += 2
    return n if f * f > n else None


def is_prime(n: int) -> bool:
    """Deterministic Miller-Rabin (exact for every n < 3.3e24; a strong probable-prime test beyond)."""
    if n < 2:
        return False
    small = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)
    if n in small:
        return True
    if any(n % q == 0 for q in small):
        return False
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


def check_odd_prime(p: object) -> None:
    """Raise ``ValueError`` unless ``p`` is an odd prime, saying why (e.g. ``9 is not prime (9 = 3 × 3)``)."""
    if isinstance(p, bool) or not isinstance(p, numbers.Integral):
        raise ValueError(f"p must be an integer (an odd prime such as 113), got {p!r} ({type(p).__name__})")
    p = int(p)
    if p < 3:
        raise ValueError(f"{p} is too small; {_WHY_PRIME}")
    if p % 2 == 0:
        raise ValueError(f"{p} is even ({p} = 2 × {p // 2}); {_WHY_PRIME}")
    if not is_prime(p):
        f = smallest_factor(p)
        shown = f"{p} = {f} × {p // f}" if f is not None else "it has a factor above 10^6"
        raise ValueError(f"{p} is not prime ({shown}); {_WHY_PRIME}")


def _integer(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")


def _real(name: str, value: object, low: float, high: float, low_open: bool, high_open: bool, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number {what}, got {value!r}")
    if value < low or (low_open and value == low) or value > high or (high_open and value == high):
        raise ValueError(f"{name} must be {what}, got {value}")


#: Range of each numeric field: (low, high, low open, high open, in words).
_RANGES = {
    "frac_train": (0.0, 1.0, True, True, "in (0, 1)"),
    "lr": (0.0, math.inf, True, True, "> 0"),
    "weight_decay": (0.0, math.inf, False, True, ">= 0"),
    "beta": (0.0, 1.0, False, True, "in [0, 1)"),
    "stop_at_test_loss": (0.0, math.inf, True, True, "> 0"),
}
#: Minimum of each integer field.
_MINIMUM = {"seed": 0, "warmup_steps": 0, "epochs": 1, "save_every": 1, "test_every": 1}


def check_field(name: str, value: object) -> None:
    """Raise ``ValueError`` (one line, saying what was expected) unless ``value`` is valid for field ``name``
    of :class:`TrainConfig` (``"beta"``: one of the two betas)."""
    if name == "p":
        check_odd_prime(value)
    elif name == "fn":
        if value not in TASKS:
            raise ValueError(f"fn must be one of {TASKS}, got {value!r}")
    elif name in _MINIMUM:
        _integer(name, value, _MINIMUM[name])
    elif name in _RANGES:
        _real(name, value, *_RANGES[name])
    elif name == "betas":
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {value!r}")
        for beta in value:
            check_field("beta", beta)
    else:
        raise KeyError(f"no field {name!r} in TrainConfig")


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
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not (f.name == "stop_at_test_loss" and value is None):
                check_field(f.name, value)

    def to_dict(self) -> dict:
        """Plain values only (loadable with ``weights_only=True``)."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """The config stored in a run file; ``ValueError`` (one line, naming the field) if it is not valid."""
        if not isinstance(d, dict):
            raise ValueError(f"a stored config must be a dict of plain values, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        if isinstance(kwargs.get("betas"), (list, tuple)):
            kwargs["betas"] = tuple(kwargs["betas"])
        try:
            for name, value in kwargs.items():  # first, so that a wrong type is a ValueError too
                if not (name == "stop_at_test_loss" and value is None):
                    check_field(name, value)
            return cls(**kwargs)
        except ValueError as e:
            raise ValueError(f"invalid stored config: {e}") from None
