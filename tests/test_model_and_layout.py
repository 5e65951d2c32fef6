"""Model config, paper init and the paper <-> TransformerLens layout conversion."""

import math

import pytest
import torch

from part52_grokking_and_modular_arithmetic.runs import data, layout
from part52_grokking_and_modular_arithmetic.runs.architecture import FROZEN_ZERO_BIASES
from part52_grokking_and_modular_arithmetic.runs.model import make_model

from paper_reference import paper_forward


def test_paper_model_size_and_init(p113_model):
    trainable = {n: p for n, p in p113_model.named_parameters() if p.requires_grad}
    assert sum(p.numel() for p in trainable.values()) == 226_816
    assert not any(name in trainable for name in FROZEN_ZERO_BIASES)
    sum_sq = sum((p.detach() ** 2).sum().item() for p in p113_model.parameters())
    assert sum_sq == pytest.approx(1783, rel=0.02)
    assert p113_model.W_U.std().item() == pytest.approx(1 / math.sqrt(114), rel=0.05)
    assert p113_model.W_E.std().item() == pytest.approx(1 / math.sqrt(128), rel=0.05)


def test_same_seed_same_weights_and_different_seed_differs():
    a, b, c = make_model(23, seed=5), make_model(23, seed=5), make_model(23, seed=6)
    assert torch.equal(a.W_in, b.W_in)
    assert not torch.equal(a.W_in, c.W_in)


def test_paper_layout_round_trip_and_same_logits():
    model = make_model(23, seed=1)
    with torch.no_grad():
        model.blocks[0].mlp.b_in.normal_()  # non-zero biases must survive the conversion
        model.blocks[0].mlp.b_out.normal_()
    paper = layout.transformer_lens_to_paper(model.state_dict())
    assert layout.is_paper_layout(paper)
    assert paper["embed.W_E"].shape == (128, 24) and paper["blocks.0.attn.W_O"].shape == (128, 128)
    back = layout.paper_to_transformer_lens(paper)
    for name, tensor in back.items():
        torch.testing.assert_close(tensor, model.state_dict()[name], rtol=0, atol=0)
    tokens = data.make_all_data(23)
    torch.testing.assert_close(paper_forward(paper, tokens), model(tokens), atol=1e-5, rtol=1e-5)


def test_both_conversions_follow_the_one_table():
    from part52_grokking_and_modular_arithmetic.runs.architecture import PAPER_TRAINABLE

    paper_names = [paper for paper, _, _ in layout.LAYOUT_TABLE]
    assert sorted(paper_names) == sorted(PAPER_TRAINABLE) and len(set(paper_names)) == len(paper_names)
    model = make_model(23, seed=4)
    paper = layout.transformer_lens_to_paper(model.state_dict())
    assert list(paper) == paper_names
    back = layout.paper_to_transformer_lens(paper)
    assert list(back)[: len(paper_names)] == [tl for _, tl, _ in layout.LAYOUT_TABLE]
    assert list(back)[len(paper_names) :] == list(FROZEN_ZERO_BIASES) and all(
        not back[n].any() for n in FROZEN_ZERO_BIASES
    )


def test_load_in_state_dict_accepts_both_layouts():
    src = make_model(23, seed=2)
    tokens = data.make_all_data(23)
    for sd in (src.state_dict(), layout.transformer_lens_to_paper(src.state_dict())):
        dst = layout.load_in_state_dict(make_model(23, seed=3), sd)
        torch.testing.assert_close(dst(tokens), src(tokens))


def test_load_in_state_dict_names_the_wrong_shape():
    sd = layout.transformer_lens_to_paper(make_model(23, seed=2).state_dict())
    with pytest.raises(ValueError, match=r"embed.W_E.*expects"):
        layout.load_in_state_dict(make_model(29, seed=0), sd)
    with pytest.raises(KeyError, match="missing"):
        layout.load_in_state_dict(make_model(23, seed=0), {"embed.W_E": sd["embed.W_E"]})


def test_nonzero_tl_bias_cannot_become_paper_layout():
    sd = dict(make_model(23, seed=0).state_dict())
    sd["unembed.b_U"] = torch.ones_like(sd["unembed.b_U"])
    with pytest.raises(ValueError, match="b_U"):
        layout.transformer_lens_to_paper(sd)


def test_make_model_leaves_the_warning_filters_alone():
    """Building a model is a library call: it must not change the process's warning filters (it silences
    TransformerLens' deprecation warning for its own construction only)."""
    import warnings

    from part52_grokking_and_modular_arithmetic.runs.model import make_model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        before = list(warnings.filters)
        make_model(23, seed=0)
        after = list(warnings.filters)
    assert after == before
    assert not any("HookedTransformer is deprecated" in str(w.message) for w in caught)


def test_weight_shapes_are_derived_from_the_model_config():
    from part52_grokking_and_modular_arithmetic.runs.architecture import PAPER_TRAINABLE, parameter_shapes

    model = make_model(23, seed=0)
    own = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    assert parameter_shapes(23) == {name: own[name] for name in PAPER_TRAINABLE}
    paper = layout.transformer_lens_to_paper(model.state_dict())
    assert layout.paper_shapes(23) == {name: tuple(t.shape) for name, t in paper.items()}
