"""The float64 loss, logit scoring, and the checkpoint file format."""

import math

import pytest
import torch
from jaxtyping import TypeCheckError

from part52_grokking_and_modular_arithmetic.runs import checkpoints, data, layout, run_data
from part52_grokking_and_modular_arithmetic.runs.model import make_model
from part52_grokking_and_modular_arithmetic.training import losses

BAD_INPUT = (ValueError, TypeCheckError)


def test_high_precision_loss_resolves_tiny_losses_float32_cannot():
    logits = torch.zeros(4, 10)
    logits[:, 3] = 25.0  # loss ~ 9 * exp(-25) ~ 1.3e-10
    labels = torch.full((4,), 3)
    loss = losses.cross_entropy_high_precision(logits, labels)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(9 * math.exp(-25), rel=1e-6)
    assert torch.nn.functional.cross_entropy(logits, labels).item() < 1e-6  # float32 collapses to ~0


def test_loss_matches_torch_cross_entropy_and_backprops():
    torch.manual_seed(0)
    logits = torch.randn(8, 5, requires_grad=True)
    labels = torch.randint(0, 5, (8,))
    loss = losses.cross_entropy_high_precision(logits, labels)
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(logits.double(), labels).item(), rel=1e-12)
    loss.backward()
    assert logits.grad is not None and logits.grad.dtype == torch.float32
    with pytest.raises(BAD_INPUT):  # jaxtyping's TypeCheckError under pytest, ValueError for users
        losses.cross_entropy_high_precision(logits, labels[:3])


def test_score_logits_modes_and_bias_correction():
    p = 11
    torch.manual_seed(1)
    all_data = data.make_all_data(p)
    labels = data.make_labels(all_data, p)
    train, test = data.train_test_split(p, 0.3, 0)
    logits = torch.randn(p * p, p)
    assert losses.score_logits(logits, labels, mode="train", train_indices=train) == pytest.approx(
        losses.cross_entropy_high_precision(logits[train], labels[train]).item()
    )
    assert losses.score_logits(logits, labels, mode="test", train_indices=train) == pytest.approx(
        losses.cross_entropy_high_precision(logits[test], labels[test]).item()
    )
    shifted = logits - 3.0 * torch.randn(1, p)
    corrected = losses.score_logits(shifted, labels, bias_correction=True, original_logits=logits)
    assert corrected == pytest.approx(losses.score_logits(logits, labels), rel=1e-6)
    with pytest.raises(ValueError, match="train_indices"):
        losses.score_logits(logits, labels, mode="train")
    with pytest.raises(BAD_INPUT):  # jaxtyping's TypeCheckError under pytest, ValueError for users
        losses.score_logits(logits, labels, mode="val", train_indices=train)


def small_run(p=23, n=3):
    sds = [layout.transformer_lens_to_paper(make_model(p, seed=s).state_dict()) for s in range(n)]
    return {"state_dicts": sds, "epochs": [0, 100, 200][:n], "train_losses": [1.0] * 201, "test_losses": [1.0] * 21}


def test_atomic_save_and_validated_load(tmp_path):
    run = small_run()
    path = checkpoints.atomic_save(run, tmp_path / "sub" / "run.pth")
    assert [f.name for f in path.parent.iterdir()] == ["run.pth"]  # no temporary file left behind
    loaded = run_data.load_run_data(path)
    assert run_data.validate_run_data(loaded) == 23
    torch.testing.assert_close(loaded["state_dicts"][1]["embed.W_E"], run["state_dicts"][1]["embed.W_E"])


def test_truncated_file_is_detected(tmp_path):
    path = checkpoints.atomic_save(small_run(), tmp_path / "run.pth")
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(checkpoints.CorruptCheckpointError, match="truncated"):
        run_data.load_run_data(path)


def test_wrong_structure_is_named():
    run = small_run()
    with pytest.raises(checkpoints.CorruptCheckpointError, match="missing keys"):
        run_data.validate_run_data({"state_dicts": run["state_dicts"]})
    bad = dict(run, epochs=[0])
    with pytest.raises(checkpoints.CorruptCheckpointError, match="3 state dicts but 1 epochs"):
        run_data.validate_run_data(bad)
    sd = dict(run["state_dicts"][2])
    sd["blocks.0.mlp.W_in"] = sd["blocks.0.mlp.W_in"][:, :5]
    with pytest.raises(checkpoints.CorruptCheckpointError, match=r"W_in \(p = 23\) must be a float tensor of shape"):
        run_data.validate_run_data(dict(run, state_dicts=run["state_dicts"][:2] + [sd]))
    tl = dict(run, state_dicts=[make_model(23, seed=0).state_dict()])
    with pytest.raises(checkpoints.CorruptCheckpointError, match="paper layout"):
        run_data.validate_run_data(dict(tl, epochs=[0]))


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("unpickled!",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dicts": Evil()}, path)
    with pytest.raises(checkpoints.CorruptCheckpointError):
        checkpoints.safe_load(path)


def test_run_status_is_one_rule_for_provisioning_the_trainer_sweeps_and_info():
    from part52_grokking_and_modular_arithmetic.runs.config import TrainConfig
    from part52_grokking_and_modular_arithmetic.runs.run_data import run_status

    losses = {"train_losses": [1.0] * 200, "test_losses": [1.0] * 20}
    assert run_status(dict(losses)) == ("finished", "200 epochs")  # a file without config (the hub file)
    cfg = TrainConfig(p=23, epochs=300).to_dict()
    assert run_status(dict(losses, config=cfg)) == ("unfinished", "200 of 300 epochs done")
    assert run_status(dict(losses, config=dict(cfg, epochs=200))).state == "finished"
    stopped = run_status(dict(losses, config=dict(cfg, stop_at_test_loss=2.0)))
    assert stopped == ("finished", "200 epochs (stopped early)")
    done = {"finished": True, "stopped_early": False, "epochs_done": 200}
    assert run_status(dict(losses, config=cfg, resume=done)).state == "finished"  # the trainer's flag decides
    assert run_status(dict(losses, config=cfg, resume=dict(done, finished=False))).state == "unfinished"
    diverged = dict(done, diverged=True, diverged_at=120, diverged_loss="train loss nan")
    assert run_status(dict(losses, config=cfg, resume=diverged)) == (
        "diverged",
        "diverged at epoch 120 (train loss nan)",
    )
    # asked for a longer run than the finished one: not complete, unless it stopped early
    longer = TrainConfig(p=23, epochs=300)
    assert run_status(dict(losses, resume=done), longer) == ("unfinished", "200 of 300 epochs done")
    assert run_status(dict(losses, resume=dict(done, stopped_early=True)), longer).state == "finished"
    assert run_status(dict(losses, resume=done), TrainConfig(p=23, epochs=200)).state == "finished"


def test_cross_entropy_per_run_is_each_runs_own_mean_and_ignores_padding():
    from part52_grokking_and_modular_arithmetic.training.losses import (
        cross_entropy_high_precision,
        cross_entropy_per_run,
    )

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 5, generator=g)
    labels = torch.randint(0, 5, (3, 7), generator=g)
    lengths = [7, 4, 1]
    logits[1, 4:] = float("inf")  # padding rows are never read, whatever they hold
    got = cross_entropy_per_run(logits, labels, lengths)
    assert got.dtype == torch.float64 and got.shape == (3,)
    for r, n in enumerate(lengths):
        want = cross_entropy_high_precision(logits[r, :n], labels[r, :n])
        torch.testing.assert_close(got[r], want, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="lengths"):
        cross_entropy_per_run(logits, labels, [7, 0, 1])
