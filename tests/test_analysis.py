"""Tests of analysis.py: every function against an independent formula or a property it must have."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F_nn
from jaxtyping import TypeCheckError

from part52_grokking_and_modular_arithmetic import solutions
from part52_grokking_and_modular_arithmetic.analysis import circuit as A
from part52_grokking_and_modular_arithmetic.analysis.fourier import fft2d, fourier_basis, per_frequency
from part52_grokking_and_modular_arithmetic.runs.data import make_all_data, make_labels, train_test_split
from part52_grokking_and_modular_arithmetic.runs.model import make_model

from reference.fourier_model import make_fourier_model

P = 113
BAD_INPUT = (ValueError, TypeCheckError)


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def cache(model):
    with torch.no_grad():
        _, c = model.run_with_cache(make_all_data(P))
    return c


def cos_sin_table(p: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.arange(p, dtype=torch.float64)
    return torch.cos(2 * math.pi * k * t / p), torch.sin(2 * math.pi * k * t / p)


#: frequencies of the hand-built model and their number of neurons (7 is a stray 5-neuron group)
HAND_BUILT_GROUPS = {14: 100, 35: 120, 41: 80, 7: 5}


@pytest.fixture(scope="module")
def fourier_model():
    """The tests' hand-built model (tests/reference/fourier_model.py): neurons are ReLUs of one frequency each,
    logits ~ sum cos(w(x+y-z))."""
    return make_fourier_model(P, tuple(HAND_BUILT_GROUPS), neurons_per_freq=HAND_BUILT_GROUPS)


# ------------------------------------------------------------------------------------------------ helper values


def test_make_fourier_model_computes_modular_addition():
    m = make_fourier_model(P)  # key frequencies 14, 35, 41, 42, 52, neurons split evenly
    logits = A.get_original_logits(m)
    labels = make_labels(make_all_data(P), P)
    assert (logits.argmax(-1) == labels).all()
    original = F_nn.cross_entropy(logits.double(), labels).item()
    assert original < 0.2
    # the restricted (trig) logits do even better than the original: the paper's observation
    assert A.neuron_surgery_losses(m, [14, 35, 41, 42, 52])["restricted"] < original / 100
    assert A.key_frequencies(m) == [14, 35, 41, 42, 52]
    with pytest.raises(ValueError, match="key frequencies"):
        make_fourier_model(P, (0, 3))
    with pytest.raises(ValueError, match="neurons requested"):
        make_fourier_model(P, (3,), neurons_per_freq=600)


def test_infer_p():
    assert A.infer_p(make_model(13, seed=0)) == 13


def test_course_weights(model):
    w = A.get_course_weights(model)
    assert w.p == P
    assert torch.equal(w.W_E, model.W_E[:-1]) and w.W_E.shape == (P, 128)
    assert torch.equal(w.W_U, model.W_U[:, :-1]) and w.W_U.shape == (128, P)
    assert torch.equal(w.final_pos_resid_initial, model.W_E[-1] + model.W_pos[2])
    block = model.blocks[0]
    for name in ("W_Q", "W_K", "W_V", "W_O"):
        assert torch.equal(getattr(w, name), getattr(block.attn, name))
    for name in ("W_in", "W_out", "b_in", "b_out"):
        assert torch.equal(getattr(w, name), getattr(block.mlp, name))
    assert torch.equal(w.W_pos, model.W_pos)
    assert set(w.as_dict()) >= {"W_E", "W_U", "final_pos_resid_initial", "W_pos"}
    assert not w.W_E.requires_grad


def test_key_activations_match_the_cache(model, cache):
    got = A.get_key_activations(model)
    assert got.attn_mat.shape == (P * P, 4, 3)
    assert got.neuron_acts_post.shape == got.neuron_acts_pre.shape == (P * P, 512)
    torch.testing.assert_close(got.attn_mat, cache["pattern", 0][:, :, -1, :])
    torch.testing.assert_close(got.neuron_acts_post, cache["post", 0][:, -1, :])
    torch.testing.assert_close(got.neuron_acts_pre, cache["pre", 0][:, -1, :])
    # independent properties: attention rows sum to 1, post = ReLU(pre)
    torch.testing.assert_close(got.attn_mat.sum(-1), torch.ones(P * P, 4))
    torch.testing.assert_close(got.neuron_acts_post, got.neuron_acts_pre.relu())
    assert solutions.key_activations_from_cache(cache).attn_mat.shape == (P * P, 4, 3)


def test_original_logits(model):
    logits = A.get_original_logits(model)
    assert logits.shape == (P * P, P)
    data = make_all_data(P)[:5]
    torch.testing.assert_close(logits[:5], model(data)[:, -1, :P])


# ------------------------------------------------------------------------------------------------ effective weights


def _is_constant_over_batch(t: torch.Tensor, atol: float = 1e-4) -> bool:
    return torch.allclose(t, t[:1].expand_as(t), atol=atol)


def test_W_attn_matches_attention_scores(model, cache):
    """score(= -> position 0) - W_attn[h, x] is the same for every input: the W_pos[0] key term."""
    W_attn = A.get_effective_weights(model).W_attn
    assert W_attn.shape == (4, P)
    x = make_all_data(P)[:, 0]
    for h in range(4):
        scores = cache["attn_scores", 0][:, h, -1, 0]
        assert _is_constant_over_batch(scores - W_attn[h, x])
        assert not _is_constant_over_batch(scores)  # the check has teeth


def test_W_neur_matches_the_value_path(model, cache):
    """What token x at position 0 writes into the neurons through head h, minus W_neur[h, x], is constant."""
    W_neur = A.get_effective_weights(model).W_neur
    assert W_neur.shape == (4, P, 512)
    x = make_all_data(P)[:, 0]
    for h in range(4):
        via_cache = cache["v", 0][:, 0, h, :] @ model.W_O[0, h] @ model.W_in[0]
        assert _is_constant_over_batch(via_cache - W_neur[h, x], atol=1e-4)


def test_effective_weights_from_the_model_or_its_course_weights(model):
    from_model = A.get_effective_weights(model)
    from_weights = A.get_effective_weights(A.get_course_weights(model))
    for a, b in zip(from_model, from_weights, strict=True):
        assert torch.equal(a, b)


def test_W_logit_matches_the_logits(model, cache):
    W_logit = A.get_effective_weights(model).W_logit
    assert W_logit.shape == (512, P)
    resid_mid = cache["resid_mid", 0][:, -1]
    post = cache["post", 0][:, -1]
    rebuilt = (resid_mid + model.b_out[0]) @ model.W_U[:, :P] + post @ W_logit
    torch.testing.assert_close(rebuilt, A.get_original_logits(model), atol=1e-3, rtol=1e-4)


# ------------------------------------------------------------------------------------------------ neuron frequencies


def block_grid(p: int, k: int, coeffs: torch.Tensor) -> torch.Tensor:
    """A (p, p) grid sum_{a,b} coeffs[a, b] * F[idx[a]] (x) F[idx[b]] over frequency k's block."""
    Fb = fourier_basis(p, dtype=torch.float64)
    idx = [0, 2 * k - 1, 2 * k]
    return sum(coeffs[a, b] * torch.outer(Fb[idx[a]], Fb[idx[b]]) for a in range(3) for b in range(3))


@pytest.mark.parametrize("p", [113, 13])
def test_find_neuron_freqs_on_single_frequency_neurons(p):
    gen = torch.Generator().manual_seed(0)
    n_freqs = (p - 1) // 2
    freqs = [1, 2, n_freqs // 2, n_freqs - 1, n_freqs, n_freqs]  # the last frequency too
    acts = torch.stack([block_grid(p, k, torch.randn(3, 3, generator=gen, dtype=torch.float64)) for k in freqs], -1)
    got_freqs, got_frac = A.find_neuron_freqs(A.get_fourier_neuron_acts(acts.reshape(p * p, -1)))
    assert got_freqs.dtype == torch.long
    assert got_freqs.tolist() == freqs
    torch.testing.assert_close(got_frac, torch.ones(len(freqs), dtype=torch.float64))


def test_find_neuron_freqs_fraction_formula():
    """Two frequencies: 3/4 of the (centred) energy in k=5's block, 1/4 in k=9's -> (5, 0.75)."""
    p = 31
    c5 = torch.zeros(3, 3, dtype=torch.float64)
    c5[1, 1] = math.sqrt(3)
    c9 = torch.zeros(3, 3, dtype=torch.float64)
    c9[2, 0] = 1.0
    grid = block_grid(p, 5, c5) + block_grid(p, 9, c9)
    freqs, frac = A.find_neuron_freqs(fft2d(grid[..., None]))
    assert freqs.tolist() == [5]
    torch.testing.assert_close(frac, torch.tensor([0.75], dtype=torch.float64))
    assert solutions.find_neuron_freqs is A.find_neuron_freqs


def test_get_fourier_neuron_acts_centres_and_transforms():
    p = 13
    acts = torch.randn(p * p, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 5.0
    got = A.get_fourier_neuron_acts(acts)
    assert got.shape == (p, p, 4)
    torch.testing.assert_close(got[0, 0], torch.zeros(4, dtype=torch.float64), atol=1e-10, rtol=0)
    Fb = fourier_basis(p, dtype=torch.float64)
    centred = (acts - acts.mean(0)).reshape(p, p, 4)
    torch.testing.assert_close(got, torch.einsum("xyn,ix,jy->ijn", centred, Fb, Fb))
    with pytest.raises(ValueError, match="p\\^2 rows"):
        A.get_fourier_neuron_acts(torch.zeros(10, 3))


def test_mean_sq_fourier_coefficients_of_a_grid_or_of_rows():
    p = 13
    acts = torch.randn(p * p, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    got = A.mean_sq_fourier_coefficients(acts.reshape(p, p, 6))
    assert got.shape == (p, p) and got.dtype == torch.float64
    torch.testing.assert_close(got, A.get_fourier_neuron_acts(acts).pow(2).mean(-1))
    torch.testing.assert_close(A.mean_sq_fourier_coefficients(acts), got)
    # Parseval: the total equals the mean centred sum of squares
    torch.testing.assert_close(got.sum(), (acts - acts.mean(0)).pow(2).sum(0).mean())


def test_neuron_clusters():
    freqs = torch.tensor([3, 3, 5, 7, 3, 5])
    frac = torch.tensor([0.9, 0.84, 0.99, 0.2, 0.85, 0.86])
    clusters = A.neuron_clusters(freqs, frac)
    assert list(clusters) == [3, 5, -1]
    assert clusters[3].tolist() == [0, 4] and clusters[5].tolist() == [2, 5] and clusters[-1].tolist() == [1, 3]
    assert list(A.neuron_clusters(freqs, frac, threshold=0.1)) == [3, 5, 7]


def test_key_frequencies_rule_on_clusters():
    clusters = {9: torch.arange(6), 4: torch.arange(40), 20: torch.arange(5), -1: torch.arange(300)}
    assert A.key_frequencies(clusters=clusters, d_mlp=512) == [4, 9]  # 5 < 1% of 512 = 5.12 <= 6
    assert A.key_frequencies(clusters=clusters, d_mlp=512, min_fraction=0.05) == [4]
    with pytest.raises(ValueError, match="d_mlp"):
        A.key_frequencies(clusters=clusters)


def test_clusters_and_key_frequencies_of_a_fourier_model(fourier_model):
    a = A.analyse_neurons(fourier_model)
    sizes = {k: len(v) for k, v in a.clusters.items()}
    assert sizes == {**HAND_BUILT_GROUPS, -1: 512 - sum(HAND_BUILT_GROUPS.values())}
    assert a.neuron_frac_explained[: sum(HAND_BUILT_GROUPS.values())].min() > 0.9
    assert A.key_frequencies(fourier_model) == [14, 35, 41]  # the 5-neuron group of 7 is not key
    norms = per_frequency(A.fourier_embed(fourier_model))
    assert norms.shape == ((P - 1) // 2,)
    assert set((norms.topk(4).indices + 1).tolist()) == set(HAND_BUILT_GROUPS)


# ------------------------------------------------------------------------------------------------ logit surgery


def trig_direction(p: int, k: int, kind: str) -> torch.Tensor:
    """Unit cos/sin(w(x+y)) direction in R^{p^2}, straight from the formula (not from fourier.py)."""
    t = torch.arange(p, dtype=torch.float64)
    s = (t[:, None] + t[None, :]).flatten()
    v = torch.cos(2 * math.pi * k * s / p) if kind == "cos" else torch.sin(2 * math.pi * k * s / p)
    return v / v.norm()


def test_trig_logits_keeps_key_directions_only():
    p = 17
    gen = torch.Generator().manual_seed(2)
    z = torch.arange(p, dtype=torch.float64)
    t = torch.arange(p, dtype=torch.float64)
    s = (t[:, None] + t[None, :]).flatten()
    wave = torch.cos(2 * math.pi * 3 * (s[:, None] - z[None, :]) / p)  # cos(w(x + y - z)), k = 3
    noise = torch.randn(p * p, p, generator=gen, dtype=torch.float64)
    out = A.trig_logits(wave + noise, [3])
    noise_part = sum(
        trig_direction(p, 3, kd)[:, None] * (trig_direction(p, 3, kd) @ noise)[None, :] for kd in ("cos", "sin")
    )
    # (the direction matrix of fourier.py is float32, hence the tolerance)
    torch.testing.assert_close(out, wave + noise_part, atol=1e-5, rtol=1e-5)


def test_restricted_loss_equals_manual_bias_corrected_loss(model):
    original = A.get_original_logits(model).double()
    keys = [5, 20]
    restricted = sum(
        trig_direction(P, k, kd)[:, None] * (trig_direction(P, k, kd) @ original)[None, :]
        for k in keys
        for kd in ("cos", "sin")
    )
    corrected = restricted + (original - restricted).mean(0)
    labels = make_labels(make_all_data(P), P)
    expected_all = F_nn.cross_entropy(corrected, labels).item()
    assert A.neuron_surgery_losses(model, keys)["restricted"] == pytest.approx(expected_all, rel=1e-5)


def grid_of(p: int, f) -> torch.Tensor:
    """The (p, p) float64 grid f(x, y), first index x."""
    t = torch.arange(p, dtype=torch.float64)
    return f(t[:, None], t[None, :])


def test_sum_difference_shares_of_known_waves():
    p, k = 23, 4
    w = 2 * math.pi * k / p
    cos, sin = torch.cos, torch.sin
    shares = A.sum_difference_shares
    assert shares(grid_of(p, lambda x, y: cos(w * (x + y))), [k]) == pytest.approx((1.0, 0.0), abs=1e-12)
    assert shares(grid_of(p, lambda x, y: 2 * sin(w * (x - y)) + 7), [3, k]) == pytest.approx((0.0, 1.0), abs=1e-12)
    assert shares(grid_of(p, lambda x, y: cos(w * x) * cos(w * y)), [k]) == pytest.approx((0.5, 0.5), abs=1e-12)
    assert shares(grid_of(p, lambda x, y: cos(w * x) * cos(w * y)), [k + 1]) == pytest.approx((0.0, 0.0), abs=1e-12)
    assert shares(grid_of(p, lambda x, y: cos(w * x) + sin(w * y)), [k]) == pytest.approx((0.0, 0.0), abs=1e-12)
    # (p, p, n): each column centred, the shares taken of the total over the columns: 9/10 and 1/10
    both = torch.stack([3 * grid_of(p, lambda x, y: sin(w * (x + y))), grid_of(p, lambda x, y: cos(w * (x - y)))], -1)
    assert shares(both.float(), [k]) == pytest.approx((0.9, 0.1), abs=1e-6)
    assert shares(torch.ones(p, p, 2), [k]) == (0.0, 0.0)


def test_sum_difference_shares_equal_explicit_projections():
    p, keys = 17, [2, 7]
    gen = torch.Generator().manual_seed(5)
    acts = torch.randn(p, p, 3, generator=gen, dtype=torch.float64)
    centred = (acts - acts.mean((0, 1))).reshape(p * p, 3)
    t = torch.arange(p, dtype=torch.float64)
    total = centred.pow(2).sum()
    expected = []
    for sign in (1, -1):
        s = (t[:, None] + sign * t[None, :]).flatten()
        dirs = [f(2 * math.pi * k * s / p) for k in keys for f in (torch.cos, torch.sin)]
        expected.append(sum(((d / d.norm()) @ centred).pow(2).sum() for d in dirs) / total)
    assert A.sum_difference_shares(acts, keys) == pytest.approx([e.item() for e in expected], rel=1e-9)
    with pytest.raises(BAD_INPUT):
        A.sum_difference_shares(torch.zeros(p * p, 3), keys)
    with pytest.raises(ValueError, match="frequencies must lie in"):
        A.sum_difference_shares(acts, [9])


def test_sum_difference_shares_of_the_hand_built_model(fourier_model):
    """Its neurons are ReLUs of cos(w x + phi) + cos(w y + phi): their quadratic term holds x + y and x - y
    alike; the logits keep only x + y (the x - y parts cancel over the phases)."""
    keys = list(HAND_BUILT_GROUPS)
    acts = A.get_key_activations(fourier_model).neuron_acts_post.reshape(P, P, -1)
    neuron_sum, neuron_diff = A.sum_difference_shares(acts, keys)
    assert neuron_sum > 0.05 and neuron_diff > 0.05 and neuron_sum == pytest.approx(neuron_diff, rel=0.2)
    logit_sum, logit_diff = A.sum_difference_shares(A.get_original_logits(fourier_model).reshape(P, P, P), keys)
    assert logit_sum > 0.5 and logit_diff < 1e-3, (logit_sum, logit_diff)


def test_projected_neuron_acts():
    p = 13
    gen = torch.Generator().manual_seed(3)
    pure = block_grid(p, 4, torch.randn(3, 3, generator=gen, dtype=torch.float64)).flatten()
    other = block_grid(p, 2, torch.randn(3, 3, generator=gen, dtype=torch.float64)).flatten()
    other = other - other.mean()  # no constant part, so it is orthogonal to frequency 4's block
    acts = torch.stack([pure + other, pure, other], dim=1)
    clusters = {4: torch.tensor([0, 1]), -1: torch.tensor([2])}
    got = A.projected_neuron_acts(acts, clusters)
    torch.testing.assert_close(got[:, 0], pure)
    torch.testing.assert_close(got[:, 1], pure)
    torch.testing.assert_close(got[:, 2], other)  # unclustered: kept as it is
    assert A.projected_neuron_acts(acts, clusters, keep_unclustered=False)[:, 2].abs().max() == 0


def test_cluster_ablation_equals_manual(fourier_model):
    a = A.analyse_neurons(fourier_model)
    labels = make_labels(make_all_data(P), P)
    losses = A.neuron_surgery_losses(a, [14, 41, 50])["cluster_ablation"]
    for k in (14, 41):
        idx = a.clusters[k]
        ablated = (a.original_logits - a.neuron_acts_post[:, idx] @ a.W_logit[idx]).double()
        ablated = ablated + (a.original_logits.double() - ablated).mean(0)
        assert losses[k] == pytest.approx(F_nn.cross_entropy(ablated, labels).item(), rel=1e-6)
    # a frequency with no cluster changes nothing
    unchanged = F_nn.cross_entropy(a.original_logits.double(), labels).item()
    assert losses[50] == pytest.approx(unchanged, rel=1e-9)


def test_neuron_surgery_losses_keys_and_consistency(fourier_model):
    out = A.neuron_surgery_losses(fourier_model)
    assert out["key_freqs"] == [14, 35, 41]
    assert set(out) == {
        "key_freqs",
        "original",
        "restricted",
        "projected_neurons",
        "projected_neurons_without_unclustered",
        "cluster_ablation",
    }
    assert set(out["cluster_ablation"]) == {14, 35, 41}
    assert all(math.isfinite(v) for v in [out["original"], out["restricted"], out["projected_neurons"]])
    # the hand-built model's dead neurons are the unclustered ones: dropping them changes nothing
    assert out["projected_neurons"] == pytest.approx(out["projected_neurons_without_unclustered"], rel=1e-6)


# ------------------------------------------------------------------------------------------------ toy fit


def test_relu_quadratic_fit_reproduces_the_course_numbers():
    fit = A.relu_quadratic_fit(42, 113)
    assert [round(c, 3) for c in fit.coefficients.tolist()] == [9.190, 6.807, 6.807, 3.566]
    assert round(fit.r2, 3) == 0.966
    assert round(fit.r2_without_quadratic, 3) == 0.849
    with pytest.raises(ValueError):
        A.relu_quadratic_fit(57, 113)


# ------------------------------------------------------------------------------------------------ progress measures


def test_excl_loss_equals_explicit_recomputation(model):
    keys = [14, 35, 56]
    original = A.get_original_logits(model).double()
    labels = make_labels(make_all_data(P), P)
    train, _ = train_test_split(P, 0.3, 0)
    expected = []
    for k in keys:
        logits = original.clone()
        for kind in ("cos", "sin"):
            d = trig_direction(P, k, kind)
            logits -= d[:, None] * (d @ original)[None, :]
        expected.append(F_nn.cross_entropy(logits[train], labels[train]).item())
    got = A.excl_loss(model, keys)
    assert isinstance(got, list) and all(isinstance(v, float) for v in got)
    assert got == pytest.approx(expected, rel=1e-5)
    assert A.excl_loss_from_logits(original.float(), keys, train, labels) == pytest.approx(got, rel=1e-6)
    # overrides: another split, given by frac_train / seed (the same code path as train_indices=...)
    other, _ = train_test_split(P, 0.5, 3)
    got_other = A.excl_loss(model, keys, frac_train=0.5, seed=3)
    assert got_other == pytest.approx(A.excl_loss_from_logits(original.float(), keys, other, labels), rel=1e-6)
    assert got_other != pytest.approx(got, rel=1e-6)
    assert solutions.excl_loss is A.excl_loss


def test_excl_loss_of_a_fourier_model_rises_for_key_frequencies_only(fourier_model):
    logits = A.get_original_logits(fourier_model)
    labels = make_labels(make_all_data(P), P)
    train, _ = train_test_split(P, 0.3, 0)
    base = F_nn.cross_entropy(logits[train].double(), labels[train]).item()
    excl = A.excl_loss_from_logits(logits, [14, 35, 41, 20], train, labels)
    assert min(excl[:3]) > base + 2  # removing a frequency the model uses hurts
    assert excl[3] == pytest.approx(base, rel=1e-2)  # removing an unused one barely matters


def test_fourier_embed_on_known_basis_rows():
    m = make_model(P, seed=0)
    Fb = fourier_basis(P)
    C = torch.zeros(P, 128)
    C[0, 0], C[2 * 14 - 1, 3], C[2 * 14, 4], C[P - 1, 5] = 2.0, 3.0, 1.0, 0.5  # const, cos 14, sin 14, sin 56
    with torch.no_grad():
        m.W_E[:-1] = Fb.T @ C  # so that F @ W_E[:-1] = C
        m.W_E[-1] = 100.0  # the = row must be ignored
    got = A.fourier_embed(m)
    expected = torch.zeros(P)
    expected[0], expected[27], expected[28], expected[P - 1] = 4.0, 9.0, 1.0, 0.25
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(per_frequency(got)[[13, 55]], torch.tensor([10.0, 0.25]), atol=1e-5, rtol=1e-5)


def test_embed_SVD(model):
    got = A.embed_SVD(model)
    assert got.shape == (P,)
    torch.testing.assert_close(got, torch.linalg.svdvals(model.W_E.detach()[:-1]))
    assert torch.all(got[:-1] >= got[1:])
    m = make_model(P, seed=1)
    with torch.no_grad():
        m.W_E[-1] = 1000.0  # the = row is dropped
    torch.testing.assert_close(A.embed_SVD(m), torch.linalg.svdvals(make_model(P, seed=1).W_E.detach()[:-1]))
