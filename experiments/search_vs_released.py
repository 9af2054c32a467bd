"""Does the search find better models than the released configurations?

At each budget (the released model's LUT latency and parameters), train standalone - same recipe,
same steps, several seeds - the released configuration, the member slimming derived, and the best
NSGA-II member within the budget; measure their latency end to end (onnxruntime, interleaved) and
compare. Then the strategy comparison (slimming / NSGA-II / TPE / random) at equal evaluation counts
on the same proxy.

    python -m experiments.search_vs_released            # S0 and S1, 3 seeds (needs/makes the default supernet)
    python -m experiments.search_vs_released --budgets s0 s1 s2 l --seeds 0 1 2 3

A difference is called real only where it exceeds its noise: top-1 by Welch's t-test over the seeds (p < 0.05),
measured latency when every one of the independent interleaved measurement passes puts the ratio on the same side
of 1.

Writes experiments/results/search_vs_released.{md,json}. Everything is resumable (studies, proxy
cache and standalone runs live in --work).
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path
from typing import Any

from scipy import stats as scistats

from conf import compose
from experiments.common import machine_header, write_result
from experiments.derive_s0_l import hypervolume
from latency_lut.backends import make_backend
from latency_lut.lut import LatencyLUT
from latency_lut.timing import Protocol
from latency_lut.validate import measure_networks
from search.app import run_search
from search.params import arch_hash
from search.results import arch_of, completed, load_study
from search.run_record import read_run
from search.standalone import standalone_run_dir, train_standalone
from supernet.arch import ArchConfig
from supernet.elastic import Supernet
from supernet.signatures import count_params
from supernet.train.app import run_training

SLIMMING = ["search.expansion_scope=stage", "search.moves_per_step=2"]


def best_within(trials: list, budget: dict[str, Any]) -> Any:
    """The trial with the lowest proxy val loss among those within the budget's latency and params."""
    ok = [t for t in trials if t.user_attrs["latency_ms"] <= budget["latency_ms"] + 1e-9
          and t.user_attrs["params"] <= budget["params"]]
    return min(ok, key=lambda t: (t.user_attrs["loss"], -t.user_attrs["top1"])) if ok else None


def welch_p(a: list[float], b: list[float]) -> float:
    """Two-sided Welch t-test p-value of mean(a) != mean(b); nan when either side has no spread to test."""
    if len(a) < 2 or len(b) < 2 or (statistics.pstdev(a) == 0 and statistics.pstdev(b) == 0):
        return math.nan
    return float(scistats.ttest_ind(a, b, equal_var=False).pvalue)


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    half = (max(values) - min(values)) / 2
    return f"{mean:.2f} ± {half:.2f}"


def verdict(budget: str, kind: str, m: dict[str, Any], rel: dict[str, Any]) -> dict[str, Any]:
    """Derived vs released: the top-1 gain with its Welch p, and the latency ratio in every measurement pass."""
    gain = statistics.fmean(m["top1"]) - statistics.fmean(rel["top1"])
    p = welch_p(m["top1"], rel["top1"])
    ratios = [a / r for a, r in zip(m["measured_pass_ms"], rel["measured_pass_ms"])]
    return {"budget": budget, "kind": kind, "top1_gain": gain, "top1_p": p, "top1_real": bool(p < 0.05),
            "measured_ratio": m["measured_ms"] / rel["measured_ms"], "pass_ratios": ratios,
            "latency_real": len(ratios) > 1 and (all(r < 1 for r in ratios) or all(r > 1 for r in ratios))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default="runs/search_vs_released")
    parser.add_argument("--budgets", nargs="+", default=["s0", "s1"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--passes", type=int, default=3, help="independent interleaved latency measurement passes")
    parser.add_argument("--nsga2-trials", type=int, default=60)
    parser.add_argument("--skip-compare", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--supernet", help="a trained supernet.pt (default: eformer-train's default run, trained if missing)")
    args = parser.parse_args()
    started = time.time()
    work = Path(args.work)
    if args.supernet:
        supernet_file = Path(args.supernet)
    else:
        train_cfg = compose("eformer_train", [])
        supernet_file = Path(train_cfg.run_dir) / "supernet.pt"
        if not supernet_file.is_file():
            run_training(train_cfg)
    common = [f"supernet={supernet_file}", f"proxy.cache={work}/proxy-cache.jsonl", "progress=false",
              f"threads={args.threads}"]
    runs = {}
    for b in sorted(args.budgets, key=["l", "s2", "s1", "s0"].index):  # each continues the previous path (cache)
        run_search(compose("eformer_search", ["search=slimming", f"budget={b}", f"run_dir={work}/slimming-{b}",
                                              *SLIMMING, *common]))
        runs[b] = read_run(work / f"slimming-{b}")
    run_search(compose("eformer_search", ["search=nsga2", f"search.n_trials={args.nsga2_trials}",
                                          f"run_dir={work}/nsga2", *common]))
    nsga_trials = completed(load_study(read_run(work / "nsga2")))
    supernet = Supernet.load(supernet_file)
    lut = LatencyLUT.load(runs[args.budgets[0]]["lut"])
    train_config = dict(supernet.train_config)

    models: dict[str, dict[str, Any]] = {}
    for b in args.budgets:
        run = runs[b]
        best = next(t for t in completed(load_study(run)) if t.number == run["best_trial"])
        cands = {"released": ArchConfig.preset(b), "slimming": arch_of(best)}
        nsga = best_within(nsga_trials, run["budget"])
        if nsga is not None:
            cands["nsga2"] = arch_of(nsga)
        for kind, arch in cands.items():
            member = supernet.member(arch)
            deployed = lut.in_context(arch)
            res = [train_standalone(train_config, member,
                                    standalone_run_dir(work / "standalone", arch_hash(member), train_config, s), seed=s,
                                    threads=args.threads) for s in args.seeds]
            models[f"{b}-{kind}"] = {"budget": b, "kind": kind, "summary": deployed.summary(), "arch": deployed,
                                     "params": count_params(deployed), "lut_ms": lut.predict(deployed),
                                     "top1": [r["top1"] for r in res], "steps": res[0]["steps"]}
            print(f"{b} {kind}: {deployed.summary()} standalone top-1 {[round(r['top1'], 2) for r in res]}", flush=True)
    device = dict(lut.meta["device"], name=lut.meta["device_name"])
    passes = measure_networks({k: m["arch"] for k, m in models.items()}, make_backend(device),
                              Protocol(warmup=3, repeats=30, number=1, cache="warm"), progress=False, passes=args.passes)
    for k, m in models.items():
        m["measured_pass_ms"] = [p[k].value(lut.statistic) for p in passes]
        m["measured_ms"] = statistics.median(m["measured_pass_ms"])

    lines = ["# Search vs released configurations, trained standalone (embedded Fashion-MNIST)", "", machine_header(), "",
             f"Command: `python -m experiments.search_vs_released --budgets {' '.join(args.budgets)} --seeds "
             f"{' '.join(map(str, args.seeds))}` ({time.time() - started:.0f} s including reused runs). Budget = the "
             "released model's LUT latency and parameters (224 px, 1000 classes, ORT CPU). Each architecture is trained "
             f"alone from scratch with the supernet's recipe ({next(iter(models.values()))['steps']} steps, 32 px) "
             f"with seeds {args.seeds}; top-1 on the 2,500-image val split, mean ± half-range over seeds. Measured: "
             f"whole network, onnxruntime, interleaved, {lut.statistic} of 30 runs in each of {args.passes} independent "
             "passes (median over passes).", "",
             "| budget | model | architecture | params (M) | LUT (ms) | measured (ms) | standalone top-1 (%) |",
             "|---|---|---|---|---|---|---|"]
    verdicts = []
    for b in args.budgets:
        rel = models[f"{b}-released"]
        for kind in ("released", "slimming", "nsga2"):
            m = models.get(f"{b}-{kind}")
            if m is None:
                lines.append(f"| {b.upper()} | {kind} | (no member within the budget) | | | | |")
                continue
            lines.append(f"| {b.upper()} | {kind} | `{m['summary']}` | {m['params'] / 1e6:.2f} | {m['lut_ms']:.2f} | "
                         f"{m['measured_ms']:.2f} | {spread(m['top1'])} |")
            if kind != "released":
                verdicts.append(verdict(b, kind, m, rel))
    lines += ["", "| budget | search | top-1 gain over released (points) | Welch p | top-1 difference beyond seed noise | "
              "measured latency / released (per pass) | latency difference beyond pass-to-pass noise |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {v['budget'].upper()} | {v['kind']} | {v['top1_gain']:+.2f} | {v['top1_p']:.3f} | "
              f"{'yes' if v['top1_real'] else 'no'} | {v['measured_ratio']:.3f} "
              f"({', '.join(f'{r:.3f}' for r in v['pass_ratios'])}) | {'yes' if v['latency_real'] else 'no'} |"
              for v in verdicts]
    real = [f"{v['budget'].upper()} {v['kind']}" for v in verdicts if v["top1_real"]]
    lines += ["", "Top-1 differences beyond the seed noise: " + (", ".join(real) if real else
              "none: every accuracy difference above lies inside the noise of standalone training, so none is claimed.")]

    compare: dict[str, Any] = {}
    if not args.skip_compare:
        quick = ["search.expansion_scope=stage", "search.moves_per_step=4"]
        cmp_common = [f"supernet={supernet_file}", f"proxy.cache={work}/proxy-cache.jsonl", "progress=false",
                      f"threads={args.threads}"]
        run_search(compose("eformer_search", ["search=slimming", "budget=s0", f"run_dir={work}/cmp-slimming-s0",
                                              *quick, *cmp_common]))
        n_evals = read_run(work / "cmp-slimming-s0")["trials"]
        for strat in ("nsga2", "tpe", "random"):
            run_search(compose("eformer_search", [f"search={strat}", "budget=s0", f"search.n_trials={n_evals}",
                                                  f"run_dir={work}/cmp-{strat}-s0", *cmp_common]))
        pts = {}
        for strat in ("slimming", "nsga2", "tpe", "random"):
            ts = completed(load_study(read_run(work / f"cmp-{strat}-s0")))
            pts[strat] = [(t.user_attrs["top1"], t.user_attrs["latency_ms"], t.user_attrs["feasible"], t.user_attrs["loss"]) for t in ts]
        ref_top1 = min(a for v in pts.values() for a, _, _, _ in v) - 0.5
        ref_lat = max(lat for v in pts.values() for _, lat, _, _ in v) * 1.01
        for strat, v in pts.items():
            feas = [(a, lo) for a, _, f, lo in v if f]
            compare[strat] = {"evaluations": len(v), "hypervolume": hypervolume([(a, lat) for a, lat, _, _ in v], ref_top1, ref_lat),
                              "feasible": len(feas), "best_feasible_top1": max(a for a, _ in feas) if feas else None,
                              "best_feasible_loss": min(lo for _, lo in feas) if feas else None}
        lines += ["", f"## Strategies at equal evaluation counts (S0 budget, new proxy; hypervolume of the top-1/latency "
                      f"front, reference {ref_top1:.2f} %, {ref_lat:.1f} ms)", "",
                  "| strategy | evaluations | hypervolume (%·ms) | feasible members | best feasible proxy top-1 (%) | "
                  "best feasible proxy val loss |",
                  "|---|---|---|---|---|---|"]
        for strat, c in compare.items():
            bt = f"{c['best_feasible_top1']:.2f}" if c["best_feasible_top1"] is not None else "-"
            bl = f"{c['best_feasible_loss']:.4f}" if c["best_feasible_loss"] is not None else "-"
            lines.append(f"| {strat} | {c['evaluations']} | {c['hypervolume']:.1f} | {c['feasible']} | {bt} | {bl} |")
        lines += ["", "slimming: a stage's largest expansions shrink together, 4 moves per step (the pipeline's setting); "
                      "the other strategies get as many evaluations, same proxy and cache."]
    for m in models.values():
        m["arch"] = m["arch"].to_dict()
    write_result("search_vs_released", "\n".join(lines) + "\n", {"models": models, "verdicts": verdicts, "compare": compare})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
