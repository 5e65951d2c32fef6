"""The fast last-position forward/backward computes what a full HookedTransformer forward computes."""

from __future__ import annotations

import pytest
import torch

from part52_grokking_and_modular_arithmetic.data import make_all_data, make_labels, train_test_split
from part52_grokking_and_modular_arithmetic.fast_forward import (
    PairBatch,
    last_position_logits,
    last_position_loss,
    last_position_tables,
)
from part52_grokking_and_modular_arithmetic.losses import cross_entropy_high_precision
from part52_grokking_and_modular_arithmetic.model import FROZEN_ZERO_BIASES, PAPER_TRAINABLE, make_model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _generic_model(p: int, dtype: torch.dtype, seed: int = 0, frozen_biases: bool = False):
    """Paper-initialised model moved off its init (so that every gradient is generic), in ``dtype``."""
    model = make_model(p, seed=seed).to(dtype)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in PAPER_TRAINABLE or frozen_biases:
                param.add_(0.05 * torch.randn(param.shape, generator=gen, dtype=dtype))
    return model


def _train_batch(p: int, frac: float = 0.3, fn: str = "add"):
    all_data = make_all_data(p)
    labels = make_labels(all_data, p, fn)
    train, _ = train_test_split(p, frac, 0)
    return all_data[train], labels[train]


def _gradients(model, loss) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    model.zero_grad(set_to_none=True)
    loss.backward()
    grads = {name: params[name].grad.clone() for name in PAPER_TRAINABLE}
    model.zero_grad(set_to_none=True)
    return grads


def _relative_errors(model, tokens, labels) -> tuple[float, dict[str, float]]:
    reference_loss = cross_entropy_high_precision(model(tokens)[:, -1], labels)
    reference = _gradients(model, reference_loss)
    batch = PairBatch.from_tokens(tokens, labels, model.cfg.n_heads, model.cfg.d_vocab, model.W_E.dtype)
    loss = last_position_loss(model, batch)
    fast = _gradients(model, loss)
    errors = {name: ((fast[name] - reference[name]).norm() / reference[name].norm()).item() for name in PAPER_TRAINABLE}
    return abs(loss.item() - reference_loss.item()), errors


def test_gradients_match_transformer_lens_float32():
    model = _generic_model(113, torch.float32)
    tokens, labels = _train_batch(113)
    loss_error, errors = _relative_errors(model, tokens, labels)
    assert loss_error < 1e-6
    assert max(errors.values()) <= 1e-5, errors


def test_gradients_match_when_the_model_is_confident_float32():
    """Late in training wrong-class probabilities fall far below 1e-30; the float32 backward flushes those
    (subnormal-making) entries to zero for speed, and its gradients must still equal autograd's."""
    from part52_grokking_and_modular_arithmetic.fast_forward import FLUSH_BELOW

    model = _generic_model(113, torch.float32)
    with torch.no_grad():
        model.unembed.W_U.mul_(40.0)  # logits spread over hundreds: a very confident model
    tokens, labels = _train_batch(113)
    probs = torch.softmax(model(tokens)[:, -1].double(), dim=-1)
    assert (probs < FLUSH_BELOW).float().mean() > 0.1  # the case this test is about does occur
    _, errors = _relative_errors(model, tokens, labels)  # (the loss itself is not touched by the flush)
    assert max(errors.values()) <= 1e-5, errors


@pytest.mark.parametrize("fn", ["add", "rand"])
def test_gradients_match_transformer_lens_float64(fn):
    model = _generic_model(31, torch.float64)
    tokens, labels = _train_batch(31, 0.5, fn)
    loss_error, errors = _relative_errors(model, tokens, labels)
    assert loss_error < 1e-13
    assert max(errors.values()) <= 1e-12, errors


def test_gradients_with_nonzero_transformer_lens_biases():
    """TL's extra biases (zero in the paper model) are handled too: the forward stays exact."""
    model = _generic_model(23, torch.float64, frozen_biases=True)
    assert all(dict(model.named_parameters())[name].abs().max() > 0 for name in FROZEN_ZERO_BIASES)
    tokens, labels = _train_batch(23, 0.5)
    loss_error, errors = _relative_errors(model, tokens, labels)
    assert loss_error < 1e-13
    assert max(errors.values()) <= 1e-12, errors


def test_a_wrong_gradient_would_be_caught():
    """The tolerance discriminates: the gradient of a slightly different loss (p logits instead of p + 1) fails it."""
    model = _generic_model(31, torch.float64)
    tokens, labels = _train_batch(31, 0.5)
    reference = _gradients(model, cross_entropy_high_precision(model(tokens)[:, -1], labels))
    other = _gradients(model, cross_entropy_high_precision(model(tokens)[:, -1, :-1], labels))
    worst = max(((other[n] - reference[n]).norm() / reference[n].norm()).item() for n in PAPER_TRAINABLE)
    assert worst > 1e-5


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-4), (torch.float64, 1e-11)])
def test_logits_match_on_every_pair(dtype, atol):
    p = 31
    model = _generic_model(p, dtype)
    tokens = make_all_data(p)
    expected = model(tokens)[:, -1]
    got = last_position_logits(model, tokens)
    assert got.shape == (p * p, p + 1) and got.dtype == dtype
    torch.testing.assert_close(got, expected, atol=atol, rtol=0)


def test_loss_without_gradients_and_batch_reuse():
    model = _generic_model(23, torch.float32)
    tokens, labels = _train_batch(23, 0.5)
    batch = PairBatch.from_tokens(tokens, labels, model.cfg.n_heads, model.cfg.d_vocab)
    expected = cross_entropy_high_precision(model(tokens)[:, -1], labels).item()
    with torch.no_grad():
        first = last_position_loss(model, batch)
    second = last_position_loss(model, batch)  # the batch's structures are reused unchanged
    assert first.dtype == torch.float64 and not first.requires_grad and second.requires_grad
    assert first.item() == pytest.approx(expected, rel=1e-6)
    assert second.item() == first.item()


def test_tables_have_documented_shapes():
    model = make_model(23, seed=0)
    t = last_position_tables(model)
    V, H, D = 24, 4, 512 + 24
    assert t.scores.shape == (2, V, H) and t.score_eq.shape == (H,)
    assert t.table.shape == (2 * V * H, D) and t.table_eq.shape == (H, D) and t.const.shape == (D,)
    assert t.w_logit.shape == (512, V) and t.logit_bias.shape == (V,)


def test_pair_batch_rejects_bad_input():
    tokens, labels = _train_batch(23, 0.5)
    # wrong shapes / dtypes: a ValueError, or jaxtyping's TypeCheckError (a TypeError) when annotations are checked
    with pytest.raises((ValueError, TypeError), match="shape|batch 3"):
        PairBatch.from_tokens(tokens[:, :2], labels, 4, 24)
    with pytest.raises((ValueError, TypeError), match="integer|Int"):
        PairBatch.from_tokens(tokens.float(), labels, 4, 24)
    with pytest.raises(ValueError, match=r"\[0, 24\)"):
        PairBatch.from_tokens(tokens + 1, labels, 4, 24)
    mixed = tokens.clone()
    mixed[0, 2] = 0
    with pytest.raises(ValueError, match="last position"):
        PairBatch.from_tokens(mixed, labels, 4, 24)
    with pytest.raises((ValueError, TypeError), match="labels|batch"):
        PairBatch.from_tokens(tokens, labels[:-1], 4, 24)
    unlabelled = PairBatch.from_tokens(tokens, None, 4, 24)
    with pytest.raises(ValueError, match="no labels"):
        last_position_loss(make_model(23, seed=0), unlabelled)
    with pytest.raises(ValueError, match="d_vocab"):
        last_position_logits(make_model(31, seed=0), unlabelled)
