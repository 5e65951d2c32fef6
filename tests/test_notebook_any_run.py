"""The exercises notebook on a run that is not the course's: the session's small run (``conftest.SMALL_RUN``: p = 31,
another seed, split and lr, trained once on one thread), pointed at with ``PART52_RUN_PATH``; caches go to a
temporary ``PART52_CACHE_DIR``. (The solutions notebook on it: the main-job test of ``test_hub_notebook.py``.)

* the **exercises** notebook, run top to bottom before any exercise is filled in, shows one-line messages and
  no tracebacks: every error is :class:`~part52_grokking_and_modular_arithmetic.utils.ExerciseNotDone`, and a
  cell that stops for a missing exercise does so within a few seconds (before any expensive work).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import nbformat
import pytest
from test_notebooks import _grader_cells, build  # build: scripts/build_notebooks.py, loaded as a module

from part52_grokking_and_modular_arithmetic import tests as grader  # never import the test_* names directly
from part52_grokking_and_modular_arithmetic.app import report

REPO = Path(__file__).resolve().parents[1]
STOP_WITHIN_S = 5.0  # a cell that stops for a missing exercise must say so within this many seconds

pytestmark = [pytest.mark.slow, pytest.mark.notebook]


@pytest.fixture
def small_run_env(small_run) -> dict[str, str]:
    """The notebook's environment: the small run (conftest.py) as the run file, a fresh analysis cache."""
    return {
        "PART52_RUN_PATH": str(small_run),
        "PART52_CACHE_DIR": str(small_run.parent / "cache"),
        "HF_HUB_OFFLINE": "1",
    }


def without_cells_tagged(path: Path, tag: str, folder: Path) -> Path:
    """A copy of the notebook at ``path`` in ``folder`` without the cells tagged ``tag`` (e.g. ``bonus-training``:
    the Bonus cells train their own p = 53 models whatever run is loaded; the nbmake run covers them)."""
    nb = nbformat.read(str(path), as_version=4)
    nb.cells = [c for c in nb.cells if tag not in c.metadata.get("tags", [])]
    trimmed = folder / path.name
    nbformat.write(nb, str(trimmed))
    return trimmed


def _execute(path: Path, env: dict[str, str], tmp_path: Path) -> nbformat.NotebookNode:
    return report.execute_notebook(path, cwd=tmp_path, timeout=600, allow_errors=True, env=env)


def _errors(cell) -> list:
    return [o for o in cell.get("outputs", []) if o.output_type == "error"]


def _seconds(cell) -> float:
    timing = cell.metadata.get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds() if start and end else 0.0


def test_exercises_notebook_shows_one_line_messages_before_any_exercise_is_done(small_run_env, tmp_path):
    executed = _execute(build.EXERCISES, small_run_env, tmp_path)
    code = [c for c in executed.cells if c.cell_type == "code"]
    stopped = 0
    for cell in code:
        for error in _errors(cell):
            assert error.ename == "ExerciseNotDone", (
                f"cell {cell.id} raised {error.ename}: {error.evalue}\n{cell.source[:300]}"
            )
            assert "\n" not in error.evalue and ("above first" in error.evalue or "run the cells above" in error.evalue)
            assert error.traceback == [error.evalue], "the message should be shown alone, without a traceback"
            assert _seconds(cell) < STOP_WITHIN_S, f"cell {cell.id} worked {_seconds(cell):.1f} s before stopping"
            stopped += 1
    assert stopped >= 20  # most cells after the first exercise depend on it
    # every grader is called once, and each says "not implemented yet" (no error)
    graded = _grader_cells(executed)
    assert len(graded) == len([n for n in grader.__all__ if n.startswith("test_")])
    for cell in graded:
        assert not _errors(cell), f"grader cell {cell.id} raised {_errors(cell)[0].ename}: {_errors(cell)[0].evalue}"
        assert "not implemented yet" in "".join(o.get("text", "") for o in cell.outputs), cell.source
    # the setup ran cleanly: no error before the first exercise
    first_stub = next(i for i, c in enumerate(executed.cells) if "# YOUR CODE HERE" in c.get("source", ""))
    assert not [c.id for c in executed.cells[:first_stub] if c.cell_type == "code" and _errors(c)]
    # the expensive cells stop at once when their prerequisites are missing
    expensive = [c for c in code if "compute_dynamics(" in c.source or "bonus-training" in c.metadata.get("tags", [])]
    assert len(expensive) == 3 and all(_errors(c) for c in expensive)
