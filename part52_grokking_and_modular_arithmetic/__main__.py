"""``python -m part52_grokking_and_modular_arithmetic <command>``: see :mod:`.cli`."""

import sys

from .cli import main

sys.exit(main())
