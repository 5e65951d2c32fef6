"""``python -m part52_grokking_and_modular_arithmetic <command>``: see :mod:`.app.cli`."""

from .app.cli import run

run()
