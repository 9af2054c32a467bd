"""``eformer-lut check``: does this LUT still hold on this machine? A quick verdict in about a minute.

A handful of random members (plus S0-L where the space has them) are measured end to end in two
independent interleaved passes. The LUT's error against the first pass is reported next to the
measurement's own repeatability (pass 1 vs pass 2), so a user sees whether the LUT or the machine
is the limit, and the LUT is said to hold when it is within ``tolerance`` of the measurement for
at least ``required_share`` of the members (or no worse than the machine's own repeatability).
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np

from latency_lut.backends import Backend
from latency_lut.lut import LatencyLUT
from latency_lut.timing import Protocol, Stats
from latency_lut.validate import accuracy_metrics, measure_networks
from supernet.arch import ArchConfig
from supernet.space import SearchSpace


def two_passes(archs: dict[str, ArchConfig], backend: Backend, protocol: Protocol, batch: int = 1, seed: int = 0,
               progress: bool = False) -> tuple[dict[str, Stats], dict[str, Stats]]:
    """Two independent interleaved measurements of the same networks (fresh sessions, different orders)."""
    first, second = measure_networks(archs, backend, protocol, batch, seed, progress, passes=2)
    return first, second


def check_lut(lut: LatencyLUT, space: SearchSpace, backend: Backend, members: int = 6, seed: int = 0,
              protocol: Protocol = Protocol(warmup=2, repeats=9), tolerance: float = 0.10,
              required_share: float = 0.8, progress: bool = False) -> dict[str, Any]:
    """Measure, compare, and say whether ``lut`` holds here (see the module docstring)."""
    ctx, batch = lut.context, int(lut.meta["batch_size"])
    rng = random.Random(seed)
    archs = {f"m{i:02d}": space.sample(rng, **ctx).replace(name=f"m{i:02d}") for i in range(members)}
    first, second = two_passes(archs, backend, protocol, batch, seed, progress)
    stat = lut.statistic
    names = list(archs)
    pred = np.array([lut.predict(archs[k]) for k in names])
    m1 = np.array([first[k].value(stat) for k in names])
    m2 = np.array([second[k].value(stat) for k in names])
    lut_vs = accuracy_metrics(pred, m1)
    ceiling = accuracy_metrics(m2, m1)
    within = float(np.mean(np.abs(pred - m1) / m1 <= tolerance))
    holds = within >= required_share or lut_vs["mape_pct"] <= ceiling["mape_pct"] * 1.5
    return {"members": members, "lut_vs_measured": lut_vs, "repeatability": ceiling, "holds": bool(holds),
            "tolerance": tolerance, "required_share": required_share, "statistic": stat,
            "points": [{"arch": archs[k].summary(), "lut_ms": float(p), "pass1_ms": float(a), "pass2_ms": float(b)}
                       for k, p, a, b in zip(names, pred, m1, m2)]}


def format_check(path: str, rep: dict[str, Any]) -> str:
    """The lines ``eformer-lut check`` prints."""
    lv, rp = rep["lut_vs_measured"], rep["repeatability"]
    verdict = "holds on this machine" if rep["holds"] else "does NOT hold on this machine: rebuild it (eformer-lut build)"
    return "\n".join([
        f"eformer-lut check: {rep['members']} random members, two interleaved passes ({rep['statistic']})",
        f"  LUT vs measured:        MAPE {lv['mape_pct']:.2f}%, within 10% {100 * lv['within_10pct']:.0f}%, "
        f"Kendall tau {lv['kendall_tau']:.3f}",
        f"  pass 1 vs pass 2 (the machine's own repeatability): MAPE {rp['mape_pct']:.2f}%, within 10% "
        f"{100 * rp['within_10pct']:.0f}%, Kendall tau {rp['kendall_tau']:.3f}",
        f"eformer-lut check: {path} {verdict}",
    ])
