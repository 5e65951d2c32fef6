"""The command line: help text, `info`, `download` against a fake hub, `train` (stand-in and real trainer),
and the hand-over to report.py. No network beyond 127.0.0.1."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from part52_grokking_and_modular_arithmetic.app import cli
from part52_grokking_and_modular_arithmetic.runs import hub, provision
from part52_grokking_and_modular_arithmetic.runs.checkpoints import atomic_save
from part52_grokking_and_modular_arithmetic.runs.config import TrainConfig
from part52_grokking_and_modular_arithmetic.runs.run_data import load_run_data

from fake_hub import FakeHub, make_paper_run_data, to_bytes

REPO, FILE = provision.HUB_REPO_ID, provision.HUB_FILENAME
pytestmark = pytest.mark.usefixtures("isolated_paths")  # never touch the real run file or HF cache


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def help_text(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 0
    return capsys.readouterr().out


# ----------------------------------------------------------------------------------------------------------
def test_top_level_help_lists_the_commands(capsys):
    out = help_text(capsys, ["--help"])
    for command in ("train", "fetch", "download", "info", "report"):
        assert command in out


def test_train_help_documents_every_option_with_its_default(capsys):
    out = " ".join(help_text(capsys, ["train", "--help"]).split())  # undo line wrapping
    flags = {f.name: "--" + f.name.replace("_", "-") for f in dataclasses.fields(TrainConfig)}
    for name, flag in flags.items():
        assert flag in out, f"{flag} ({name}) is not an option of `train`"
    for flag in ("--out", "--no-resume", "--quiet"):
        assert flag in out
    d = TrainConfig()
    for default in (
        f"default: {d.p}",
        f"default: {d.fn}",
        f"default: {d.frac_train}",
        f"default: {d.seed}",
        f"default: {d.epochs:,}",
        f"default: {d.save_every}",
        f"default: {d.test_every}",
        f"default: {d.warmup_steps}",
        f"default: {d.lr:g}",
        "default: 0.9 0.98",
    ):
        assert default in out
    assert str(provision.default_run_path()) in out.replace(" ", "")  # argparse may wrap the path at a hyphen


def test_download_help(capsys):
    out = help_text(capsys, ["download", "--help"])
    for flag in ("--out", "--endpoint", "--repo-id", "--filename", "--revision", "--timeout", REPO, FILE):
        assert flag in out


def test_bad_arguments_exit_with_status_2(capsys):
    for argv in ([], ["train", "--epochs", "0"], ["train", "--fn", "multiply"], ["nope"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2
    capsys.readouterr()


def test_download_timeout_must_be_a_positive_number(capsys):
    for bad in ("0", "-1", "soon", "inf"):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["download", "--timeout", bad])
        assert exit_info.value.code == 2
        assert "seconds" in capsys.readouterr().err


def test_invalid_config_is_a_clear_error(capsys):
    """A bad option value is a one-line usage error (exit status 2) that says what was expected."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--p", "24", "--quiet"])
    assert exit_info.value.code == 2
    assert "p must be an odd prime" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
def test_info_on_our_run_and_on_a_hub_like_file(tmp_path, capsys):
    ours = make_paper_run_data(23, n_checkpoints=2, ours=True)
    atomic_save(ours, tmp_path / "ours.pth")
    assert cli.main(["info", str(tmp_path / "ours.pth")]) == 0
    out = capsys.readouterr().out
    assert "p:               23" in out and "2 at epochs 0 … 100" in out
    assert f"train {ours['train_losses'][-1]:.3e}" in out and f"test {ours['test_losses'][-1]:.3e}" in out
    assert "config:          p=23" in out and "stored" in out

    hub_like = make_paper_run_data(23, n_checkpoints=2)
    atomic_save(hub_like, tmp_path / "hub.pth")
    assert cli.main(["info", str(tmp_path / "hub.pth")]) == 0
    out = capsys.readouterr().out
    assert "none stored (hub file)" in out and "every 10 epochs" in out and "not stored" in out


def test_info_defaults_to_the_run_path_and_reports_bad_files(tmp_path, capsys):
    assert cli.main(["info"]) == 1
    assert f"no checkpoint file at {tmp_path / 'local' / 'full_run_data.pth'}" in capsys.readouterr().err
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    assert cli.main(["info", str(bad)]) == 1
    assert "not a readable torch checkpoint: it is neither a zip archive nor a pickle" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
def test_download_from_a_fake_hub(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    raw = to_bytes(make_paper_run_data(23, n_checkpoints=2))
    with FakeHub({(REPO, FILE): raw}) as hub:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(
            constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}"
        )
        out = tmp_path / "copy.pth"
        assert cli.main(["download", "--endpoint", hub.url, "--out", str(out), "--quiet"]) == 0
    assert out.read_bytes() == raw and str(out) in capsys.readouterr().out
    assert cli.main(["download", "--endpoint", f"http://127.0.0.1:{closed_port()}", "--repo-id", "a/b"]) == 1
    err = capsys.readouterr().err
    assert "could not download a/b" in err and "HF_HUB_OFFLINE" in err


# ----------------------------------------------------------------------------------------------------------
def test_train_passes_the_options_to_the_trainer(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_train(config, out=None, *, resume=True, progress=True, device="auto"):
        assert str(device) in ("cpu", "cuda")  # --device auto, resolved
        calls.append((config, Path(out), resume, progress))
        return make_paper_run_data(23, n_checkpoints=2, ours=True)

    from part52_grokking_and_modular_arithmetic.training import train as trainer

    monkeypatch.setattr(trainer, "train", fake_train)
    argv = [
        "train",
        "--p",
        "23",
        "--fn",
        "subtract",
        "--frac-train",
        "0.5",
        "--seed",
        "3",
        "--lr",
        "0.002",
        "--weight-decay",
        "0.5",
        "--betas",
        "0.8",
        "0.99",
        "--warmup-steps",
        "5",
        "--epochs",
        "300",
        "--save-every",
        "50",
        "--test-every",
        "5",
        "--stop-at-test-loss",
        "1e-3",
        "--out",
        str(tmp_path / "r.pth"),
        "--no-resume",
        "--quiet",
    ]
    assert cli.main(argv) == 0
    expected = TrainConfig(
        p=23,
        fn="subtract",
        frac_train=0.5,
        seed=3,
        lr=0.002,
        weight_decay=0.5,
        betas=(0.8, 0.99),
        warmup_steps=5,
        epochs=300,
        save_every=50,
        test_every=5,
        stop_at_test_loss=1e-3,
    )
    assert calls == [(expected, tmp_path / "r.pth", False, False)]
    assert cli.main(["train", "--quiet"]) == 0  # defaults: the paper recipe, written to the default run path
    assert calls[-1] == (TrainConfig(), tmp_path / "local" / "full_run_data.pth", True, False)
    assert "Wrote" in capsys.readouterr().out


def test_train_writes_a_valid_run_file(tmp_path, capsys, one_torch_thread):
    out = tmp_path / "tiny.pth"
    argv = [
        "train",
        "--p",
        "23",
        "--epochs",
        "100",
        "--save-every",
        "25",
        "--test-every",
        "10",
        "--out",
        str(out),
        "--quiet",
    ]
    assert cli.main(argv) == 0
    data = load_run_data(out, p=23)
    assert data["epochs"] == [0, 25, 50, 75] and len(data["train_losses"]) == 100 and len(data["test_losses"]) == 10
    assert data["config"]["p"] == 23 and data["config"]["epochs"] == 100
    assert data["train_losses"][-1] < data["train_losses"][0]  # it learned something
    assert cli.main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "p:               23" in info and "status:          finished" in info


# ----------------------------------------------------------------------------------------------------------
def test_report_is_a_command_of_the_cli_with_its_options(tmp_path, monkeypatch, capsys):
    from part52_grokking_and_modular_arithmetic.app import report

    seen = []
    monkeypatch.setattr(report, "run_main_job", lambda out_dir, **kwargs: seen.append((out_dir, kwargs)))
    out_dir = tmp_path / "reports"
    assert cli.main(["report", "--out-dir", str(out_dir), "--no-training", "--cell-timeout", "5"]) == 0
    assert report.main(["--out-dir", str(out_dir), "--device", "cpu"]) == 0  # report.main is the same command
    (first_dir, first), (_, second) = seen
    assert first_dir == out_dir and first["allow_training"] is False and first["cell_timeout"] == 5
    assert second["allow_training"] is True and second["device"] == "cpu" and second["cell_timeout"] == 1800
    with pytest.raises(SystemExit) as info:
        cli.main(["report", "--help"])
    assert info.value.code == 0 and "--cell-timeout" in capsys.readouterr().out


def test_python_dash_m_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "part52_grokking_and_modular_arithmetic", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "download" in result.stdout


def test_fetch_uses_the_local_file_and_fails_clearly_without_one(tmp_path, monkeypatch, capsys):
    ours = make_paper_run_data(23, n_checkpoints=2, ours=True)
    atomic_save(ours, tmp_path / "local" / "full_run_data.pth")
    assert cli.main(["fetch", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "local file" in out and "p:               23" in out

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli.main(["fetch", "--no-training", "--out", str(tmp_path / "missing.pth")]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "train" in err


def test_fetch_interrupted_while_training_is_reported_without_a_traceback(monkeypatch, capsys, tmp_path):
    """`fetch` trains the default model when it has to: Ctrl-C / SIGTERM there is reported like in `train`
    (the message says what was saved; exit status 128 + the signal), not as a traceback."""
    import signal

    from part52_grokking_and_modular_arithmetic.training.train import TrainingInterrupted

    def interrupted(*args, **kwargs):
        raise TrainingInterrupted(
            "SIGTERM: stopped after 10 of 20 epochs; resume with the same command",
            signum=signal.SIGTERM,
            saved_to=tmp_path / "run.pth",
            epochs_done=10,
        )

    monkeypatch.setattr(provision, "load_full_run_data", interrupted)
    assert cli.main(["fetch", "--out", str(tmp_path / "run.pth"), "--quiet"]) == 128 + signal.SIGTERM
    assert "stopped after 10 of 20 epochs" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# failures: one line naming the option, exit status 1; a bug still shows its traceback
def test_an_os_error_on_a_path_names_the_option(tmp_path, monkeypatch, capsys):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    monkeypatch.setattr(hub, "download_full_run_data", lambda out, **kw: open(out, "w"))  # the OS's own error
    assert cli.main(["download", "--out", str(loop), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err == f"error: --out {loop}: Too many levels of symbolic links\n"

    afile = tmp_path / "afile"
    afile.write_text("x")
    monkeypatch.setattr(hub, "download_full_run_data", lambda out, **kw: open(out / "inside", "w"))
    assert cli.main(["download", "--out", str(afile)]) == 1
    assert capsys.readouterr().err == f"error: --out {afile}: {afile / 'inside'}: Not a directory\n"

    monkeypatch.setenv("PART52_RUN_PATH", str(loop))
    monkeypatch.setattr(provision, "default_run_path", lambda: loop)
    monkeypatch.setattr(
        "part52_grokking_and_modular_arithmetic.runs.run_data.RunData.from_file", lambda path: open(path)
    )
    assert cli.main(["info"]) == 1
    assert capsys.readouterr().err == f"error: PART52_RUN_PATH={loop}: Too many levels of symbolic links\n"


def test_error_line_keeps_messages_and_lets_bugs_raise(tmp_path, monkeypatch):
    from part52_grokking_and_modular_arithmetic.runs.checkpoints import CorruptCheckpointError

    assert cli.error_line(CorruptCheckpointError("x.pth is truncated")) == "x.pth is truncated"
    assert cli.error_line(ValueError("p must be an odd prime")) == "p must be an odd prime"
    assert cli.error_line(FileNotFoundError(2, "No such file or directory", "r/a.pth"), {"--out-dir r": "r"}) == (
        "--out-dir r: r/a.pth: No such file or directory"
    )
    assert cli.error_line(TypeError("a bug")) is None and cli.error_line(MemoryError()) is None

    def bug(**kwargs):
        raise TypeError("a bug")

    monkeypatch.setattr(hub, "download_full_run_data", bug)
    with pytest.raises(TypeError):
        cli.main(["download"])
