"""``eformer-search validate-proxy``: does the supernet rank members the way standalone training does?

The accuracy twin of ``eformer-lut validate``. It samples ``members`` architectures stratified
over LUT latency (a pool of random members sorted by latency, one drawn from each of ``members``
equal-count bins), scores each with the supernet proxy (whole val split, after BN recalibration),
trains each alone from scratch with the supernet's own recipe and step budget
(:mod:`search.standalone`), and reports Kendall's tau between the proxy scores and the standalone
accuracies, each with its bootstrap interval and its ratio to the ceiling, with a scatter plot:

    eformer-search validate-proxy                                # 20 members x 2 seeds, defaults of conf/eformer_validate_proxy.yaml
    eformer-search validate-proxy members=6 supernet=runs/train/x run_dir=runs/validate-proxy/x

Each member is trained with ``standalone_seeds`` seeds (at least 2): the seed-means are the target, and the
agreement of one half of the seeds with the other (split-half) is the ceiling any proxy can reach
(:mod:`search.fidelity`). Each standalone run is its own eformer-train run directory under ``standalone_dir``,
named by member, recipe and seed, so validations of supernets trained alike share them; a killed validation
resumes where it stopped, and finished runs are read back. Outputs in ``run_dir``:
proxy_validation.{json,csv,md,png}.
"""
from __future__ import annotations

import json
import math
import random
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig

from conf.schemas import ValidateProxyApp, check_config, register_schemas, typed
from supernet.arch import ArchConfig
from supernet.errors import UserError, report_user_errors
from supernet.io_utils import atomic_write, atomic_write_text, make_dir
from supernet.plotting import pyplot
from supernet.signatures import count_params

if TYPE_CHECKING:  # torch, optuna, scipy and pandas load in the functions that use them: option mistakes come first
    from latency_lut.lut import LatencyLUT
    from supernet.elastic import Supernet

register_schemas()


def stratified_members(supernet: Supernet, lut: LatencyLUT, n: int, pool: int, seed: int
                       ) -> tuple[list[ArchConfig], list[float]]:
    """``n`` distinct random members spread over LUT latency, and the latency edges of their bins: a pool of
    distinct members sorted by latency, cut into ``n`` equal-count (quantile) bins, one member drawn from each."""
    from search.params import arch_hash

    if n < 3:
        raise UserError(f"members: {n} is too few for a rank correlation (at least 3)")
    distinct = supernet.space.num_members()
    if n > distinct:
        raise UserError(f"members: {n} is more than the {distinct} distinct members space {supernet.space.name} holds")
    if pool < n:
        raise UserError(f"pool: {pool} must be at least members ({n})")
    rng = random.Random(seed)
    seen, cands = set(), []
    draws = 0
    while len(cands) < min(pool, distinct) and draws < 20 * pool:
        draws += 1
        a = supernet.space.sample(rng, **supernet.context)
        h = arch_hash(a)
        if h not in seen:
            seen.add(h)
            cands.append((lut.predict(lut.in_context(a)), h, a))
    if len(cands) < n:
        raise UserError(f"members: {n} is more than the {len(cands)} distinct members {draws} draws of space "
                        f"{supernet.space.name} gave; ask for fewer")
    cands.sort(key=lambda t: (t[0], t[1]))
    bins = [cands[i * len(cands) // n: (i + 1) * len(cands) // n] for i in range(n)]
    edges = [b[0][0] for b in bins] + [bins[-1][-1][0]]
    return [rng.choice(b)[2] for b in bins], edges


def _plot(rows: list[dict[str, Any]], stats: dict[str, Any], path: Path) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    sa = [r["standalone_top1"] for r in rows]
    sa_err = [(max(r["standalone_top1_seeds"]) - min(r["standalone_top1_seeds"])) / 2 for r in rows]
    for ax, key, label, fig_key in ((axes[0], "proxy_loss", "supernet proxy val loss", "loss_vs_top1"),
                                    (axes[1], "proxy_top1", "supernet proxy top-1 (%)", "top1_vs_top1")):
        xs = [r[key] for r in rows]
        err = [r[key + "_std"] for r in rows]
        ax.errorbar(xs, sa, xerr=err, yerr=sa_err, fmt="o", ms=5, capsize=2)
        for r, x, y in zip(rows, xs, sa):
            ax.annotate(f"{r['latency_ms']:.0f}ms", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
        ax.set_xlabel(label)
        ax.set_ylabel(f"standalone top-1 (%), mean of {len(rows[0]['standalone_top1_seeds'])} seeds")
        t = stats[fig_key]
        ax.set_title(f"tau {t['tau']:.2f} [{t['low']:.2f}, {t['high']:.2f}], ceiling {stats['ceiling']['top1']['tau']:.2f}",
                     fontsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle(f"proxy validation: {len(rows)} members stratified over LUT latency (90 % bootstrap intervals)")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def run_validate_proxy(cfg: DictConfig) -> dict[str, Any]:
    """Score, train and compare; write the report files under ``cfg.run_dir``; return the summary."""
    check_config(cfg, app=ValidateProxyApp)
    s: ValidateProxyApp = typed(cfg, ValidateProxyApp)
    import torch
    from tqdm import tqdm

    from latency_lut.lut import LatencyLUT, warn_if_foreign
    from search.fidelity import fidelity
    from search.params import arch_hash
    from search.proxies import supernet_data
    from search.proxy import SupernetProxy
    from search.standalone import standalone_run_dir, train_standalone
    from supernet.compute import resolve_device
    from supernet.data import build_data
    from supernet.elastic import Supernet
    from supernet.host_memory import reuse_freed_memory

    device = resolve_device(s.compute_device)  # before any work: a missing GPU is a one-line error
    reuse_freed_memory()
    started = time.time()
    if s.threads:
        torch.set_num_threads(s.threads)
    supernet = Supernet.load(s.supernet)
    lut = LatencyLUT.load(s.lut_file, supernet.space)
    warn_if_foreign(lut, s.lut_file, "eformer-search validate-proxy")
    train_config = dict(supernet.train_config or {})
    data_cfg = supernet_data(supernet, None)
    members, edges = stratified_members(supernet, lut, s.members, s.pool, s.seed)
    run_dir = Path(s.run_dir)
    make_dir(run_dir, "run_dir")
    standalone_root = Path(s.standalone_dir) if s.standalone_dir else run_dir / "standalone"
    make_dir(standalone_root, "standalone_dir")
    seeds = list(range(s.standalone_seeds))
    hashes = [arch_hash(supernet.member(a)) for a in members]
    # seed-major: after a kill, every member has its first seeds before any has its last
    runs = [(k, i) for k in seeds for i in range(len(members))]
    results: dict[tuple[int, int], dict[str, Any]] = {}
    bar = tqdm(runs, desc="validate-proxy (standalone training)", unit="run", disable=not s.progress, dynamic_ncols=True)
    for k, i in bar:
        results[k, i] = train_standalone(train_config, supernet.member(members[i]),
                                         standalone_run_dir(standalone_root, hashes[i], train_config, k), seed=k,
                                         threads=s.threads, compute_device=s.compute_device)
        bar.set_postfix(member=i, seed=k, top1=f"{results[k, i]['top1']:.1f}")
    proxy = SupernetProxy.from_data(supernet, build_data(data_cfg), device=device)
    rows: list[dict[str, Any]] = []
    for i, arch in enumerate(members):
        score = proxy(arch)
        deployed = lut.in_context(arch)
        top1 = [results[k, i]["top1"] for k in seeds]
        loss = [results[k, i]["loss"] for k in seeds]
        rows.append({"member": i, "summary": arch.summary(), "arch_hash": hashes[i], "latency_ms": lut.predict(deployed),
                     "params": count_params(deployed), "proxy_top1": score["top1"], "proxy_top1_std": score["top1_std"],
                     "proxy_loss": score["loss"], "proxy_loss_std": score["loss_std"],
                     "standalone_top1": statistics.fmean(top1), "standalone_loss": statistics.fmean(loss),
                     "standalone_top1_seeds": top1, "standalone_loss_seeds": loss, "steps": results[0, i]["steps"]})
    stats = fidelity([r["proxy_loss"] for r in rows], [r["proxy_top1"] for r in rows],
                     [r["standalone_top1_seeds"] for r in rows], [r["standalone_loss_seeds"] for r in rows],
                     resamples=s.bootstrap, seed=s.seed)
    summary = {"members": len(rows), "supernet": str(supernet.source_path), "lut": str(s.lut_file),
               "steps_per_member": rows[0]["steps"], "seed": s.seed, "standalone_seeds": seeds,
               "latency_bin_edges_ms": edges, "stats": stats, "rows": rows, "seconds": round(time.time() - started, 1)}
    import pandas as pd

    flat = [{k: (" ".join(f"{x:.4f}" for x in v) if isinstance(v, list) else v) for k, v in r.items()} for r in rows]
    atomic_write_text(run_dir / "proxy_validation.json", json.dumps(summary, indent=1) + "\n")
    atomic_write_text(run_dir / "proxy_validation.csv", pd.DataFrame(flat).to_csv(index=False))
    atomic_write_text(run_dir / "proxy_validation.md", format_report(summary))
    _plot(rows, stats, run_dir / "proxy_validation.png")
    print(f"eformer-search validate-proxy: {len(rows)} members x {len(seeds)} standalone seeds; {headline(stats)}; "
          f"report in {run_dir}")
    return summary


def format_tau(t: dict[str, float]) -> str:
    """``tau [low, high]``: a tau with its interval."""
    return f"{t['tau']:.3f} [{t['low']:.3f}, {t['high']:.3f}]"


def headline(stats: dict[str, Any]) -> str:
    """One line: the proxy's val-loss tau against the standalone seed-mean top-1, its ceiling and their ratio."""
    t, c = stats["loss_vs_top1"], stats["ceiling"]["top1"]
    return (f"proxy val loss vs standalone top-1: Kendall tau {format_tau(t)} (90 % interval), split-half ceiling {format_tau(c)}, "
            f"ratio {t['ratio_to_ceiling']:.2f}")


def spread_line(sp: dict[str, float], unit: str) -> str:
    """Is there a ranking to recover: the members' spread against the seed noise, plainly."""
    verdict = ("the members differ beyond seed noise" if sp["anova_p"] < 0.05
               else "the members do NOT differ beyond seed noise: there is little true ordering to recover")
    return (f"spread of the seed-means over members {sp['between_sd']:.3f}{unit} (range {sp['range']:.3f}{unit}) vs "
            f"{sp['noise_sd_of_mean']:.3f}{unit} from seed noise alone (one run's seed sd {sp['seed_sd']:.3f}{unit}); "
            f"ANOVA F {sp['anova_f']:.2f}, p {sp['anova_p']:.3g}: {verdict}; seeds per member for an 80 %-reliable "
            f"ordering of the seed-means: {_seeds(sp.get('seeds_for_0.8', math.nan))}")


def _seeds(n: float) -> str:
    return "none suffices (the spread is all noise)" if math.isinf(n) else ("-" if math.isnan(n) else f"{math.ceil(n)}")


def format_report(summary: dict[str, Any]) -> str:
    """The markdown report: agreement figures with intervals and ceilings, the spread test, one row per member."""
    st = summary["stats"]
    k = len(summary["standalone_seeds"])
    edges = ", ".join(f"{e:.2f}" for e in summary["latency_bin_edges_ms"])
    lines = [
        f"# Proxy validation: {summary['members']} members, stratified over LUT latency",
        "",
        f"Supernet `{summary['supernet']}`; each member also trained alone from scratch with the supernet's recipe "
        f"({summary['steps_per_member']} steps), seeds {summary['standalone_seeds']}. Members: one from each of "
        f"{summary['members']} equal-count latency bins of a pool of distinct random members (bin edges, ms: {edges}).",
        "",
        "Kendall tau-b with its paired bootstrap 90 % interval over members. Ceiling: tau between the seed-means of "
        f"the two seed halves (split-half, {k // 2 + k % 2} vs {k // 2} seeds), the agreement of standalone training "
        "with itself.",
        "",
        "| proxy score | standalone target (seed-mean) | Kendall tau [90 %] | split-half ceiling [90 %] | ratio to ceiling |",
        "|---|---|---|---|---|",
    ]
    for key, proxy_name, target in (("loss_vs_top1", "val loss", "top1"), ("loss_vs_loss", "val loss", "loss"),
                                    ("top1_vs_top1", "top-1", "top1")):
        t = st[key]
        lines.append(f"| {proxy_name} | {'top-1' if target == 'top1' else 'val loss'} | {format_tau(t)} | "
                     f"{format_tau(st['ceiling'][target])} | {t['ratio_to_ceiling']:.2f} |")
    lines += ["", f"Is there a ranking to recover? Top-1: {spread_line(st['spread_top1'], ' pt')}. "
                  f"Val loss: {spread_line(st['spread_loss'], '')}.", "",
              "| # | member | LUT (ms) | params (M) | proxy top-1 (%) | proxy val loss | standalone top-1 (%) per seed | "
              "standalone val loss (mean) |",
              "|---|---|---|---|---|---|---|---|"]
    for r in sorted(summary["rows"], key=lambda r: r["latency_ms"]):
        per_seed = " / ".join(f"{v:.2f}" for v in r["standalone_top1_seeds"])
        lines.append(f"| {r['member']} | `{r['summary']}` | {r['latency_ms']:.2f} | {r['params'] / 1e6:.2f} | "
                     f"{r['proxy_top1']:.2f} ± {r['proxy_top1_std']:.2f} | {r['proxy_loss']:.4f} ± {r['proxy_loss_std']:.4f} | "
                     f"{per_seed} (mean {r['standalone_top1']:.2f}) | {r['standalone_loss']:.4f} |")
    return "\n".join(lines) + "\n"


@hydra.main(config_path="../conf", config_name="eformer_validate_proxy", version_base="1.3")
@report_user_errors("eformer-search validate-proxy")
def main(cfg: DictConfig) -> None:
    run_validate_proxy(cfg)
