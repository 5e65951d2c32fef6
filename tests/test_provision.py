"""Provisioning: the local file, the real ``hf_hub_download`` path against a fake hub on 127.0.0.1, corrupt
files, fast "unreachable" decisions, and the fallback to training.

No test leaves 127.0.0.1. Tests that must not try the hub run with ``HF_HUB_OFFLINE=1`` (conftest sets it);
the fake-hub tests switch it off for ``huggingface_hub`` and point its endpoint at the fake hub.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import torch

from part52_grokking_and_modular_arithmetic.runs import hub as hub_module
from part52_grokking_and_modular_arithmetic.runs import provision
from part52_grokking_and_modular_arithmetic.runs.checkpoints import CorruptCheckpointError, atomic_save
from part52_grokking_and_modular_arithmetic.runs.config import TrainConfig
from part52_grokking_and_modular_arithmetic.runs.data import make_all_data, make_labels
from part52_grokking_and_modular_arithmetic.runs.layout import load_in_state_dict
from part52_grokking_and_modular_arithmetic.runs.model import make_model
from part52_grokking_and_modular_arithmetic.runs.provision import ModelUnavailableError, load_full_run_data
from part52_grokking_and_modular_arithmetic.runs.run_data import analysed_index_of, as_run_data, load_run_data
from part52_grokking_and_modular_arithmetic.training.losses import cross_entropy_high_precision

from fake_hub import FakeHub, make_paper_run_data, to_bytes
from paper_reference import paper_forward

REPO, FILE = provision.HUB_REPO_ID, provision.HUB_FILENAME
pytestmark = pytest.mark.usefixtures("isolated_paths")  # never touch the real run file or HF cache


# ----------------------------------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def no_network_beyond_localhost(monkeypatch):
    """Fail a test that tries to resolve any host other than 127.0.0.1 / localhost."""
    real = socket.getaddrinfo
    attempts = []

    def guarded(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost", b"127.0.0.1", b"localhost"):
            attempts.append(host)
            raise socket.gaierror(socket.EAI_NONAME, f"tests may not resolve {host!r}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    yield
    assert attempts == [], f"tried to reach {attempts}"


@pytest.fixture
def hub_online(monkeypatch):
    """Let huggingface_hub talk to a fake hub: offline mode off, its import-time endpoint pointed at the hub
    (as if HF_ENDPOINT had been set before import), so even its side requests stay on 127.0.0.1."""
    from huggingface_hub import constants

    def point_at(hub: FakeHub) -> FakeHub:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(
            constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}"
        )
        return hub

    return point_at


@pytest.fixture(scope="module")
def paper_run_113():
    """A hub-like file for p = 113: paper layout, two checkpoints, no config / split."""
    data = make_paper_run_data(113, n_checkpoints=2)
    return data, to_bytes(data)


@pytest.fixture(scope="module")
def paper_run_23():
    data = make_paper_run_data(23, n_checkpoints=2)
    return data, to_bytes(data)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TrainRecorder:
    """Stands in for train.train: records its arguments and returns small valid run data."""

    def __init__(self):
        self.calls = []

    def __call__(self, config, out=None, *, resume=True, progress=True):
        self.calls.append(dict(config=config, out=Path(out), resume=resume, progress=progress))
        return make_paper_run_data(23, n_checkpoints=2, ours=True)


@pytest.fixture
def fake_train(monkeypatch):
    import importlib
    import sys
    import types

    recorder = TrainRecorder()
    try:
        module = importlib.import_module("part52_grokking_and_modular_arithmetic.training.train")
        monkeypatch.setattr(module, "train", recorder)
    except ImportError:  # the trainer is not written yet: provide a stand-in module
        module = types.ModuleType("part52_grokking_and_modular_arithmetic.training.train")
        module.train = recorder
        monkeypatch.setitem(sys.modules, "part52_grokking_and_modular_arithmetic.training.train", module)
    return recorder


# ----------------------------------------------------------------------------------------------------------
# paths and settings
# ----------------------------------------------------------------------------------------------------------
def test_default_run_path_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv(provision.ENV_HOME, raising=False)
    assert provision.default_run_path() == tmp_path / "local" / "full_run_data.pth"  # PART52_RUN_PATH
    monkeypatch.delenv(provision.ENV_RUN_PATH)
    root = provision.checkout_root()
    if root is not None:  # running from the source checkout
        assert provision.default_run_path() == root / "Grokking" / "large_files" / "full_run_data.pth"
    monkeypatch.setattr(provision, "checkout_root", lambda: None)  # as a package installed from pip (Colab)
    monkeypatch.setenv(provision.ENV_HOME, str(tmp_path / "mine"))
    assert provision.default_run_path() == tmp_path / "mine" / "full_run_data.pth"
    monkeypatch.delenv(provision.ENV_HOME)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert (
        provision.default_run_path()
        == tmp_path / "xdg" / "part52_grokking_and_modular_arithmetic" / "full_run_data.pth"
    )
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = tmp_path / "home" / ".local" / "share" / "part52_grokking_and_modular_arithmetic" / "full_run_data.pth"
    assert provision.default_run_path() == expected
    monkeypatch.setenv(provision.ENV_RUN_PATH, str(tmp_path / "drive" / "run.pth"))  # the variable wins everywhere
    assert provision.default_run_path() == tmp_path / "drive" / "run.pth"


def test_without_a_checkout_training_writes_to_the_user_data_folder(monkeypatch, tmp_path, fake_train):
    monkeypatch.delenv(provision.ENV_RUN_PATH)
    monkeypatch.delenv(provision.ENV_HOME, raising=False)
    monkeypatch.setattr(provision, "checkout_root", lambda: None)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    load_full_run_data(progress=False)  # HF_HUB_OFFLINE=1 (conftest): straight to training
    assert (
        fake_train.calls[-1]["out"]
        == tmp_path / "data" / "part52_grokking_and_modular_arithmetic" / "full_run_data.pth"
    )
    load_full_run_data(tmp_path / "given.pth", progress=False)  # the argument wins
    assert fake_train.calls[-1]["out"] == tmp_path / "given.pth"


def test_hub_settings_are_read_when_called(monkeypatch, tmp_path):
    assert hub_module.hub_cache_dir() == tmp_path / "hf_home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hubcache"))
    assert hub_module.hub_cache_dir() == tmp_path / "hubcache"
    assert hub_module.hub_cache_dir(tmp_path / "given") == tmp_path / "given"
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:1/")
    assert hub_module.hub_endpoint() == "http://127.0.0.1:1"
    assert hub_module.hub_endpoint("http://mirror.example/") == "http://mirror.example"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_module.hub_offline()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert not hub_module.hub_offline()


def test_the_first_connection_names_its_proxy_and_malformed_urls_are_refused(monkeypatch):
    """What a dead endpoint's message names: the endpoint itself, or the proxy (and its variable) in front of it."""
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    assert hub_module._first_hop("http://127.0.0.1:8") == ("127.0.0.1", 8, "")
    assert hub_module._first_hop("https://huggingface.co")[:2] == ("huggingface.co", 443)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    host, port, note = hub_module._first_hop("http://mirror.example")
    assert (host, port) == ("127.0.0.1", 9) and "HTTP_PROXY=http://127.0.0.1:9" in note
    with pytest.raises(ValueError, match="http"):
        hub_module._first_hop("ftp://127.0.0.1")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:0")
    with pytest.raises(ValueError, match="the proxy HTTP_PROXY must .*port 0"):
        hub_module._first_hop("http://mirror.example")


# ----------------------------------------------------------------------------------------------------------
# the real hf_hub_download against the fake hub
# ----------------------------------------------------------------------------------------------------------
def test_download_converts_and_scores_like_the_paper_model(hub_online, paper_run_113, tmp_path):
    data, raw = paper_run_113
    with hub_online(FakeHub({(REPO, FILE): raw})) as hub:
        got = load_full_run_data(allow_training=False, progress=False)
        assert got.source.kind == "hub"
        assert ("HEAD", f"/{REPO}/resolve/main/{FILE}") in hub.requests
        assert ("GET", f"/{REPO}/resolve/main/{FILE}") in hub.requests
    # the file landed in the Hugging Face cache under HF_HOME (read at call time), unchanged
    cached = hub_module.cached_hub_file()
    assert cached is not None and tmp_path / "hf_home" / "hub" in cached.absolute().parents
    assert cached.read_bytes() == raw
    assert got["epochs"] == data["epochs"] and "config" not in got

    p = 113
    tokens = make_all_data(p)
    labels = make_labels(tokens, p)
    model = make_model(p, seed=123)  # different weights: everything must come from the checkpoint
    for sd in got["state_dicts"]:
        load_in_state_dict(model, sd)
        with torch.no_grad():
            tl_logits = model(tokens)[:, -1, :p]
            ref_logits = paper_forward(sd, tokens)[:, -1, :p]
        torch.testing.assert_close(tl_logits, ref_logits, atol=2e-5, rtol=1e-4)
        tl_loss = cross_entropy_high_precision(tl_logits, labels).item()
        ref_loss = cross_entropy_high_precision(ref_logits, labels).item()
        assert tl_loss == pytest.approx(ref_loss, rel=1e-5)
        assert 4.0 < ref_loss < 6.0  # an untrained paper-init model scores about log(113) = 4.73


def test_second_call_uses_the_cache_without_network(hub_online, paper_run_23):
    _, raw = paper_run_23
    with hub_online(FakeHub({(REPO, FILE): raw})):
        load_full_run_data(allow_training=False, progress=False)
    # the hub is gone now; the cached copy is found without contacting it
    got = load_full_run_data(allow_training=False, progress=False, endpoint=f"http://127.0.0.1:{closed_port()}")
    assert got.source.kind == "hub-cache"
    assert len(got["state_dicts"]) == 2


def test_corrupt_download_is_reported_removed_and_redownloaded(hub_online, paper_run_23):
    _, raw = paper_run_23
    hub = FakeHub({(REPO, FILE): raw[: len(raw) // 2]})  # a truncated file, served with a matching length
    with hub_online(hub):
        with pytest.raises(CorruptCheckpointError, match="removed from the Hugging Face cache"):
            load_full_run_data(allow_training=False, progress=False)  # (with training allowed, training follows)
        assert hub_module.cached_hub_file() is None
        hub.files[(REPO, FILE)] = raw  # the hub serves the good file again: a retry downloads it
        got = load_full_run_data(allow_training=False, progress=False)
    assert got.source.kind == "hub"


def test_wrong_content_is_rejected(hub_online, paper_run_23):
    data, _ = paper_run_23
    bad = dict(data, state_dicts=[{k: v for k, v in sd.items() if k != "unembed.W_U"} for sd in data["state_dicts"]])
    with hub_online(FakeHub({(REPO, FILE): to_bytes(bad)})):
        with pytest.raises(CorruptCheckpointError, match="paper-layout keys"):
            load_full_run_data(allow_training=False, progress=False)


def test_corrupt_cached_file_is_replaced(hub_online, paper_run_23, capsys):
    _, raw = paper_run_23
    with hub_online(FakeHub({(REPO, FILE): raw})) as hub:
        load_full_run_data(allow_training=False, progress=False)
        cached = hub_module.cached_hub_file()
        blob = cached.resolve()
        blob.write_bytes(b"not a torch file")  # damaged on disk after the download
        got = load_full_run_data(allow_training=False, progress=False)
        assert got.source.kind == "hub"
        assert "not valid run data" in capsys.readouterr().err
        assert sum(1 for m, path in hub.resolve_requests() if m == "GET") == 2


def test_corrupt_cached_file_with_hub_offline(hub_online, paper_run_23, monkeypatch):
    _, raw = paper_run_23
    with hub_online(FakeHub({(REPO, FILE): raw})):
        load_full_run_data(allow_training=False, progress=False)
    hub_module.cached_hub_file().resolve().write_bytes(b"\x00" * 100)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError) as info:
        load_full_run_data(allow_training=False, progress=False)
    assert "not valid run data" in str(info.value) and "switched off" in str(info.value)
    assert hub_module.cached_hub_file() is None


def test_missing_file_404_errors_clearly(hub_online, paper_run_23):
    _, raw = paper_run_23
    with hub_online(FakeHub({(REPO, "other.pth"): raw})):
        with pytest.raises(
            ModelUnavailableError, match=rf"404: file not found on the hub \({REPO}/{FILE}, revision main\)"
        ):
            load_full_run_data(allow_training=False, progress=False)
        with pytest.raises(ModelUnavailableError, match=r"404: repository nobody/nothing not found"):
            load_full_run_data(allow_training=False, progress=False, repo_id="nobody/nothing")


def test_missing_file_404_falls_back_to_training(hub_online, paper_run_23, fake_train, tmp_path, capsys):
    _, raw = paper_run_23
    with hub_online(FakeHub({(REPO, "other.pth"): raw})):
        got = load_full_run_data(progress=False)
    assert len(fake_train.calls) == 1
    call = fake_train.calls[0]
    assert call["config"] == TrainConfig() and call["out"] == tmp_path / "local" / "full_run_data.pth"
    assert call["resume"] is True and call["progress"] is False
    assert got.source.kind == "trained"
    out = capsys.readouterr().out
    assert "404" in out and "Training the model locally" in out


# ----------------------------------------------------------------------------------------------------------
# no hub: fast, clear decisions
# ----------------------------------------------------------------------------------------------------------
def test_closed_port_errors_fast_and_clearly(hub_online, monkeypatch):
    with FakeHub() as side:  # keeps huggingface_hub's own side requests on 127.0.0.1
        hub_online(side)
        endpoint = f"http://127.0.0.1:{closed_port()}"
        t0 = time.monotonic()
        with pytest.raises(ModelUnavailableError) as info:
            load_full_run_data(allow_training=False, endpoint=endpoint, progress=False)
        elapsed = time.monotonic() - t0
    assert elapsed <= 5.0  # huggingface_hub alone retries for ~23 s
    message = str(info.value)
    for expected in (
        "refused",
        endpoint,
        "no local run file",
        "no cached copy",
        "python -m part52_grokking_and_modular_arithmetic train",
        "HF_ENDPOINT",
    ):
        assert expected in message


def test_offline_errors_at_once_without_contacting_the_hub(hub_online, monkeypatch):
    with FakeHub({(REPO, FILE): b"x"}) as hub:
        hub_online(hub)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # set after huggingface_hub's import: still honoured
        t0 = time.monotonic()
        with pytest.raises(ModelUnavailableError, match="HF_HUB_OFFLINE"):
            load_full_run_data(allow_training=False, endpoint=hub.url, progress=False)
        assert time.monotonic() - t0 <= 5.0
        assert hub.requests == []


def test_silent_endpoint_is_abandoned_within_hub_timeout(hub_online):
    """A port that never answers (its accept queue is full, so SYNs are dropped) is given up on in time."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            c = socket.socket()
            c.setblocking(False)
            try:
                c.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            fillers.append(c)
        with FakeHub() as side:
            hub_online(side)
            t0 = time.monotonic()
            with pytest.raises(ModelUnavailableError, match="no answer"):
                load_full_run_data(
                    allow_training=False, endpoint=f"http://127.0.0.1:{port}", hub_timeout=1.0, progress=False
                )
            assert time.monotonic() - t0 <= 2.5
    finally:
        for c in fillers:
            c.close()
        server.close()


def test_unreachable_hub_falls_back_to_training_with_the_recipe(fake_train, tmp_path, capsys):
    got = load_full_run_data(progress=True, endpoint=f"http://127.0.0.1:{closed_port()}")  # HF_HUB_OFFLINE=1 (conftest)
    assert [c["config"] for c in fake_train.calls] == [TrainConfig()]
    assert fake_train.calls[0]["progress"] is True
    assert got.source.kind == "trained"
    out = capsys.readouterr().out
    assert "HF_HUB_OFFLINE" in out and "Training the model locally" in out and str(tmp_path / "local") in out


def test_other_recipe_skips_the_hub_and_trains_it(hub_online, paper_run_23, fake_train, tmp_path):
    _, raw = paper_run_23
    cfg = TrainConfig(p=23, epochs=200)
    with hub_online(FakeHub({(REPO, FILE): raw})) as hub:
        load_full_run_data(tmp_path / "p23.pth", train_config=cfg, progress=False)
        assert hub.resolve_requests() == []
    assert fake_train.calls[0]["config"] == cfg and fake_train.calls[0]["out"] == tmp_path / "p23.pth"


# ----------------------------------------------------------------------------------------------------------
# the local file
# ----------------------------------------------------------------------------------------------------------
def test_local_file_comes_first(hub_online, tmp_path):
    path = tmp_path / "run.pth"
    atomic_save(make_paper_run_data(23, n_checkpoints=2, ours=True), path)
    with hub_online(FakeHub()) as hub:
        got = load_full_run_data(path, allow_training=False)
        assert hub.requests == []
    assert str(got.source) == f"local file: {path}"
    assert got["config"]["p"] == 23
    from part52_grokking_and_modular_arithmetic.runs.run_data import RunData, RunSource

    assert isinstance(got, RunData) and got.source == RunSource("local", str(path)) and got.config.p == 23


def test_corrupt_local_file_is_an_error_and_is_kept(tmp_path, fake_train):
    path = tmp_path / "run.pth"
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CorruptCheckpointError, match="left untouched"):
        load_full_run_data(path)
    assert path.read_bytes() == b"PK\x03\x04 truncated" and fake_train.calls == []


def test_local_file_of_another_recipe_is_refused(tmp_path):
    path = tmp_path / "run.pth"
    atomic_save(make_paper_run_data(23, n_checkpoints=2, ours=True), path)
    with pytest.raises(ValueError, match="different recipe"):
        load_full_run_data(path, train_config=TrainConfig(p=23, seed=5))


def test_unfinished_local_run_is_resumed(tmp_path, fake_train, capsys):
    path = tmp_path / "run.pth"
    data = make_paper_run_data(23, n_checkpoints=2, ours=True)
    data["config"]["epochs"] = 1000  # only 200 epochs were trained
    atomic_save(data, path)
    got = load_full_run_data(path, allow_training=False)  # used as it is, with a note
    assert got.source.kind == "local" and fake_train.calls == []
    assert "unfinished" in capsys.readouterr().err
    load_full_run_data(path, progress=False)
    assert fake_train.calls[0]["config"] == TrainConfig.from_dict(data["config"]) and fake_train.calls[0]["out"] == path


# ----------------------------------------------------------------------------------------------------------
# download_full_run_data (the CLI's `download`) and run-data helpers
# ----------------------------------------------------------------------------------------------------------
def test_download_full_run_data_copies_to_out(hub_online, paper_run_23, tmp_path):
    _, raw = paper_run_23
    with hub_online(FakeHub({(REPO, FILE): raw})):
        in_cache = hub_module.download_full_run_data(progress=False)
        out = hub_module.download_full_run_data(tmp_path / "copy" / "run.pth", progress=False)
    assert in_cache == hub_module.cached_hub_file()
    assert out.read_bytes() == raw and load_run_data(out)["epochs"] == [0, 100]
    with pytest.raises(ModelUnavailableError, match="refused"):
        hub_module.download_full_run_data(repo_id="a/b", endpoint=f"http://127.0.0.1:{closed_port()}", progress=False)


def test_analysed_checkpoint_index():
    assert analysed_index_of(list(range(0, 50_000, 100))) == 400
    assert analysed_index_of([0, 100, 200]) == 2
    assert analysed_index_of([0, 10, 20], epoch=10) == 1


def test_run_config_of_hub_and_own_files(paper_run_23):
    hub_like, _ = paper_run_23  # 200 epochs, checkpoints every 100, test loss every 10
    cfg = as_run_data(hub_like).config
    assert (cfg.p, cfg.epochs, cfg.save_every, cfg.test_every) == (23, 200, 100, 10)
    hub_like = dict(hub_like, test_losses=hub_like["test_losses"] + [0.0])  # a test loss at the last epoch too
    assert as_run_data(hub_like).config.test_every == 10
    assert (cfg.fn, cfg.frac_train, cfg.seed, cfg.weight_decay) == ("add", 0.3, 0, 1.0)
    ours = make_paper_run_data(23, n_checkpoints=2, ours=True)
    assert as_run_data(ours).config == TrainConfig.from_dict(ours["config"])


# ----------------------------------------------------------------------------------------------------------
# with the real trainer
# ----------------------------------------------------------------------------------------------------------
def test_real_training_fallback_then_local_file(tmp_path, capsys, one_torch_thread):
    cfg = TrainConfig(p=23, epochs=300, save_every=50)
    path = tmp_path / "p23.pth"
    got = load_full_run_data(path, train_config=cfg, progress=False)  # another recipe: trains without the hub
    assert got.source.kind == "trained"
    assert "Training the model locally" in capsys.readouterr().out
    on_disk = load_run_data(path, p=23)
    assert on_disk["epochs"] == [0, 50, 100, 150, 200, 250] and len(on_disk["train_losses"]) == 300
    assert on_disk["train_losses"][-1] < 0.5 * on_disk["train_losses"][0]
    again = load_full_run_data(path, train_config=cfg, allow_training=False)
    assert again.source.kind == "local"
    assert as_run_data(again).config == cfg
    assert again.analysed_index == 5


def test_a_diverged_run_is_never_taken_as_complete():
    """A run file whose training diverged must not be analysed as if it were finished: provisioning hands it
    back to the trainer, which refuses it with the reason (tests/test_training_faults.py)."""
    finished = {"resume": {"finished": True}, "train_losses": [1.0], "test_losses": [1.0]}
    diverged = {
        "resume": {"finished": True, "diverged": True, "diverged_at": 3},
        "train_losses": [1.0],
        "test_losses": [1.0],
    }
    from part52_grokking_and_modular_arithmetic.runs.run_data import run_status

    assert run_status(finished).state == "finished"
    assert run_status(diverged) == ("diverged", "diverged at epoch 3 (None)")
