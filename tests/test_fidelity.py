"""The proxy-fidelity statistics: taus with intervals, the split-half ceiling, the spread test; the space's count."""
from __future__ import annotations

import random

import pytest

from search.fidelity import fidelity, seed_halves, split_half, spread_vs_noise, tau_with_interval
from supernet.space import SearchSpace


def test_tau_interval_brackets_the_estimate_and_narrows_with_members():
    rng = random.Random(0)
    truth = [rng.gauss(0, 1) for _ in range(60)]
    proxy = [t + rng.gauss(0, 0.7) for t in truth]
    wide = tau_with_interval(proxy[:12], truth[:12], 500, 0)
    narrow = tau_with_interval(proxy, truth, 500, 0)
    for t in (wide, narrow):
        assert -1 <= t["low"] <= t["tau"] <= t["high"] <= 1
    assert narrow["high"] - narrow["low"] < wide["high"] - wide["low"]
    assert tau_with_interval(truth, truth, 200, 0) == pytest.approx({"tau": 1.0, "low": 1.0, "high": 1.0})


def test_split_half_ceiling_follows_the_seed_noise():
    rng = random.Random(1)
    true = [i * 0.5 for i in range(20)]
    quiet = [[t + rng.gauss(0, 0.05) for _ in range(2)] for t in true]
    noisy = [[t + rng.gauss(0, 20) for _ in range(2)] for t in true]
    assert split_half(quiet, 300, 0)["tau"] > 0.95
    assert split_half(noisy, 300, 0)["tau"] < 0.5
    assert seed_halves([0, 1, 2]) == ([0, 2], [1])
    with pytest.raises(ValueError):
        seed_halves([0])


def test_spread_test_tells_a_ranking_from_noise():
    rng = random.Random(2)
    ranked = [[i + rng.gauss(0, 0.1) for _ in range(3)] for i in range(20)]
    flat = [[80 + rng.gauss(0, 0.5) for _ in range(3)] for _ in range(20)]
    assert spread_vs_noise(ranked)["anova_p"] < 1e-6
    sp = spread_vs_noise(flat)
    assert sp["anova_p"] > 0.01 and sp["between_sd"] < 3 * sp["noise_sd_of_mean"]


def test_fidelity_signs_and_ratio():
    rng = random.Random(3)
    true = [rng.uniform(75, 82) for _ in range(20)]
    top1 = [[t + rng.gauss(0, 0.2) for _ in range(2)] for t in true]
    loss = [[1 - t / 100 + rng.gauss(0, 0.002) for _ in range(2)] for t in true]
    proxy_loss = [1 - t / 100 for t in true]  # a perfect proxy: lower loss, higher standalone top-1
    out = fidelity(proxy_loss, true, top1, loss, resamples=300)
    assert out["loss_vs_top1"]["tau"] > 0.8 and out["loss_vs_loss"]["tau"] > 0.8
    assert out["loss_vs_top1"]["ratio_to_ceiling"] == pytest.approx(out["loss_vs_top1"]["tau"] / out["ceiling"]["top1"]["tau"])


def test_num_members_counts_the_space_exactly():
    space = SearchSpace.from_dict({"name": "t", "expansions": [2, 3], "stages": [
        {"widths": [8, 16], "ffn_blocks": [1], "attn_blocks": [0]},
        {"widths": [16], "ffn_blocks": [1, 2], "attn_blocks": [0]},
        {"widths": [24], "ffn_blocks": [0, 1], "attn_blocks": [1], "max_depth": 2},
        {"widths": [32], "ffn_blocks": [0, 1], "attn_blocks": [0, 1], "max_depth": 2}]})
    rng = random.Random(0)
    seen = {space.sample(rng).summary() for _ in range(20000)}
    assert len(seen) == space.num_members() == 2 * 2 * (2 + 4) * (2 + 4) * (2 + 2 + 4)
    assert SearchSpace.load("tiny").num_members() == 9216


def test_seeds_needed_follows_spearman_brown():
    import math

    from search.fidelity import seeds_needed

    # true member sd 0.2, seed sd 0.5, measured with 2 seeds: between_sd**2 = 0.04 + 0.25 / 2
    between = math.sqrt(0.04 + 0.25 / 2)
    assert seeds_needed(between, 0.5, 2, 0.8) == pytest.approx(4 * 0.25 / 0.04)
    assert seeds_needed(between, 0.5, 2, 0.5) == pytest.approx(0.25 / 0.04)
    assert math.isinf(seeds_needed(0.3, 0.5, 2))  # all of the spread is noise
