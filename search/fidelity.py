"""How well a proxy ranks members, against the ceiling its target allows (the statistics of validate-proxy).

The target is standalone training, repeated over seeds. Its agreement with itself bounds what any proxy can
show: the **split-half ceiling** is Kendall's tau between the seed-means of one half of the seeds and of the
other half, over the same members. Every tau comes with a paired bootstrap 90 % interval over members
(``scipy.stats.bootstrap``). Whether there is a ranking to recover at all is the **spread test**: the spread of
the members' seed-means against the seed-to-seed noise, with a one-way ANOVA over the members' seed groups.
"""
from __future__ import annotations

import math
import statistics
import warnings
from typing import Any, Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.9


def kendall(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of two equally long score lists (nan where one of them is constant)."""
    return float(stats.kendalltau(x, y).statistic)


def tau_with_interval(x: Sequence[float], y: Sequence[float], resamples: int, seed: int) -> dict[str, float]:
    """Kendall's tau-b and its paired bootstrap interval (percentile, ``CONFIDENCE``) over the members."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    tau = kendall(x, y)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a resample with one score repeated throughout has no tau (nan)
        res = stats.bootstrap((x, y), lambda a, b: stats.kendalltau(a, b).statistic, paired=True, vectorized=False,
                              n_resamples=resamples, confidence_level=CONFIDENCE, method="percentile",
                              random_state=np.random.default_rng(seed))
    dist = np.asarray(res.bootstrap_distribution, dtype=float)
    tail = 100 * (1 - CONFIDENCE) / 2
    lo, hi = (float(v) for v in np.nanpercentile(dist, [tail, 100 - tail])) if np.isfinite(dist).any() else (tau, tau)
    return {"tau": tau, "low": lo, "high": hi}


def seed_halves(seeds: Sequence[int]) -> tuple[list[int], list[int]]:
    """The two halves of the seeds for the split-half ceiling: alternate seeds (0, 2, ... and 1, 3, ...)."""
    seeds = list(seeds)
    if len(seeds) < 2:
        raise ValueError("the split-half ceiling needs at least 2 seeds")
    return seeds[0::2], seeds[1::2]


def seed_means(values: Sequence[Sequence[float]]) -> list[float]:
    """Per member, the mean over its seeds (``values[member][seed]``)."""
    return [statistics.fmean(v) for v in values]


def split_half(values: Sequence[Sequence[float]], resamples: int, seed: int) -> dict[str, float]:
    """The target's agreement with itself: tau between the two seed halves' means, with its interval."""
    first, second = seed_halves(range(len(values[0])))
    a = [statistics.fmean(v[i] for i in first) for v in values]
    b = [statistics.fmean(v[i] for i in second) for v in values]
    return tau_with_interval(a, b, resamples, seed)


def spread_vs_noise(values: Sequence[Sequence[float]]) -> dict[str, float]:
    """Is there an ordering to recover? The members' spread of seed-means against the seed noise.

    ``between_sd``: standard deviation of the seed-means over members; ``seed_sd``: pooled within-member standard
    deviation of one run; ``noise_sd_of_mean``: what ``between_sd`` would be from seed noise alone
    (``seed_sd / sqrt(seeds)``); ``anova_f`` / ``anova_p``: one-way ANOVA of the members' seed groups."""
    k = len(values[0])
    means = seed_means(values)
    seed_sd = math.sqrt(statistics.fmean(statistics.variance(v) for v in values))
    f, p = stats.f_oneway(*[list(v) for v in values])
    between = statistics.stdev(means)
    return {"between_sd": between, "seed_sd": seed_sd, "noise_sd_of_mean": seed_sd / math.sqrt(k),
            "range": max(means) - min(means), "anova_f": float(f), "anova_p": float(p),
            "seeds_for_0.8": seeds_needed(between, seed_sd, k, 0.8)}


def seeds_needed(between_sd: float, seed_sd: float, seeds: int, reliability: float = 0.8) -> float:
    """Seeds per member for the seed-means' ordering to reach ``reliability`` (Spearman-Brown).

    The members' true spread is what the seed-means spread beyond their noise: ``between_sd**2 - seed_sd**2 /
    seeds``; a mean of k seeds has reliability ``var_true / (var_true + seed_sd**2 / k)``. Infinite where the
    measured spread is all noise (no number of seeds recovers an ordering that is not there)."""
    true_var = between_sd ** 2 - seed_sd ** 2 / seeds
    if true_var <= 0:
        return math.inf
    return reliability / (1 - reliability) * seed_sd ** 2 / true_var


def fidelity(proxy_loss: Sequence[float], proxy_top1: Sequence[float], top1: Sequence[Sequence[float]],
             loss: Sequence[Sequence[float]], resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Every agreement figure of one validation: the proxy (val loss, top-1) against the standalone seed-means
    (top-1, val loss), each with its interval, the split-half ceilings, the ratios to them, and the spread test.

    Signs are arranged so that agreement is positive: a lower proxy loss should mean a higher standalone top-1
    and a lower standalone loss."""
    mean_top1, mean_loss = seed_means(top1), seed_means(loss)
    neg_loss = [-v for v in proxy_loss]
    ceiling = {"top1": split_half(top1, resamples, seed), "loss": split_half(loss, resamples, seed)}
    pairs = {
        "loss_vs_top1": (neg_loss, mean_top1, "top1"),
        "loss_vs_loss": (list(proxy_loss), mean_loss, "loss"),
        "top1_vs_top1": (list(proxy_top1), mean_top1, "top1"),
    }
    out: dict[str, Any] = {"ceiling": ceiling, "spread_top1": spread_vs_noise(top1), "spread_loss": spread_vs_noise(loss)}
    for name, (x, y, target) in pairs.items():
        t = tau_with_interval(x, y, resamples, seed)
        cap = ceiling[target]["tau"]
        t["ratio_to_ceiling"] = t["tau"] / cap if cap > 0 else float("nan")
        out[name] = t
    return out
