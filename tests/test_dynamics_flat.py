"""Section 3 on a file that holds one model many times (a released final model in the hub's format): every
progress measure is flat and finite, a clear note says why, and the model is computed once. Also: the engine
runs on every torch device this machine has (CPU here; CUDA when present)."""

import warnings

import pytest
import torch

from part52_grokking_and_modular_arithmetic.analysis import dynamics
from part52_grokking_and_modular_arithmetic.analysis.dynamics import compute_dynamics

from fake_hub import make_paper_run_data

P = 23
KEY_FREQS = [2, 5]


def same_model_run(n: int = 4) -> dict:
    """Hub layout (paper weights, no config, no split), ``n`` checkpoints that are all the same model."""
    run = make_paper_run_data(p=P, n_checkpoints=n)
    run["state_dicts"] = [{k: v.clone() for k, v in run["state_dicts"][-1].items()} for _ in range(n)]
    return run


def test_identical_checkpoints_give_flat_finite_curves_and_a_note(monkeypatch):
    run = same_model_run(4)
    calls = []
    real = dynamics._chunk_metrics

    def counting(state_dicts, *args, **kwargs):
        calls.append(len(state_dicts))
        return real(state_dicts, *args, **kwargs)

    monkeypatch.setattr(dynamics, "_chunk_metrics", counting)
    with pytest.warns(UserWarning, match="same weights.*flat"):
        dyn = compute_dynamics(run, KEY_FREQS, progress=False)
    assert sum(calls) == 2, (
        f"the final model once for the neuron frequencies, then one distinct checkpoint; got {calls}"
    )
    assert dyn.epochs.tolist() == run["epochs"]
    for name, value in dyn.to_dict().items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            assert value.shape[0] == 4, name
            assert torch.isfinite(value).all(), f"{name} has NaN/inf"
            assert torch.equal(value, value[:1].expand_as(value)), f"{name} is not flat"


def test_the_note_is_given_on_a_cache_hit_too(tmp_path):
    run = same_model_run(3)
    with pytest.warns(UserWarning, match="same weights"):
        first = compute_dynamics(run, KEY_FREQS, progress=False, cache=tmp_path)
    assert list(tmp_path.glob("dynamics-*.pt")), "the result was cached"
    with pytest.warns(UserWarning, match="same weights"):
        again = compute_dynamics(run, KEY_FREQS, progress=False, cache=tmp_path)
    torch.testing.assert_close(again.test_loss, first.test_loss)


def test_flat_result_equals_the_single_model_computed_directly():
    run = same_model_run(3)
    with pytest.warns(UserWarning, match="same weights"):
        flat = compute_dynamics(run, KEY_FREQS, progress=False)
    single = dict(run, state_dicts=run["state_dicts"][:1], epochs=run["epochs"][:1])
    one = compute_dynamics(single, KEY_FREQS, progress=False)
    for name, value in one.to_dict().items():
        if isinstance(value, torch.Tensor) and name not in ("epochs", "neuron_freqs"):  # per-checkpoint values
            torch.testing.assert_close(getattr(flat, name)[-1], value[0], msg=name)


def test_repeated_checkpoints_in_a_real_history_are_expanded_in_order():
    run = make_paper_run_data(p=P, n_checkpoints=3)  # three different models
    sds = run["state_dicts"]
    repeated = dict(run, state_dicts=[sds[0], sds[1], sds[1], sds[2]], epochs=[0, 100, 200, 300])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # distinct models: no note
        base = compute_dynamics(run, KEY_FREQS, progress=False)
        rep = compute_dynamics(repeated, KEY_FREQS, progress=False)
    assert torch.equal(rep.neuron_freqs, base.neuron_freqs)
    torch.testing.assert_close(rep.test_loss, base.test_loss[[0, 1, 1, 2]])
    torch.testing.assert_close(rep.gini_embed, base.gini_embed[[0, 1, 1, 2]])
    assert not torch.equal(base.test_loss[0], base.test_loss[2])


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_engine_runs_on_each_available_device(device):
    run = make_paper_run_data(p=P, n_checkpoints=2)
    on_cpu = compute_dynamics(run, KEY_FREQS, progress=False)
    here = compute_dynamics(run, KEY_FREQS, progress=False, device=device)
    assert here.train_loss.device.type == "cpu"  # results always come back to the CPU
    torch.testing.assert_close(here.train_loss, on_cpu.train_loss, rtol=1e-4, atol=1e-6)
