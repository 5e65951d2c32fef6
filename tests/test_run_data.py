"""The run object: construction and validation (once), the recipe and split, sources, models, dict reading."""

import pytest
import torch

from part52_grokking_and_modular_arithmetic import tests as grader
from part52_grokking_and_modular_arithmetic import utils
from part52_grokking_and_modular_arithmetic.analysis import circuit, dynamics
from part52_grokking_and_modular_arithmetic.runs import provision
from part52_grokking_and_modular_arithmetic.runs.checkpoints import CorruptCheckpointError, atomic_save
from part52_grokking_and_modular_arithmetic.runs.config import TrainConfig
from part52_grokking_and_modular_arithmetic.runs.data import (
    Split,
    make_all_data,
    make_split,
    task_function,
    train_test_split,
)
from part52_grokking_and_modular_arithmetic.runs.model import make_model
from part52_grokking_and_modular_arithmetic.runs.run_data import (
    ANALYSED_EPOCH,
    HUB_RECIPE,
    RunData,
    RunSource,
    analysed_index_of,
    as_run_data,
)

from fake_hub import make_paper_run_data

P = 23


@pytest.fixture(scope="module")
def ours():
    return make_paper_run_data(P, n_checkpoints=3, ours=True)


@pytest.fixture(scope="module")
def hub_like():
    return make_paper_run_data(P, n_checkpoints=3)


def _hub_run_to(epoch_max: int, state_dict: dict) -> dict:
    """A hub-format dict (no config) with checkpoints every 100 epochs up to ``epoch_max``, all one model."""
    n = epoch_max // 100 + 1
    return {
        "state_dicts": [state_dict] * n,
        "epochs": [100 * i for i in range(n)],
        "train_losses": [1.0] * (100 * n),
        "test_losses": [1.0] * (10 * n),
    }


def test_from_file_of_our_run(tmp_path, ours):
    path = tmp_path / "run.pth"
    atomic_save(ours, path)
    run = RunData.from_file(path)
    assert run.p == P and run.config_stored
    assert run.config == TrainConfig.from_dict(ours["config"])
    assert run.source == RunSource("local", str(path)) and str(run.source) == f"local file: {path}"
    assert run.epochs == [0, 100, 200] and run.analysed_index == 2 and run.analysed_epoch == 200
    assert len(run.state_dicts) == 3 and len(run.train_losses) == 300 and run.resume is None
    expected = make_split(P, run.config.frac_train, run.config.seed, run.config.fn)
    for name in ("all_data", "labels", "train_indices", "test_indices", "is_train", "is_test"):
        assert torch.equal(getattr(run.split, name), getattr(expected, name)), name
    assert torch.equal(run.split.train_indices, torch.as_tensor(ours["train_indices"]))


def test_hub_format_dict_gets_an_inferred_recipe(hub_like):
    run = RunData.from_dict(hub_like, RunSource("hub", "/cache/full_run_data.pth", "repo/full_run_data.pth"))
    assert not run.config_stored and "config" not in run and run.get("config") is None
    assert run.config == TrainConfig.from_dict(dict(HUB_RECIPE, p=P, epochs=300, save_every=100, test_every=10))
    assert (run.config.fn, run.config.frac_train, run.config.seed) == ("add", 0.3, 0)
    assert str(run.source) == "hub file (downloaded): repo/full_run_data.pth at /cache/full_run_data.pth"
    assert torch.equal(run.split.train_indices, train_test_split(P, 0.3, 0)[0])


def test_analysed_index_is_epoch_40000_when_present():
    sd = make_paper_run_data(P, n_checkpoints=1)["state_dicts"][0]
    assert RunData.from_dict(_hub_run_to(45_000, sd)).analysed_index == 400
    assert RunData.from_dict(_hub_run_to(30_000, sd)).analysed_index == 300  # no epoch 40,000: the last one
    assert analysed_index_of(list(range(0, 50_000, 100))) == ANALYSED_EPOCH // 100
    with pytest.raises(ValueError, match="no checkpoints"):
        analysed_index_of([])


@pytest.mark.parametrize(
    "source, text",
    [
        (RunSource("local", "/a/run.pth"), "local file: /a/run.pth"),
        (RunSource("hub-cache", "/hf/blob", "org/repo/f.pth"), "hub file (cached): org/repo/f.pth at /hf/blob"),
        (RunSource("hub", "/hf/blob", "org/repo/f.pth"), "hub file (downloaded): org/repo/f.pth at /hf/blob"),
        (RunSource("trained", "/a/run.pth", "no hub"), "trained locally: /a/run.pth (no hub)"),
        (RunSource("memory"), "in memory"),
    ],
)
def test_source_kinds_and_their_text(source, text, hub_like):
    assert str(source) == text
    run = RunData.from_dict(hub_like, source)
    assert run.source.kind == source.kind and str(run.source) == text


def test_unknown_source_kind_is_refused():
    with pytest.raises((TypeError, ValueError)):  # (the tests' run-time type checks see the Literal first)
        RunSource("cloud")


def test_model_is_the_checkpoint(ours):
    run = RunData.from_dict(ours)
    tokens = make_all_data(P)
    for i in (0, 1, -1):  # make_paper_run_data: checkpoint i is make_model(p, seed=i)
        torch.testing.assert_close(run.model(i)(tokens), make_model(P, seed=range(3)[i])(tokens))
    torch.testing.assert_close(run.model()(tokens), make_model(P, seed=2)(tokens))  # the analysed (last) one
    torch.testing.assert_close(utils.load_model(run, 1)(tokens), make_model(P, seed=1)(tokens))
    with pytest.raises(IndexError, match="3 checkpoints"):
        run.model(3)
    with pytest.raises(TypeError):
        run.model(1.5)


def test_reads_like_the_run_file_dict_read_only(ours):
    run = RunData.from_dict(ours)
    assert list(run) == ["state_dicts", "epochs", "train_losses", "test_losses", "config", "train_indices"]
    assert run["state_dicts"] is ours["state_dicts"] and run["epochs"] is ours["epochs"]
    assert run["config"] == ours["config"] and "train_indices" in run and "resume" not in run
    assert set(run.keys()) == set(run) and len(run) == 6 and run.get("resume", "none") == "none"
    with pytest.raises(KeyError, match=r"run\.source"):
        run["source"]
    with pytest.raises(TypeError):
        run["epochs"] = [1]  # type: ignore[index]
    assert run == run and run != RunData.from_dict(ours)  # identity: tensors have no single truth value


def test_invalid_data_is_refused_with_what_was_expected(ours, hub_like):
    with pytest.raises(CorruptCheckpointError, match="missing keys"):
        RunData.from_dict({"epochs": [0]})
    bad = dict(ours, train_indices=train_test_split(P, 0.3, 1)[0])
    with pytest.raises(CorruptCheckpointError, match="not the split of the stored config"):
        RunData.from_dict(bad)
    with pytest.raises(CorruptCheckpointError, match="without the 'config'"):
        RunData.from_dict(dict(hub_like, train_indices=train_test_split(P, 0.3, 0)[0]))
    with pytest.raises(TypeError):
        as_run_data(42)


def test_parsed_once_from_provisioning_to_notebook_grader_engine_and_cli(tmp_path, monkeypatch, ours):
    """One parse (and one split) per load; the run object is then passed on as it is."""
    path = tmp_path / "run.pth"
    atomic_save(ours, path)
    parses, splits = [], []
    real_parse, real_split = RunData.from_dict.__func__, Split.from_config.__func__
    monkeypatch.setattr(
        RunData, "from_dict", classmethod(lambda c, *a, **k: parses.append(1) or real_parse(c, *a, **k))
    )
    monkeypatch.setattr(Split, "from_config", classmethod(lambda c, *a: splits.append(1) or real_split(c, *a)))
    run = provision.load_full_run_data(path, allow_training=False, progress=False)
    assert isinstance(run, RunData) and run.source.kind == "local" and parses == splits == [1]
    assert as_run_data(run) is run and run.finished and run.status.state == "finished"
    dynamics.compute_dynamics(run, [2, 5], progress=False)
    utils.load_model(run)
    model = make_model(P, seed=0)
    grader.test_excl_loss(lambda m, k: circuit.excl_loss(m, k), model, [2, 5], run=run)
    moved = run.with_source(RunSource("hub-cache", str(path), "org/repo/f.pth"))
    assert moved.source.kind == "hub-cache" and moved.state_dicts is run.state_dicts and moved.split is run.split
    assert parses == splits == [1]
    as_run_data(dict(ours))  # a plain dict is parsed (once more: it is a new run)
    assert parses == splits == [1, 1]


def test_provisioning_wraps_a_training_run(tmp_path, monkeypatch, ours):
    import part52_grokking_and_modular_arithmetic.training.train as trainer

    monkeypatch.setattr(trainer, "train", lambda config, out, resume, progress: ours)
    run = provision.load_full_run_data(tmp_path / "run.pth", train_config=TrainConfig(p=P, epochs=300), progress=False)
    assert (
        isinstance(run, RunData) and run.source.kind == "trained" and run.source.location == str(tmp_path / "run.pth")
    )
    assert str(run.source).startswith(f"trained locally: {tmp_path / 'run.pth'} (the hub run was skipped")


# ------------------------------------------------------------------------------------- rand labels need the seed


def _rand_run(ours: dict, seed: int) -> dict:
    cfg = dict(ours["config"], fn="rand", seed=seed)
    return dict(ours, config=cfg, train_indices=train_test_split(P, cfg["frac_train"], seed)[0])


def test_rand_labels_come_from_the_seed_everywhere(ours):
    p, all_data = P, make_all_data(P)
    table = task_function("rand", p, 3)(all_data[:, 0], all_data[:, 1])
    assert not torch.equal(table, task_function("rand", p, 0)(all_data[:, 0], all_data[:, 1]))
    assert torch.equal(make_split(p, 0.3, 3, "rand").labels, table)
    run = RunData.from_dict(_rand_run(ours, 3))
    assert torch.equal(run.split.labels, table)
    assert torch.equal(dynamics._setup(run, stride=1).labels, table)


def test_analysis_and_grader_score_rand_with_the_seed_labels():
    torch.manual_seed(0)
    model = make_model(P, seed=0)
    with torch.no_grad():
        model.W_U.mul_(30)  # logits that vary, so the labels matter
    key_freqs = [2, 5]
    all_data = make_all_data(P)
    original = model(all_data)[:, -1, :P].detach()
    train = train_test_split(P, 0.3, 3)[0]
    seeded = task_function("rand", P, 3)(all_data[:, 0], all_data[:, 1])
    unseeded = task_function("rand", P, 0)(all_data[:, 0], all_data[:, 1])
    expected = circuit.excl_loss_from_logits(original, key_freqs, train, seeded)
    wrong = circuit.excl_loss_from_logits(original, key_freqs, train, unseeded)
    assert not torch.allclose(torch.tensor(expected), torch.tensor(wrong), rtol=1e-3)
    got = circuit.excl_loss(model, key_freqs, fn="rand", seed=3)
    torch.testing.assert_close(torch.tensor(got), torch.tensor(expected), rtol=1e-6, atol=0)
    surgery = circuit.neuron_surgery_losses(model, key_freqs, fn="rand", seed=3)
    surgery0 = circuit.neuron_surgery_losses(model, key_freqs, fn="rand", seed=0)
    assert surgery["original"] != pytest.approx(surgery0["original"], rel=1e-3)
    # the grader's reference uses the seed's labels: the right answer passes, the seed-0 labels' answer fails
    seed3 = lambda m, k: circuit.excl_loss(m, k, fn="rand", seed=3)  # noqa: E731
    grader.test_excl_loss(seed3, model, key_freqs, fn="rand", seed=3)  # raises GraderError on a mismatch
    with pytest.raises(grader.GraderError):
        grader.test_excl_loss(
            lambda m, k: circuit.excl_loss(m, k, fn="rand", seed=0), model, key_freqs, fn="rand", seed=3
        )


def test_grader_takes_the_recipe_from_the_run(ours, tmp_path):
    model = make_model(P, seed=0)
    with torch.no_grad():
        model.W_U.mul_(30)
    rand3 = _rand_run(ours, 3)
    path = tmp_path / "rand3.pth"
    atomic_save(rand3, path)
    right = lambda m, k: circuit.excl_loss(m, k, fn="rand", seed=3)  # noqa: E731
    for run in (RunData.from_dict(rand3), rand3, path):
        grader.test_excl_loss(right, model, [2, 5], run=run)
    with pytest.raises(grader.GraderError, match="p = 29"):
        grader.test_excl_loss(right, model, [2, 5], run=make_paper_run_data(29, n_checkpoints=1))
    with pytest.raises(grader.GraderError, match="run: expected the run data"):
        grader.test_excl_loss(right, model, [2, 5], run=tmp_path / "missing.pth")
