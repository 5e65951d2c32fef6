"""Red-team regressions: a hostile or confused student cannot make a grader pass a wrong answer, leave the
notebook's objects or libraries changed, escape with a raw exception, or hang it.

Each test is one trick found to work before the fix (reading the grader's expected answer from its frame,
patching torch.allclose, a Tensor subclass that compares equal to anything, ...)."""

from __future__ import annotations

import functools
import inspect
import itertools
import time

import pytest
import torch
from transformer_lens import ActivationCache, HookedTransformer

from part52_grokking_and_modular_arithmetic import analysis, fourier, solutions
from part52_grokking_and_modular_arithmetic import tests as grader  # never import the test_* names directly
from part52_grokking_and_modular_arithmetic.data import make_all_data
from part52_grokking_and_modular_arithmetic.model import make_model

from grader_checks import expect_failure
from reference.fourier_model import make_fourier_model

P = 113
KEY_FREQS = [14, 35, 41, 42, 52]


@pytest.fixture(scope="module")
def fourier_model():
    return make_fourier_model(P, KEY_FREQS)


def weights_of(model) -> tuple[dict[str, torch.Tensor], dict[str, bool]]:
    """The model's values and requires_grad flags (the paper model's biases are frozen)."""
    return (
        {name: t.detach().clone() for name, t in model.state_dict().items()},
        {name: prm.requires_grad for name, prm in model.named_parameters()},
    )


def assert_intact(model, before: tuple[dict[str, torch.Tensor], dict[str, bool]]) -> None:
    values, flags = before
    after = model.state_dict()
    assert after.keys() == values.keys()
    for name, saved in values.items():
        assert after[name].dtype == saved.dtype and torch.equal(after[name], saved), f"{name} changed"
    assert {name: prm.requires_grad for name, prm in model.named_parameters()} == flags


# ------------------------------------------------------------------------------------------------ reading the answer


def steal_expected(*args):
    """Return the grader's expected answer, read from a local of a calling frame."""
    frame = inspect.currentframe().f_back
    while frame is not None:
        for name in ("expected", "exp_coef", "S"):
            value = frame.f_locals.get(name)
            if isinstance(value, torch.Tensor):
                return value.clone()
        frame = frame.f_back
    raise LookupError("no expected answer on the stack")


@pytest.mark.parametrize(
    "name, call",
    [
        ("fft1d", lambda m: grader.test_fft1d(steal_expected)),
        ("fft2d", lambda m: grader.test_fft2d(steal_expected)),
        ("project_onto_direction", lambda m: grader.test_project_onto_direction(steal_expected)),
        ("project_onto_frequency", lambda m: grader.test_project_onto_frequency(steal_expected)),
        ("mean_sq_fourier_coefficients", lambda m: grader.test_mean_sq_fourier_coefficients(steal_expected)),
        ("fourier_embed", lambda m: grader.test_fourier_embed(steal_expected, m)),
        ("embed_SVD", lambda m: grader.test_embed_SVD(steal_expected, m)),
        ("functional_form_logits", lambda m: grader.test_functional_form_logits(steal_expected, m)),
    ],
)
def test_the_expected_answer_cannot_be_read_from_the_callers_frame(model, name, call):
    expect_failure(lambda: call(model), f"❌ {name}", "LookupError: no expected answer on the stack")


# ------------------------------------------------------------------------------------------------ patching libraries


def test_patching_torch_allclose_fails_and_is_undone():
    original = torch.allclose

    def patching(x):
        torch.allclose = lambda *args, **kwargs: True
        return torch.zeros_like(x)

    expect_failure(lambda: grader.test_fft1d(patching), "replaced torch.allclose", "put the originals back")
    assert torch.allclose is original


def test_patching_the_grader_or_the_reference_fails_and_is_undone():
    compare, reference = grader._compare, analysis.functional_form_logits

    def silencing_the_grader(x):
        grader._compare = lambda *args, **kwargs: None
        return torch.zeros_like(x)

    expect_failure(
        lambda: grader.test_fft1d(silencing_the_grader),
        "replaced part52_grokking_and_modular_arithmetic.tests._compare",
    )
    assert grader._compare is compare

    def shadowing_a_builtin(x):
        grader.isinstance = lambda *args: True
        return torch.zeros_like(x)

    expect_failure(lambda: grader.test_fft1d(shadowing_a_builtin), "tests.isinstance")
    assert "isinstance" not in vars(grader)

    def patching_the_reference(W_neur, W_logit, W_attn):
        analysis.functional_form_logits = lambda *args: torch.zeros(P * P, P, dtype=torch.float64)
        return torch.zeros(P * P, P)

    model = make_model(P, seed=1)
    expect_failure(
        lambda: grader.test_functional_form_logits(patching_the_reference, model),
        "replaced part52_grokking_and_modular_arithmetic.analysis.functional_form_logits",
    )
    assert analysis.functional_form_logits is reference


def test_a_method_added_to_torch_tensor_is_removed():
    def patching(x):
        torch.Tensor.allclose = lambda *args, **kwargs: True  # shadows TensorBase.allclose
        return torch.zeros_like(x)

    expect_failure(lambda: grader.test_fft1d(patching), "replaced torch.Tensor.allclose")
    assert "allclose" not in vars(torch.Tensor)


def test_changing_the_default_dtype_fails_and_is_undone():
    def float64_everywhere(x):
        torch.set_default_dtype(torch.float64)
        return solutions.fft1d(x)

    expect_failure(lambda: grader.test_fft1d(float64_everywhere), "default dtype", "set_default_dtype(torch.float64)")
    assert torch.get_default_dtype() == torch.float32


def test_a_corrupted_fourier_cache_does_not_change_the_reference():
    def corrupting(x):
        fourier._cached_basis(P)[0].zero_()
        return solutions.fft1d(x)

    try:
        expect_failure(lambda: grader.test_fft1d(corrupting), "wrong values")
        expect_failure(
            lambda: grader.test_fft2d(lambda t: torch.zeros_like(t)), "wrong values"
        )  # the zero basis's answer
    finally:
        fourier._cached_basis.cache_clear()


def test_grad_mode_set_inside_a_function_does_not_leak():
    def no_grad_for_everyone(x):
        torch.set_grad_enabled(False)
        return solutions.fft1d(x)

    assert grader.test_fft1d(no_grad_for_everyone) is True
    assert torch.is_grad_enabled()


# ------------------------------------------------------------------------------------------------ lying results


class AlwaysClose(torch.Tensor):
    """A tensor that says it is close / equal to anything."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.allclose, torch.Tensor.allclose, torch.equal, torch.Tensor.equal):
            return True
        return super().__torch_function__(func, types, args, kwargs or {})


def test_a_tensor_subclass_that_compares_equal_is_refused(fourier_model):
    liar = lambda t: t.as_subclass(AlwaysClose)  # noqa: E731
    expect_failure(lambda: grader.test_fft1d(lambda x: liar(torch.zeros_like(x))), "Tensor subclass", "AlwaysClose")
    expect_failure(
        lambda: grader.test_find_neuron_freqs(
            lambda acts: (liar(torch.ones(acts.shape[-1], dtype=torch.long)), liar(torch.ones(acts.shape[-1])))
        ),
        "Tensor subclass",
    )
    expect_failure(
        lambda: grader.test_excl_loss(lambda m, k: liar(torch.zeros(len(k))), fourier_model, [14]), "Tensor subclass"
    )


def test_names_that_compare_equal_to_anything_are_refused():
    class AnyName(str):
        def __eq__(self, other):
            return True

        def __ne__(self, other):
            return False

        __hash__ = str.__hash__

    expect_failure(
        lambda: grader.test_make_fourier_basis(lambda q: (solutions.make_fourier_basis(q)[0], [AnyName("x")] * q)),
        "name 0 should be 'const'",
    )


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda x: torch.empty(x.shape, device="meta"), "meta device"),
        (lambda x: solutions.fft1d(x).to_sparse(), "dense tensor"),
    ],
)
def test_meta_and_sparse_results_are_explained(make, fragment):
    msg = expect_failure(lambda: grader.test_fft1d(make), fragment)
    assert "could not check this call" not in msg


def test_right_answers_in_unusual_forms_pass(capsys):
    class Callable:
        def __call__(self, x):
            return solutions.fft1d(x)

    assert grader.test_fft1d(Callable()) is True
    assert grader.test_fft1d(lambda x: torch.nn.Parameter(solutions.fft1d(x))) is True
    assert grader.test_fft1d(lambda x: solutions.fft1d(x).double().requires_grad_()) is True
    assert grader.test_fourier_2d_basis_term(functools.partial(solutions.fourier_2d_basis_term, p=P)) is True


# ------------------------------------------------------------------------------------------------ exceptions


def test_system_exit_and_other_base_exceptions_are_reported():
    def exiting(x):
        raise SystemExit(3)

    class Custom(BaseException):
        pass

    def custom(x):
        raise Custom("stop")

    expect_failure(lambda: grader.test_fft1d(exiting), "raised SystemExit")
    expect_failure(lambda: grader.test_fft1d(custom), "raised Custom: stop")


def test_keyboard_interrupt_propagates_and_the_model_is_restored():
    model = make_model(13, seed=0)
    before = weights_of(model)

    def interrupted(m):
        with torch.no_grad():
            model.W_E.zero_()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        grader.test_fourier_embed(interrupted, model)
    assert_intact(model, before)


# ------------------------------------------------------------------------------------------------ the student's model


def test_changes_to_the_global_model_beyond_its_weights_are_undone():
    model = make_model(13, seed=0)
    before = weights_of(model)

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
    assert model.cfg.d_vocab == 14

    def hooking(m):
        model.blocks[0].register_forward_hook(lambda *args: None)
        return solutions.embed_SVD(m)

    expect_failure(lambda: grader.test_embed_SVD(hooking, model), "its hooks")
    assert not model.blocks[0]._forward_hooks

    def deleting(m):
        del model.embed.W_E
        return solutions.embed_SVD(m)

    expect_failure(lambda: grader.test_embed_SVD(deleting, model), "W_E changed")
    assert_intact(model, before)

    def to_float64(m):
        model.double()
        return solutions.fourier_embed(m)

    expect_failure(lambda: grader.test_fourier_embed(to_float64, model), "restored it")
    assert_intact(model, before)
    # changes to the copy it was given (other than the weights) are the function's business
    assert grader.test_embed_SVD(lambda m: solutions.embed_SVD(m.eval().requires_grad_(False)), model) is True


def test_models_of_another_dtype_or_modulus_are_graded(capsys):
    small = make_model(23, seed=0)
    assert grader.test_fourier_embed(solutions.fourier_embed, small.double()) is True
    assert grader.test_embed_SVD(solutions.embed_SVD, small) is True
    assert grader.test_excl_loss(solutions.excl_loss, small, [3, 5]) is True
    assert grader.test_effective_weights(*solutions.get_effective_weights(small), small) is True


def test_a_hooked_transformer_subclass_is_refused():
    class Rigged(HookedTransformer):
        pass

    rigged = Rigged(make_model(13, seed=0).cfg)
    expect_failure(lambda: grader.test_fourier_embed(solutions.fourier_embed, rigged), "got a Rigged")


# ------------------------------------------------------------------------------------------------ caches, key_freqs, p


def test_a_cache_that_is_not_the_models_run_on_all_data_is_refused():
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
    forged = ActivationCache({name: torch.zeros_like(t) for name, t in cache.cache_dict.items()}, model)
    expect_failure(
        lambda: grader.test_cache_activations(*solutions.key_activations_from_cache(forged), forged),
        "not that of its model on all_data",
    )
    assert grader.test_cache_activations(*solutions.key_activations_from_cache(cache), cache) is True


def test_key_freqs_edge_cases(fourier_model):
    expect_failure(
        lambda: grader.test_excl_loss(solutions.excl_loss, fourier_model, itertools.count(1)), "values or more"
    )

    def popping(model, key_freqs):
        key_freqs.pop()
        return solutions.excl_loss(model, key_freqs) + [0.0]

    expect_failure(
        lambda: grader.test_excl_loss(popping, fourier_model, [14, 35]), "modified its input key_freqs in place"
    )


def test_a_huge_p_is_refused_at_once():
    start = time.perf_counter()
    expect_failure(lambda: grader.test_fft1d(solutions.fft1d, 2**61 - 1), "the graders check moduli up to 1000")
    assert time.perf_counter() - start < 1.0


def test_graders_run_under_the_notebooks_global_settings(capsys):
    """A notebook that turned gradients off or made float64 the default still gets ✅ for right answers."""
    before = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        with torch.no_grad():
            assert grader.test_fft1d(solutions.fft1d) is True
            assert grader.test_mean_sq_fourier_coefficients(solutions.mean_sq_fourier_coefficients) is True
            assert grader.test_fit_quadratic_terms(solutions.fit_quadratic_terms) is True
    finally:
        torch.set_default_dtype(before)


def test_a_p_that_disagrees_with_the_function_is_explained():
    msg = expect_failure(
        lambda: grader.test_fourier_2d_basis_term(solutions.fourier_2d_basis_term, 13),
        "expected shape (13, 13), got (113, 113)",
        "modulo p = 113",
        "told p = 13",
    )
    assert "could not check" not in msg
    expect_failure(lambda: grader.test_get_trig_sum_directions(solutions.get_trig_sum_directions, 13), "modulo p = 113")


def test_a_model_on_the_meta_device_is_explained():
    ghost = make_model(13, seed=0).to("meta")
    expect_failure(lambda: grader.test_fourier_embed(solutions.fourier_embed, ghost), "meta device")


def test_ctrl_c_stops_a_function_that_never_returns():
    """SIGINT (the notebook's interrupt button) reaches the grader, which stops the student's loop too."""
    import os
    import signal
    import threading

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
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        grader.test_fft1d(endless)
    assert time.perf_counter() - start < 5
    deadline = time.perf_counter() + 2
    while not state["stopped"] and time.perf_counter() < deadline:
        time.sleep(0.01)
    assert state["stopped"]


def test_a_grader_called_from_inside_the_function_it_checks_is_refused():
    def grading_itself(x):
        grader.test_fft1d(grading_itself)
        return solutions.fft1d(x)

    expect_failure(lambda: grader.test_fft1d(grading_itself), "called from inside the function it is checking")
    assert not grader._GRADING


def test_the_function_sees_the_notebooks_default_device(capsys):
    seen = []

    def recording(x):
        seen.append(torch.empty(0).device.type)
        return solutions.fft1d(x)

    with torch.device("meta"):  # a notebook that set a default device (per thread in torch)
        assert grader.test_fft1d(recording) is True
    assert set(seen) == {"meta"}


def test_half_done_answers_are_reported_as_not_implemented(capsys):
    assert grader.test_fft1d(lambda x: NotImplemented) is False
    assert grader.test_fit_quadratic_terms(lambda values, k: (None, None)) is False
    assert grader.test_get_trig_sum_directions(lambda k: (None, None)) is False
    assert capsys.readouterr().out.count("not implemented yet") == 3


def test_excl_loss_receives_the_checked_key_freqs_as_a_list_of_ints(capsys):
    import numpy as np

    small = make_model(23, seed=0)
    received = []

    def recording(model, key_freqs):
        received.append(key_freqs)
        return solutions.excl_loss(model, key_freqs)

    for key_freqs in (torch.tensor([3, 5]), np.array([3, 5]), (3, 5), iter([3, 5])):
        assert grader.test_excl_loss(recording, small, key_freqs) is True
    assert all(type(k) is list and all(type(v) is int for v in k) and k == [3, 5] for k in received)


def test_a_comparison_replaced_in_a_cell_before_grading_is_refused():
    for owner, name in [(torch, "allclose"), (grader, "_compare"), (torch.Tensor, "equal")]:
        original = vars(owner).get(name)
        setattr(owner, name, lambda *args, **kwargs: True)
        try:
            expect_failure(
                lambda: grader.test_fft1d(lambda x: torch.zeros_like(x)),
                "was replaced after the grader was imported",
                "Restart the kernel",
            )
        finally:
            if original is None:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
    assert grader.test_fft1d(solutions.fft1d) is True
