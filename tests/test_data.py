"""The data set and the paper's split."""

import random
import re

import pytest
import torch

from part52_grokking_and_modular_arithmetic.runs import data


def test_all_data_is_row_major_with_equals_token():
    p = 7
    all_data = data.make_all_data(p)
    assert all_data.shape == (p * p, 3)
    x, y = 3, 5
    assert all_data[x * p + y].tolist() == [x, y, p]


def test_split_matches_paper_recipe_counts_for_seed_0():
    train, test = data.train_test_split(113, 0.3, 0)
    assert (len(train), len(test)) == (3830, 8939)
    assert len(set(train.tolist()) | set(test.tolist())) == 113 * 113


def test_split_reproduces_the_released_code_with_global_random():
    p, frac, seed = 113, 0.3, 0
    pairs = [(i, j, p) for i in range(p) for j in range(p)]
    random.seed(seed)
    random.shuffle(pairs)
    div = int(frac * len(pairs))
    expected = [i * p + j for i, j, _ in pairs[:div]]
    train, _ = data.train_test_split(p, frac, seed)
    assert train.tolist() == expected


def test_split_depends_on_seed_and_masks_agree():
    a, _ = data.train_test_split(23, 0.5, 0)
    b, _ = data.train_test_split(23, 0.5, 1)
    assert set(a.tolist()) != set(b.tolist())
    is_train, is_test = data.train_test_masks(23, 0.5, 0)
    assert is_train.sum() == len(a) and not (is_train & is_test).any()
    assert set(is_train.nonzero().flatten().tolist()) == set(a.tolist())
    with pytest.raises(ValueError, match="frac_train"):
        data.train_test_split(23, 1.5, 0)


@pytest.mark.parametrize(
    "fn, formula",
    [
        ("add", lambda x, y, p: (x + y) % p),
        ("subtract", lambda x, y, p: (x - y) % p),
        ("x2xyy2", lambda x, y, p: (x * x + x * y + y * y) % p),
    ],
)
def test_labels_follow_the_task(fn, formula):
    p = 11
    all_data = data.make_all_data(p)
    labels = data.make_labels(all_data, p, fn)
    for x, y, _ in all_data.tolist()[::7]:
        assert labels[x * p + y].item() == formula(x, y, p)


def test_random_task_is_a_fixed_table():
    p = 11
    all_data = data.make_all_data(p)
    a = data.make_labels(all_data, p, "rand", seed=3)
    b = data.make_labels(all_data, p, "rand", seed=3)
    assert torch.equal(a, b) and a.min() >= 0 and a.max() < p
    assert not torch.equal(a, data.make_labels(all_data, p, "rand", seed=4))
    with pytest.raises(ValueError, match="unknown task"):
        data.task_function("mul", p)


def test_make_split_is_the_split_and_labels_of_a_recipe():
    from part52_grokking_and_modular_arithmetic.runs.config import TrainConfig

    s = data.make_split(23, 0.5, 2, "subtract")
    train, test = data.train_test_split(23, 0.5, 2)
    assert torch.equal(s.train_indices, train) and torch.equal(s.test_indices, test)
    assert torch.equal(s.all_data, data.make_all_data(23))
    assert torch.equal(s.labels, data.make_labels(s.all_data, 23, "subtract", 2))
    assert torch.equal(s.is_train, data.train_test_masks(23, 0.5, 2)[0]) and torch.equal(s.is_test, ~s.is_train)
    cfg = TrainConfig(p=23, fn="rand", frac_train=0.5, seed=2)
    from_cfg = data.Split.from_config(cfg)
    assert torch.equal(from_cfg.labels, data.make_labels(s.all_data, 23, "rand", 2))  # the seed draws the table
    assert not torch.equal(from_cfg.labels, data.make_labels(s.all_data, 23, "rand", 0))


# ------------------------------------------------------------------------------------- the recipe (config.py)
def test_one_prime_check_names_a_factor():
    from part52_grokking_and_modular_arithmetic.runs.config import check_field, check_odd_prime, is_prime

    primes = [p for p in range(200) if all(p % d for d in range(2, p))][3:]  # the odd primes below 200
    assert [n for n in range(200) if is_prime(n) and n > 2] == primes
    assert is_prime(2**61 - 1) and not is_prime((2**31 - 1) * (2**61 - 1))
    assert check_odd_prime(113) == 113
    for bad, words in [
        (9, "9 = 3 × 3"),
        (2, "too small"),
        (10, "is even (10 = 2 × 5)"),
        (1_000_003 * 1_000_033, "above 10^6"),
    ]:
        with pytest.raises(ValueError, match=re.escape(words)):
            check_odd_prime(bad)
    with pytest.raises(ValueError, match="integer"):
        check_field("p", 113.0)


def test_recipe_defaults_and_the_same_run_comparison():
    from part52_grokking_and_modular_arithmetic.runs.config import RECIPE_FIELDS, TrainConfig, config_differences

    cfg = TrainConfig()
    assert TrainConfig.eps == 1e-8 and "eps" not in cfg.to_dict()  # fixed: part of the recipe, not stored
    assert [cfg.warmup_factor(s) for s in (0, 5, 10, 50)] == [0.0, 0.5, 1.0, 1.0]
    assert TrainConfig(warmup_steps=0).warmup_factor(0) == 1.0
    longer, other = TrainConfig(epochs=20_000, save_every=50), TrainConfig(seed=5)
    assert config_differences(cfg, longer) == ["save_every: file 100, requested 50"]  # epochs may grow
    assert config_differences(cfg, longer, RECIPE_FIELDS) == []
    assert config_differences(cfg, other, RECIPE_FIELDS, "sweep") == ["seed: file 0, sweep 5"]
    assert TrainConfig.from_dict(dict(cfg.to_dict(), unknown=1)) == cfg
    with pytest.raises(ValueError, match="invalid stored config: lr must be"):
        TrainConfig.from_dict(dict(cfg.to_dict(), lr="fast"))
