"""Nothing lost, nothing hangs: the trainer and its run file under faults.

Full or read-only disks (checked before training; a failed write keeps the previous file and saves the run
elsewhere), the lock that keeps two runs off one file, SIGTERM and repeated Ctrl-C, temporary files of killed
runs, diverging losses, non-finite weights in a file, and nonsense configurations (non-prime p, negative
warm-up, a p too large for the machine's memory, stored configs and resume records that contradict the
weights). CPU only, p = 23.

As root, permissions do not stop writes, so a read-only folder and a full disk are simulated by making the
low-level write raise ``OSError(EROFS/ENOSPC)`` (the real ``chmod`` case runs when not root).
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from jaxtyping import TypeCheckError

from part52_grokking_and_modular_arithmetic.app import cli
from part52_grokking_and_modular_arithmetic.runs import checkpoints
from part52_grokking_and_modular_arithmetic.runs.checkpoints import (
    CorruptCheckpointError,
    RunFileLock,
    RunFileLockedError,
    RunFileWriteError,
    atomic_save,
    safe_load,
)
from part52_grokking_and_modular_arithmetic.runs.config import TrainConfig
from part52_grokking_and_modular_arithmetic.runs.run_data import load_run_data
from part52_grokking_and_modular_arithmetic.training import train as trainer
from part52_grokking_and_modular_arithmetic.training.resources import estimate_memory_bytes, estimate_run_file_bytes
from part52_grokking_and_modular_arithmetic.training.train import (
    NotEnoughMemoryError,
    RunNotSavedError,
    TrainingDivergedError,
    TrainingInterrupted,
    train,
)

FAST = TrainConfig(p=23, frac_train=0.5, epochs=60, save_every=20, test_every=10)
ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread", "isolated_paths")


def _leftovers(folder: Path, name: str) -> list[str]:
    """Files beside ``name`` other than the run file itself (temporary, probe or lock files)."""
    return sorted(f.name for f in folder.iterdir() if f.name.startswith(name) and f.name != name)


def _fail_writes_in(monkeypatch, folder: Path, err: int, times: int | None = None) -> list[int]:
    """Make run-file writes into ``folder`` fail with ``OSError(err)`` after writing half of the bytes (so a
    partial temporary file exists and must be removed). Small writes (the pre-flight probe) still succeed.
    ``times``: fail only that many times. Returns a list counting the failures."""
    real_write, real_all = checkpoints.write_bytes_atomically, checkpoints._write_all
    failures: list[int] = []

    def half_then_fail(fd, data):
        real_all(fd, data[: len(data) // 2])
        failures.append(err)
        raise OSError(err, os.strerror(err))

    def flaky(data, path):
        if Path(path).parent != folder or len(data) < 1000 or (times is not None and len(failures) >= times):
            return real_write(data, path)
        with monkeypatch.context() as m:
            m.setattr(checkpoints, "_write_all", half_then_fail)
            return real_write(data, path)

    monkeypatch.setattr(checkpoints, "write_bytes_atomically", flaky)
    return failures


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# ----------------------------------------------------------------------------------------------------------
# disk: checked before training; a failed write loses nothing
def test_estimated_run_file_size_bounds_the_real_one(tmp_path):
    out = tmp_path / "run.pth"
    train(FAST, out, progress=False)
    size, estimate = out.stat().st_size, estimate_run_file_bytes(FAST)
    assert size <= estimate <= 1.6 * size


def test_a_disk_without_room_is_refused_before_training(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run.pth"
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(checkpoints.shutil, "disk_usage", lambda folder: usage(10**9, 10**9 - 123_000, 123_000))
    monkeypatch.setattr(trainer, "make_model", lambda *a, **k: pytest.fail("trained although the disk is full"))
    with pytest.raises(RunFileWriteError, match="not enough room") as info:
        train(FAST, out, progress=False)
    message = str(info.value)
    assert (
        str(out) in message
        and "0.1 MB is free" in message
        and f"{1.1 * estimate_run_file_bytes(FAST) / 1e6:,.1f} MB" in message
    )
    assert info.value.errno == errno.ENOSPC and not out.exists() and _leftovers(tmp_path, "run.pth") == []
    assert cli.main(["train", "--p", "23", "--epochs", "60", "--out", str(out), "--quiet"]) == 1
    assert "error: not enough room for the run file" in capsys.readouterr().err


def test_a_read_only_folder_is_refused_before_training_simulated(tmp_path, monkeypatch):
    out = tmp_path / "run.pth"
    monkeypatch.setattr(
        checkpoints, "_write_all", lambda fd, data: (_ for _ in ()).throw(OSError(errno.EROFS, "Read-only file system"))
    )
    monkeypatch.setattr(trainer, "make_model", lambda *a, **k: pytest.fail("trained although the folder is read-only"))
    with pytest.raises(RunFileWriteError, match="read-only") as info:
        train(FAST, out, progress=False)
    assert str(out) in str(info.value) and info.value.errno == errno.EROFS
    assert list(tmp_path.iterdir()) == []  # the probe's temporary file was removed


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="as root, chmod does not stop writes")
def test_a_read_only_folder_is_refused_before_training_for_real(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(RunFileWriteError, match="permission denied"):
            train(FAST, folder / "run.pth", progress=False)
    finally:
        folder.chmod(0o755)


def test_a_full_disk_at_the_end_keeps_the_previous_file_and_saves_the_run_elsewhere(tmp_path, monkeypatch):
    out, rescue = tmp_path / "runs" / "run.pth", tmp_path / "rescue"
    rescue.mkdir()
    train(dataclasses.replace(FAST, epochs=20), out, progress=False)
    before = out.read_bytes()
    failures = _fail_writes_in(monkeypatch, out.parent, errno.ENOSPC)
    with pytest.raises(RunNotSavedError) as info:
        train(FAST, out, progress=False, fallback_dirs=[rescue])  # extends the run: 40 more epochs
    e = info.value
    assert failures and "the disk is full (ENOSPC)" in str(e) and str(out) in str(e) and str(e.saved_to) in str(e)
    assert out.read_bytes() == before  # the previous file is intact
    assert _leftovers(out.parent, "run.pth") == []  # the half-written temporary file is gone, the lock released
    assert e.saved_to.parent == rescue and len(e.run_data["train_losses"]) == FAST.epochs
    rescued = load_run_data(e.saved_to)
    assert rescued["train_losses"] == e.run_data["train_losses"] and rescued["resume"]["finished"]
    monkeypatch.undo()
    e.saved_to.replace(out)  # as the message says: move it back once there is room
    assert (
        train(FAST, out, progress=False, callback=lambda *a: pytest.fail("trained again"))["train_losses"]
        == rescued["train_losses"]
    )


def test_nowhere_to_write_says_so(tmp_path, monkeypatch):
    out = tmp_path / "run.pth"
    _fail_writes_in(monkeypatch, tmp_path, errno.ENOSPC)
    with pytest.raises(RunNotSavedError, match="nothing was saved") as info:
        train(FAST, out, progress=False, fallback_dirs=[tmp_path])
    assert info.value.saved_to is None and len(info.value.run_data["train_losses"]) == FAST.epochs and not out.exists()


def test_a_failed_write_during_training_does_not_stop_it(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run.pth"
    failures = _fail_writes_in(monkeypatch, tmp_path, errno.ENOSPC, times=2)
    run = train(FAST, out, progress=False, save_interval_s=0)
    assert len(failures) == 2 and run["resume"]["finished"]
    assert safe_load(out)["train_losses"] == run["train_losses"]
    err = capsys.readouterr().err
    assert err.count("the disk is full") == 1 and "Training goes on with the run in memory" in err


# ----------------------------------------------------------------------------------------------------------
# the lock and stale files
def test_a_second_run_on_a_locked_file_stops_at_once(tmp_path, capsys):
    out = tmp_path / "run.pth"
    with RunFileLock(out):
        with pytest.raises(RunFileLockedError, match=f"another training run \\(pid {os.getpid()}\\) is writing"):
            train(FAST, out, progress=False)
        assert cli.main(["train", "--p", "23", "--epochs", "60", "--out", str(out), "--quiet"]) == 1
        assert f"another training run (pid {os.getpid()}) is writing {out}" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "run.pth.lock").exists()
    train(dataclasses.replace(FAST, epochs=1), out, progress=False)  # free again
    assert _leftovers(tmp_path, "run.pth") == []


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
    """A real process takes the lock and is killed with SIGKILL: the next run proceeds."""
    out = tmp_path / "run.pth"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from part52_grokking_and_modular_arithmetic.runs.checkpoints import RunFileLock;"
            f"RunFileLock({str(out)!r}).acquire(); print('locked', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFileLockedError, match=f"pid {holder.pid}"):
            train(FAST, out, progress=False)
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / "run.pth.lock").exists()  # left behind by the killed process...
    train(dataclasses.replace(FAST, epochs=1), out, progress=False)  # ...and no obstacle


def test_temporary_files_of_killed_runs_are_removed(tmp_path):
    out = tmp_path / "run.pth"
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, signal; from pathlib import Path;"
            "from part52_grokking_and_modular_arithmetic.runs.checkpoints import temp_path;"
            f"t = temp_path(Path({str(out)!r})); t.write_bytes(b'x' * 10**6); print(t.name, flush=True);"
            "os.kill(os.getpid(), signal.SIGKILL)",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL
    stale = tmp_path / killed.stdout.strip()
    alive = checkpoints.temp_path(out)  # this process's own: in use
    foreign = tmp_path / f"other.pth.tmp-{_dead_pid()}-0123abcd"  # another file's
    for f in (alive, foreign):
        f.write_bytes(b"x")
    assert stale.exists()
    train(dataclasses.replace(FAST, epochs=1), out, progress=False)
    assert not stale.exists()
    assert alive.exists() and foreign.exists()  # in use, or not ours


# ----------------------------------------------------------------------------------------------------------
# signals
def _start_cli(out: Path, epochs: int = 100_000) -> subprocess.Popen:
    """The CLI training a long run (minutes) in a subprocess; checkpoints every 1,000 epochs."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    argv = [
        sys.executable,
        "-m",
        "part52_grokking_and_modular_arithmetic",
        "train",
        "--p",
        "23",
        "--frac-train",
        "0.5",
        "--epochs",
        str(epochs),
        "--save-every",
        "1000",
        "--test-every",
        "10",
        "--out",
        str(out),
        "--quiet",
    ]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)


def _wait_until_training(proc: subprocess.Popen, out: Path, timeout: float = 120) -> None:
    """Until the run holds its lock, then a little longer (the first epochs)."""
    deadline = time.monotonic() + timeout
    while not Path(str(out) + ".lock").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.05)
    time.sleep(1.5)


@pytest.mark.slow
def test_sigterm_saves_the_run_and_it_resumes(tmp_path):
    """Also: a second command with another config on the same --out (the silent-overwrite case) is refused."""
    out = tmp_path / "run.pth"
    proc = _start_cli(out)
    _wait_until_training(proc, out)
    other = subprocess.run(
        [
            sys.executable,
            "-m",
            "part52_grokking_and_modular_arithmetic",
            "train",
            "--p",
            "23",
            "--seed",
            "1",
            "--epochs",
            "100",
            "--out",
            str(out),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert other.returncode == 1 and f"another training run (pid {proc.pid}) is writing {out}" in other.stderr
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM" in err and f"{out} holds them" in err and "run the same command again to resume" in err
    data = load_run_data(out)
    done = data["resume"]["epochs_done"]
    assert not data["resume"]["finished"] and done == len(data["train_losses"]) > 0
    assert _leftovers(tmp_path, "run.pth") == []  # no lock, no temporary file
    config = TrainConfig.from_dict(data["config"])
    seen = []

    def stop_after_one(epoch, *_):
        seen.append(epoch)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, out, progress=False, callback=stop_after_one)
    assert seen == [done]  # it continued where it stopped


def test_ctrl_c_twice_never_claims_a_file_that_was_not_written(tmp_path):
    out = tmp_path / "run.pth"
    proc = _start_cli(out)
    _wait_until_training(proc, out)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "Traceback" not in err and "RuntimeError" not in err
    assert f"{out} holds them" in err
    assert load_run_data(out)["resume"]["epochs_done"] > 0


def test_ctrl_c_while_saving_lets_the_save_finish(tmp_path, monkeypatch, capfd):
    out = tmp_path / "run.pth"
    real_save = trainer.atomic_save

    def interrupted_save(obj, path):
        os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C: stop at the epoch boundary
        time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)  # the second, while the file is being written
        time.sleep(0.01)
        return real_save(obj, path)

    monkeypatch.setattr(trainer, "atomic_save", interrupted_save)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as info:
        train(FAST, out, progress=False, save_interval_s=0)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # restored
    e = info.value
    assert e.saved_to == out and e.signum == signal.SIGINT and f"{out} holds them" in str(e)
    assert "still writing" in capfd.readouterr().err
    data = load_run_data(out)
    assert data["resume"]["epochs_done"] == e.epochs_done == FAST.save_every


def test_a_command_ignores_later_signals_once_a_signal_stopped_training(tmp_path, monkeypatch):
    """The command line calls command_process(owns_process=True): after the first Ctrl-C its process only reports
    and exits, so a second Ctrl-C cannot interrupt the report (a library caller gets its own handlers back: the
    test above)."""
    monkeypatch.setattr(trainer, "_EXIT_AFTER_STOP", False)  # restored after the test
    trainer.command_process(owns_process=True)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)

    def ctrl_c(epoch, *_):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)

    try:
        with pytest.raises(TrainingInterrupted):
            train(FAST, tmp_path / "run.pth", progress=False, callback=ctrl_c)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN and signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGINT)  # ignored: no KeyboardInterrupt
        time.sleep(0.01)
    finally:
        signal.signal(signal.SIGINT, handlers[0])
        signal.signal(signal.SIGTERM, handlers[1])


def test_an_interrupt_before_the_first_epoch_writes_nothing_and_says_so(tmp_path, monkeypatch):
    out = tmp_path / "run.pth"
    real = trainer.make_model

    def interrupted(*a, **k):  # while the model is built: the lock is held, no epoch has run
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        return real(*a, **k)

    monkeypatch.setattr(trainer, "make_model", interrupted)
    with pytest.raises(TrainingInterrupted, match="nothing was written") as info:
        train(FAST, out, progress=False)
    assert info.value.saved_to is None and info.value.signum == signal.SIGTERM
    assert not out.exists() and _leftovers(tmp_path, "run.pth") == []


# ----------------------------------------------------------------------------------------------------------
# diverging runs and non-finite weights
def test_a_diverging_run_stops_at_the_first_non_finite_loss(tmp_path, capsys):
    out = tmp_path / "run.pth"
    argv = ["train", "--p", "23", "--lr", "1e6", "--epochs", "200", "--save-every", "1", "--out", str(out), "--quiet"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "diverged at epoch" in err and "lower --lr" in err and "(status: diverged)" in err
    epoch = int(err.split("diverged at epoch ")[1].split(":")[0])
    data = load_run_data(out)  # a valid file: every kept checkpoint is finite
    assert data["resume"]["diverged"] and data["resume"]["diverged_at"] == epoch
    assert len(data["train_losses"]) == epoch and all(torch.isfinite(torch.tensor(data["train_losses"])))
    assert data["epochs"] == list(range(epoch))  # the checkpoints before it
    assert cli.main(["info", str(out)]) == 0
    assert f"status:          diverged at epoch {epoch}" in capsys.readouterr().out
    config = TrainConfig.from_dict(data["config"])
    with pytest.raises(TrainingDivergedError, match="would diverge again"):
        train(config, out, progress=False, callback=lambda *a: pytest.fail("trained again"))


def test_a_run_diverging_just_after_a_periodic_write_is_recorded_as_diverged(tmp_path):
    # every checkpoint is written at once (save_interval_s=0), so the last periodic write holds exactly the epochs
    # done when the loss becomes non-finite: the file must still end up saying "diverged", not "unfinished"
    out = tmp_path / "run.pth"
    config = TrainConfig(p=23, lr=1e6, epochs=200, save_every=1, test_every=1)
    with pytest.raises(TrainingDivergedError) as info:
        train(config, out, progress=False, save_interval_s=0)
    data = load_run_data(out)
    assert data["resume"]["diverged"], "the file was left saying the run is unfinished"
    assert data["resume"]["epochs_done"] == len(data["train_losses"]) == info.value.epoch


def test_nan_weights_in_a_file_are_refused(tmp_path, capsys):
    run = train(dataclasses.replace(FAST, epochs=41), progress=False)
    run["state_dicts"][1]["blocks.0.mlp.W_in"][3, 5] = float("nan")
    run["state_dicts"][1]["blocks.0.mlp.W_in"][4, 5] = float("inf")
    atomic_save(run, tmp_path / "nan.pth")
    with pytest.raises(
        CorruptCheckpointError,
        match=r"state dict 1 \(epoch 20\): blocks.0.mlp.W_in\b.* holds 2 non-finite values \(nan/inf\)",
    ):
        load_run_data(tmp_path / "nan.pth")
    assert cli.main(["info", str(tmp_path / "nan.pth")]) == 1
    assert "non-finite" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# nonsense configurations fail fast, with one line
@pytest.mark.parametrize(
    "p, why",
    [
        (9, "9 is not prime (9 = 3 × 3)"),
        (15, "15 is not prime (15 = 3 × 5)"),
        (2, "2 is too small"),
        (-7, "-7 is too small"),
        (24, "24 is even (24 = 2 × 12)"),
        (1_000_003 * 1_000_033, "has a factor above 10^6"),
    ],
)
def test_p_must_be_an_odd_prime(p, why, capsys):
    with pytest.raises(ValueError, match="must be an odd prime") as info:
        TrainConfig(p=p)
    assert why in str(info.value) and "field" in str(info.value)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--p", str(p)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert why in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--warmup-steps", "-1"], "warmup_steps must be an integer >= 0, got -1"),
        (["--lr", "0"], "lr must be > 0"),
        (["--lr", "nan"], "lr must be a finite number"),
        (["--lr", "abc"], "expected a number, got 'abc'"),
        (["--frac-train", "1"], "frac_train must be in (0, 1)"),
        (["--weight-decay", "-0.1"], "weight_decay must be >= 0"),
        (["--betas", "0.9", "1"], "beta must be in [0, 1)"),
        (["--save-every", "0"], "save_every must be an integer >= 1"),
        (["--seed", "1.5"], "expected an integer, got '1.5'"),
        (["--stop-at-test-loss", "-1"], "stop_at_test_loss must be > 0"),
        (["--p", "abc"], "expected an integer, got 'abc'"),
    ],
)
def test_every_option_is_checked_with_a_one_line_error(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert expected in err[-1] and argv[0] in err[-1]


def test_invalid_values_are_refused_by_the_config_too():
    for bad in (
        dict(warmup_steps=-1),
        dict(lr=0.0),
        dict(lr=float("inf")),
        dict(betas=(0.9, 1.0)),
        dict(p="113"),
        dict(epochs=0),
        dict(frac_train=0.0),
        dict(weight_decay=-1.0),
        dict(p=True),
    ):
        with pytest.raises((ValueError, TypeCheckError)):  # jaxtyping's TypeCheckError for a wrong type under pytest
            TrainConfig(**bad)


def test_a_p_too_large_for_memory_is_refused_before_allocating(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(trainer, "make_model", lambda *a, **k: pytest.fail("allocated the model"))
    monkeypatch.setattr(trainer, "TrainingData", lambda *a, **k: pytest.fail("allocated the data"))
    big = TrainConfig(p=10_007, epochs=10)  # a prime: 10^8 pairs with 10^4 logits each
    start = time.perf_counter()
    with pytest.raises(NotEnoughMemoryError, match=r"p = 10007 needs about [\d,.]+ GB of memory") as info:
        train(big, tmp_path / "big.pth", progress=False)
    assert time.perf_counter() - start < 2 and not (tmp_path / "big.pth").exists()
    assert f"{estimate_memory_bytes(big) / 1e9:,.1f} GB" in str(info.value)
    assert cli.main(["train", "--p", "10007", "--epochs", "10", "--out", str(tmp_path / "big.pth"), "--quiet"]) == 1
    assert "GB is available" in capsys.readouterr().err


def test_the_memory_check_compares_the_estimate_with_what_is_available(monkeypatch):
    need = estimate_memory_bytes(FAST)
    assert estimate_memory_bytes(TrainConfig(p=113)) > need > estimate_memory_bytes(dataclasses.replace(FAST, p=5)) > 0
    monkeypatch.setattr(trainer, "available_memory_bytes", lambda: need - 1)
    with pytest.raises(NotEnoughMemoryError):
        train(FAST, progress=False)
    monkeypatch.setattr(trainer, "available_memory_bytes", lambda: None)  # unknown: no refusal
    assert len(train(dataclasses.replace(FAST, epochs=1), progress=False)["train_losses"]) == 1


def _our_run(tmp_path: Path, **changes) -> Path:
    run = train(dataclasses.replace(FAST, epochs=30), progress=False)
    for key, value in changes.items():
        target, _, field = key.partition("__")
        if field:
            if value is None:
                del run[target][field]
            else:
                run[target][field] = value
        else:
            run[target] = value
    path = tmp_path / "run.pth"
    atomic_save(run, path)
    return path


def test_a_stored_config_with_a_non_numeric_p_is_a_one_line_error(tmp_path, capsys):
    path = _our_run(tmp_path, config__p="abc")
    with pytest.raises(CorruptCheckpointError, match="invalid stored config: p must be an integer"):
        load_run_data(path)
    assert cli.main(["info", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "invalid stored config" in err and "Traceback" not in err
    assert (
        cli.main(
            [
                "train",
                "--p",
                "23",
                "--frac-train",
                "0.5",
                "--epochs",
                "60",
                "--save-every",
                "20",
                "--out",
                str(path),
                "--quiet",
            ]
        )
        == 1
    )


def test_a_resume_record_without_its_parameters_is_a_one_line_error(tmp_path, capsys):
    run = train(dataclasses.replace(FAST, epochs=41), progress=False)
    path = tmp_path / "run.pth"
    keep = [i for i, e in enumerate(run["epochs"]) if e < 40]  # a consistent file: only its resume record is damaged
    unfinished = dict(
        run,
        train_losses=run["train_losses"][:40],
        epochs=[run["epochs"][i] for i in keep],
        state_dicts=[run["state_dicts"][i] for i in keep],
        resume=dict(run["resume"], epochs_done=40, finished=False),
    )
    del unfinished["resume"]["params"]
    atomic_save(unfinished, path)
    with pytest.raises(CorruptCheckpointError, match=r"lacks \['params'\], so it cannot be continued"):
        train(dataclasses.replace(FAST, epochs=41), path, progress=False)
    argv = [
        "train",
        "--p",
        "23",
        "--frac-train",
        "0.5",
        "--epochs",
        "41",
        "--save-every",
        "20",
        "--out",
        str(path),
        "--quiet",
    ]
    assert cli.main(argv) == 1
    assert "lacks ['params']" in capsys.readouterr().err


def test_info_reports_a_stored_p_that_contradicts_the_weights(tmp_path, capsys):
    path = _our_run(tmp_path, config__p=29)
    assert cli.main(["info", str(path)]) == 1
    err = capsys.readouterr().err
    assert "the stored config says p = 29, but the weights are for p = 23" in err


def test_help_says_when_the_file_is_written(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "at every checkpoint" not in text
    for phrase in ("at most once a minute", "at the end", "Ctrl-C or SIGTERM", "<out>.lock", "diverging loss"):
        assert phrase in text


# ----------------------------------------------------------------------------------------------------------
# the same on real file systems: a small tmpfs in a private mount namespace (needs root and unshare)
def _can_mount() -> bool:
    if os.name != "posix" or os.geteuid() != 0 or not Path("/usr/bin/unshare").exists():
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


needs_mount = pytest.mark.skipif(not _can_mount(), reason="needs root and `unshare -m` to mount a tmpfs")


def _cli_on_tmpfs(tmp_path: Path, size: str, script: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run ``script`` (sh) in a private mount namespace where ``$M`` is a fresh tmpfs of ``size``; ``$TRAIN`` is
    the CLI's train command (p = 23), ``$TMPDIR`` a folder outside the tmpfs."""
    mnt, rescue = tmp_path / "mnt", tmp_path / "rescue"
    mnt.mkdir()
    rescue.mkdir()
    train_cmd = f"{sys.executable} -m part52_grokking_and_modular_arithmetic train --p 23 --frac-train 0.5 --quiet"
    env = dict(os.environ, M=str(mnt), TRAIN=train_cmd, TMPDIR=str(rescue), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", f'mount -t tmpfs -o size={size} tmpfs "$M" || exit 99; {script}'],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=timeout,
    )


@needs_mount
def test_a_real_small_disk_is_refused_before_training(tmp_path):
    result = _cli_on_tmpfs(tmp_path, "2m", '$TRAIN --epochs 60 --save-every 20 --out "$M/run.pth"')
    assert result.returncode == 1, result.stderr
    assert "not enough room for the run file" in result.stderr and "MB is free" in result.stderr
    assert "Traceback" not in result.stderr


@needs_mount
def test_a_real_read_only_file_system_is_refused_before_training(tmp_path):
    result = _cli_on_tmpfs(tmp_path, "8m", 'mount -o remount,ro "$M" && $TRAIN --epochs 60 --out "$M/run.pth"')
    assert result.returncode == 1, result.stderr
    assert "the file system is read-only (EROFS)" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
@needs_mount
def test_a_disk_that_fills_up_during_training_loses_nothing(tmp_path):
    """The disk fills while training (another file takes the space); SIGTERM: the write fails with ENOSPC,
    the run goes to the temp folder, and the command says so."""
    script = (
        '$TRAIN --epochs 20000 --save-every 1000 --out "$M/run.pth" & pid=$!; '
        'while [ ! -e "$M/run.pth.lock" ] && kill -0 $pid 2>/dev/null; do sleep 0.1; done; sleep 1; '
        'dd if=/dev/zero of="$M/filler" bs=64k 2>/dev/null; kill -TERM $pid; wait $pid; echo "exit=$?"; ls -a "$M"'
    )
    result = _cli_on_tmpfs(tmp_path, "32m", script)
    assert "exit=143" in result.stdout, result.stderr
    err = result.stderr
    assert "the disk is full (ENOSPC)" in err and "it was saved to" in err and "Traceback" not in err
    rescued = list((tmp_path / "rescue").glob("run-rescued-*.pth"))
    assert len(rescued) == 1 and str(rescued[0]) in err
    data = load_run_data(rescued[0])
    assert not data["resume"]["finished"] and data["resume"]["epochs_done"] > 0
    listing = result.stdout.split()
    assert (
        not any(".tmp-" in name for name in listing) and "run.pth.lock" not in listing
    )  # no leftovers on the full disk


@pytest.mark.parametrize("kind", ["symlink loop", "fifo"])
def test_an_out_path_that_is_no_regular_file_is_one_line(tmp_path, kind, capsys):
    out = tmp_path / "run.pth"
    if kind == "fifo":
        os.mkfifo(out)
    else:
        out.symlink_to(out)
    with pytest.raises(ValueError) as info:
        train(FAST, out, progress=False)
    assert str(out) in str(info.value) and ("FIFO" if kind == "fifo" else "symbolic links") in str(info.value)
    assert cli.main(["train", "--p", "23", "--epochs", "3", "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err and len(err.strip().splitlines()) == 1
