"""Grokking & Modular Arithmetic: the course package.

Reverse-engineer a one-layer transformer trained on addition mod p (p = 113 by default), find the
Fourier/trig-identity algorithm inside it, and watch that circuit form during training.

Importing the package is cheap: it loads no model and touches no network. Start from
``part52_grokking_and_modular_arithmetic.utils`` (what the notebooks use).
"""

__version__ = "0.2.0"
