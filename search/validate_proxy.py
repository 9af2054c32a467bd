"""``eformer-search validate-proxy``: does the supernet rank members the way standalone training does?

The accuracy twin of ``eformer-lut validate``. It samples ``members`` architectures stratified
over LUT latency (a pool of random members sorted by latency, one drawn from each of ``members``
equal-count bins), scores each with the supernet proxy (whole val split, after BN recalibration),
trains each alone from scratch with the supernet's own recipe and step budget
(:mod:`search.standalone`), and reports Kendall's tau and Spearman's rho between the proxy scores
and the standalone accuracies, with a scatter plot:

    eformer-search validate-proxy                                # 10 members, defaults of conf/eformer_validate_proxy.yaml
    eformer-search validate-proxy members=6 supernet=runs/train/x run_dir=runs/validate-proxy/x

Each standalone run is its own eformer-train run directory: a killed validation resumes where it
stopped, and a finished one is read back. Outputs in ``run_dir``: proxy_validation.{json,csv,md,png}.
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from conf.schemas import ValidateProxyApp, check_config, register_schemas
from latency_lut.lut import LatencyLUT, warn_if_foreign
from search.params import arch_hash
from search.proxy import SupernetProxy
from search.standalone import train_standalone
from supernet.arch import ArchConfig
from supernet.compute import resolve_device
from supernet.data import build_data
from supernet.elastic import Supernet
from supernet.errors import UserError, report_user_errors
from supernet.io_utils import atomic_write, atomic_write_text, make_dir
from supernet.signatures import count_params

register_schemas()


def stratified_members(supernet: Supernet, lut: LatencyLUT, n: int, pool: int, seed: int) -> list[ArchConfig]:
    """``n`` random members spread over LUT latency: a pool sorted by latency, one per equal-count bin."""
    if n < 3:
        raise UserError(f"members: {n} is too few for a rank correlation (at least 3)")
    if pool < n:
        raise UserError(f"pool: {pool} must be at least members ({n})")
    rng = random.Random(seed)
    seen, cands = set(), []
    for _ in range(pool * 5):
        a = supernet.space.sample(rng, **supernet.context)
        h = arch_hash(a)
        if h not in seen:
            seen.add(h)
            cands.append((lut.predict(lut.in_context(a)), a))
        if len(cands) >= pool:
            break
    cands.sort(key=lambda t: t[0])
    bins = [cands[i * len(cands) // n : (i + 1) * len(cands) // n] for i in range(n)]
    return [rng.choice(b)[1] for b in bins if b]


def rank_agreement(proxy: list[float], truth: list[float]) -> dict[str, float]:
    """Kendall's tau-b and Spearman's rho (scipy) between two score lists."""
    from scipy.stats import kendalltau, spearmanr

    tau = kendalltau(proxy, truth)
    rho = spearmanr(proxy, truth)
    return {"kendall_tau": float(tau.statistic), "kendall_p": float(tau.pvalue),
            "spearman": float(rho.statistic), "spearman_p": float(rho.pvalue)}


def _plot(rows: list[dict[str, Any]], stats: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    sa = [r["standalone_top1"] for r in rows]
    for ax, key, label in ((axes[0], "proxy_top1", "supernet proxy top-1 (%)"), (axes[1], "proxy_loss", "supernet proxy val loss")):
        xs = [r[key] for r in rows]
        err = [r[key + "_std"] for r in rows]
        ax.errorbar(xs, sa, xerr=err, fmt="o", ms=5, capsize=2)
        for r, x, y in zip(rows, xs, sa):
            ax.annotate(f"{r['latency_ms']:.0f}ms", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
        ax.set_xlabel(label)
        ax.set_ylabel("standalone top-1 (%)")
        s = stats["by_" + key.split("_")[1]]
        ax.set_title(f"Kendall tau {s['kendall_tau']:.2f}, Spearman {s['spearman']:.2f}")
        ax.grid(alpha=0.3)
    fig.suptitle(f"proxy validation: {len(rows)} members stratified over LUT latency")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def run_validate_proxy(cfg: DictConfig) -> dict[str, Any]:
    """Score, train and compare; write the report files under ``cfg.run_dir``; return the summary."""
    check_config(cfg, app=ValidateProxyApp)
    device = resolve_device(cfg.compute_device)  # before any work: a missing GPU is a one-line error
    started = time.time()
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    supernet = Supernet.load(cfg.supernet)
    lut = LatencyLUT.load(cfg.lut_file, supernet.space)
    warn_if_foreign(lut, cfg.lut_file, "eformer-search validate-proxy")
    train_config = dict(supernet.train_config or {})
    data_cfg = {k[len("data."):]: v for k, v in train_config.items() if k.startswith("data.")}
    if not data_cfg:
        raise UserError(f"{supernet.source_path}: records no training data (train it with eformer-train)")
    members = stratified_members(supernet, lut, int(cfg.members), int(cfg.pool), int(cfg.seed))
    run_dir = Path(cfg.run_dir)
    make_dir(run_dir, "run_dir")
    proxy = SupernetProxy.from_data(supernet, build_data(data_cfg), device=device)
    rows: list[dict[str, Any]] = []
    bar = tqdm(members, desc="validate-proxy (standalone training)", unit="member", disable=not cfg.progress,
               dynamic_ncols=True)
    for i, arch in enumerate(bar):
        score = proxy(arch)
        h = arch_hash(supernet.member(arch))
        sa = train_standalone(train_config, supernet.member(arch), run_dir / "members" / f"{i:02d}-{h[:10]}",
                              seed=int(cfg.standalone_seed), threads=cfg.get("threads"), compute_device=str(cfg.compute_device))
        deployed = lut.in_context(arch)
        rows.append({"member": i, "summary": arch.summary(), "arch_hash": h, "latency_ms": lut.predict(deployed),
                     "params": count_params(deployed), "proxy_top1": score["top1"], "proxy_top1_std": score["top1_std"],
                     "proxy_loss": score["loss"], "proxy_loss_std": score["loss_std"],
                     "standalone_top1": sa["top1"], "standalone_loss": sa["loss"], "steps": sa["steps"]})
        bar.set_postfix(proxy=f"{score['top1']:.1f}", standalone=f"{sa['top1']:.1f}")
    truth = [r["standalone_top1"] for r in rows]
    stats = {"by_top1": rank_agreement([r["proxy_top1"] for r in rows], truth),
             "by_loss": rank_agreement([-r["proxy_loss"] for r in rows], truth)}
    summary = {"members": len(rows), "supernet": str(supernet.source_path), "lut": str(cfg.lut_file),
               "steps_per_member": rows[0]["steps"] if rows else None, "seed": int(cfg.seed),
               "stats": stats, "rows": rows, "seconds": round(time.time() - started, 1)}
    import pandas as pd

    atomic_write_text(run_dir / "proxy_validation.json", json.dumps(summary, indent=1) + "\n")
    atomic_write_text(run_dir / "proxy_validation.csv", pd.DataFrame(rows).to_csv(index=False))
    atomic_write_text(run_dir / "proxy_validation.md", format_report(summary))
    _plot(rows, stats, run_dir / "proxy_validation.png")
    t, lo = stats["by_top1"], stats["by_loss"]
    print(f"eformer-search validate-proxy: {len(rows)} members; supernet top-1 vs standalone top-1: Kendall tau "
          f"{t['kendall_tau']:.3f}, Spearman {t['spearman']:.3f}; supernet val loss: Kendall tau {lo['kendall_tau']:.3f}, "
          f"Spearman {lo['spearman']:.3f}; report in {run_dir}")
    return summary


def format_report(summary: dict[str, Any]) -> str:
    """The markdown report: agreement figures, then one row per member."""
    t, lo = summary["stats"]["by_top1"], summary["stats"]["by_loss"]
    lines = [
        f"# Proxy validation: {summary['members']} members, stratified over LUT latency",
        "",
        f"Supernet `{summary['supernet']}`; each member also trained alone from scratch with the supernet's recipe "
        f"({summary['steps_per_member']} steps).",
        "",
        "| supernet score | Kendall tau | Spearman |",
        "|---|---|---|",
        f"| top-1 | {t['kendall_tau']:.3f} | {t['spearman']:.3f} |",
        f"| val loss (negated) | {lo['kendall_tau']:.3f} | {lo['spearman']:.3f} |",
        "",
        "| # | member | LUT (ms) | params (M) | proxy top-1 (%) | proxy val loss | standalone top-1 (%) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(summary["rows"], key=lambda r: r["latency_ms"]):
        lines.append(f"| {r['member']} | `{r['summary']}` | {r['latency_ms']:.2f} | {r['params'] / 1e6:.2f} | "
                     f"{r['proxy_top1']:.2f} ± {r['proxy_top1_std']:.2f} | {r['proxy_loss']:.4f} ± {r['proxy_loss_std']:.4f} | "
                     f"{r['standalone_top1']:.2f} |")
    return "\n".join(lines) + "\n"


@hydra.main(config_path="../conf", config_name="eformer_validate_proxy", version_base="1.3")
@report_user_errors("eformer-search validate-proxy")
def main(cfg: DictConfig) -> None:
    run_validate_proxy(cfg)
