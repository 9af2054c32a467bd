"""Calibrate and validate a LUT against end-to-end measurements of whole networks.

N random members (plus S0/S1/S2/L) are exported whole and measured on the same backend,
interleaved so machine noise is shared. ``measured ~ a * sum(blocks) + b`` is fitted on a random
half of the members and stored in the LUT; the other half reports MAPE, the share within +-5% and
+-10%, Kendall tau and Spearman rho, and a predicted-vs-measured scatter PNG is written.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from latency_lut.backends import Backend
from latency_lut.lut import LatencyLUT
from latency_lut.timing import Protocol, Stats, measure_samplers
from supernet.arch import PRESETS, ArchConfig
from supernet.io_utils import atomic_write_text
from supernet.model import build_model
from supernet.space import SearchSpace


def kendall_tau(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b of two samples (scipy; ties handled), NaN for fewer than two points."""
    from scipy.stats import kendalltau

    return float(kendalltau(x, y).statistic) if len(x) >= 2 else float("nan")


def spearman_rho(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (scipy; tied values share their mean rank)."""
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic) if len(x) >= 2 else float("nan")


def accuracy_metrics(pred: np.ndarray, meas: np.ndarray) -> dict[str, float]:
    rel = (pred - meas) / meas
    return {
        "mape_pct": float(100 * np.mean(np.abs(rel))),
        "within_5pct": float(np.mean(np.abs(rel) <= 0.05)),
        "within_10pct": float(np.mean(np.abs(rel) <= 0.10)),
        "kendall_tau": kendall_tau(pred, meas),
        "spearman_rho": spearman_rho(pred, meas),
        "n": int(len(meas)),
    }


def measure_networks(archs: dict[str, ArchConfig], backend: Backend, protocol: Protocol, batch: int = 1,
                     seed: int = 0, progress: bool = True) -> dict[str, Stats]:
    """End-to-end latency of whole networks (random weights), measured interleaved on ``backend``."""
    prepared = {}
    for name, arch in tqdm(archs.items(), desc="export networks", unit="net", disable=not progress):
        prepared[name] = backend.prepare(build_model(arch).eval(), (batch, 3, arch.image_size, arch.image_size), protocol)
    warmups = {k: (lambda p=p: p.warmup()) for k, p in prepared.items()}
    rounds = Protocol(protocol.warmup, backend.samples_per_measurement(protocol), protocol.number)
    try:
        return measure_samplers({k: p.sample for k, p in prepared.items()}, warmups, rounds, seed)
    finally:
        for p in prepared.values():
            p.close()


def validate_lut(
    lut_path: str | Path,
    space: SearchSpace,
    backend: Backend,
    members: int = 40,
    seed: int = 0,
    protocol: Protocol = Protocol(warmup=3, repeats=15),
    fit_fraction: float = 0.5,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure, fit and report; stores the calibration in the LUT file. Returns the report."""
    lut = LatencyLUT.load(lut_path, space=space)
    ctx, batch = lut.context, int(lut.meta["batch_size"])
    rng = random.Random(seed)
    archs = {f"m{i:03d}": space.sample(rng, **ctx).replace(name=f"m{i:03d}") for i in range(members)}
    archs.update({p: ArchConfig.preset(p).replace(**ctx) for p in PRESETS if space.contains(ArchConfig.preset(p))})
    stats = measure_networks(archs, backend, protocol, batch, seed, progress)
    sums = {k: lut.block_sum(a) for k, a in archs.items()}
    names = [k for k in archs if k.startswith("m")]
    order = names[:]
    random.Random(seed + 1).shuffle(order)
    n_fit = max(2, int(round(len(order) * fit_fraction)))
    fit, held = order[:n_fit], order[n_fit:]
    xs = np.array([sums[k] for k in fit])
    stat = lut.statistic
    ys = np.array([stats[k].value(stat) for k in fit])
    a, b = np.polyfit(xs, ys, 1)
    xh = np.array([sums[k] for k in held])
    yh = np.array([stats[k].value(stat) for k in held])
    report: dict[str, Any] = {
        "lut": str(lut_path), "members": members, "fit": len(fit), "held_out": len(held),
        "calibration": {"a": float(a), "b": float(b)},
        "held_out_calibrated": accuracy_metrics(a * xh + b, yh),
        "held_out_uncalibrated_sum": accuracy_metrics(xh, yh),
        "protocol": protocol.__dict__, "statistic": stat,
        "presets": {
            p: {"lut_ms": float(a * sums[p] + b), "block_sum_ms": sums[p], "measured_ms": stats[p].value(stat),
                "measured_median_ms": stats[p].median_ms,
                "error_pct": float(100 * (a * sums[p] + b - stats[p].value(stat)) / stats[p].value(stat))}
            for p in archs if not p.startswith("m")
        },
        "points": [{"name": k, "arch": archs[k].summary(), "block_sum_ms": sums[k], "measured_ms": stats[k].value(stat),
                    "measured_median_ms": stats[k].median_ms, "iqr_ms": stats[k].iqr_ms,
                    "split": "fit" if k in fit else "held_out"} for k in names],
    }
    lut.set_calibration(a=float(a), b=float(b), fitted_on=len(fit),
                        held_out=report["held_out_calibrated"], date=lut.meta["created"])
    lut.save(lut_path, csv=True)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "lut_validation.json", json.dumps(report, indent=2) + "\n")
        scatter_png(report, out / "lut_validation.png")
    return report


def scatter_png(report: dict[str, Any], path: Path) -> Path:
    """Predicted vs measured latency: fit and held-out members, presets, +-10% band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a, b = report["calibration"]["a"], report["calibration"]["b"]
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for split, marker in (("fit", "o"), ("held_out", "s")):
        pts = [p for p in report["points"] if p["split"] == split]
        ax.scatter([p["measured_ms"] for p in pts], [a * p["block_sum_ms"] + b for p in pts], marker=marker,
                   alpha=0.7, label=f"{split.replace('_', '-')} ({len(pts)})")
    for name, p in report["presets"].items():
        ax.scatter([p["measured_ms"]], [p["lut_ms"]], marker="*", s=160, color="black")
        ax.annotate(name.upper(), (p["measured_ms"], p["lut_ms"]), textcoords="offset points", xytext=(6, -4))
    values = [p["measured_ms"] for p in report["points"]] + [a * p["block_sum_ms"] + b for p in report["points"]]
    values += [v for p in report["presets"].values() for v in (p["measured_ms"], p["lut_ms"])]
    hi = max(values) * 1.05
    xs = np.linspace(0, hi, 50)
    ax.plot(xs, xs, "k-", lw=0.8)
    ax.fill_between(xs, 0.9 * xs, 1.1 * xs, color="grey", alpha=0.15, label="+-10%")
    m = report["held_out_calibrated"]
    ax.set(xlim=(0, hi), ylim=(0, hi), xlabel="measured latency (ms)", ylabel="LUT prediction (ms)",
           title=f"held-out: {100 * m['within_10pct']:.0f}% within +-10%, tau={m['kendall_tau']:.3f}")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
