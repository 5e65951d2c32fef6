"""The online path end to end: a file in the course hub file's format (paper layout, no config, no split, 50,000
epochs, analysed at epoch 40,000), made from a real training run, served by the fake hub on 127.0.0.1 and taken
through the main job (``python -m part52_grokking_and_modular_arithmetic report``) and the solutions notebook,
with an empty Hugging Face cache and no local run file, so the model must be downloaded.

Fast: the conversion to the hub format. Slow: the main job on the session's small run (``conftest.small_run``,
p = 31) in the hub's format, and on one model stored 500 times (a released final model); the notebook on the
default model is the nbmake run's.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch
from test_notebook_any_run import without_cells_tagged

from part52_grokking_and_modular_arithmetic.app import report
from part52_grokking_and_modular_arithmetic.runs.hub import HUB_FILENAME, HUB_REPO_ID
from part52_grokking_and_modular_arithmetic.runs.run_data import (
    RunData,
    analysed_index_of,
    infer_config,
    validate_run_data,
)

from fake_hub import FakeHub, make_paper_run_data, to_bytes
from hub_format import HUB_EPOCHS, same_model_hub_format, to_hub_format


def hub_env(tmp_path: Path, hub_url: str) -> dict[str, str]:
    """A process environment that sees only the fake hub: no HF_HUB_OFFLINE, an empty HF_HOME, a local run path
    that does not exist (so nothing local is found and the model must come from the hub)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "HUGGINGFACE_", "PART52_", "TRANSFORMERS_OFFLINE"))
    }
    env.update(
        HF_ENDPOINT=hub_url,
        HF_HOME=str(tmp_path / "hf_home"),
        PART52_RUN_PATH=str(tmp_path / "no_local_run" / "full_run_data.pth"),
        PART52_GROKKING_HOME=str(tmp_path / "user_cache"),
        TQDM_DISABLE="1",
    )
    return env


# ------------------------------------------------------------------------------------------ the hub format


def test_to_hub_format_pads_to_the_hub_layout_and_shares_storage():
    run = make_paper_run_data(p=23, n_checkpoints=3, test_every=5, ours=True)  # our trainer's format, short
    hub = to_hub_format(run)
    assert set(hub) == {"state_dicts", "epochs", "train_losses", "test_losses"}  # no config, no split
    assert validate_run_data(hub) == 23
    assert hub["epochs"] == list(range(0, HUB_EPOCHS, 100)) and len(hub["state_dicts"]) == 500
    assert len(hub["train_losses"]) == HUB_EPOCHS and len(hub["test_losses"]) == HUB_EPOCHS // 10
    # the analysed checkpoint is the hub's (epoch 40,000 = index 400) and holds the run's final model
    index = analysed_index_of(hub["epochs"])
    assert index == 400
    for name, value in run["state_dicts"][-1].items():
        assert torch.equal(hub["state_dicts"][index][name], value), name
    assert hub["state_dicts"][index]["blocks.0.attn.mask"].shape == (3, 3)
    # losses: the run's own, then held at their last value; test loss at epoch 10 = ours at epoch 10 (index 2)
    assert hub["train_losses"][:300] == run["train_losses"] and hub["train_losses"][-1] == run["train_losses"][-1]
    assert hub["test_losses"][1] == run["test_losses"][2] and hub["test_losses"][-1] == run["test_losses"][-1]
    # the recipe the course reads from such a file
    cfg = infer_config(hub)
    assert (cfg.p, cfg.epochs, cfg.save_every, cfg.test_every) == (23, HUB_EPOCHS, 100, 10)
    # padding repeats the same tensors: the file is hardly bigger than the run's three checkpoints
    own_only = len(to_bytes({k: run[k] for k in ("state_dicts", "epochs")}))
    weights_only = len(to_bytes({"state_dicts": hub["state_dicts"], "epochs": hub["epochs"]}))
    assert weights_only < 2 * own_only + 100_000, (weights_only, own_only)


def test_to_hub_format_rejects_runs_it_cannot_represent():
    run = make_paper_run_data(p=23, n_checkpoints=3, ours=True)
    with pytest.raises(ValueError, match="every 100 epochs"):
        to_hub_format(dict(run, epochs=[0, 50, 100]))
    with pytest.raises(ValueError, match="longer"):
        to_hub_format(run, epochs=200)


def test_same_model_file_is_hub_format():
    hub = same_model_hub_format(make_paper_run_data(p=23, n_checkpoints=2, ours=True), n_checkpoints=4)
    assert validate_run_data(hub) == 23 and "config" not in hub and len(hub["state_dicts"]) == 4


# ------------------------------------------------------------------------------------------ end to end


def run_main_job_against_the_fake_hub(tmp_path: Path, data: bytes) -> tuple[str, nbformat.NotebookNode, str, dict]:
    """Serve ``data`` as the course's hub file and run the main job in a fresh process that must download it, on
    the solutions notebook less its Bonus training cells (they train their own p = 53 models whatever is loaded;
    the nbmake run covers them).

    Returns ``(log, executed notebook, its printed text, environment)``; fails with the log when the job fails
    or the hub saw no download.
    """
    notebook = without_cells_tagged(report.default_solutions_notebook(), "bonus-training", tmp_path)
    with FakeHub({(HUB_REPO_ID, HUB_FILENAME): data}) as hub:
        env = hub_env(tmp_path, hub.url)
        out_dir = tmp_path / "reports"
        cmd = [
            sys.executable,
            "-m",
            "part52_grokking_and_modular_arithmetic",
            "report",
            "--out-dir",
            str(out_dir),
            "--no-training",
            "--device",
            "cpu",
            "--cell-timeout",
            "1200",
            "--notebook",
            str(notebook),
        ]
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=2400)
        log = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"the main job failed (exit {proc.returncode}):\n{log[-6000:]}"
        downloads = [r for r in hub.resolve_requests() if r[0] == "GET"]
    assert downloads, f"the fake hub saw no download: {hub.requests}"
    assert not Path(env["PART52_RUN_PATH"]).exists(), "the hub file is used from the Hugging Face cache, not copied"
    assert "Training the model locally" not in log
    executed = nbformat.read(str(out_dir / f"{report.REPORT_NAME}_executed.ipynb"), as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{errors[0].ename}: {errors[0].evalue}" if errors else ""
    text = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert "hub file (cached)" in text, "the notebook should read the file the main job downloaded"
    return log, executed, text, env


@pytest.mark.slow
@pytest.mark.notebook
def test_main_job_downloads_the_hub_file_and_runs_the_notebook(small_run, tmp_path):
    """The main job (``report``) against the fake hub serving the session's small run (``conftest.SMALL_RUN``: p =
    31, another seed, split and lr, stopped early): the notebook runs for any run, with no index or frequency
    hard-coded for p = 113, and its graders pass."""
    run = RunData.from_file(small_run)
    log, executed, text, _ = run_main_job_against_the_fake_hub(tmp_path, small_run.read_bytes())
    print(log[-3000:])
    assert f"checkpoints up to epoch {run.epochs[-1]} (hub file (downloaded)" in log, log[-3000:]
    assert f"p = {run.p}" in text and f"analysing epoch {run.epochs[run.analysed_index]}" in text
    assert "✅" in text  # graders and computed claims ran (a claim may fail on a small run: it says so)
    if "analysis device:" in "".join(c.source for c in executed.cells):
        assert "analysis device: cpu" in text  # --device cpu reached the kernel

    html = (tmp_path / "reports" / f"{report.REPORT_NAME}.html").read_text(encoding="utf-8")
    report.check_offline_html(html)
    assert html.count("<math") > 50
    prose = re.sub(r"<(script|style)\b.*?</\1>", "", html, flags=re.S)
    assert "$" not in prose, "raw TeX left in the report"


@pytest.mark.slow
@pytest.mark.notebook
def test_a_released_final_model_runs_the_whole_chapter_with_flat_dynamics(small_run, tmp_path):
    """A hub-format file holding one model 500 times (as a released final model would; here the session's small
    run's, p = 31): Section 3 must not crash; its progress measures are flat, and the notebook says why."""
    from part52_grokking_and_modular_arithmetic.runs.run_data import load_run_data

    data = to_bytes(same_model_hub_format(load_run_data(small_run), n_checkpoints=500))
    assert len(data) < 5_000_000  # one model, stored once
    _, _, text, _ = run_main_job_against_the_fake_hub(tmp_path, data)
    assert "analysing epoch 40000" in text
    assert "analysed checkpoints hold the same weights" in text  # the note of compute_dynamics (a UserWarning)
    assert "no training phases" in text  # the notebook's own note in Section 3
