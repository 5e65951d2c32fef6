"""Colab, simulated: the solutions notebook **alone** in an empty folder, a fresh virtual environment with torch,
Jupyter (ipykernel + nbclient) and the libraries Colab ships (:data:`COLAB_LIBRARIES`) but **without** the
course package, the hub reachable (the fake hub on 127.0.0.1 serving a run file as the course's file) — and the
notebook runs to the end: its first cell pip-installs the package (from ``GROKKING_COURSE_PIP_SPEC``, here a
wheel built from this checkout; the rest of its dependencies come from the package index), the load cell
downloads the model.

Slow (a venv, torch, transformer_lens & co. from pip's cache, a full notebook run). Prints the time of each
stage. The file served is the session's small run (``conftest.small_run``, p = 31): what is tested is the fresh
environment, the install and the download; the notebook on the default model is the nbmake run's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import nbformat
import pytest
from test_hub_notebook import hub_env
from test_notebook_any_run import without_cells_tagged
from test_report import build_wheel

from part52_grokking_and_modular_arithmetic.runs import provision
from part52_grokking_and_modular_arithmetic.runs.run_data import RunData

from fake_hub import FakeHub

REPO = Path(__file__).resolve().parents[1]
SOLUTIONS = REPO / "solutions" / "grokking_and_modular_arithmetic_solutions.ipynb"
TORCH_SPEC = os.environ.get("TORCH_SPEC", "torch==2.13.0")  # the CPU wheel scripts/setup.sh uses
PACKAGE = "part52_grokking_and_modular_arithmetic"
#: Libraries a Colab runtime has before any install, which the package needs too (the notebook's install cell
#: adds TransformerLens and the rest).
COLAB_LIBRARIES = ("numpy", "pandas", "plotly", "tqdm", "huggingface_hub", "transformers")

# Run by the fresh venv's python: execute the notebook in a `python3` kernel of that same venv
# (jupyter_client starts the kernel with the interpreter that runs nbclient).
DRIVER = """
import sys, nbformat
from nbclient import NotebookClient
src, out, cwd = sys.argv[1:4]
nb = nbformat.read(src, as_version=4)
client = NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": cwd}})
try:
    client.execute()
finally:
    nbformat.write(nb, out)
"""


def _run(cmd: list[str], *, timeout: float, **kwargs) -> float:
    """Run ``cmd``; return its wall time. On failure, fail with the end of its output."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, cmd))} failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-5000:]}"
        )
    return time.perf_counter() - t0


def _cell_seconds(cell) -> float:
    """Wall time of an executed cell from nbclient's timing metadata."""
    timing = cell.metadata.get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not (start and end):
        return float("nan")
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()


@pytest.mark.slow
@pytest.mark.notebook
def test_solutions_notebook_alone_in_a_fresh_venv_installs_the_package_and_runs(small_run, tmp_path, capsys):
    data = small_run.read_bytes()
    stages: dict[str, float] = {}
    content = tmp_path / "content"  # Colab's working directory: only the notebook in it
    content.mkdir()
    # the notebook as a student opens it, less the Bonus training cells (they train their own p = 53 models: the
    # nbmake run covers them)
    notebook = without_cells_tagged(SOLUTIONS, "bonus-training", content)

    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    base_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    pip = [str(python), "-m", "pip", "install", "--quiet", "--no-compile", "--disable-pip-version-check"]
    stages["venv"] = _run([sys.executable, "-m", "venv", str(venv)], timeout=300, env=base_env)
    stages["torch install"] = _run([*pip, TORCH_SPEC], timeout=900, env=base_env)
    # what Colab ships besides torch: Jupyter and, among others, these libraries the course needs (uv installs
    # them where the test environment has it, as fast as it can: this is set-up, not what is under test)
    uv = Path(sys.executable).with_name("uv")
    preinstall = [str(uv), "pip", "install", "--quiet", "--python", str(python)] if uv.is_file() else pip
    stages["colab's libraries"] = _run(
        [*preinstall, "ipykernel", "nbclient", "nbformat", *COLAB_LIBRARIES], timeout=600, env=base_env
    )
    probe = subprocess.run(
        [str(python), "-c", f"import {PACKAGE}"], capture_output=True, text=True, cwd=content, env=base_env
    )
    assert probe.returncode != 0, "the fresh venv must not have the course package before the notebook runs"
    t0 = time.perf_counter()
    wheel = build_wheel(tmp_path / "wheels", tmp_path / "build")
    stages["wheel build"] = time.perf_counter() - t0

    (tmp_path / "driver.py").write_text(DRIVER)
    executed = tmp_path / "executed.ipynb"
    with FakeHub({(provision.HUB_REPO_ID, provision.HUB_FILENAME): data}) as hub:
        env = {**hub_env(tmp_path, hub.url), "GROKKING_COURSE_PIP_SPEC": str(wheel)}
        env["PART52_CACHE_DIR"] = str(tmp_path / "cache")  # its own: another notebook may be running the bonus
        env.pop("PART52_RUN_PATH")  # as on Colab: the installed package picks its own place (PART52_GROKKING_HOME)
        env = {k: v for k, v in env.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        t0 = time.perf_counter()
        proc = subprocess.run(
            [str(python), str(tmp_path / "driver.py"), str(notebook), str(executed), str(content)],
            cwd=content,
            env=env,
            capture_output=True,
            text=True,
            timeout=3600,
        )
        stages["notebook (total)"] = time.perf_counter() - t0
        downloads = [r for r in hub.resolve_requests() if r[0] == "GET"]

    nb = nbformat.read(str(executed), as_version=4) if executed.is_file() else None
    code = [c for c in nb.cells if c.cell_type == "code"] if nb else []
    if code:
        stages["install cell"] = _cell_seconds(code[0])
        stages["load cell"] = _cell_seconds(next((c for c in code if "load_full_run_data()" in c.source), code[0]))
    with capsys.disabled():
        print("\n[colab simulation] " + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items()))
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert proc.returncode == 0 and not errors, (
        f"the notebook failed in the fresh venv (exit {proc.returncode}):\n"
        + "\n".join(f"{o.ename}: {o.evalue}" for o in errors[:1])
        + "\n"
        + (proc.stdout + proc.stderr)[-4000:]
    )

    install_text = "".join(o.get("text", "") for o in code[0].outputs)
    assert f"pip install {wheel}" in install_text and "Installed." in install_text, install_text
    installed = subprocess.run(
        [str(python), "-c", f"import {PACKAGE}; print({PACKAGE}.__file__)"],
        capture_output=True,
        text=True,
        cwd=content,
        env=base_env,
    )
    assert str(venv) in installed.stdout, (
        f"the package should now be installed in the venv: {installed.stdout}{installed.stderr}"
    )
    assert downloads, "the notebook should have downloaded the model from the (fake) hub"
    text = "".join(o.get("text", "") for c in code for o in c.outputs)
    run = RunData.from_file(small_run)
    analysed = f"analysing epoch {run.epochs[run.analysed_index]}"
    assert "hub file (downloaded)" in text and f"p = {run.p}" in text and analysed in text
    (tmp_path / "stages.json").write_text(json.dumps(stages))
