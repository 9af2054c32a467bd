"""Calibrate and validate a LUT against end-to-end measurements of whole networks.

N random members (plus S0/S1/S2/L) are exported whole and measured on the same backend,
interleaved so machine noise is shared, in two independent passes. Calibrations
(:mod:`latency_lut.calibration`: global ``a * sum + b`` and per piece kind) are fitted on a random half
of the members and the better one by leave-one-out error is stored in the LUT; the other half reports
MAPE, the share within +-5% and +-10%, Kendall tau and Spearman rho for each model and for the second
pass against the first (the machine's own repeatability), and a scatter PNG is written.
"""
from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from latency_lut.backends import Backend, measure_prepared
from latency_lut.calibration import choose
from latency_lut.calibration import predict as predict_with
from latency_lut.export_pool import ExportPool
from latency_lut.lut import LatencyLUT
from latency_lut.timing import Protocol, Stats
from supernet.arch import PRESETS, ArchConfig
from supernet.io_utils import atomic_write_text
from supernet.model import build_model
from supernet.plotting import pyplot
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
                     seed: int = 0, progress: bool = True, passes: int = 1) -> list[dict[str, Stats]]:
    """End-to-end latency of whole networks (random weights) on ``backend``, in ``passes`` independent passes.

    Every network is exported once; each pass loads a fresh session of every export, warms them up and takes
    its samples interleaved in its own shuffled order (seed ``seed + 1000 * pass``). One pass per entry."""
    shapes = {name: (batch, 3, arch.image_size, arch.image_size) for name, arch in archs.items()}
    with tempfile.TemporaryDirectory(prefix="eformer-lut-nets-") as tmp, ExportPool(backend) as pool:
        files = pool.export({name: (build_model, arch, shapes[name]) for name, arch in archs.items()}, Path(tmp),
                            f"export networks ({pool.workers} workers)", progress)
        exported = {name: (files[name], shapes[name]) for name in archs}
        runs = []
        for k in range(passes):
            prepared = {}
            try:
                for name, (art, shape) in exported.items():
                    prepared[name] = backend.load(art, shape, protocol)
                runs.append(measure_prepared(prepared, backend, protocol, seed + 1000 * k))
            finally:
                for p in prepared.values():
                    p.close()
        return runs


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
    passes: int = 2,
) -> dict[str, Any]:
    """Measure, fit and report; stores the chosen calibration in the LUT file. Returns the report.

    Every network is measured in ``passes`` independent interleaved passes (own order, own warm-up). The LUT is
    fitted on and judged against pass 1; pass 2 against pass 1 is the measurement's own repeatability on the same
    held-out members: the ceiling no predictor can beat on this machine."""
    lut = LatencyLUT.load(lut_path, space=space)
    ctx, batch = lut.context, int(lut.meta["batch_size"])
    rng = random.Random(seed)
    archs = {f"m{i:03d}": space.sample(rng, **ctx).replace(name=f"m{i:03d}") for i in range(members)}
    archs.update({p: ArchConfig.preset(p).replace(**ctx) for p in PRESETS if space.contains(ArchConfig.preset(p))})
    runs = measure_networks(archs, backend, protocol, batch, seed, progress, passes)
    stats = runs[0]
    stat = lut.statistic
    sums = {k: lut.block_sum(a) for k, a in archs.items()}
    feats = {k: lut.features(a) for k, a in archs.items()}
    names = [k for k in archs if k.startswith("m")]
    order = names[:]
    random.Random(seed + 1).shuffle(order)
    n_fit = max(2, int(round(len(order) * fit_fraction)))
    fit, held = order[:n_fit], order[n_fit:]
    ys = np.array([stats[k].value(stat) for k in fit])
    chosen, candidates = choose([feats[k] for k in fit], ys)
    yh = np.array([stats[k].value(stat) for k in held])
    fh = [feats[k] for k in held]
    ablation = {name: accuracy_metrics(predict_with(cal, fh), yh) for name, cal in candidates.items()}
    repeatability = (accuracy_metrics(np.array([runs[1][k].value(stat) for k in held]), yh) if passes > 1 else None)

    def lut_ms(k: str) -> float:
        return float(predict_with(chosen, [feats[k]])[0])

    report: dict[str, Any] = {
        "lut": str(lut_path), "members": members, "fit": len(fit), "held_out": len(held), "passes": passes,
        "calibration": chosen, "candidates": candidates,
        "held_out_calibrated": ablation[chosen["model"]],
        "held_out_uncalibrated_sum": ablation["sum"],
        "held_out_by_model": ablation,
        "repeatability_pass2_vs_pass1": repeatability,
        "protocol": protocol.__dict__, "statistic": stat,
        "presets": {
            p: {"lut_ms": lut_ms(p), "block_sum_ms": sums[p], "measured_ms": stats[p].value(stat),
                "measured_median_ms": stats[p].median_ms,
                "error_pct": float(100 * (lut_ms(p) - stats[p].value(stat)) / stats[p].value(stat))}
            for p in archs if not p.startswith("m")
        },
        "points": [{"name": k, "arch": archs[k].summary(), "block_sum_ms": sums[k], "lut_ms": lut_ms(k),
                    "measured_ms": stats[k].value(stat), "measured_median_ms": stats[k].median_ms, "iqr_ms": stats[k].iqr_ms,
                    **({"pass2_ms": runs[1][k].value(stat)} if passes > 1 else {}),
                    "split": "fit" if k in fit else "held_out"} for k in names],
    }
    lut.set_calibration(**{k: v for k, v in chosen.items() if k in ("model", "a", "b", "weights")}, fitted_on=len(fit),
                        held_out=report["held_out_calibrated"], repeatability=repeatability, date=lut.meta["created"])
    lut.save(lut_path, csv=True)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "lut_validation.json", json.dumps(report, indent=2) + "\n")
        scatter_png(report, out / "lut_validation.png")
    return report


def scatter_png(report: dict[str, Any], path: Path) -> Path:
    """Predicted vs measured latency: fit and held-out members, presets, +-10% band."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for split, marker in (("fit", "o"), ("held_out", "s")):
        pts = [p for p in report["points"] if p["split"] == split]
        ax.scatter([p["measured_ms"] for p in pts], [p["lut_ms"] for p in pts], marker=marker,
                   alpha=0.7, label=f"{split.replace('_', '-')} ({len(pts)})")
    for name, p in report["presets"].items():
        ax.scatter([p["measured_ms"]], [p["lut_ms"]], marker="*", s=160, color="black")
        ax.annotate(name.upper(), (p["measured_ms"], p["lut_ms"]), textcoords="offset points", xytext=(6, -4))
    values = [p["measured_ms"] for p in report["points"]] + [p["lut_ms"] for p in report["points"]]
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
