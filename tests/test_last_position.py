"""The last-position module computes what a full HookedTransformer forward computes: losses, gradients (hand-written
backward and plain autograd), logits, attention and MLP activations, for one model or R stacked ones, on every
device this machine has."""

from __future__ import annotations

import pytest
import torch

from part52_grokking_and_modular_arithmetic.runs.architecture import FROZEN_ZERO_BIASES, PAPER_TRAINABLE
from part52_grokking_and_modular_arithmetic.runs.data import make_all_data, make_labels, train_test_split
from part52_grokking_and_modular_arithmetic.runs.model import make_model
from part52_grokking_and_modular_arithmetic.training import last_position as lp
from part52_grokking_and_modular_arithmetic.training.losses import cross_entropy_high_precision

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")),
]
BACKWARDS = [pytest.param(True, id="hand_written"), pytest.param(False, id="autograd")]


def _generic_model(p: int, dtype: torch.dtype, seed: int = 0, frozen_biases: bool = False, device: str = "cpu"):
    """Paper-initialised model moved off its init (so that every gradient is generic), in ``dtype``."""
    model = make_model(p, seed=seed).to(dtype)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in PAPER_TRAINABLE or frozen_biases:
                param.add_(0.05 * torch.randn(param.shape, generator=gen, dtype=dtype))
    return model.to(device)


def _train_pairs(p: int, frac: float = 0.3, fn: str = "add", seed: int = 0):
    all_data = make_all_data(p)
    labels = make_labels(all_data, p, fn, seed)
    train, _ = train_test_split(p, frac, seed)
    return all_data[train], labels[train]


def _gradients(model, loss) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    model.zero_grad(set_to_none=True)
    loss.backward()
    grads = {name: params[name].grad.clone() for name in PAPER_TRAINABLE}
    model.zero_grad(set_to_none=True)
    return grads


def _relative_errors(model, tokens, labels, hand_written: bool) -> tuple[float, dict[str, float]]:
    device = model.W_E.device
    tokens, labels = tokens.to(device), labels.to(device)
    reference_loss = cross_entropy_high_precision(model(tokens)[:, -1], labels)
    reference = _gradients(model, reference_loss)
    pairs = lp.Pairs.from_tokens(tokens, labels, d_vocab=model.cfg.d_vocab)
    assert pairs.device == device
    loss = lp.losses(lp.model_weights(model), pairs, hand_written=hand_written)[0]
    fast = _gradients(model, loss)
    errors = {name: ((fast[name] - reference[name]).norm() / reference[name].norm()).item() for name in PAPER_TRAINABLE}
    return abs(loss.item() - reference_loss.item()), errors


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("hand_written", BACKWARDS)
def test_gradients_match_transformer_lens_float32(device, hand_written):
    model = _generic_model(113, torch.float32, device=device)
    tokens, labels = _train_pairs(113)
    loss_error, errors = _relative_errors(model, tokens, labels, hand_written)
    assert loss_error < 1e-6
    assert max(errors.values()) <= 1e-5, errors


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("hand_written", BACKWARDS)
def test_gradients_match_when_the_model_is_confident_float32(device, hand_written):
    """Late in training wrong-class probabilities fall far below 1e-30; the float32 backward flushes those
    (subnormal-making) entries to zero for speed, and its gradients must still equal autograd's."""
    model = _generic_model(113, torch.float32, device=device)
    with torch.no_grad():
        model.unembed.W_U.mul_(40.0)  # logits spread over hundreds: a very confident model
    tokens, labels = _train_pairs(113)
    probs = torch.softmax(model(tokens.to(device))[:, -1].double(), dim=-1)
    assert (probs < lp.FLUSH_BELOW).float().mean() > 0.1  # the case this test is about does occur
    _, errors = _relative_errors(model, tokens, labels, hand_written)  # (the loss itself is not touched by the flush)
    assert max(errors.values()) <= 1e-5, errors


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("hand_written", BACKWARDS)
@pytest.mark.parametrize("fn", ["add", "rand"])
def test_gradients_match_transformer_lens_float64(fn, hand_written, device):
    model = _generic_model(31, torch.float64, device=device)
    tokens, labels = _train_pairs(31, 0.5, fn)
    loss_error, errors = _relative_errors(model, tokens, labels, hand_written)
    assert loss_error < 1e-13
    assert max(errors.values()) <= 1e-12, errors


@pytest.mark.parametrize("hand_written", BACKWARDS)
def test_gradients_with_nonzero_transformer_lens_biases(hand_written):
    """TL's extra biases (zero in the paper model) are handled too: the forward stays exact."""
    model = _generic_model(23, torch.float64, frozen_biases=True)
    assert all(dict(model.named_parameters())[name].abs().max() > 0 for name in FROZEN_ZERO_BIASES)
    tokens, labels = _train_pairs(23, 0.5)
    loss_error, errors = _relative_errors(model, tokens, labels, hand_written)
    assert loss_error < 1e-13
    assert max(errors.values()) <= 1e-12, errors


def test_a_wrong_gradient_would_be_caught():
    """The tolerance discriminates: the gradient of a slightly different loss (p logits instead of p + 1) fails it."""
    model = _generic_model(31, torch.float64)
    tokens, labels = _train_pairs(31, 0.5)
    reference = _gradients(model, cross_entropy_high_precision(model(tokens)[:, -1], labels))
    other = _gradients(model, cross_entropy_high_precision(model(tokens)[:, -1, :-1], labels))
    worst = max(((other[n] - reference[n]).norm() / reference[n].norm()).item() for n in PAPER_TRAINABLE)
    assert worst > 1e-5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-4), (torch.float64, 1e-11)])
def test_logits_match_on_every_pair(dtype, atol, device):
    p = 31
    model = _generic_model(p, dtype, device=device)
    tokens = make_all_data(p).to(device)
    expected = model(tokens)[:, -1]
    got = lp.model_logits(model, tokens)
    assert got.shape == (p * p, p + 1) and got.dtype == dtype and got.device == expected.device
    torch.testing.assert_close(got, expected, atol=atol, rtol=0)


def _stacked(models):
    return lp.stack_weights([m.state_dict() for m in models])


@pytest.mark.parametrize("device", DEVICES)
def test_stacked_models_match_hooked_transformer(device):
    """R = 3 different models on all p^2 pairs: attention from '=', MLP pre-activations, direct path and
    logits equal each model's own HookedTransformer forward (TL hooks)."""
    p, dtype = 23, torch.float64
    models = [_generic_model(p, dtype, seed=s, frozen_biases=True, device=device) for s in range(3)]
    w = _stacked(models)
    out = lp.forward(w, lp.Pairs.all_pairs(p, 3, device=device), n_out=p)
    all_logits = lp.logits(w, lp.Pairs.all_pairs(p, 3, device=device))
    tokens = make_all_data(p).to(device)
    for r, model in enumerate(models):
        logits, cache = model.run_with_cache(tokens)
        torch.testing.assert_close(out.pattern[r], cache["blocks.0.attn.hook_pattern"][:, :, -1, :], atol=1e-12, rtol=0)
        torch.testing.assert_close(out.pre[r], cache["blocks.0.mlp.hook_pre"][:, -1], atol=1e-11, rtol=0)
        rebuilt = out.direct[r] + torch.relu(out.pre[r]) @ out.w_logit[r]
        torch.testing.assert_close(rebuilt, logits[:, -1, :p], atol=1e-11, rtol=0)
        torch.testing.assert_close(all_logits[r], logits[:, -1], atol=1e-11, rtol=0)
    # the models differ, so a mix-up of runs would show
    assert (all_logits[0] - all_logits[1]).abs().max() > 1e-2


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("hand_written", BACKWARDS)
def test_runs_with_their_own_pairs_get_their_own_gradients(device, hand_written):
    """R = 3 runs, each with its own (differently sized, so padded) split and labels: each run's loss and the
    gradient of its weights equal a HookedTransformer's autograd on that run alone."""
    p, dtype = 23, torch.float64
    models = [_generic_model(p, dtype, seed=s, device=device) for s in range(3)]
    splits = [
        _train_pairs(p, frac, fn, seed) for frac, fn, seed in [(0.3, "add", 0), (0.5, "rand", 1), (0.7, "add", 2)]
    ]
    pairs = lp.Pairs.from_tokens([t for t, _ in splits], [lab for _, lab in splits], d_vocab=p + 1, device=device)
    assert pairs.lengths == tuple(len(t) for t, _ in splits) and pairs.size == max(pairs.lengths)
    w = {name: t.requires_grad_(True) for name, t in _stacked(models).items()}
    losses = lp.losses(w, pairs, hand_written=hand_written)
    losses.sum().backward()
    for r, (model, (tokens, labels)) in enumerate(zip(models, splits, strict=True)):
        reference_loss = cross_entropy_high_precision(model(tokens.to(device))[:, -1], labels.to(device))
        reference = _gradients(model, reference_loss)
        assert abs(losses[r].item() - reference_loss.item()) < 1e-13
        for name in PAPER_TRAINABLE:
            error = ((w[name].grad[r] - reference[name]).norm() / reference[name].norm()).item()
            assert error <= 1e-12, (r, name, error)


def test_loss_without_gradients_and_pair_reuse():
    model = _generic_model(23, torch.float32)
    tokens, labels = _train_pairs(23, 0.5)
    pairs = lp.Pairs.from_tokens(tokens, labels, d_vocab=24)
    expected = cross_entropy_high_precision(model(tokens)[:, -1], labels).item()
    with torch.no_grad():
        first = lp.model_loss(model, pairs)
    second = lp.model_loss(model, pairs)  # the pairs' index structures are reused unchanged
    assert first.dtype == torch.float64 and not first.requires_grad and second.requires_grad
    assert first.item() == pytest.approx(expected, rel=1e-6)
    assert second.item() == first.item()


def test_tables_have_documented_shapes():
    w = lp.model_weights(make_model(23, seed=0))
    t = lp.tables(w, eq_token=23)
    V, H = 24, 4
    assert t.scores.shape == (1, 2, V, H) and t.score_eq.shape == (1, H)
    assert t.folded_pre.shape == (1, H, 2, V, 512) and t.folded_out.shape == (1, H, 2, V, V)
    assert t.const_pre.shape == (1, 512) and t.const_out.shape == (1, V) and t.w_logit.shape == (1, 512, V)
    assert lp.tables(w, eq_token=23, n_out=23).w_logit.shape == (1, 512, 23)


def test_pairs_reject_bad_input():
    tokens, labels = _train_pairs(23, 0.5)
    with pytest.raises(ValueError, match="shape"):
        lp.Pairs.from_tokens(tokens[:, :2], labels)
    with pytest.raises(ValueError, match="integer"):
        lp.Pairs.from_tokens(tokens.float(), labels)
    with pytest.raises(ValueError, match=r"\[0, 24\)"):
        lp.Pairs.from_tokens(tokens + 1, labels, d_vocab=24)
    mixed = tokens.clone()
    mixed[0, 2] = 0
    with pytest.raises(ValueError, match="last position"):
        lp.Pairs.from_tokens(mixed, labels)
    with pytest.raises(ValueError, match="labels"):
        lp.Pairs.from_tokens(tokens, labels[:-1])
    with pytest.raises(ValueError, match="one tensor per run"):
        lp.Pairs.from_tokens([tokens, tokens], [labels])
    unlabelled = lp.Pairs.from_tokens(tokens, None, d_vocab=24)
    with pytest.raises(ValueError, match="no labels"):
        lp.model_loss(make_model(23, seed=0), unlabelled)
    with pytest.raises(ValueError, match="d_vocab"):
        lp.model_logits(make_model(31, seed=0), unlabelled)
    with pytest.raises(ValueError, match="2 run"):
        lp.losses(lp.model_weights(make_model(23, seed=0)), lp.Pairs.from_tokens([tokens, tokens], [labels, labels]))
    with pytest.raises(ValueError, match="leading axis R"):
        lp.tables(dict(make_model(23, seed=0).state_dict()), eq_token=23)


def test_only_the_course_model_is_accepted():
    model = make_model(23, seed=0)
    model.cfg.act_fn = "gelu"
    with pytest.raises(ValueError, match="one-layer"):
        lp.model_weights(model)


def test_selected_runs_and_shared_frozen_biases():
    """``Pairs.select`` keeps each run's own pairs; frozen zero biases may be one expanded (stride-0) tensor."""
    p, dtype = 23, torch.float64
    models = [_generic_model(p, dtype, seed=s) for s in range(3)]
    splits = [_train_pairs(p, frac, "add", seed) for frac, seed in [(0.3, 0), (0.5, 1), (0.4, 2)]]
    pairs = lp.Pairs.from_tokens([t for t, _ in splits], [lab for _, lab in splits], d_vocab=p + 1)
    w = _stacked(models)
    for name in FROZEN_ZERO_BIASES:
        w[name] = torch.zeros_like(w[name][:1]).expand_as(w[name])
    every = lp.losses(w, pairs)
    chosen = pairs.select([2, 0])
    assert chosen.lengths == (pairs.lengths[2], pairs.lengths[0]) and chosen.size == max(chosen.lengths)
    some = lp.losses({name: t[[2, 0]] for name, t in w.items()}, chosen)
    torch.testing.assert_close(some, every[[2, 0]], rtol=1e-14, atol=0)
    with pytest.raises(ValueError, match="selection"):
        pairs.select([3])
