"""The batched trainer (``train.train_many``): each member trains as its own ``train()`` run would, and
its file is a run file like any other (loaded, continued by ``train``; ``train``'s files continued by it).

Small p (23) keeps these fast; one p = 113 equivalence check is marked slow.
"""

import math
import signal

import pytest
import torch

from part52_grokking_and_modular_arithmetic.runs.architecture import PAPER_TRAINABLE
from part52_grokking_and_modular_arithmetic.runs.config import TrainConfig
from part52_grokking_and_modular_arithmetic.runs.model import make_model
from part52_grokking_and_modular_arithmetic.runs.run_data import load_run_data
from part52_grokking_and_modular_arithmetic.training import batched_train, resources
from part52_grokking_and_modular_arithmetic.training import train as trainer
from part52_grokking_and_modular_arithmetic.training.batched_train import BatchedAdamW
from part52_grokking_and_modular_arithmetic.training.resources import estimate_memory_bytes
from part52_grokking_and_modular_arithmetic.training.train import (
    NotEnoughMemoryError,
    TrainingDivergedError,
    TrainingInterrupted,
    make_optimizer,
    train,
    train_many,
    trained_parameters,
)

P = 23
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"))]


def _config(**kw) -> TrainConfig:
    base = dict(p=P, epochs=50, save_every=10, test_every=5)
    base.update(kw)
    return TrainConfig(**base)


def _rel(a, b) -> float:
    a, b = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(((a - b).abs() / b.abs()).max())


def _rel_norm(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


#: members that differ in seed (init and split), weight decay, learning rate and train fraction
MEMBERS = [
    _config(seed=0),
    _config(seed=1, weight_decay=0.3),
    _config(seed=2, lr=5e-4),
    _config(seed=3, frac_train=0.5),
]


@pytest.fixture(scope="module")
def singles():
    """Each member trained alone by ``train()`` (the reference)."""
    return [train(c, progress=False) for c in MEMBERS]


# ---------------------------------------------------------------------------------------------------------
# the optimizer
def test_batched_adamw_matches_torch_adamw_with_the_warmup_per_run():
    """Per-run lr, weight decay, betas and warm-up (including none): every step equals ``make_optimizer``'s
    AdamW + LambdaLR of each run; a run marked inactive (with a nan gradient) is left exactly as it was."""
    configs = [
        _config(seed=0),
        _config(seed=1, lr=3e-3, weight_decay=0.1),
        _config(seed=2, betas=(0.8, 0.99), warmup_steps=0),
        _config(seed=3, warmup_steps=3, weight_decay=0.0),
    ]
    models = [make_model(P, seed=c.seed) for c in configs]
    torch_opts = [make_optimizer(m, c) for m, c in zip(models, configs, strict=True)]
    flat = torch.stack([torch.cat([t.detach().reshape(-1) for t in trained_parameters(m)]) for m in models])
    opt = BatchedAdamW.for_configs(flat, configs)
    gen = torch.Generator().manual_seed(0)
    active = torch.ones(len(configs), dtype=torch.bool)
    for step in range(15):
        grads = torch.randn(flat.shape, generator=gen) * 0.01
        for i, (m, (o, s)) in enumerate(zip(models, torch_opts, strict=True)):
            off = 0
            for param in trained_parameters(m):
                param.grad = grads[i, off : off + param.numel()].view_as(param).clone()
                off += param.numel()
            o.step()
            s.step()
            o.zero_grad(set_to_none=True)
        opt.step(flat, grads.clone(), active)
        for i, m in enumerate(models):
            ref = torch.cat([t.detach().reshape(-1) for t in trained_parameters(m)])
            assert torch.allclose(flat[i], ref, rtol=1e-5, atol=1e-7), f"run {i}, step {step}"
    # an inactive run: nothing moves, even with a nan gradient
    before = (flat.clone(), opt.exp_avg.clone(), opt.exp_avg_sq.clone(), opt.step_count.clone(), opt.last_epoch.clone())
    grads = torch.randn(flat.shape, generator=gen)
    grads[1] = math.nan
    active = torch.tensor([True, False, True, True])
    opt.step(flat, grads, active)
    for now, then in zip((flat, opt.exp_avg, opt.exp_avg_sq, opt.step_count, opt.last_epoch), before, strict=True):
        assert torch.equal(now[1], then[1])
        assert not torch.equal(now[0], then[0])


def test_batched_adamw_rejects_mismatched_hyperparameters():
    with pytest.raises(ValueError, match="one entry per run"):
        BatchedAdamW(
            torch.zeros(2, 5), lr=[1e-3], weight_decay=[1.0, 1.0], betas=[(0.9, 0.98)] * 2, warmup_steps=[10, 10]
        )
    with pytest.raises((ValueError, TypeError), match=r"S N|\(S, N\)"):  # jaxtyping's check or ours
        BatchedAdamW(torch.zeros(5), lr=[1e-3], weight_decay=[1.0], betas=[(0.9, 0.98)], warmup_steps=[10])


# ---------------------------------------------------------------------------------------------------------
# equivalence with single runs
@pytest.mark.parametrize(
    "chunk, workers",
    [(1, 1), (1, 3), (4, 1)],
    ids=["one-run-chunks", "one-run-chunks-on-3-worker-threads", "all-runs-in-one-chunk"],
)
@pytest.mark.parametrize("device", DEVICES)
def test_each_member_trains_like_a_single_run(singles, tmp_path, device, chunk, workers, monkeypatch):
    """Members differing in seed, weight decay, lr and train fraction: each member's train-loss trajectory
    equals ``train()`` of its config (relative difference <= 1e-3 over 50 epochs), and so do its test losses,
    checkpoint epochs, split and final weights; its file loads with ``load_run_data`` like any run file.
    Computed one run at a time (in this thread, or side by side on CPU worker threads) or all four together
    (their pair sets padded to the longest)."""
    monkeypatch.setattr(resources, "CPU_CHUNK_RUNS", chunk)
    outs = [tmp_path / f"member{i}.pth" for i in range(len(MEMBERS))]
    threads = torch.get_num_threads()
    results = train_many(MEMBERS, outs, device=device, progress=False, workers=workers)
    assert torch.get_num_threads() == threads  # the worker threads' setting is undone
    for config, out, got, ref in zip(MEMBERS, outs, results, singles, strict=True):
        assert len(got["train_losses"]) == config.epochs
        assert _rel(got["train_losses"], ref["train_losses"]) <= 1e-3
        assert _rel(got["test_losses"], ref["test_losses"]) <= 1e-3
        assert got["epochs"] == ref["epochs"]
        assert torch.equal(got["train_indices"], ref["train_indices"])
        assert got["config"] == ref["config"]
        assert set(got) == set(ref) and set(got["resume"]) == set(ref["resume"])
        assert list(got["resume"]["optimizer"]["state"]) == list(ref["resume"]["optimizer"]["state"])
        for key in ("step", "exp_avg", "exp_avg_sq"):
            mine, theirs = got["resume"]["optimizer"]["state"][0][key], ref["resume"]["optimizer"]["state"][0][key]
            assert (mine.dtype, mine.shape, mine.device) == (theirs.dtype, theirs.shape, theirs.device)
        assert got["resume"]["finished"] and got["resume"]["epochs_done"] == config.epochs
        # Adam moves a weight whose gradient is ~0 by ~lr per step in the direction of that gradient's sign, so
        # float rounding shows in such weights (e.g. a dead neuron's b_in) first: compare tensors by norm
        for name in PAPER_TRAINABLE:
            assert _rel_norm(got["resume"]["params"][name], ref["resume"]["params"][name]) <= 2e-2, name
        for mine, theirs in zip(got["state_dicts"], ref["state_dicts"], strict=True):
            assert _rel_norm(mine["blocks.0.mlp.W_in"], theirs["blocks.0.mlp.W_in"]) <= 2e-2
        stored = load_run_data(out)
        assert stored["train_losses"] == got["train_losses"]
        assert stored["resume"]["optimizer"]["param_groups"] == ref["resume"]["optimizer"]["param_groups"]
        assert stored["resume"]["scheduler"] == ref["resume"]["scheduler"]


def test_different_p_are_grouped(tmp_path):
    """Runs of different p cannot share tensors: each p trains as its own group, in one call."""
    configs = [_config(p=23, epochs=12), _config(p=29, epochs=12), _config(p=23, seed=1, epochs=12)]
    results = train_many(configs, [None] * 3, device="cpu", progress=False)
    for config, got in zip(configs, results, strict=True):
        ref = train(config, progress=False)
        assert got["state_dicts"][0]["embed.W_E"].shape == (128, config.p + 1)
        assert _rel(got["train_losses"], ref["train_losses"]) <= 1e-3


@pytest.mark.slow
def test_members_match_single_runs_at_p113(monkeypatch):
    monkeypatch.setattr(resources, "CPU_CHUNK_RUNS", 2)  # both runs in one chunk
    configs = [TrainConfig(epochs=50, seed=0), TrainConfig(epochs=50, seed=1, weight_decay=0.3, frac_train=0.4)]
    results = train_many(configs, [None, None], device="cpu", progress=False)
    for config, got in zip(configs, results, strict=True):
        assert _rel(got["train_losses"], train(config, progress=False)["train_losses"]) <= 1e-3


# ---------------------------------------------------------------------------------------------------------
# files: resume both ways, skipping, interrupts
def test_member_files_continue_with_train_and_train_files_continue_with_train_many(singles, tmp_path):
    half = [
        _config(seed=c.seed, weight_decay=c.weight_decay, lr=c.lr, frac_train=c.frac_train, epochs=25)
        for c in MEMBERS[:2]
    ]
    outs = [tmp_path / "a.pth", tmp_path / "b.pth"]
    train_many(half, outs, device="cpu", progress=False)
    assert [load_run_data(o)["resume"]["epochs_done"] for o in outs] == [25, 25]
    extended = train(MEMBERS[0], outs[0], progress=False)  # a member file, extended by train()
    assert _rel(extended["train_losses"], singles[0]["train_losses"]) <= 1e-3
    assert extended["epochs"] == singles[0]["epochs"]
    # a file written by train(), extended by train_many (next to a member that starts from scratch)
    single_file = tmp_path / "single.pth"
    train(half[1], single_file, progress=False)
    got = train_many([MEMBERS[1], MEMBERS[2]], [single_file, tmp_path / "c.pth"], device="cpu", progress=False)
    assert _rel(got[0]["train_losses"], singles[1]["train_losses"]) <= 1e-3
    assert got[0]["epochs"] == singles[1]["epochs"]
    assert _rel(got[1]["train_losses"], singles[2]["train_losses"]) <= 1e-3


def test_finished_members_are_skipped(tmp_path, monkeypatch):
    outs = [tmp_path / "a.pth", tmp_path / "b.pth"]
    configs = [_config(seed=0, epochs=10), _config(seed=1, epochs=10)]
    first = train_many(configs, outs, device="cpu", progress=False)
    stamps = [o.stat().st_mtime_ns for o in outs]

    def refuse(*args, **kwargs):
        raise AssertionError("a finished member was trained again")

    monkeypatch.setattr(trainer, "Batch", refuse)
    again = train_many(configs, outs, device="cpu", progress=False)
    assert [r["train_losses"] for r in again] == [r["train_losses"] for r in first]
    assert [o.stat().st_mtime_ns for o in outs] == stamps


def test_interrupt_writes_every_member_and_the_sweep_resumes(tmp_path, monkeypatch):
    """SIGINT during a sweep stops it at an epoch boundary with every member written (resumable); running it
    again continues each member to the same trajectory as an uninterrupted sweep."""
    configs = [_config(seed=0, epochs=30), _config(seed=1, epochs=30, weight_decay=0.5)]
    reference = train_many(configs, [None, None], device="cpu", progress=False)
    outs = [tmp_path / "a.pth", tmp_path / "b.pth"]
    real = batched_train.Batch.train_losses_and_grads
    calls = {"n": 0}

    def interrupt_at_epoch_12(self):
        calls["n"] += 1
        if calls["n"] == 12:
            signal.raise_signal(signal.SIGINT)  # handled by train_many: stop at the end of this epoch
        return real(self)

    monkeypatch.setattr(batched_train.Batch, "train_losses_and_grads", interrupt_at_epoch_12)
    with pytest.raises(TrainingInterrupted, match="run the same command again") as caught:
        train_many(configs, outs, device="cpu", progress=False, save_interval_s=3600)
    assert caught.value.epochs_done == 12
    for out in outs:
        stored = load_run_data(out)
        assert stored["resume"]["epochs_done"] == 12 and not stored["resume"]["finished"]
        assert len(stored["train_losses"]) == 12
    monkeypatch.setattr(batched_train.Batch, "train_losses_and_grads", real)
    resumed = train_many(configs, outs, device="cpu", progress=False)
    for got, ref in zip(resumed, reference, strict=True):
        assert _rel(got["train_losses"], ref["train_losses"]) <= 1e-5
        assert got["epochs"] == ref["epochs"]
        assert got["resume"]["finished"]


def test_an_error_between_epochs_writes_every_member_first(tmp_path, monkeypatch):
    """An exception at an epoch boundary (here: in the forward of epoch 9) propagates after every member's
    file is written with the 9 completed epochs, so the sweep can be continued."""
    configs = [_config(seed=0, epochs=20), _config(seed=1, epochs=20)]
    outs = [tmp_path / "a.pth", tmp_path / "b.pth"]
    real = batched_train.Batch.train_losses_and_grads
    calls = {"n": 0}

    def fail_at_epoch_9(self):
        calls["n"] += 1
        if calls["n"] == 10:
            raise RuntimeError("boom")
        return real(self)

    monkeypatch.setattr(batched_train.Batch, "train_losses_and_grads", fail_at_epoch_9)
    with pytest.raises(RuntimeError, match="boom"):
        train_many(configs, outs, device="cpu", progress=False, save_interval_s=3600)
    for out in outs:
        stored = load_run_data(out)
        assert stored["resume"]["epochs_done"] == 9 and len(stored["train_losses"]) == 9
    monkeypatch.setattr(batched_train.Batch, "train_losses_and_grads", real)
    resumed = train_many(configs, outs, device="cpu", progress=False)
    for config, got in zip(configs, resumed, strict=True):
        assert _rel(got["train_losses"], train(config, progress=False)["train_losses"]) <= 1e-3


# ---------------------------------------------------------------------------------------------------------
# members that stop on their own
def test_early_stop_of_one_member(tmp_path):
    """A member with ``stop_at_test_loss`` stops where ``train()`` stops it; the others run to the end."""
    probe = train(_config(seed=1, epochs=40), progress=False)
    tests = probe["test_losses"]  # every 5 epochs
    assert tests[1] < tests[0]
    threshold = (tests[0] + tests[1]) / 2  # first crossed at epoch 5 (not a checkpoint epoch: one is added)
    stopper = _config(seed=1, epochs=40, stop_at_test_loss=threshold)
    ref = train(stopper, progress=False)
    assert ref["resume"]["stopped_early"]
    configs = [_config(seed=0, epochs=40), stopper]
    outs = [tmp_path / "a.pth", tmp_path / "b.pth"]
    got = train_many(configs, outs, device="cpu", progress=False)
    assert got[1]["resume"]["stopped_early"] and got[1]["resume"]["finished"]
    assert got[1]["resume"]["epochs_done"] == ref["resume"]["epochs_done"] == 5
    assert got[1]["epochs"] == ref["epochs"] == [0, 5]
    assert len(got[1]["train_losses"]) == len(ref["train_losses"])
    assert _rel(got[1]["train_losses"], ref["train_losses"]) <= 1e-3
    assert len(got[0]["train_losses"]) == 40 and not got[0]["resume"]["stopped_early"]
    assert load_run_data(outs[1])["resume"]["stopped_early"]


def test_a_diverged_member_does_not_stop_the_others(tmp_path, capsys):
    configs = [_config(seed=0, epochs=30), _config(seed=1, epochs=30, lr=1e12), _config(seed=2, epochs=30)]
    outs = [tmp_path / f"m{i}.pth" for i in range(3)]
    got = train_many(configs, outs, device="cpu", progress=False)
    diverged = got[1]["resume"]
    assert diverged["diverged"] and diverged["finished"]
    assert "params" not in diverged  # as train() writes it: it cannot go on
    assert len(got[1]["train_losses"]) == diverged["diverged_at"] < 30
    assert all(math.isfinite(x) for x in got[1]["train_losses"])
    for i in (0, 2):
        assert len(got[i]["train_losses"]) == 30 and not got[i]["resume"].get("diverged")
        assert _rel(got[i]["train_losses"], train(configs[i], progress=False)["train_losses"]) <= 1e-3
    assert load_run_data(outs[1])["resume"]["diverged"]
    assert "diverged at epoch" in capsys.readouterr().err
    # run again: the diverged member is skipped with a note, not trained again
    again = train_many(configs, outs, device="cpu", progress=False)
    assert again[1]["resume"]["diverged"]
    assert "skipping" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------
# errors and resources
def test_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="same length"):
        train_many([_config()], [], progress=False)
    with pytest.raises(ValueError, match="same file"):
        train_many([_config(seed=0), _config(seed=1)], [tmp_path / "x.pth", tmp_path / "x.pth"], progress=False)
    with pytest.raises(ValueError, match="folder"):
        train_many([_config()], [tmp_path], progress=False)
    with pytest.raises(TypeError, match="TrainConfig"):
        train_many([dict(p=23)], [None], progress=False)
    with pytest.raises(ValueError, match="device"):
        train_many([_config()], [None], device="tpu", progress=False)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        train_many([_config(seed=0), _config(seed=1)], [None, None], device="cpu", progress=False, workers=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            train_many([_config()], [None], device="cuda", progress=False)
    # a file of another configuration is never overwritten
    other = tmp_path / "other.pth"
    train(_config(seed=5, epochs=3), other, progress=False)
    with pytest.raises(ValueError, match="different configuration"):
        train_many([_config(seed=6, epochs=3)], [other], device="cpu", progress=False)


def test_memory_estimate_and_check(monkeypatch):
    """The estimate grows with the number of runs and the checkpoint history; a sweep that does not fit is
    refused before any work, saying what to change."""

    def sweep(n, save_every):
        return [TrainConfig(seed=i, save_every=save_every) for i in range(n)]

    assert (
        estimate_memory_bytes(sweep(64, 100))
        > estimate_memory_bytes(sweep(64, 500))
        > estimate_memory_bytes(sweep(8, 500))
    )
    assert 1e9 < estimate_memory_bytes(sweep(64, 500)) < 4e9  # the sweep default fits 4 GB
    assert estimate_memory_bytes(sweep(64, 100)) > 4e9
    # more cores mean more runs computed side by side on the CPU: their activations stay bounded by default,
    # so the sweep default fits 4 GB with any number of cores (with ~0.45 GB for Python, torch, TransformerLens)
    with monkeypatch.context() as m:
        m.setattr(torch, "get_num_threads", lambda: 64)
        assert estimate_memory_bytes(sweep(64, 500)) + 0.45e9 < 4e9
        assert estimate_memory_bytes(sweep(64, 500), workers=64) > estimate_memory_bytes(sweep(64, 500))
    monkeypatch.setattr(trainer, "available_memory_bytes", lambda: 10**8)
    with pytest.raises(NotEnoughMemoryError, match="save-every"):
        train_many(sweep(4, 100), [None] * 4, device="cpu", progress=False)


def test_results_read_back_in_blocks_as_on_a_gpu(monkeypatch):
    """On a GPU the losses are read back every few epochs and the stop decisions are taken on the device: a
    member that stops early or diverges inside a block is frozen there, and every record matches ``train()``.
    Checked on the CPU by reading back every 7 epochs (blocks also end where a member's write or end is due)."""
    monkeypatch.setattr(trainer, "_sync_every", lambda device: 7)
    probe = train(_config(seed=1, epochs=40), progress=False)["test_losses"]
    configs = [
        _config(seed=0, epochs=40),
        _config(seed=1, epochs=40, stop_at_test_loss=(probe[0] + probe[1]) / 2),  # stops at epoch 5
        _config(seed=2, epochs=40, lr=1e12),  # diverges within the first block
        _config(seed=3, epochs=23, save_every=4, test_every=3),
    ]
    got = train_many(configs, [None] * 4, device="cpu", progress=False)
    for config, run in zip(configs, got, strict=True):
        try:
            ref = train(config, progress=False)
        except TrainingDivergedError as e:
            ref = e.run_data
        assert run["epochs"] == ref["epochs"]
        assert len(run["test_losses"]) == len(ref["test_losses"])
        assert {
            k: v for k, v in run["resume"].items() if k in ("epochs_done", "finished", "stopped_early", "diverged")
        } == {k: v for k, v in ref["resume"].items() if k in ("epochs_done", "finished", "stopped_early", "diverged")}
        assert _rel(run["train_losses"], ref["train_losses"]) <= 1e-3
        for a, b in zip(run["state_dicts"], ref["state_dicts"], strict=True):
            assert _rel_norm(a["blocks.0.mlp.W_in"], b["blocks.0.mlp.W_in"]) <= 2e-2
