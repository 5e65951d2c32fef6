"""The trainer: faithful to the paper recipe (follows a plain HookedTransformer loop), deterministic, resumable,
and writing the run-data format of checkpoints.py."""

from __future__ import annotations

import dataclasses
import functools
import math

import pytest
import torch

from part52_grokking_and_modular_arithmetic.runs.architecture import PAPER_TRAINABLE
from part52_grokking_and_modular_arithmetic.runs.checkpoints import (
    CorruptCheckpointError,
    atomic_save,
    safe_load,
)
from part52_grokking_and_modular_arithmetic.runs.config import TrainConfig
from part52_grokking_and_modular_arithmetic.runs.data import make_all_data, make_labels, train_test_split
from part52_grokking_and_modular_arithmetic.runs.layout import PAPER_KEYS, is_paper_layout, load_in_state_dict
from part52_grokking_and_modular_arithmetic.runs.model import make_model
from part52_grokking_and_modular_arithmetic.runs.run_data import load_run_data, validate_run_data
from part52_grokking_and_modular_arithmetic.training.last_position import model_logits
from part52_grokking_and_modular_arithmetic.training.losses import cross_entropy_high_precision
from part52_grokking_and_modular_arithmetic.training.train import (
    TrainingData,
    fast_train_step,
    make_optimizer,
    train,
)

from reference.plain_training import plain_hooked_transformer_step, plain_train

#: A short run for the bookkeeping tests.
TINY = TrainConfig(p=23, frac_train=0.5, epochs=60, save_every=20, test_every=10)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _final_params(run: dict) -> dict[str, torch.Tensor]:
    return run["resume"]["params"]


def _assert_same_run(a: dict, b: dict) -> None:
    assert a["train_losses"] == b["train_losses"]
    assert a["test_losses"] == b["test_losses"]
    assert a["epochs"] == b["epochs"]
    for sd_a, sd_b in zip(a["state_dicts"], b["state_dicts"], strict=True):
        for key in PAPER_KEYS:
            assert torch.equal(sd_a[key], sd_b[key]), key
    for name in PAPER_TRAINABLE:
        assert torch.equal(_final_params(a)[name], _final_params(b)[name]), name


# ---------------------------------------------------------------------------------------------------------
# the recipe
def test_optimizer_follows_the_paper_recipe():
    model = make_model(23, seed=0)
    optimizer, scheduler = make_optimizer(model, TINY)
    (group,) = optimizer.param_groups
    params = dict(model.named_parameters())
    assert [id(p) for p in group["params"]] == [id(params[n]) for n in PAPER_TRAINABLE]
    assert group["weight_decay"] == 1.0 and tuple(group["betas"]) == (0.9, 0.98) and group["eps"] == 1e-8
    lrs = []
    for _ in range(12):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(5e-4) and lrs[10] == lrs[11] == pytest.approx(1e-3)


@functools.lru_cache(maxsize=2)
def _plain_run(config: TrainConfig, epochs: int, dtype: torch.dtype) -> tuple[list[float], torch.Tensor]:
    """Train losses and final last-position logits (every pair) of the plain HookedTransformer loop."""
    model, losses = plain_train(config, epochs, dtype=dtype)
    return losses, model(make_all_data(config.p))[:, -1].detach()


def _fast_train(config: TrainConfig, epochs: int, dtype: torch.dtype):
    """The trainer's step (the last-position module), ``epochs`` epochs in memory: (model, train losses)."""
    model = make_model(config.p, seed=config.seed)
    if dtype != model.W_E.dtype:
        model = model.to(dtype, print_details=False)
    optimizer, scheduler = make_optimizer(model, config)
    data = TrainingData(config)
    return model, [fast_train_step(model, optimizer, scheduler, data.train_pairs) for _ in range(epochs)]


def _loss_trajectories(config: TrainConfig, epochs: int, mutate=None, dtype=torch.float32):
    """Train losses of the plain HookedTransformer loop and of the fast step (optionally with a mutated recipe),
    and the final last-position logits of both on every pair."""
    plain, plain_logits = _plain_run(config, epochs, dtype)
    fast_model, fast = _fast_train(mutate(config) if mutate is not None else config, epochs, dtype)
    return plain, fast, plain_logits, model_logits(fast_model, make_all_data(config.p))


def _max_relative_difference(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) / abs(y) for x, y in zip(a, b, strict=True))


def _relative_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.slow
def test_fast_trainer_follows_the_plain_hooked_transformer_loop_p113():
    """50 epochs of the default recipe (p = 113, float32): every epoch's loss agrees with a plain
    HookedTransformer loop to 1e-4. Individual logits drift apart more (float32 rounding, amplified by Adam's
    normalised steps), as much as the plain float32 loop drifts from the same loop in float64: so the fast run
    must stay as close to the exact (float64) trajectory as the plain float32 run does. The exact trajectory is
    the fast step's in float64, which is the plain loop's to 1e-10 (the test below) and 7x faster to compute."""
    config = TrainConfig()
    plain, fast, plain_logits, fast_logits = _loss_trajectories(config, 50)
    assert _max_relative_difference(fast, plain) <= 1e-4
    exact_model, _ = _fast_train(config, 50, torch.float64)
    exact_logits = model_logits(exact_model, make_all_data(config.p))
    plain_drift = _relative_distance(plain_logits, exact_logits)
    assert plain_drift < 0.05
    assert _relative_distance(fast_logits, exact_logits) <= 2 * plain_drift


@pytest.mark.parametrize(
    "mutate",
    [
        None,
        pytest.param(lambda c: dataclasses.replace(c, betas=(0.9, 0.999)), id="betas"),
        pytest.param(lambda c: dataclasses.replace(c, weight_decay=0.1), id="weight_decay"),
        pytest.param(lambda c: dataclasses.replace(c, warmup_steps=1), id="warmup"),
        pytest.param(lambda c: dataclasses.replace(c, lr=1.01e-3), id="lr"),
    ],
)
def test_fast_trainer_follows_the_plain_loop_exactly_in_float64(mutate):
    """p = 47, 50 epochs in float64 (no float32 noise to amplify): the fast trainer reproduces the plain
    HookedTransformer loop to 1e-10 in every epoch's loss, while any recipe change moves it by > 1e-4."""
    plain, fast, plain_logits, fast_logits = _loss_trajectories(TrainConfig(p=47), 50, mutate, dtype=torch.float64)
    difference = _max_relative_difference(fast, plain)
    if mutate is None:
        assert difference <= 1e-10
        torch.testing.assert_close(fast_logits, plain_logits, rtol=0, atol=1e-9)
    else:
        assert difference > 1e-4


def test_steps_agree_on_one_epoch():
    """One step from the same start: same loss, same updated weights (to float32 rounding)."""
    config = TrainConfig(p=23, frac_train=0.5)
    models = [make_model(23, seed=0) for _ in range(2)]
    opts = [make_optimizer(m, config) for m in models]
    data = TrainingData(config)
    for _ in range(12):  # past the warm-up's lr = 0 step
        a = plain_hooked_transformer_step(models[0], *opts[0], data.train_tokens, data.train_labels)
        b = fast_train_step(models[1], *opts[1], data.train_pairs)
        assert b == pytest.approx(a, rel=1e-6)
    for pa, pb in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(pb, pa, rtol=1e-4, atol=1e-6)


@pytest.mark.slow  # the session's small run (conftest.SMALL_RUN), trained once for the notebook tests too
def test_small_config_generalises_to_full_test_accuracy(small_run):
    run = load_run_data(small_run)
    SMALL = TrainConfig.from_dict(run["config"])
    model = make_model(SMALL.p, seed=SMALL.seed)
    load_in_state_dict(model, _final_params(run))
    all_data = make_all_data(SMALL.p)
    labels = make_labels(all_data, SMALL.p)
    _, test = train_test_split(SMALL.p, SMALL.frac_train, SMALL.seed)
    logits = model_logits(model, all_data[test])
    assert (logits[:, : SMALL.p].argmax(-1) == labels[test]).float().mean().item() == 1.0
    # stopped at the first test epoch with test loss < 1e-3; that epoch's weights are the last checkpoint
    assert run["resume"]["stopped_early"] and run["test_losses"][-1] < 1e-3 <= min(run["test_losses"][:-1])
    stop_epoch = (len(run["test_losses"]) - 1) * SMALL.test_every
    assert len(run["train_losses"]) == stop_epoch + 1 and run["epochs"][-1] == stop_epoch
    assert run["epochs"][:-1] == list(range(0, stop_epoch, SMALL.save_every))
    assert run["train_losses"][0] > 3.0 and run["train_losses"][-1] < 1e-4
    # memorisation first: the train loss is tiny long before the test loss comes down
    memorised = next(e for e, x in enumerate(run["train_losses"]) if x < 1e-2)
    generalised = next(i * SMALL.test_every for i, x in enumerate(run["test_losses"]) if x < 1e-2)
    assert generalised > memorised + 100


# ---------------------------------------------------------------------------------------------------------
# the run file
def test_run_file_format(tmp_path):
    out = tmp_path / "run.pth"
    run = train(TINY, out, progress=False)
    data = torch.load(out, weights_only=True)
    assert validate_run_data(data) == TINY.p
    assert set(data) >= {"state_dicts", "epochs", "train_losses", "test_losses", "config", "train_indices", "resume"}
    assert data["config"] == TINY.to_dict()
    assert data["epochs"] == list(range(0, TINY.epochs, TINY.save_every))
    assert len(data["train_losses"]) == TINY.epochs
    assert len(data["test_losses"]) == math.ceil(TINY.epochs / TINY.test_every)
    assert all(isinstance(x, float) for x in data["train_losses"] + data["test_losses"])
    assert torch.equal(data["train_indices"], train_test_split(TINY.p, TINY.frac_train, TINY.seed)[0])
    assert all(is_paper_layout(sd) for sd in data["state_dicts"])
    assert data["resume"]["epochs_done"] == TINY.epochs and data["resume"]["finished"]
    _assert_same_run(run, data)


def test_checkpoints_hold_the_weights_their_losses_were_measured_at():
    config = dataclasses.replace(TINY, save_every=1, epochs=21)
    run = train(config, progress=False)
    all_data = make_all_data(config.p)
    labels = make_labels(all_data, config.p)
    train_idx, test_idx = train_test_split(config.p, config.frac_train, config.seed)
    model = make_model(config.p, seed=config.seed)
    for k in (0, 7, 20):
        epoch = run["epochs"][k]
        load_in_state_dict(model, run["state_dicts"][k])
        logits = model(all_data)[:, -1]
        assert cross_entropy_high_precision(logits[train_idx], labels[train_idx]).item() == pytest.approx(
            run["train_losses"][epoch], rel=1e-5
        )
        if epoch % config.test_every == 0:
            test_loss = cross_entropy_high_precision(logits[test_idx], labels[test_idx]).item()
            assert test_loss == pytest.approx(run["test_losses"][epoch // config.test_every], rel=1e-5)
    # epoch 0 is the paper init, and the first update has lr 0 (warm-up from 0): epoch 1 holds the same weights
    init = make_model(config.p, seed=config.seed).state_dict()
    load_in_state_dict(model, run["state_dicts"][0])
    assert all(torch.equal(model.state_dict()[n], init[n]) for n in PAPER_TRAINABLE)
    assert all(torch.equal(run["state_dicts"][0][k], run["state_dicts"][1][k]) for k in PAPER_KEYS)
    assert not all(torch.equal(run["state_dicts"][1][k], run["state_dicts"][2][k]) for k in PAPER_KEYS)


def test_training_is_deterministic():
    _assert_same_run(train(TINY, progress=False), train(TINY, progress=False))


def test_different_seeds_give_different_runs():
    other = train(dataclasses.replace(TINY, seed=1, epochs=1), progress=False)
    run = train(dataclasses.replace(TINY, epochs=1), progress=False)
    assert not torch.equal(other["train_indices"], run["train_indices"])
    assert not torch.equal(other["state_dicts"][0]["embed.W_E"], run["state_dicts"][0]["embed.W_E"])


class _Interrupt(KeyboardInterrupt):
    pass


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    out = tmp_path / "run.pth"
    uninterrupted = train(TINY, progress=False)

    def interrupt_at_27(epoch, train_loss, test_loss):
        if epoch == 27:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train(TINY, out, progress=False, callback=interrupt_at_27, save_interval_s=1e9)
    partial = safe_load(out)
    validate_run_data(partial)
    assert partial["resume"]["epochs_done"] == 28 and not partial["resume"]["finished"]
    assert len(partial["train_losses"]) == 28 and partial["epochs"] == [0, 20]
    resumed = train(TINY, out, progress=False)
    _assert_same_run(resumed, uninterrupted)
    _assert_same_run(safe_load(out), uninterrupted)


def test_error_in_a_callback_leaves_a_resumable_file(tmp_path):
    out = tmp_path / "run.pth"

    def fail_at_41(epoch, train_loss, test_loss):
        if epoch == 41:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        train(TINY, out, progress=False, callback=fail_at_41, save_interval_s=0)
    assert safe_load(out)["resume"]["epochs_done"] == 42
    _assert_same_run(train(TINY, out, progress=False), train(TINY, progress=False))


def test_a_finished_run_is_extended_to_more_epochs(tmp_path):
    out = tmp_path / "run.pth"
    train(dataclasses.replace(TINY, epochs=30), out, progress=False)
    extended = train(TINY, out, progress=False)
    _assert_same_run(extended, train(TINY, progress=False))
    assert safe_load(out)["config"]["epochs"] == TINY.epochs


def test_a_finished_run_is_returned_without_training(tmp_path):
    out = tmp_path / "run.pth"
    first = train(TINY, out, progress=False)
    calls = []
    again = train(TINY, out, progress=False, callback=lambda *a: calls.append(a))
    assert calls == []
    _assert_same_run(again, first)
    with pytest.raises(ValueError, match="more than"):
        train(dataclasses.replace(TINY, epochs=10), out, progress=False)


def test_resume_false_starts_again(tmp_path):
    out = tmp_path / "run.pth"
    train(dataclasses.replace(TINY, epochs=30), out, progress=False)
    calls = []
    train(dataclasses.replace(TINY, epochs=30), out, progress=False, resume=False, callback=lambda *a: calls.append(a))
    assert len(calls) == 30


def test_a_file_with_another_config_is_never_overwritten(tmp_path):
    out = tmp_path / "run.pth"
    train(dataclasses.replace(TINY, epochs=5), out, progress=False)
    before = out.read_bytes()
    for other in (
        dataclasses.replace(TINY, seed=1),
        dataclasses.replace(TINY, p=29),
        dataclasses.replace(TINY, lr=3e-3),
    ):
        for resume in (True, False):
            with pytest.raises(ValueError, match="different configuration"):
                train(other, out, progress=False, resume=resume)
    assert out.read_bytes() == before


def test_a_file_without_a_config_is_refused(tmp_path):
    out = tmp_path / "hub_like.pth"
    run = train(dataclasses.replace(TINY, epochs=5), progress=False)
    atomic_save({k: run[k] for k in ("state_dicts", "epochs", "train_losses", "test_losses")}, out)
    with pytest.raises(ValueError, match="not written by train"):
        train(TINY, out, progress=False)


def test_a_corrupt_file_is_reported_and_left_alone(tmp_path):
    out = tmp_path / "run.pth"
    out.write_bytes(b"not a torch file")
    with pytest.raises(CorruptCheckpointError, match="not a readable torch checkpoint"):
        train(TINY, out, progress=False)
    assert out.read_bytes() == b"not a torch file"


def test_early_stop(tmp_path):
    out = tmp_path / "run.pth"
    run = train(dataclasses.replace(TINY, stop_at_test_loss=1e9), out, progress=False)
    assert run["resume"]["stopped_early"] and run["resume"]["finished"]
    assert len(run["train_losses"]) == 1 and run["epochs"] == [0] and len(run["test_losses"]) == 1
    validate_run_data(safe_load(out))
    assert (
        train(dataclasses.replace(TINY, stop_at_test_loss=1e9), out, progress=False)["train_losses"]
        == run["train_losses"]
    )


def test_progress_bar_can_be_silenced(capsys):
    train(dataclasses.replace(TINY, epochs=3), progress=False)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


# ---------------------------------------------------------------------------------------------------------
# devices and process-wide state
def test_train_leaves_the_allocator_alone(monkeypatch):
    """train() is a library call (e.g. in a student's kernel): it must not tune glibc's allocator; only the
    commands and benchmarks opt in to keep_freed_memory()."""
    import part52_grokking_and_modular_arithmetic.training.train as trainer

    def refuse():
        raise AssertionError("train() called keep_freed_memory()")

    monkeypatch.setattr(trainer, "keep_freed_memory", refuse)
    run = train(dataclasses.replace(TINY, epochs=3), progress=False, device="cpu")
    assert len(run["train_losses"]) == 3


def test_device_names_are_checked():
    from part52_grokking_and_modular_arithmetic.training.train import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="'auto', 'cpu' or 'cuda'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_training_on_cuda_follows_the_cpu_run_and_writes_the_same_format(tmp_path):
    """The same config on the GPU: a run file of CPU tensors in the same format, and losses that follow the CPU
    run (float32 sums in another order: close, not identical)."""
    cpu = train(TINY, progress=False, device="cpu")
    out = tmp_path / "gpu.pth"
    gpu = train(TINY, out, progress=False, device="cuda")
    data = torch.load(out, weights_only=True)
    assert validate_run_data(data) == TINY.p and data["epochs"] == cpu["epochs"]
    assert len(data["train_losses"]) == len(cpu["train_losses"]) and len(data["test_losses"]) == len(cpu["test_losses"])
    for sd in data["state_dicts"]:
        assert all(t.device.type == "cpu" for t in sd.values())
    assert all(t.device.type == "cpu" for t in data["resume"]["params"].values())
    assert _max_relative_difference(gpu["train_losses"], cpu["train_losses"]) < 1e-3
    # and it resumes on the CPU
    extended = train(dataclasses.replace(TINY, epochs=TINY.epochs + 20), out, progress=False, device="cpu")
    assert len(extended["train_losses"]) == TINY.epochs + 20


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_a_diverging_run_on_cuda_keeps_the_records_before_it():
    """On the GPU losses are read back in blocks; a non-finite loss is still reported at its own epoch."""
    from part52_grokking_and_modular_arithmetic.training.train import TrainingDivergedError

    with pytest.raises(TrainingDivergedError) as info:
        train(dataclasses.replace(TINY, lr=1e6, epochs=200), progress=False, device="cuda")
    run = info.value.run_data
    epoch = info.value.epoch
    assert len(run["train_losses"]) == epoch and all(math.isfinite(x) for x in run["train_losses"])
    assert all(e < epoch for e in run["epochs"])


def test_train_command_rejects_cuda_without_a_gpu(tmp_path, capsys):
    from part52_grokking_and_modular_arithmetic.app import cli

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert (
        cli.main(
            ["train", "--p", "23", "--epochs", "2", "--device", "cuda", "--out", str(tmp_path / "r.pth"), "--quiet"]
        )
        != 0
    )
    assert "no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "r.pth").exists()
