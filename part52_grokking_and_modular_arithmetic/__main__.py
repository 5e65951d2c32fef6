"""``python -m part52_grokking_and_modular_arithmetic <command>``: see :mod:`.cli`."""

from .cli import run

run()
