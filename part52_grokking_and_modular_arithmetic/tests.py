"""The student grader, as the notebooks call it: ``tests.test_fft1d(fft1d)`` right after an exercise. Each grader
prints ``✅`` (right) or ``⏳`` (not implemented yet), or raises :class:`GraderError` saying what is wrong; it returns
``None``. The graders and their arguments: :mod:`.grading.graders`; their parts: :mod:`.grading.checks`."""

from .grading import graders
from .grading.checks import GraderError, GraderInterrupted
from .grading.graders import *  # noqa: F403 - every test_<exercise>

__all__ = ["GraderError", "GraderInterrupted", *graders.__all__]
__test__ = False  # graders for students, not pytest tests
