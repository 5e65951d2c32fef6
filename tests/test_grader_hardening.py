"""No grader is fooled: a function that changes its inputs (or the model) fails with a message saying so and
the student's model is left intact; every non-function argument is validated with a clear GraderError
(never a raw AttributeError / TypeError / KeyError)."""

from __future__ import annotations

import pytest
import torch

from part52_grokking_and_modular_arithmetic import fourier, solutions
from part52_grokking_and_modular_arithmetic import tests as grader  # never import the test_* names directly
from part52_grokking_and_modular_arithmetic.data import train_test_split

from grader_checks import expect_failure
from reference.fourier_model import make_fourier_model

P = 113
KEY_FREQS = [14, 35, 41, 42, 52]


@pytest.fixture(scope="module")
def fourier_model():
    return make_fourier_model(P, KEY_FREQS)


def weights_of(model) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def assert_intact(model, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for name, saved in before.items():
        assert after[name].dtype == saved.dtype and torch.equal(after[name], saved), f"{name} changed"


# ------------------------------------------------------------------------------------------------ mutation


def zeroing_fourier_embed(m):
    """fourier_embed that zeroes the model's embedding first."""
    with torch.no_grad():
        m.W_E.zero_()
    return solutions.fourier_embed(m)


def test_fft1d_that_zeroes_its_input_fails():
    def zeroing(x):
        x.zero_()
        return torch.zeros_like(x)  # the transform of the (now zero) input

    expect_failure(lambda: grader.test_fft1d(zeroing), "fft1d", "modified its input x in place", "x.zero_()")


def test_a_correct_answer_that_also_changes_its_input_fails():
    def centring_in_place(tensor):
        out = solutions.fft2d(tensor)
        tensor -= tensor.mean()
        return out

    expect_failure(lambda: grader.test_fft2d(centring_in_place), "modified its input tensor in place", "-=")

    def normalising_v_in_place(batch_vecs, v):
        v /= v.norm()
        return solutions.project_onto_direction(batch_vecs, v)

    expect_failure(lambda: grader.test_project_onto_direction(normalising_v_in_place), "modified its input v in place")

    def mean_sq_centring_in_place(neuron_acts_sq):
        neuron_acts_sq -= neuron_acts_sq.mean((0, 1), keepdim=True)
        return solutions.fft2d(neuron_acts_sq).pow(2).mean(-1)

    expect_failure(
        lambda: grader.test_mean_sq_fourier_coefficients(mean_sq_centring_in_place),
        "modified its input neuron_acts_sq in place",
    )


def test_excl_loss_that_zeroes_the_model_fails_and_the_model_is_intact(fourier_model, capsys):
    before = weights_of(fourier_model)

    def vandal(model, key_freqs):
        with torch.no_grad():
            model.W_E.zero_()
            model.W_U.zero_()
        return solutions.excl_loss(model, key_freqs)  # the "right" losses of the zeroed model

    msg = expect_failure(
        lambda: grader.test_excl_loss(vandal, fourier_model, KEY_FREQS),
        "excl_loss",
        "modified the model's weights in place",
        "W_E",
        "W_U",
        "your model is unchanged",
    )
    assert "restored" not in msg
    assert_intact(fourier_model, before)
    assert grader.test_excl_loss(solutions.excl_loss, fourier_model, KEY_FREQS) is True  # still gradable


def test_a_function_changing_the_global_model_fails_and_the_model_is_restored(model):
    before = weights_of(model)

    def through_the_global(m):  # ignores its argument, changes the notebook's model
        with torch.no_grad():
            model.W_E.mul_(0.0)
        return solutions.fourier_embed(m)

    expect_failure(
        lambda: grader.test_fourier_embed(through_the_global, model),
        "modified the model's weights in place",
        "W_E",
        "restored",
    )
    assert_intact(model, before)

    def replacing_a_parameter(m):
        model.embed.W_E = torch.nn.Parameter(torch.zeros_like(model.embed.W_E).double())
        return solutions.embed_SVD(m)

    expect_failure(lambda: grader.test_embed_SVD(replacing_a_parameter, model), "restored")
    assert_intact(model, before)


def test_fourier_embed_that_zeroes_the_model_fails(model):
    before = weights_of(model)

    expect_failure(
        lambda: grader.test_fourier_embed(zeroing_fourier_embed, model), "modified the model's weights", "W_E"
    )
    assert_intact(model, before)


def test_a_correct_function_leaves_the_model_untouched(model):
    before = weights_of(model)
    assert grader.test_embed_SVD(solutions.embed_SVD, model) is True
    assert_intact(model, before)


def test_a_stub_that_mutates_is_reported_as_a_mutation():
    def half_done(x):
        x.mul_(2)
        raise NotImplementedError

    expect_failure(lambda: grader.test_fft1d(half_done), "modified its input x in place")


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


def test_a_state_dict_instead_of_the_model_is_explained(model):
    msg = expect_failure(
        lambda: grader.test_fourier_embed(solutions.fourier_embed, model.state_dict()),
        "a state dict?",
        "utils.load_model",
    )
    assert "AttributeError" not in msg


def test_a_wrong_cache_argument_is_named(model):
    ref = solutions.get_key_activations(model)
    g = grader.test_cache_activations
    expect_failure(lambda: g(*ref, None), "expected the ActivationCache", "got None")
    expect_failure(lambda: g(*ref, {"pattern": ref.attn_mat}), "expected the ActivationCache", "got a dict")
    expect_failure(lambda: g(*ref, model.state_dict()), "a state dict?")
    _, partial = model.run_with_cache(
        torch.tensor([[1, 2, P]]), names_filter=lambda name: name == "blocks.0.mlp.hook_post"
    )
    expect_failure(lambda: g(*ref, partial), "the cache has no blocks.0.attn.hook_pattern", "names_filter")


# ------------------------------------------------------------------------------------------------ key_freqs, p, train indices


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


def test_key_freqs_as_a_tensor_or_tuple_are_fine(fourier_model, capsys):
    assert grader.test_excl_loss(solutions.excl_loss, fourier_model, torch.tensor([14, 35])) is True
    assert grader.test_excl_loss(solutions.excl_loss, fourier_model, (41,)) is True


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
    expect_failure(lambda: run(2), f"❌ {name}: p=2: expected an odd prime >= 3", "needs an odd p")
    expect_failure(lambda: run(1), "p=1: expected an odd prime")
    expect_failure(lambda: run(9), "p=9 is not prime (9 = 3 x 3)")
    expect_failure(lambda: run(113.0), "expected the modulus as an int", "got a float")
    expect_failure(lambda: run("113"), "got a str")


@pytest.mark.parametrize(
    "name",
    [
        "fft1d",
        "fourier_2d_basis_term",
        "fft2d",
        "get_trig_sum_directions",
        "fit_quadratic_terms",
        "mean_sq_fourier_coefficients",
        "project_onto_frequency",
        "find_neuron_freqs",
    ],
)
def test_graders_work_for_a_small_prime(name, capsys):
    """The reference passes for p = 13 (the graders assume nothing about 113)."""
    assert P_GRADERS[name](13) is True


def test_bad_train_indices_are_named(fourier_model):
    g = grader.test_excl_loss
    train, _ = train_test_split(P, 0.3, 0)
    ok = lambda model, key_freqs: solutions.excl_loss(model, key_freqs)  # noqa: E731
    for bad, fragment in [
        (train.float(), "got dtype torch.float32"),
        (train[None, :], "got shape (1, 3830)"),
        (torch.tensor([0, P * P]), f"got values from 0 to {P * P}"),
        (torch.tensor([-1, 3]), "got values from -1 to 3"),
        (train.tolist(), "got a list"),
        (torch.zeros(0, dtype=torch.long), "got shape (0,)"),
    ]:
        expect_failure(
            lambda bad=bad: g(ok, fourier_model, KEY_FREQS, train_indices=bad),
            "train_indices: expected a 1-D integer tensor of indices into all_data",
            fragment,
        )
    mask = torch.zeros(P * P, dtype=torch.bool)
    mask[train] = True
    expect_failure(lambda: g(ok, fourier_model, KEY_FREQS, train_indices=mask), "boolean mask", "nonzero")


def test_bad_task_and_split_settings_are_named(fourier_model):
    g = grader.test_excl_loss
    expect_failure(lambda: g(solutions.excl_loss, fourier_model, KEY_FREQS, fn="plus"), "fn: expected one of", "'plus'")
    expect_failure(lambda: g(solutions.excl_loss, fourier_model, KEY_FREQS, frac_train=1.5), "frac_train=1.5")


def test_unforeseen_arguments_never_raise_raw_errors(model):
    """A wrong argument no validation names (here: values of the wrong kind) still gives a GraderError."""
    calls = [
        lambda: grader.test_effective_weights("W_logit", "W_neur", "W_attn", model),
        lambda: grader.test_cache_activations(1, 2, 3, model),
        lambda: grader.test_fft1d(42),
        lambda: grader.test_excl_loss(solutions.excl_loss, model, KEY_FREQS, seed="zero"),
    ]
    for call in calls:
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


def test_a_model_that_cannot_be_copied_is_still_restored(capsys):
    from part52_grokking_and_modular_arithmetic.model import make_model

    small = make_model(13, seed=0)
    small.notes = (line for line in ["a generator: deepcopy fails on it"])
    before = weights_of(small)
    assert grader.test_fourier_embed(solutions.fourier_embed, small) is True

    expect_failure(
        lambda: grader.test_fourier_embed(zeroing_fourier_embed, small), "modified the model's weights", "restored"
    )
    assert_intact(small, before)
