"""The grader's core, for an honest student's mistakes: a function that changes its inputs or the model fails with
a message saying so (and the model is restored), one that reads the notebook's globals instead of its ``model``
argument fails on a second model, dtypes and non-finite values are named before any comparison, every argument
of a grader is validated with a clear GraderError, and the student's function runs in the calling thread
(Ctrl-C says where it stopped, in one line; two graders in two threads both work; a cell shows only the verdict).
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import time

import numpy as np
import pytest
import torch

from part52_grokking_and_modular_arithmetic import solutions, utils
from part52_grokking_and_modular_arithmetic import tests as grader  # never import the test_* names directly
from part52_grokking_and_modular_arithmetic.analysis import fourier
from part52_grokking_and_modular_arithmetic.grading import checks
from part52_grokking_and_modular_arithmetic.runs.data import make_all_data, train_test_split
from part52_grokking_and_modular_arithmetic.runs.model import make_model

from grader_checks import expect_failure, expect_not_implemented, expect_pass
from reference.fourier_model import make_fourier_model

P = 113
KEY_FREQS = [14, 35, 41, 42, 52]


@pytest.fixture(scope="module")
def fourier_model():
    return make_fourier_model(P, KEY_FREQS)


@pytest.fixture
def small():
    """A random p = 23 model with varied logits (quick to run many times)."""
    m = make_model(23, seed=3)
    with torch.no_grad():
        m.W_U.mul_(30)
    return m


def weights_of(model) -> tuple[dict[str, torch.Tensor], dict[str, bool]]:
    """The model's values and requires_grad flags (the paper model's biases are frozen)."""
    return (
        {name: t.detach().clone() for name, t in model.state_dict().items()},
        {name: prm.requires_grad for name, prm in model.named_parameters()},
    )


def assert_intact(model, before) -> None:
    values, flags = before
    after = model.state_dict()
    assert after.keys() == values.keys()
    for name, saved in values.items():
        assert after[name].dtype == saved.dtype and torch.equal(after[name], saved), f"{name} changed"
    assert {name: prm.requires_grad for name, prm in model.named_parameters()} == flags


# ------------------------------------------------------------------------------------------------ the verdict


def test_a_grader_prints_its_verdict_and_returns_none(capsys):
    expect_pass(lambda: grader.test_fft1d(solutions.fft1d), "fft1d", capsys)
    expect_not_implemented(lambda: grader.test_fft1d(lambda x: NotImplemented), "fft1d", capsys)
    assert grader.test_fit_quadratic_terms(lambda values, k: (None, None)) is None
    assert grader.test_get_trig_sum_directions(lambda k: (None, None)) is None
    assert capsys.readouterr().out.count("not implemented yet") == 2


def test_right_answers_in_unusual_forms_pass(capsys):
    class Callable:
        def __call__(self, x):
            return solutions.fft1d(x)

    for fn in [
        Callable(),
        lambda x: torch.nn.Parameter(solutions.fft1d(x)),
        lambda x: solutions.fft1d(x).requires_grad_(),
    ]:
        expect_pass(lambda fn=fn: grader.test_fft1d(fn), "fft1d", capsys)
    expect_pass(
        lambda: grader.test_fourier_2d_basis_term(functools.partial(solutions.fourier_2d_basis_term, p=P)),
        "fourier_2d_basis_term",
        capsys,
    )


def test_exceptions_of_the_students_function_are_reported():
    class Custom(BaseException):
        pass

    def custom(x):
        raise Custom("stop")

    def exiting(x):
        raise SystemExit(3)

    expect_failure(lambda: grader.test_fft1d(exiting), "raised SystemExit")
    expect_failure(lambda: grader.test_fft1d(custom), "raised Custom: stop")


# ------------------------------------------------------------------------------------------------ mutation


def test_a_function_that_changes_its_input_fails():
    def zeroing(x):
        x.zero_()
        return torch.zeros_like(x)  # the transform of the (now zero) input

    expect_failure(lambda: grader.test_fft1d(zeroing), "fft1d", "modified its input x in place", "x.zero_()")

    def centring_in_place(tensor):
        out = solutions.fft2d(tensor)
        tensor -= tensor.mean()
        return out

    expect_failure(lambda: grader.test_fft2d(centring_in_place), "modified its input tensor in place", "-=")

    def normalising_v_in_place(batch_vecs, v):
        v /= v.norm()
        return solutions.project_onto_direction(batch_vecs, v)

    expect_failure(lambda: grader.test_project_onto_direction(normalising_v_in_place), "modified its input v in place")

    def half_done(x):
        x.mul_(2)
        raise NotImplementedError

    expect_failure(lambda: grader.test_fft1d(half_done), "modified its input x in place")

    def popping(model, key_freqs):
        key_freqs.pop()
        return solutions.excl_loss(model, key_freqs) + [0.0]

    expect_failure(
        lambda: grader.test_excl_loss(popping, make_model(23, seed=0), [3, 5]), "modified its input key_freqs in place"
    )


def test_a_function_that_changes_the_model_fails_and_the_model_is_intact(small, capsys):
    before = weights_of(small)

    def vandal(model, key_freqs):
        with torch.no_grad():
            model.W_E.zero_()
            model.W_U.zero_()
        return solutions.excl_loss(model, key_freqs)  # the "right" losses of the zeroed model

    msg = expect_failure(
        lambda: grader.test_excl_loss(vandal, small, [3, 5]),
        "modified the model's weights in place",
        "W_E",
        "W_U",
        "your model is unchanged",
    )
    assert "restored" not in msg
    assert_intact(small, before)
    expect_pass(lambda: grader.test_excl_loss(solutions.excl_loss, small, [3, 5]), "excl_loss", capsys)


def test_a_function_changing_the_global_model_fails_and_the_model_is_restored(small):
    model = small
    before = weights_of(model)

    def through_the_global(m):  # changes the notebook's model
        with torch.no_grad():
            model.W_E.mul_(0.0)
        return solutions.fourier_embed(m)

    expect_failure(
        lambda: grader.test_fourier_embed(through_the_global, model), "modified the model's weights", "W_E", "restored"
    )
    assert_intact(model, before)

    def replacing_a_parameter(m):
        model.embed.W_E = torch.nn.Parameter(torch.zeros_like(model.embed.W_E).double())
        return solutions.embed_SVD(m)

    expect_failure(lambda: grader.test_embed_SVD(replacing_a_parameter, model), "restored")
    assert_intact(model, before)

    def freezing(m):
        model.requires_grad_(False)
        model.eval()
        return solutions.embed_SVD(m)

    expect_failure(lambda: grader.test_embed_SVD(freezing, model), "requires_grad of", "restored it")
    assert_intact(model, before)
    assert model.training

    def editing_cfg(m):
        model.cfg.d_vocab = 200
        return solutions.embed_SVD(m)

    expect_failure(lambda: grader.test_embed_SVD(editing_cfg, model), "model.cfg.d_vocab")
    assert model.cfg.d_vocab == 24

    def hooking(m):
        model.blocks[0].register_forward_hook(lambda *args: None)
        return solutions.embed_SVD(m)

    expect_failure(lambda: grader.test_embed_SVD(hooking, model), "its hooks")
    assert not model.blocks[0]._forward_hooks

    def to_float64(m):
        model.double()
        return solutions.fourier_embed(m)

    expect_failure(lambda: grader.test_fourier_embed(to_float64, model), "restored it")
    assert_intact(model, before)


def test_changes_to_the_copy_beyond_its_weights_are_the_functions_business(small, capsys):
    before = weights_of(small)
    expect_pass(
        lambda: grader.test_embed_SVD(lambda m: solutions.embed_SVD(m.eval().requires_grad_(False)), small),
        "embed_SVD",
        capsys,
    )
    assert_intact(small, before)


def test_ctrl_c_restores_the_model():
    model = make_model(13, seed=0)
    before = weights_of(model)

    def interrupted(m):
        with torch.no_grad():
            model.W_E.zero_()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        grader.test_fourier_embed(interrupted, model)
    assert_intact(model, before)


def test_grad_mode_set_inside_a_function_does_not_leak(capsys):
    def no_grad_for_everyone(x):
        torch.set_grad_enabled(False)
        return solutions.fft1d(x)

    expect_pass(lambda: grader.test_fft1d(no_grad_for_everyone), "fft1d", capsys)
    assert torch.is_grad_enabled()


# ------------------------------------------------------------------------------------------------ a second model


def test_a_function_that_ignores_its_model_argument_fails_on_a_second_model(small, capsys):
    model = small  # the notebook's global `model`
    W_E = model.W_E  # and a global read from it in an earlier cell
    p = 23
    F = fourier.fourier_basis(p)
    for call, name in [
        (lambda: grader.test_fourier_embed(lambda m: (F @ W_E[:-1]).pow(2).sum(1), model), "fourier_embed"),
        (lambda: grader.test_embed_SVD(lambda m: torch.linalg.svdvals(W_E[:-1]), model), "embed_SVD"),
        (lambda: grader.test_excl_loss(lambda m, k: solutions.excl_loss(model, k), model, [3, 5]), "excl_loss"),
    ]:
        expect_failure(call, f"❌ {name}", "second model", "not from the notebook's global `model`, `W_E`")
    # the same functions, using their argument, pass
    expect_pass(
        lambda: grader.test_excl_loss(lambda m, k: solutions.excl_loss(m, k), model, [3, 5]), "excl_loss", capsys
    )


def test_models_of_another_dtype_or_modulus_are_graded(capsys):
    small = make_model(23, seed=0)
    expect_pass(lambda: grader.test_fourier_embed(solutions.fourier_embed, small.double()), "fourier_embed", capsys)
    expect_pass(lambda: grader.test_embed_SVD(solutions.embed_SVD, small), "embed_SVD", capsys)
    expect_pass(lambda: grader.test_excl_loss(solutions.excl_loss, small, [3, 5]), "excl_loss", capsys)
    weights = solutions.get_effective_weights(small)
    expect_pass(lambda: grader.test_effective_weights(*weights, small), "effective_weights", capsys)


# ------------------------------------------------------------------------------------------------ dtypes


def test_a_float64_fourier_basis_is_named_by_both_graders():
    def float64_basis(p):
        basis, names = solutions.make_fourier_basis(p)
        return basis.double(), names

    expect_failure(
        lambda: grader.test_make_fourier_basis(float64_basis), "basis (p=7): expected float32, got float64", "float64"
    )
    fourier_basis = float64_basis(P)[0]  # the notebook's global, built by that function
    msg = expect_failure(lambda: grader.test_fft1d(lambda x: x @ fourier_basis.T), "raised RuntimeError", "float64")
    assert "test_make_fourier_basis checks" in msg and "leading dimensions" not in msg


def test_a_result_of_another_dtype_is_named_before_its_values(small):
    expect_failure(lambda: grader.test_fft1d(lambda x: solutions.fft1d(x).double()), "expected float32, got float64")
    expect_failure(
        lambda: grader.test_fourier_embed(lambda m: solutions.fourier_embed(m).half(), small),
        "expected float32, got float16",
    )
    expect_failure(lambda: grader.test_fft1d(lambda x: solutions.fft1d(x).long()), "expected float32, got int64")


def test_graders_run_under_the_notebooks_global_settings(capsys):
    """A notebook that turned gradients off or made float64 the default still gets ✅ for right answers."""
    before = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        with torch.no_grad():
            expect_pass(lambda: grader.test_fft1d(solutions.fft1d), "fft1d", capsys)
            expect_pass(
                lambda: grader.test_fit_quadratic_terms(solutions.fit_quadratic_terms), "fit_quadratic_terms", capsys
            )
    finally:
        torch.set_default_dtype(before)


def test_the_function_sees_the_notebooks_default_device(capsys):
    seen = []

    def recording(x):
        seen.append(torch.empty(0).device.type)
        return solutions.fft1d(x)

    with torch.device("meta"):  # a notebook that set a default device (per thread in torch)
        expect_pass(lambda: grader.test_fft1d(recording), "fft1d", capsys)
    assert set(seen) == {"meta"}


# ------------------------------------------------------------------------------------------------ non-finite values


@pytest.mark.parametrize("value, kind", [(float("nan"), "NaN"), (float("inf"), "inf")])
def test_a_model_with_non_finite_weights_is_named(value, kind):
    model = make_model(13, seed=0)
    with torch.no_grad():
        model.blocks[0].mlp.W_in[3, 4] = value
    for call in [
        lambda: grader.test_fourier_embed(solutions.fourier_embed, model),
        lambda: grader.test_excl_loss(solutions.excl_loss, model, [2]),
        lambda: grader.test_functional_form_logits(solutions.functional_form_logits, model),
        lambda: grader.test_effective_weights(*solutions.get_effective_weights(model), model),
        lambda: grader.test_cache_activations(*solutions.get_key_activations(model), model),
    ]:
        msg = expect_failure(call, f"the model's weights are not finite: {kind} in blocks.0.mlp.W_in")
        assert "atol" not in msg and "expected nan" not in msg


def test_a_result_with_nan_is_named(small):
    def nan_at_5(x):
        out = solutions.fft1d(x)
        out[..., 5] = float("nan")
        return out

    expect_failure(lambda: grader.test_fft1d(nan_at_5), "your values are not finite: nan at index (5,)")


# ------------------------------------------------------------------------------------------------ Ctrl-C, threads, nesting


def raises_keyboard_interrupt(x):
    raise KeyboardInterrupt  # the line the grader must point at


def test_an_interrupt_says_so_in_one_line_and_points_at_the_students_line():
    with pytest.raises(KeyboardInterrupt) as info:
        grader.test_fft1d(raises_keyboard_interrupt)
    assert isinstance(info.value, grader.GraderInterrupted)
    msg = str(info.value)
    line = raises_keyboard_interrupt.__code__.co_firstlineno + 1
    assert "\n" not in msg and "⏹ fft1d: interrupted in your function at" in msg
    assert f"{__file__}:{line} (in raises_keyboard_interrupt)" in msg
    assert info.value.__suppress_context__
    # the traceback: the grader's own frames are hidden (IPython and pytest honour __tracebackhide__), then the
    # student's function
    tb, frames = info.value.__traceback__, []
    while tb is not None:
        frames.append(tb)
        tb = tb.tb_next
    own = [t for t in frames if t.tb_frame.f_globals.get("__name__", "").startswith(checks.__package__)]
    assert own and all(t.tb_frame.f_locals.get("__tracebackhide__") for t in own)
    assert frames[-1].tb_frame.f_code is raises_keyboard_interrupt.__code__ and frames[-1].tb_lineno == line


def test_an_interrupt_in_ipython_shows_a_short_traceback(capsys):
    shell_module = pytest.importorskip("IPython.core.interactiveshell")
    shell = shell_module.InteractiveShell.instance()
    shell.colors = "nocolor"
    shell.user_ns.update(tests=grader)
    shell.run_cell("def fft1d(x):\n    raise KeyboardInterrupt\n\ntests.test_fft1d(fft1d)")
    out = capsys.readouterr().out
    assert "⏹ fft1d: interrupted in your function at" in out and "raise KeyboardInterrupt" in out
    assert "checks.py" not in out and "graders.py" not in out, out
    assert len(out.strip().splitlines()) < 20, out


def test_an_interrupt_while_the_grader_computes_says_so(monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fourier, "fourier_basis", interrupted)
    with pytest.raises(grader.GraderInterrupted, match="interrupted while the grader was checking your answer"):
        grader.test_fft1d(solutions.fft1d)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to oneself")
def test_ctrl_c_stops_a_function_that_never_returns():
    """SIGINT (the notebook's interrupt button) stops the student's loop where it is."""
    state = {"stopped": False}

    def endless(x):
        deadline = time.perf_counter() + 10  # (bounded, so that a broken grader cannot hang the suite)
        try:
            while time.perf_counter() < deadline:
                pass
        finally:
            state["stopped"] = time.perf_counter() < deadline

    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(grader.GraderInterrupted, match="interrupted in your function at .*in endless"):
        grader.test_fft1d(endless)
    assert state["stopped"]


def test_two_graders_in_two_threads_both_work(capsys):
    barrier = threading.Barrier(2, timeout=30)
    errors = []

    def waiting_fft1d(x):
        if x.ndim == 1:  # the first call of each grader: both are inside their student's function at once
            barrier.wait()
        return solutions.fft1d(x)

    def grade():
        try:
            grader.test_fft1d(waiting_fft1d)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=grade) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert capsys.readouterr().out.count("✅ fft1d: all checks passed") == 2


def test_a_grader_called_from_inside_the_function_it_checks_is_refused():
    def grading_itself(x):
        grader.test_fft1d(grading_itself)
        return solutions.fft1d(x)

    expect_failure(lambda: grader.test_fft1d(grading_itself), "called from inside the function it is checking")
    assert not checks.STATE.checking


# ------------------------------------------------------------------------------------------------ the model argument


@pytest.mark.parametrize(
    "bad, fragments",
    [
        (None, ["got None", "utils.load_model(full_run_data)"]),
        ({}, ["got a dict", "utils.load_model"]),
        ({"embed.W_E": torch.zeros(114, 128)}, ["got a dict (a state dict?)", "utils.load_model(full_run_data)"]),
        ({"state_dicts": [], "epochs": []}, ["the run data, full_run_data"]),
        ("model", ["got a str"]),
        (torch.nn.Linear(2, 2), ["got a Linear"]),
    ],
)
def test_a_wrong_model_argument_is_named(bad, fragments):
    for call in [
        lambda: grader.test_excl_loss(solutions.excl_loss, bad, KEY_FREQS),
        lambda: grader.test_fourier_embed(solutions.fourier_embed, bad),
        lambda: grader.test_embed_SVD(solutions.embed_SVD, bad),
        lambda: grader.test_functional_form_logits(solutions.functional_form_logits, bad),
        lambda: grader.test_effective_weights(torch.zeros(1), torch.zeros(1), torch.zeros(1), bad),
    ]:
        expect_failure(call, "expected the model (a HookedTransformer", *fragments)


def test_a_model_on_the_meta_device_is_explained():
    ghost = make_model(13, seed=0).to("meta")
    expect_failure(lambda: grader.test_fourier_embed(solutions.fourier_embed, ghost), "meta device")


def test_a_wrong_cache_argument_is_named(small):
    model = small
    ref = solutions.get_key_activations(model)
    g = grader.test_cache_activations
    expect_failure(lambda: g(*ref, None), "expected the ActivationCache", "got None")
    expect_failure(lambda: g(*ref, {"pattern": ref.attn_mat}), "expected the ActivationCache", "got a dict")
    expect_failure(lambda: g(*ref, model.state_dict()), "a state dict?")
    _, partial = model.run_with_cache(torch.tensor([[1, 2, 23]]), names_filter=lambda n: n == "blocks.0.mlp.hook_post")
    expect_failure(lambda: g(*ref, partial), "the cache has no blocks.0.attn.hook_pattern", "names_filter")


def test_a_cache_that_is_not_the_models_run_on_all_data_is_refused(capsys):
    model = make_model(13, seed=0)
    all_data = make_all_data(13)
    _, part = model.run_with_cache(all_data[:50])
    expect_failure(
        lambda: grader.test_cache_activations(*solutions.key_activations_from_cache(part), part),
        "the cache holds 50 inputs, expected all p^2 = 169",
    )
    _, shuffled = model.run_with_cache(all_data.flip(0))
    expect_failure(
        lambda: grader.test_cache_activations(*solutions.key_activations_from_cache(shuffled), shuffled),
        "not that of its model on all_data",
    )
    _, cache = model.run_with_cache(all_data)
    expect_pass(
        lambda: grader.test_cache_activations(*solutions.key_activations_from_cache(cache), cache),
        "cache_activations",
        capsys,
    )


# ------------------------------------------------------------------------------------------------ key_freqs, p, split


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ([], "empty"),
        ([0], "0 is out of range"),
        ([14, 57], "57 is out of range"),
        ([14.5], "14.5 is not an integer"),
        ("14", "got a str"),
        (None, "got None"),
        (14, "got a int"),
        (torch.tensor([14.0]), "torch.float32 tensor"),
    ],
)
def test_bad_key_freqs_are_named(fourier_model, bad, fragment):
    expect_failure(
        lambda: grader.test_excl_loss(solutions.excl_loss, fourier_model, bad),
        "key_freqs: expected a non-empty list of integer frequencies in 1..56",
        fragment,
    )


def test_excl_loss_receives_the_checked_key_freqs_as_a_list_of_ints(capsys):
    small = make_model(23, seed=0)
    received = []

    def recording(model, key_freqs):
        received.append(key_freqs)
        return solutions.excl_loss(model, key_freqs)

    for key_freqs in (torch.tensor([3, 5]), np.array([3, 5]), (3, 5), iter([3, 5])):
        expect_pass(lambda key_freqs=key_freqs: grader.test_excl_loss(recording, small, key_freqs), "excl_loss", capsys)
    assert all(type(k) is list and all(type(v) is int for v in k) and k == [3, 5] for k in received)


P_GRADERS = {
    "make_fourier_basis": lambda p: grader.test_make_fourier_basis(solutions.make_fourier_basis, p),
    "fft1d": lambda p: grader.test_fft1d(solutions.fft1d, p),
    "fourier_2d_basis_term": lambda p: grader.test_fourier_2d_basis_term(
        lambda i, j: solutions.fourier_2d_basis_term(i, j, p), p
    ),
    "fft2d": lambda p: grader.test_fft2d(solutions.fft2d, p),
    "mean_sq_fourier_coefficients": lambda p: grader.test_mean_sq_fourier_coefficients(
        solutions.mean_sq_fourier_coefficients, p
    ),
    "fit_quadratic_terms": lambda p: grader.test_fit_quadratic_terms(solutions.fit_quadratic_terms, p),
    "find_neuron_freqs": lambda p: grader.test_find_neuron_freqs(solutions.find_neuron_freqs, p),
    "project_onto_frequency": lambda p: grader.test_project_onto_frequency(solutions.project_onto_frequency, p),
    "get_trig_sum_directions": lambda p: grader.test_get_trig_sum_directions(
        lambda k: solutions.get_trig_sum_directions(k, p), p
    ),
}


@pytest.mark.parametrize("name", sorted(P_GRADERS))
def test_bad_p_is_explained(name):
    run = P_GRADERS[name]
    expect_failure(lambda: run(2), f"❌ {name}: p=2: 2 is too small", "must be an odd prime")
    expect_failure(lambda: run(1), "p=1: 1 is too small")
    expect_failure(lambda: run(9), "p=9: 9 is not prime (9 = 3 × 3)")
    expect_failure(lambda: run(113.0), "expected the modulus as an int", "got a float")
    expect_failure(lambda: run("113"), "got a str")


@pytest.mark.parametrize("name", sorted(set(P_GRADERS) - {"make_fourier_basis"}))
def test_graders_work_for_a_small_prime(name, capsys):
    """The reference passes for p = 13 (the graders assume nothing about 113)."""
    expect_pass(lambda: P_GRADERS[name](13), name, capsys)


def test_a_huge_p_is_refused_at_once():
    start = time.perf_counter()
    expect_failure(lambda: grader.test_fft1d(solutions.fft1d, 2**61 - 1), "the graders check moduli up to 1000")
    assert time.perf_counter() - start < 1.0


def test_a_p_that_disagrees_with_the_function_is_explained():
    msg = expect_failure(
        lambda: grader.test_fourier_2d_basis_term(solutions.fourier_2d_basis_term, 13),
        "expected shape (13, 13), got (113, 113)",
        "modulo p = 113",
        "told p = 13",
    )
    assert "could not check" not in msg
    expect_failure(lambda: grader.test_get_trig_sum_directions(solutions.get_trig_sum_directions, 13), "modulo p = 113")


def test_bad_train_indices_are_named(fourier_model):
    g = grader.test_excl_loss
    train, _ = train_test_split(P, 0.3, 0)
    for bad, fragment in [
        (train.float(), "got dtype torch.float32"),
        (train[None, :], "got shape (1, 3830)"),
        (torch.tensor([0, P * P]), f"got values from 0 to {P * P}"),
        (torch.tensor([-1, 3]), "got values from -1 to 3"),
        (train.tolist(), "got a list"),
        (torch.zeros(0, dtype=torch.long), "got shape (0,)"),
    ]:
        expect_failure(
            lambda bad=bad: g(solutions.excl_loss, fourier_model, KEY_FREQS, train_indices=bad),
            "train_indices: expected a 1-D integer tensor of indices into all_data",
            fragment,
        )
    mask = torch.zeros(P * P, dtype=torch.bool)
    mask[train] = True
    expect_failure(
        lambda: g(solutions.excl_loss, fourier_model, KEY_FREQS, train_indices=mask), "boolean mask", "nonzero"
    )


def test_bad_task_and_split_settings_are_named(small):
    g = grader.test_excl_loss
    expect_failure(lambda: g(solutions.excl_loss, small, [3], fn="plus"), "fn: expected one of", "'plus'")
    expect_failure(lambda: g(solutions.excl_loss, small, [3], frac_train=1.5), "frac_train=1.5")


def test_excl_loss_with_the_eq_logit_kept_is_told_p_is_d_vocab_minus_1(small):
    p = 23
    test_logits = functools.partial(utils.test_logits)  # as the notebook defines it

    def eq_logit_kept(model, key_freqs):
        logits = model(make_all_data(p))[:, -1]  # (p^2, p + 1): the = logit still in
        losses = []
        for k in key_freqs:
            excluded = logits.clone()
            for direction in solutions.get_trig_sum_directions(k, p):
                excluded -= solutions.project_onto_direction(logits, direction.flatten())
            losses.append(test_logits(excluded, mode="train"))
        return losses

    expect_failure(
        lambda: grader.test_excl_loss(eq_logit_kept, small, [3]), "d_vocab = 24 columns", "p = d_vocab - 1 = 23"
    )


def test_unforeseen_arguments_never_raise_raw_errors(small):
    """A wrong argument no validation names (here: values of the wrong kind) still gives a GraderError."""
    for call in [
        lambda: grader.test_effective_weights("W_logit", "W_neur", "W_attn", small),
        lambda: grader.test_cache_activations(1, 2, 3, small),
        lambda: grader.test_fft1d(42),
        lambda: grader.test_excl_loss(solutions.excl_loss, small, [3], seed="zero"),
    ]:
        with pytest.raises(grader.GraderError):
            call()


def test_the_safety_net_names_the_call(monkeypatch):
    """An error inside a check that no validation foresaw is reported with the grader's argument list."""

    def broken(*args, **kwargs):
        raise KeyError("boom")

    monkeypatch.setattr(fourier, "make_fourier_basis", broken)
    msg = expect_failure(
        lambda: grader.test_make_fourier_basis(solutions.make_fourier_basis),
        "could not check this call (KeyError",
        "tests.test_make_fourier_basis(make_fourier_basis, p=113)",
    )
    assert "Traceback" not in msg
