"""The batched training-dynamics engine against a per-checkpoint HookedTransformer reference, its cache, and
the Gini coefficient.

Runs are built without training: paper-init models with different seeds, the hand-built Fourier model of
``reference.fourier_model.make_fourier_model`` (a model that implements the algorithm) and interpolations
between them, so the metrics see both noise and real key-frequency structure.

The reference (``tests/reference/naive_dynamics.py``) shares no split, label or Fourier code with the engine:
``test_a_split_or_label_bug_in_the_package_is_caught`` plants such bugs in the package and checks that the
comparison fails.
"""

import errno
import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch
from jaxtyping import TypeCheckError

from part52_grokking_and_modular_arithmetic.analysis import circuit, dynamics
from part52_grokking_and_modular_arithmetic.analysis.dynamics import TrainingDynamics, compute_dynamics, gini
from part52_grokking_and_modular_arithmetic.analysis.fourier import arrange_by_2d_freqs, fft2d, fourier_2d_basis_term
from part52_grokking_and_modular_arithmetic.runs import data
from part52_grokking_and_modular_arithmetic.runs.layout import load_in_state_dict, transformer_lens_to_paper
from part52_grokking_and_modular_arithmetic.runs.model import make_model

from reference import naive_dynamics as naive
from reference.fourier_model import make_fourier_model
from reference.naive_dynamics import compute_dynamics_naive

BAD_INPUT = (ValueError, TypeCheckError)


def paper_sd(model):
    return transformer_lens_to_paper(
        {k: v.detach().clone() for k, v in model.state_dict().items() if not k.endswith(("mask", "IGNORE"))}
    )


def make_run(p, key_freqs, seeds=(1,), mix=(0.5,), **extra):
    """Random paper-init checkpoints, interpolations towards the hand-built Fourier model, then that model."""
    target = paper_sd(make_fourier_model(p, key_freqs=key_freqs))
    sds = [paper_sd(make_model(p, seed=s)) for s in seeds]
    sds += [{k: (1 - t) * sds[0][k] + t * target[k] for k in target} for t in mix]
    sds.append(target)
    n = len(sds)
    run = {
        "state_dicts": sds,
        "epochs": [100 * i for i in range(n)],
        "train_losses": [4.7] * n,
        "test_losses": [4.7] * n,
    }
    run.update(extra)
    return run


def model_of(sd, p):
    return load_in_state_dict(make_model(p, seed=0), sd)


FLOAT_TOL = {
    # losses are float64 cross-entropies of float32 logits computed in a different order
    "loss": dict(rtol=2e-5, atol=1e-9),
    "weights": dict(rtol=1e-4, atol=1e-6),
    "fraction": dict(rtol=1e-3, atol=1e-7),
}
GROUPS = {
    "loss": [
        "train_loss",
        "test_loss",
        "all_loss",
        "excluded_loss",
        "excluded_loss_all_keys",
        "restricted_loss",
        "restricted_loss_train",
        "restricted_loss_test",
        "restricted_loss_ratio",
    ],
    "weights": [
        "fourier_embed",
        "fourier_embed_per_freq",
        "fourier_logit",
        "gini_embed",
        "gini_logit",
        "embed_singular_values",
        "sum_sq_weights",
        "total_sum_sq_weights",
    ],
    "fraction": [
        "trig_frac_pre",
        "trig_frac_post",
        "trig_frac_logits",
        "neuron_frac_final_freq",
        "neuron_frac_best_freq",
        "neuron_fire_frac",
        "attention_to_pos",
    ],
}


def assert_matches_reference(fast: TrainingDynamics, ref: TrainingDynamics):
    assert torch.equal(fast.epochs, ref.epochs) and fast.p == ref.p and fast.key_freqs == ref.key_freqs
    for group, names in GROUPS.items():
        for name in names:
            a, b = getattr(fast, name), getattr(ref, name)
            assert a.shape == b.shape, name
            torch.testing.assert_close(a.double(), b.double(), **FLOAT_TOL[group], msg=lambda m, n=name: f"{n}: {m}")
    # best frequency: an argmax, so only where the winner is clear (fractions of distinct blocks sum to <= 1)
    clear = ref.neuron_frac_best_freq > 0.6
    assert clear.sum() > 100
    assert torch.equal(fast.neuron_best_freq[clear], ref.neuron_best_freq[clear])


@pytest.fixture(scope="module")
def run23():
    return make_run(23, key_freqs=(2, 5, 7), seeds=(1, 2), mix=(0.3, 0.8))


@pytest.fixture(scope="module")
def small_run():
    """One random checkpoint and the Fourier model, p = 23: for the cache / option tests."""
    return make_run(23, key_freqs=(2, 5, 7), seeds=(1,), mix=())


@pytest.fixture(scope="module")
def fast_and_naive_23(run23):
    key_freqs = [2, 5, 7]
    return compute_dynamics(run23, key_freqs, progress=False), compute_dynamics_naive(run23, key_freqs, progress=False)


def test_batched_matches_hooked_transformer_reference_p23(fast_and_naive_23):
    fast, ref = fast_and_naive_23
    assert len(fast) == 5
    # neuron frequencies default to the final checkpoint's best blocks; the hand-built model's are clear-cut
    assert torch.equal(fast.neuron_freqs, fast.neuron_best_freq[-1])
    alive = ref.neuron_frac_best_freq[-1] > 0.5
    assert torch.equal(fast.neuron_freqs[alive], ref.neuron_freqs[alive])
    assert set(fast.neuron_freqs[alive].tolist()) == {2, 5, 7}
    assert_matches_reference(fast, ref)


def test_metrics_see_the_algorithm_form(fast_and_naive_23):
    """Sanity of the definitions along random -> Fourier model: trig directions take over the logits."""
    fast, _ = fast_and_naive_23
    assert fast.trig_frac_logits[0] < 0.01 and fast.trig_frac_logits[-1] > 0.5
    assert fast.restricted_loss[-1] < fast.restricted_loss[0]
    # removing a key frequency from the final model's logits hurts; removing all of them hurts most
    final = len(fast) - 1
    assert (fast.excluded_loss[final] > fast.train_loss[final]).all()
    assert fast.excluded_loss_all_keys[final] > fast.excluded_loss[final].max()
    # the final embedding is sparse in the Fourier basis: its Gini coefficient is high
    assert fast.gini_embed[-1] > 0.7 > fast.gini_embed[0]
    assert torch.equal(fast.neuron_frac_final_freq[-1], fast.neuron_frac_best_freq[-1])
    torch.testing.assert_close(fast.attention_to_pos[-1], torch.full((4, 3), 1 / 3, dtype=torch.float64))


def test_batched_matches_reference_p113_in_chunks():
    p, key_freqs = 113, [14, 41, 52]
    run = make_run(p, key_freqs=key_freqs, seeds=(3,), mix=())
    neuron_freqs = torch.randint(1, 57, (512,), generator=torch.Generator().manual_seed(0))
    ref = compute_dynamics_naive(run, key_freqs, neuron_freqs=neuron_freqs, progress=False)
    fast = compute_dynamics(run, key_freqs, neuron_freqs=neuron_freqs, chunk_size=2, progress=False)
    assert torch.equal(fast.neuron_freqs, neuron_freqs)
    assert_matches_reference(fast, ref)  # chunks of 2 here, of 1 (the CPU default) in the p = 23 test
    # the paper init's sum of squared weights (grokking_facts §1), from an independent sum over the model
    model = model_of(run["state_dicts"][0], p)
    direct = sum(float(t.detach().double().pow(2).sum()) for t in model.parameters())
    assert fast.total_sum_sq_weights[0].item() == pytest.approx(direct, rel=1e-9)
    assert direct == pytest.approx(1783, rel=0.02)


def test_agrees_with_per_model_analysis_functions(run23, fast_and_naive_23):
    fast, _ = fast_and_naive_23
    train_indices = naive.paper_split(23, 0.3, 0)
    for i in (0, 3, 4):
        model = model_of(run23["state_dicts"][i], 23)
        expected = torch.tensor(
            circuit.excl_loss(model, fast.key_freqs, train_indices=train_indices), dtype=torch.float64
        )
        torch.testing.assert_close(fast.excluded_loss[i], expected, rtol=2e-5, atol=1e-9)
        torch.testing.assert_close(fast.fourier_embed[i], circuit.fourier_embed(model), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(fast.embed_singular_values[i], circuit.embed_SVD(model), rtol=1e-4, atol=1e-6)


def test_losses_use_the_runs_split_and_task():
    p = 23
    run = make_run(
        p, key_freqs=(3,), seeds=(4,), mix=(), config={"p": p, "fn": "subtract", "frac_train": 0.5, "seed": 3}
    )
    labels = naive.labels_for(p, "subtract")  # (x - y) mod p, written out in the reference
    model = model_of(run["state_dicts"][0], p)
    logits = model(naive.all_inputs(p))[:, -1, :-1].detach()
    from_config = compute_dynamics(run, [3], progress=False)
    train = naive.paper_split(p, 0.5, 3)
    assert from_config.train_loss[0].item() == pytest.approx(
        naive.cross_entropy(logits[train], labels[train]).item(), rel=1e-6
    )
    # a file that stores its split next to its config (as the trainer writes it): the same split
    stored = dict(
        run, config={**run["config"], "frac_train": 0.7, "seed": 5}, train_indices=naive.paper_split(p, 0.7, 5)
    )
    test = torch.ones(p * p, dtype=torch.bool)
    test[stored["train_indices"]] = False
    from_indices = compute_dynamics(stored, [3], progress=False)
    assert from_indices.test_loss[0].item() == pytest.approx(
        naive.cross_entropy(logits[test], labels[test]).item(), rel=1e-6
    )


@pytest.mark.parametrize("fn", ["add", "subtract", "x2xyy2", "rand"])
def test_reference_split_and_labels_agree_with_the_package(fn):
    """The package's data set equals the one the reference writes out from the definitions (for ``rand`` the
    table's seed is the run's seed)."""
    p, frac, seed = 23, 0.4, 3
    train, _ = data.train_test_split(p, frac, seed)
    assert torch.equal(train, naive.paper_split(p, frac, seed))  # the same pairs, in the same shuffled order
    assert torch.equal(data.make_labels(data.make_all_data(p), p, fn=fn, seed=seed), naive.labels_for(p, fn, seed))
    assert torch.equal(data.make_all_data(p), naive.all_inputs(p))


@pytest.mark.parametrize("fn", ["add", "subtract", "x2xyy2", "rand"])
def test_engine_matches_reference_for_every_task_and_a_non_zero_seed(fn):
    """The run's task and seed (which also draws the ``rand`` table) reach the engine's losses."""
    p = 23
    run = make_run(p, key_freqs=(2, 5, 7), seeds=(1,), mix=(), config={"p": p, "fn": fn, "frac_train": 0.3, "seed": 4})
    assert_matches_reference(compute_dynamics(run, [2, 5, 7], progress=False), compute_dynamics_naive(run, [2, 5, 7]))


def _plant(monkeypatch, name, make_buggy):
    """Replace ``data.<name>`` by a buggy version everywhere the package holds it (module globals and imported
    names alike); returns the list the buggy version appends to on every call."""
    original = getattr(data, name)
    calls = []

    def buggy(*args, **kwargs):
        calls.append(args)
        return make_buggy(original)(*args, **kwargs)

    for module_name, module in list(sys.modules.items()):
        if module_name.startswith("part52_grokking_and_modular_arithmetic") and getattr(module, name, None) is original:
            monkeypatch.setattr(module, name, buggy)
    return calls


def _transposed_split(original):
    """The split with x and y swapped in every index (``y * p + x``): a row-major/column-major slip."""

    def split(p=113, frac_train=0.3, seed=0):
        return tuple((i % p) * p + i // p for i in original(p, frac_train, seed))

    return split


def _swapped_operands(original):
    """Every task computed as ``f(y, x)``: for subtraction, ``(y - x) mod p``."""

    def task(fn, p, seed=0):
        f = original(fn, p, seed)
        return lambda x, y: f(y, x)

    return task


@pytest.mark.parametrize(
    ("name", "make_buggy", "seed"),
    [
        ("train_test_split", _transposed_split, 1),
        ("task_function", _swapped_operands, 2),
    ],
)
def test_a_split_or_label_bug_in_the_package_is_caught(monkeypatch, name, make_buggy, seed):
    """The reference writes the split and labels out itself, so a bug in the package's split or labels (shared
    by everything in the package that reads a run) makes the engine disagree with it. A distinct seed per
    case keeps any cached split of another test out of the way."""
    p = 23
    run = make_run(
        p, key_freqs=(2, 5, 7), seeds=(1,), mix=(), config={"p": p, "fn": "subtract", "frac_train": 0.3, "seed": seed}
    )
    ref = compute_dynamics_naive(run, [2, 5, 7])
    assert_matches_reference(compute_dynamics(run, [2, 5, 7], progress=False), ref)  # the package as it is
    calls = _plant(monkeypatch, name, make_buggy)
    with_bug = compute_dynamics(run, [2, 5, 7], progress=False)
    assert calls, f"the engine no longer calls data.{name}: plant the bug where it now derives the split and labels"
    with pytest.raises(AssertionError, match="loss"):
        assert_matches_reference(with_bug, ref)


def test_stride_and_final_checkpoint(run23, fast_and_naive_23):
    every_other = compute_dynamics(run23, [2, 5, 7], stride=2, final_checkpoint=3, progress=False)
    assert every_other.epochs.tolist() == [0, 200, 400]
    every_one = fast_and_naive_23[0]
    # neuron frequencies come from checkpoint 3 (the 0.8 interpolation): its own best blocks
    single = compute_dynamics(
        {**run23, "state_dicts": run23["state_dicts"][3:4], "epochs": [300]}, [2, 5, 7], progress=False
    )
    assert torch.equal(every_other.neuron_freqs, single.neuron_freqs)
    torch.testing.assert_close(every_other.train_loss, every_one.train_loss[::2])


def test_cache_hit_is_identical_and_a_changed_run_is_recomputed(small_run, tmp_path, monkeypatch):
    first = compute_dynamics(small_run, [2, 5, 7], cache=tmp_path, progress=False)
    assert len(list(tmp_path.glob("dynamics-*.pt"))) == 1

    def no_compute(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    with monkeypatch.context() as m:
        m.setattr(dynamics, "_chunk_metrics", no_compute)
        again = compute_dynamics(small_run, [2, 5, 7], cache=tmp_path, progress=False)
        with pytest.raises(AssertionError, match="cache"):  # other key frequencies: a different result
            compute_dynamics(small_run, [2, 5], cache=tmp_path, progress=False)
    for name, value in first.to_dict().items():
        other = getattr(again, name)
        assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other, name

    changed = dict(small_run, state_dicts=list(small_run["state_dicts"]))
    changed["state_dicts"][1] = {k: v.clone() for k, v in small_run["state_dicts"][1].items()}
    changed["state_dicts"][1]["unembed.W_U"][0, 0] += 0.5
    recomputed = compute_dynamics(changed, [2, 5, 7], cache=tmp_path, progress=False)
    assert not torch.equal(recomputed.train_loss, first.train_loss)
    assert torch.equal(recomputed.train_loss[0], first.train_loss[0])
    assert len(list(tmp_path.glob("dynamics-*.pt"))) == 2  # one file per run: both stay cached
    with monkeypatch.context() as m:
        m.setattr(dynamics, "_chunk_metrics", no_compute)
        assert torch.equal(compute_dynamics(changed, [2, 5, 7], cache=tmp_path).train_loss, recomputed.train_loss)
        assert torch.equal(compute_dynamics(small_run, [2, 5, 7], cache=tmp_path).train_loss, first.train_loss)


def test_cache_true_uses_the_cache_folder_not_the_run_files_folder(small_run, tmp_path, monkeypatch):
    from part52_grokking_and_modular_arithmetic.runs.checkpoints import atomic_save

    run_file = atomic_save(small_run, tmp_path / "runs" / "run.pth")
    monkeypatch.delenv(dynamics.ENV_CACHE_DIR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert dynamics.cache_dir() == tmp_path / "xdg" / "part52_grokking_and_modular_arithmetic"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert dynamics.cache_dir() == tmp_path / "home" / ".cache" / "part52_grokking_and_modular_arithmetic"
    monkeypatch.setenv(dynamics.ENV_CACHE_DIR, str(tmp_path / "mine"))
    assert dynamics.cache_dir() == tmp_path / "mine"
    compute_dynamics(run_file, [2, 5, 7], cache=True, progress=False)
    assert len(list((tmp_path / "mine").glob("dynamics-*.pt"))) == 1
    assert list(run_file.parent.iterdir()) == [run_file]
    compute_dynamics(small_run, [2, 5, 7], progress=False)  # no cache unless asked
    assert len(list((tmp_path / "mine").iterdir())) == 1


def _assert_unwritable_cache_warns_and_keeps_the_result(run, folder, expected, match):
    with pytest.warns(UserWarning, match=match) as record:
        got = compute_dynamics(run, [2, 5, 7], cache=folder, progress=False)
    assert len(record) == 1 and "\n" not in str(record[0].message)  # one line
    for name, value in expected.to_dict().items():
        assert (
            torch.equal(value, getattr(got, name)) if isinstance(value, torch.Tensor) else value == getattr(got, name)
        )


def test_a_cache_that_cannot_be_written_warns_in_one_line_and_loses_nothing(small_run, tmp_path, monkeypatch):
    expected = compute_dynamics(small_run, [2, 5, 7], progress=False)
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    _assert_unwritable_cache_warns_and_keeps_the_result(small_run, not_a_folder / "cache", expected, "could not write")
    full_disk = OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(dynamics, "atomic_save", lambda *a, **k: (_ for _ in ()).throw(full_disk))
    _assert_unwritable_cache_warns_and_keeps_the_result(small_run, tmp_path / "c", expected, "No space left")
    assert list((tmp_path / "c").iterdir()) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="as root, chmod does not stop writes")
def test_a_read_only_cache_folder_chmod(small_run, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        expected = compute_dynamics(small_run, [2, 5, 7], progress=False)
        _assert_unwritable_cache_warns_and_keeps_the_result(small_run, folder, expected, "could not write")
    finally:
        folder.chmod(0o755)


def _can_bind_read_only() -> bool:
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    script = 'd=$(mktemp -d) && mount --bind "$d" "$d" && mount -o remount,ro,bind "$d" && ! touch "$d/x"'
    return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True).returncode == 0


@pytest.mark.skipif(not _can_bind_read_only(), reason="needs root and `unshare -m` for a read-only bind mount")
def test_a_read_only_cache_folder_on_a_read_only_mount(small_run, tmp_path):
    """A real read-only file system (a read-only bind mount in a private mount namespace): the result comes
    back with one warning; a cache written there before is read."""
    from part52_grokking_and_modular_arithmetic.runs.checkpoints import atomic_save

    run_file, folder = atomic_save(small_run, tmp_path / "run.pth"), tmp_path / "ro"
    folder.mkdir()
    expected = compute_dynamics(small_run, [2, 5, 7], progress=False)
    code = (
        "import json, sys, warnings, torch; from part52_grokking_and_modular_arithmetic.analysis.dynamics import compute_dynamics\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    d = compute_dynamics(sys.argv[1], [2, 5, 7], cache=sys.argv[2], progress=False)\n"
        "print(json.dumps([str(m.message) for m in w if 'cache' in str(m.message)]))\n"
        "torch.save(d.to_dict(), sys.argv[3])"
    )
    script = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && "$2" -c "$3" "$4" "$1" "$5"'
    for attempt in ("empty", "cached"):
        out = tmp_path / f"{attempt}.pt"
        args = [script, "sh", str(folder), sys.executable, code, str(run_file), str(out)]
        result = subprocess.run(["unshare", "-m", "sh", "-c", *args], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        messages = json.loads(result.stdout.strip().splitlines()[-1])
        if attempt == "empty":
            assert len(messages) == 1 and "Read-only file system" in messages[0], messages
            compute_dynamics(small_run, [2, 5, 7], cache=folder, progress=False)  # now a cache lies there
        else:
            assert messages == []
        got = torch.load(out, weights_only=True)
        assert torch.equal(got["test_loss"], expected.test_loss)


def test_corrupt_cache_is_recomputed_with_a_warning(small_run, tmp_path):
    first = compute_dynamics(small_run, [2, 5, 7], cache=tmp_path, progress=False)
    (path,) = tmp_path.glob("dynamics-*.pt")
    path.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="recomputing"):
        result = compute_dynamics(small_run, [2, 5, 7], cache=tmp_path, progress=False)
    assert torch.equal(result.test_loss, first.test_loss) and path.stat().st_size > 1000


def test_run_file_path_is_accepted(small_run, tmp_path):
    from part52_grokking_and_modular_arithmetic.runs.checkpoints import atomic_save

    atomic_save(small_run, tmp_path / "run.pth")
    from_file = compute_dynamics(tmp_path / "run.pth", [2, 5, 7], stride=2, progress=False)
    assert from_file.epochs.tolist() == small_run["epochs"][::2]


def test_progress_can_be_silenced(small_run, capsys, monkeypatch):
    compute_dynamics(small_run, [2, 5, 7], progress=False)
    assert capsys.readouterr().err == ""
    bars = []

    class RecordingBar:
        def __init__(self, *args, **kwargs):
            bars.append(kwargs)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            bars[-1]["updates"] = bars[-1].get("updates", 0) + n

    monkeypatch.setattr(dynamics, "tqdm", RecordingBar)
    compute_dynamics(small_run, [2, 5, 7], progress=True)
    compute_dynamics(small_run, [2, 5, 7], progress=False)
    assert bars[0]["total"] == 2 and bars[0]["updates"] == 2 and not bars[0].get("disable")
    assert bars[1]["disable"] is True


def test_bad_arguments_say_what_was_expected(small_run):
    with pytest.raises(BAD_INPUT, match=r"1 \.\.\. 11"):
        compute_dynamics(small_run, [0, 3], progress=False)
    with pytest.raises(BAD_INPUT, match="duplicates"):
        compute_dynamics(small_run, [3, 3], progress=False)
    with pytest.raises(BAD_INPUT, match="at least one"):
        compute_dynamics(small_run, [], progress=False)
    with pytest.raises(BAD_INPUT, match="neuron_freqs"):
        compute_dynamics(small_run, [3], neuron_freqs=torch.zeros(512, dtype=torch.long), progress=False)
    with pytest.raises(BAD_INPUT, match="stride"):
        compute_dynamics(small_run, [3], stride=0, progress=False)
    with pytest.raises(IndexError, match="final_checkpoint"):
        compute_dynamics(small_run, [3], final_checkpoint=9, progress=False)


# --------------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------------


def test_gini_known_vectors():
    for n in (1, 5, 56):
        assert gini(torch.full((n,), 3.0)).item() == pytest.approx(0.0, abs=1e-6)
        one_hot = torch.zeros(n)
        one_hot[n // 2] = 2.0
        assert gini(one_hot).item() == pytest.approx(1 - 1 / n, abs=1e-6)
    # sorted (0, 0, 1, 1): 1 - 2 * (0.5 * 1.5/4 + 0.5 * 0.5/4) = 0.5, in any order and batched
    batch = torch.tensor([[1.0, 0.0, 1.0, 0.0], [2.0, 2.0, 2.0, 2.0]])
    torch.testing.assert_close(gini(batch), torch.tensor([0.5, 0.0]))
    assert math.isnan(gini(torch.zeros(4)).item())
    with pytest.raises(ValueError, match="non-negative"):
        gini(torch.tensor([1.0, -1.0]))


def test_block_fractions_from_marginals_equal_fft2d_blocks():
    p = 13
    torch.manual_seed(0)
    grids = torch.randn(2, p, p, 5).relu()
    grids[0, :, :, 0] = fourier_2d_basis_term(5, 6, p) + 0.5 * fourier_2d_basis_term(0, 5, p)  # all in k = 3's block
    centred = grids - grids.mean((1, 2), keepdim=True)
    fracs, _, total = dynamics._neuron_block_fractions(centred)  # (2, n_freqs, 5)
    torch.testing.assert_close(total, centred.double().pow(2).sum((1, 2)), rtol=1e-5, atol=1e-6)
    for c in range(2):
        coefs = fft2d(centred[c].double())
        expected = arrange_by_2d_freqs(coefs).pow(2).sum((1, 2)) / coefs.pow(2).sum((0, 1))
        torch.testing.assert_close(fracs[c], expected, rtol=1e-5, atol=1e-7)
    assert fracs[0, 2, 0].item() == pytest.approx(1.0, abs=1e-6)
    # a constant neuron has no variance: fraction 0, not NaN
    flat = torch.zeros(1, p, p, 1)
    assert torch.equal(dynamics._neuron_block_fractions(flat)[0], torch.zeros(1, 6, 1, dtype=torch.float64))


def test_result_round_trips_through_a_weights_only_file(fast_and_naive_23, tmp_path):
    fast, _ = fast_and_naive_23
    torch.save(fast.to_dict(), tmp_path / "d.pt")
    back = TrainingDynamics.from_dict(torch.load(tmp_path / "d.pt", weights_only=True))
    assert torch.equal(back.excluded_loss, fast.excluded_loss) and back.param_names == fast.param_names
    with pytest.raises(KeyError, match="lacks"):
        TrainingDynamics.from_dict({k: v for k, v in fast.to_dict().items() if k != "gini_embed"})
