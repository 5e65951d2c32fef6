"""Cases beyond the listed ones for "nothing lost, nothing hangs": hub answers that look fine but are not
(an HTML page with status 200, a truncated file, a redirect to a dead host or in a loop, 429 with Retry-After),
malformed endpoints and proxies, and command-line runs aimed at the wrong kind of path (a folder, a text file,
a symlink), files that are no run (a folder, a pickle carrying code), and memory refusals that name the real cause.

Everything stays on 127.0.0.1; hub cases are timed against the 10 s promise.
"""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import pytest
from test_hub_faults import BUDGET_S, cache_leftovers, decide, hub_files
from test_provision import FILE, REPO, closed_port, fake_train, hub_online, no_network_beyond_localhost  # noqa: F401

from part52_grokking_and_modular_arithmetic.app import cli
from part52_grokking_and_modular_arithmetic.runs import hub as hub_module
from part52_grokking_and_modular_arithmetic.runs.checkpoints import CorruptCheckpointError
from part52_grokking_and_modular_arithmetic.runs.config import TrainConfig
from part52_grokking_and_modular_arithmetic.runs.provision import ModelUnavailableError, load_full_run_data
from part52_grokking_and_modular_arithmetic.training import train as train_module

from fake_hub import FakeHub, make_paper_run_data, to_bytes

pytestmark = pytest.mark.usefixtures("isolated_paths")


@pytest.fixture(scope="module")
def raw():
    return to_bytes(make_paper_run_data(23, n_checkpoints=2))


def _fallback(**kwargs) -> tuple[dict, float]:
    t0 = time.monotonic()
    got = load_full_run_data(progress=False, **kwargs)
    return got, time.monotonic() - t0


# ----------------------------------------------------------------------------------------------------------
# 200 answers that are not the file: detected, removed, then the fallback
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["html page", "truncated file", "html file with its own etag"])
def test_a_bad_200_body_is_not_kept_and_training_follows(hub_online, raw, fake_train, capsys, kind):
    hub = {
        "html page": FakeHub(hub_files(raw), get_body=b"<html><body>502 Bad Gateway</body></html>"),
        "truncated file": FakeHub({(REPO, FILE): raw[: len(raw) // 2]}),
        "html file with its own etag": FakeHub({(REPO, FILE): b"<html>quota exceeded</html>"}),
    }[kind]
    with hub_online(hub):
        got, elapsed = _fallback()
        leftovers = cache_leftovers()
    assert elapsed < BUDGET_S
    assert got.source.kind == "trained" and len(fake_train.calls) == 1
    out = capsys.readouterr().out
    assert ("cut short" in out or "not valid run data" in out) and "Training the model locally" in out, out
    assert hub_module.cached_hub_file() is None and not any(p.is_file() for p in leftovers if "blobs" in p.parts)


def test_a_bad_200_body_without_training_is_a_clear_error(hub_online, raw):
    with hub_online(FakeHub(hub_files(raw), get_body=b"<html>error</html>")):
        t0 = time.monotonic()
        with pytest.raises(CorruptCheckpointError, match="cut short"):
            load_full_run_data(allow_training=False, progress=False)
    assert time.monotonic() - t0 < BUDGET_S
    assert hub_module.cached_hub_file() is None


# ----------------------------------------------------------------------------------------------------------
# redirects and rate limits
# ----------------------------------------------------------------------------------------------------------
def test_a_redirect_to_a_dead_host_is_decided_fast(hub_online, raw):
    with hub_online(FakeHub(hub_files(raw), redirect_to=f"http://127.0.0.1:{closed_port()}/cdn/blob")):
        message, elapsed = decide()
    assert elapsed < BUDGET_S
    assert "cannot connect" in message or "refused" in message.lower(), message


def test_a_redirect_loop_is_decided_fast(hub_online, raw):
    hub = FakeHub(hub_files(raw))
    hub.redirect_to = f"{hub.url}/{REPO}/resolve/main/{FILE}"
    with hub_online(hub):
        message, elapsed = decide()
    assert elapsed < BUDGET_S
    assert "redirect" in message.lower(), message


@pytest.mark.parametrize("status", [429, 401])
def test_retry_after_is_reported_and_not_waited_for(hub_online, raw, status):
    with hub_online(FakeHub(hub_files(raw), status=status, retry_after="3600")):
        message, elapsed = decide()
    assert elapsed < BUDGET_S
    assert f"the hub answered {status}" in message and "retry after 3600 s" in message, message


# ----------------------------------------------------------------------------------------------------------
# settings: a malformed endpoint, a dead proxy, offline with an empty cache
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "endpoint, why",
    [
        ("not a url", "must be an http(s) URL"),
        ("http://", "'http://'"),
        ("http://127.0.0.1:0", "port 0"),
        ("http://127.0.0.1:99999", "out of range"),
        ("http://[::1", "must be an http(s) URL"),
    ],
)
def test_a_malformed_endpoint_is_a_reason_not_a_crash(monkeypatch, fake_train, capsys, endpoint, why):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    message, elapsed = decide()
    assert elapsed < 1.0
    assert why in message and "HF_ENDPOINT" in message and "not contacted" in message, message
    got = load_full_run_data(progress=False)
    assert got.source.kind == "trained"


def test_a_dead_proxy_is_named(hub_online, raw, monkeypatch):
    port = closed_port()
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{port}")
    from huggingface_hub import close_session

    close_session()  # huggingface_hub reads the proxy variables when it opens its shared client: a new one, now
    try:
        with hub_online(FakeHub(hub_files(raw))):
            message, elapsed = decide()
    finally:
        monkeypatch.undo()
        close_session()  # later tests get a client without the dead proxy
    assert elapsed < BUDGET_S
    assert f"127.0.0.1:{port} refused" in message and "proxy" in message and "HTTP_PROXY" in message, message


def test_offline_with_an_empty_cache_is_immediate(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message, elapsed = decide()
    assert elapsed < 0.5 and "switched off" in message and "train --out" in message, message


# ----------------------------------------------------------------------------------------------------------
# the command line aimed at the wrong path
# ----------------------------------------------------------------------------------------------------------
TINY = ["train", "--p", "5", "--epochs", "3", "--save-every", "1", "--quiet"]


def test_train_out_a_folder_is_a_one_line_error(tmp_path, capsys):
    folder = tmp_path / "runs"
    folder.mkdir()
    assert cli.main(TINY + ["--out", str(folder)]) == 1
    err = capsys.readouterr().err.strip()
    assert "is a folder" in err and "full_run_data.pth" in err and len(err.splitlines()) == 1, err
    assert list(folder.iterdir()) == []


def test_train_out_an_existing_text_file_is_never_overwritten(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    assert cli.main(TINY + ["--out", str(notes)]) == 1
    err = capsys.readouterr().err.strip()
    assert "not a run file" in err and "refusing to overwrite" in err and "Delete it" not in err, err
    assert len(err.splitlines()) == 1, err
    assert notes.read_text() == "my notes\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # no lock or temp file left


def test_train_out_a_symlink_writes_through_it(tmp_path, capsys):
    target = tmp_path / "store" / "run.pth"
    target.parent.mkdir()
    link = tmp_path / "link.pth"
    assert cli.main(TINY + ["--out", str(target)]) == 0
    link.symlink_to(target)
    assert cli.main([*TINY[:4], "6", *TINY[5:], "--out", str(link)]) == 0  # extend to 6 epochs through the link
    assert link.is_symlink() and link.resolve() == target
    from part52_grokking_and_modular_arithmetic.runs.run_data import load_run_data

    assert len(load_run_data(target)["train_losses"]) == 6


def test_train_out_in_a_missing_folder_creates_it(tmp_path, capsys):
    out = tmp_path / "new" / "sub" / "run.pth"
    assert cli.main(TINY + ["--out", str(out)]) == 0
    assert out.is_file()


def test_huge_epochs_are_refused_naming_epochs_not_p(monkeypatch):
    monkeypatch.setattr(train_module, "available_memory_bytes", lambda: 8 * 10**9)
    with pytest.raises(MemoryError) as info:
        train_module.train(TrainConfig(p=23, epochs=10**15), out=None, progress=False)
    message = str(info.value)
    assert "--epochs" in message and "smaller p" not in message, message
    with pytest.raises(MemoryError) as info:
        train_module.train(TrainConfig(p=100_003, epochs=10), out=None, progress=False)
    assert "smaller p" in str(info.value)


# ----------------------------------------------------------------------------------------------------------
# `info` on things that are not run files
# ----------------------------------------------------------------------------------------------------------
class _RunsCode:
    def __reduce__(self):
        import os

        return (os.mkdir, ("/nonexistent-parent/should-never-be-created",))


def test_info_on_a_folder_says_so(tmp_path, capsys):
    assert cli.main(["info", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "is a folder" in err, err


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_info_on_a_file_carrying_code_refuses_it_in_one_line(tmp_path, capsys, kind):
    import torch

    evil = tmp_path / "evil.pth"
    if kind == "pickle":
        evil.write_bytes(pickle.dumps(_RunsCode()))
    else:
        torch.save({"state_dicts": [_RunsCode()]}, evil)
    assert cli.main(["info", str(evil)]) == 1
    err = capsys.readouterr().err.strip()
    assert "refuses" in err and "no code in it ran" in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("content", [b"", b"PK\x05\x06" + b"\x00" * 18])
def test_info_on_an_empty_file_or_a_bare_zip_is_one_line(tmp_path, capsys, content):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(content)
    assert cli.main(["info", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert "not a readable torch checkpoint" in err and len(err.splitlines()) == 1, err


# ----------------------------------------------------------------------------------------------------------
# resume records and histories that disagree with the weights or the config: one-line errors, file kept
# ----------------------------------------------------------------------------------------------------------
def _interrupted_run(tmp_path: Path, p: int) -> dict:
    import torch

    cfg = TrainConfig(p=p, epochs=6, save_every=2, test_every=1)

    def stop_at_epoch_2(epoch, *_):
        if epoch == 2:
            raise KeyboardInterrupt

    out = tmp_path / f"run{p}.pth"
    with pytest.raises(KeyboardInterrupt):
        train_module.train(cfg, out, progress=False, save_interval_s=0, callback=stop_at_epoch_2)
    return torch.load(out, weights_only=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs")
    return _interrupted_run(folder, 5), _interrupted_run(folder, 7)


def _damaged(runs, kind: str) -> dict:
    import copy

    import torch

    five, seven = copy.deepcopy(runs[0]), runs[1]
    r = five["resume"]
    if kind == "optimizer of another p":
        r["optimizer"] = copy.deepcopy(seven["resume"]["optimizer"])
    elif kind == "scheduler garbage":
        r["scheduler"] = {"foo": 1}
    elif kind == "parameter transposed":
        r["params"]["embed.W_E"] = r["params"]["embed.W_E"].T.contiguous()
    elif kind == "future format":
        r["format"] = 99
    elif kind == "optimizer without groups":
        r["optimizer"] = {"state": {}, "param_groups": []}
    elif kind == "nan optimizer moment":
        r["optimizer"]["state"][0]["exp_avg"] = torch.full_like(r["optimizer"]["state"][0]["exp_avg"], float("nan"))
    elif kind == "checkpoint epochs off the config":
        five["epochs"] = [0, 1]
    elif kind == "test losses missing":
        five["test_losses"] = five["test_losses"][:1]
    elif kind == "split of another seed":
        five["train_indices"] = five["train_indices"][:3]
    elif kind == "unfinished beyond its length":
        five["config"]["epochs"] = 2
    return five


@pytest.mark.parametrize(
    "kind, words",
    [
        ("optimizer of another p", "must be a float tensor of shape"),
        ("scheduler garbage", "scheduler state lacks"),
        ("parameter transposed", "must be a float tensor of shape (6, 128)"),
        ("future format", "format 99"),
        ("optimizer without groups", "one parameter group"),
        ("nan optimizer moment", "non-finite"),
        ("checkpoint epochs off the config", "do not match the stored config"),
        ("test losses missing", "test losses stored"),
        ("split of another seed", "not the split of the stored config"),
        ("unfinished beyond its length", "marked unfinished"),
    ],
)
def test_an_inconsistent_run_file_is_refused_in_one_line_and_kept(tmp_path, capsys, runs, kind, words):
    from part52_grokking_and_modular_arithmetic.runs.checkpoints import atomic_save

    path = atomic_save(_damaged(runs, kind), tmp_path / "bad.pth")
    before = path.read_bytes()
    argv = [
        "train",
        "--p",
        "5",
        "--epochs",
        "6",
        "--save-every",
        "2",
        "--test-every",
        "1",
        "--quiet",
        "--out",
        str(path),
    ]
    for command in (argv, ["info", str(path)]):
        assert cli.main(command) == 1
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1, err
    assert path.read_bytes() == before


def test_resuming_with_another_thread_count_says_so(tmp_path, capsys, runs, monkeypatch):
    import copy

    import torch

    from part52_grokking_and_modular_arithmetic.runs.checkpoints import atomic_save

    data = copy.deepcopy(runs[0])
    data["resume"]["torch_threads"] = torch.get_num_threads() + 3
    path = atomic_save(data, tmp_path / "run.pth")
    got = train_module.train(TrainConfig(p=5, epochs=6, save_every=2, test_every=1), path, progress=False)
    assert len(got["train_losses"]) == 6 and got["resume"]["torch_threads"] == torch.get_num_threads()
    err = capsys.readouterr().err
    assert f"trained with {torch.get_num_threads() + 3} torch thread" in err and "not bit-identically" in err, err


def test_a_second_fetch_on_a_locked_file_says_so_before_announcing_training(tmp_path, capsys, monkeypatch):
    from part52_grokking_and_modular_arithmetic.runs.checkpoints import RunFileLock, RunFileLockedError

    out = tmp_path / "run.pth"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with RunFileLock(out):
        with pytest.raises(RunFileLockedError, match="another training run"):
            load_full_run_data(out, progress=False)
        assert cli.main(["fetch", "--out", str(out), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "Training the model locally" not in captured.out and "another training run" in captured.err


# ----------------------------------------------------------------------------------------------------------
# `download --out` never replaces what it should not
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["folder", "text file", "trained run"])
def test_download_out_never_replaces_a_folder_a_foreign_file_or_a_trained_run(
    hub_online, raw, tmp_path, capsys, runs, kind
):
    from part52_grokking_and_modular_arithmetic.runs.checkpoints import atomic_save

    (tmp_path / "dest").mkdir()
    out = tmp_path / "dest" / "target"
    if kind == "folder":
        out.mkdir()
    elif kind == "text file":
        out.write_text("keep me\n")
    else:
        atomic_save(runs[0], out)
    before = None if kind == "folder" else out.read_bytes()
    with hub_online(FakeHub(hub_files(raw))) as hub:
        assert cli.main(["download", "--endpoint", hub.url, "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert ("is a folder" in err or "refusing to overwrite" in err) and len(err.splitlines()) == 1, err
    if before is not None:
        assert out.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["target"]


# ----------------------------------------------------------------------------------------------------------
# bodies shorter than announced, a trickle, Ctrl-C during the decision
# ----------------------------------------------------------------------------------------------------------
def test_a_body_shorter_than_its_content_length_is_decided_in_time(hub_online, raw):
    with hub_online(FakeHub(hub_files(raw), cut_body_after=len(raw) // 2)):
        t0 = time.monotonic()
        with pytest.raises((ModelUnavailableError, CorruptCheckpointError)) as info:
            load_full_run_data(allow_training=False, progress=False)
        elapsed = time.monotonic() - t0
        leftovers = cache_leftovers()
    # the download had started (the decision was made); huggingface_hub then resumes a broken body itself,
    # up to 5 times, 1 s apart, before it gives up
    assert elapsed < BUDGET_S + 6.0
    assert "complete message body" in str(info.value) or "cut short" in str(info.value), str(info.value)
    assert hub_module.cached_hub_file() is None and not [p for p in leftovers if p.suffix == ".incomplete"]


def test_a_one_byte_per_second_trickle_counts_as_stalled_and_says_so(hub_online, raw, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 4096)
    with hub_online(FakeHub(hub_files(raw), trickle_s=0.2)):
        message, elapsed = decide(stall_timeout=2.0)
        leftovers = cache_leftovers()
    assert elapsed < BUDGET_S
    assert "stalled: less than 4,096 bytes arrived in 2 s" in message and "no data" not in message, message
    assert not [p for p in leftovers if p.suffix == ".incomplete"]


def test_ctrl_c_during_the_hub_decision_is_truthful_and_leaves_nothing(hub_online, raw, capsys):
    import _thread
    import threading

    with hub_online(FakeHub(hub_files(raw), hang="body", stall_after=10)) as hub:
        timer = threading.Timer(1.0, _thread.interrupt_main)
        timer.start()
        try:
            t0 = time.monotonic()
            rc = cli.main(["download", "--endpoint", hub.url, "--quiet", "--timeout", "5"])
            elapsed = time.monotonic() - t0
        finally:
            timer.cancel()
        leftovers = cache_leftovers()
    assert rc == 130 and elapsed < 3.0
    assert "stopped before it wrote anything" in capsys.readouterr().err
    assert not [p for p in leftovers if p.suffix == ".incomplete"]
