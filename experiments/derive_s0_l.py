"""Re-derive S0/S1/S2/L the paper's way: slimming of the trained digits supernet against this
machine's LUT to each released model's budget, released vs derived side by side (params, MACs, LUT
latency, measured latency, proxy accuracy of both as members of the same supernet); then slimming
vs nsga2 / tpe / random at equal evaluation counts (hypervolume of the accuracy-latency front).

    python -m experiments.derive_s0_l          # needs (or makes) the default LUT and digits supernet
                                                # writes experiments/results/derive_s0_l.{md,json,png}

By default slimming shrinks a stage's largest expansions together and applies the best two moves
(on different targets) per step, scoring on the whole val split: the paper's per-FFN actions with
one move per step need ~3000 supernet evaluations to reach S0 (~2.5 h on the 2-core VM);
``--paper`` runs exactly that. The strategy comparison uses the quick slimming of the demo pipeline
(4 moves per step, half the val split) and gives every other strategy as many evaluations.
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from conf import compose
from experiments.common import RESULTS, machine_header, write_result
from latency_lut.lut import LatencyLUT
from latency_lut.timing import Protocol
from search.app import run_search
from search.export_cli import main as export_main
from search.report import format_rows, released_vs_derived
from search.results import completed, load_study
from search.run_record import read_run
from supernet.arch import ArchConfig
from supernet.train.app import run_training

BUDGETS = ("l", "s2", "s1", "s0")  # each continues the previous one's path (shared proxy cache)
DEFAULT = ["search.expansion_scope=stage", "search.moves_per_step=2"]
PAPER = ["search.expansion_scope=block", "search.moves_per_step=1"]
QUICK = ["search.expansion_scope=stage", "search.moves_per_step=4", "proxy.val_images=180", "proxy.calib_images=90"]


def hypervolume(points: list[tuple[float, float]], ref_top1: float, ref_lat: float) -> float:
    """Area dominated by (top-1 up, latency down) points relative to (ref_top1, ref_lat)."""
    pts = sorted((lat, acc) for acc, lat in points if acc > ref_top1 and lat < ref_lat)
    area, best = 0.0, ref_top1
    for i, (lat, acc) in enumerate(pts):
        best = max(best, acc)
        nxt = pts[i + 1][0] if i + 1 < len(pts) else ref_lat
        area += (nxt - lat) * (best - ref_top1)
    return area


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default="runs/derive", help="run directories of this experiment")
    parser.add_argument("--skip-compare", action="store_true")
    parser.add_argument("--paper", action="store_true", help="per-FFN expansion actions, one move per step (slow)")
    args = parser.parse_args()
    work = Path(args.work)
    common = [f"proxy.cache={work}/proxy-cache.jsonl", "progress=false"]
    started = time.time()
    train_cfg = compose("eformer_train", [])
    if not (Path(train_cfg.run_dir) / "supernet.pt").is_file():  # a clean checkout: train the digits supernet first
        run_training(train_cfg)
    runs = {}
    for b in BUDGETS:
        t0 = time.time()
        run_search(compose("eformer_search", ["search=slimming", f"budget={b}", f"run_dir={work}/slimming-{b}",
                                              *(PAPER if args.paper else DEFAULT), *common]))
        runs[b] = read_run(work / f"slimming-{b}")
        print(f"slimming to {b}: {time.time() - t0:.0f} s, {runs[b]['trials']} candidates recorded")
    lut = LatencyLUT.load(runs["s0"]["lut"])
    rows = released_vs_derived(runs, runs["s0"]["lut"], Protocol(warmup=3, repeats=30, number=1, cache="warm"), progress=False)

    compare = {}
    if not args.skip_compare:
        quick = f"{work}/cmp-slimming-s0"
        cmp_common = [f"proxy.cache={work}/proxy-cache-quick.jsonl", "progress=false", *QUICK[2:]]
        run_search(compose("eformer_search", ["search=slimming", "budget=s0", f"run_dir={quick}", *QUICK, *cmp_common]))
        n_evals = read_run(quick)["trials"]
        for strat in ("nsga2", "tpe", "random"):
            run_search(compose("eformer_search", [f"search={strat}", "budget=s0", f"search.n_trials={n_evals}",
                                                  f"run_dir={work}/cmp-{strat}-s0", *cmp_common]))
        largest = lut.predict(lut.in_context(ArchConfig.preset("l")))
        pts = {}
        for strat in ("slimming", "nsga2", "tpe", "random"):
            run = read_run(f"{work}/cmp-{strat}-s0")
            ts = completed(load_study(run))
            pts[strat] = [(t.user_attrs["top1"], t.user_attrs["latency_ms"], t.user_attrs["feasible"]) for t in ts]
        ref_top1 = min(a for v in pts.values() for a, _, _ in v) - 0.5
        ref_lat = max(lat for v in pts.values() for _, lat, _ in v) * 1.01
        for strat, v in pts.items():
            feas = [a for a, _, f in v if f]
            compare[strat] = {"evaluations": len(v), "hypervolume": hypervolume([(a, lat) for a, lat, _ in v], ref_top1, ref_lat),
                              "feasible": len(feas), "best_feasible_top1": max(feas) if feas else None}
        compare["_reference"] = {"top1": ref_top1, "latency_ms": ref_lat, "l_lut_ms": largest}
    export_main(["arch", "--run", f"{work}/slimming-s0", "--best", "--out", f"{work}/slimming-s0/export"])
    shutil.copy(f"{work}/slimming-s0/export/slimming_path.png", RESULTS / "derive_s0_slimming_path.png")
    shutil.copy(f"{work}/slimming-s0/export/pareto.png", RESULTS / "derive_s0_pareto.png")

    lines = [
        "# Re-deriving S0/S1/S2/L by slimming (digits supernet, this machine's LUT)", "",
        machine_header(), "",
        f"Command: `python -m experiments.derive_s0_l{' --paper' if args.paper else ''}` ({time.time() - started:.0f} s; "
        f"slimming {'per-FFN expansion actions, 1 move/step' if args.paper else 'stage-wise expansion actions, 2 moves/step'}). "
        "Budget of each row: "
        "LUT latency <= the released model's LUT latency and params <= its params (224 px, 1000 classes, "
        "distillation head, ORT CPU 2 threads). Proxy top-1: the member of the digits supernet (32 px) after BN "
        "recalibration, on the 360-image val split. Measured: whole network under onnxruntime, interleaved, "
        f"{lut.statistic} of 30 runs.", "",
        format_rows(rows),
    ]
    lines += ["", "| budget | derived meets budget | derived dominates released (top-1 >=, LUT latency <=) |", "|---|---|---|"]
    lines += [f"| {r['budget'].upper()} | {r['meets_budget']} | {r['dominates_released']} |" for r in rows]
    if compare:
        ref = compare["_reference"]
        lines += ["", f"## Strategies at equal evaluation counts (S0 budget; hypervolume of the top-1/latency front, "
                      f"reference top-1 {ref['top1']:.2f}%, latency {ref['latency_ms']:.1f} ms)", "",
                  "| strategy | evaluations | hypervolume (%·ms) | feasible members | best feasible top-1 (%) |", "|---|---|---|---|---|"]
        for strat in ("slimming", "nsga2", "tpe", "random"):
            c = compare[strat]
            best = f"{c['best_feasible_top1']:.2f}" if c["best_feasible_top1"] is not None else "-"
            lines.append(f"| {strat} | {c['evaluations']} | {c['hypervolume']:.1f} | {c['feasible']} | {best} |")
        lines += ["", "slimming here is the quick setting of the demo pipeline (a stage's expansions shrink together, "
                      "4 moves per step, proxy on 180 val / 90 calibration images); the others get as many evaluations "
                      "as it made, same proxy."]
    lines += ["", "Reading this: one val image is 0.28 points of proxy top-1, and the 32-px digits task is saturated "
                  "(every member scores 95-98%), so accuracy barely separates candidates and the MES gain decides most "
                  "steps: the derived models keep wide late stages and drop depth and expansion, where the released "
                  "ones (searched on ImageNet) keep depth. On a proxy that rewards depth the same code walks elsewhere; "
                  "the table shows that the machinery meets every budget and what it finds on this proxy, not "
                  "ImageNet accuracy. The run time above covers this invocation; studies and the proxy cache in "
                  "the work dir are reused when present (from scratch: about 15 minutes on this VM).",
              "", "Plots: `derive_s0_slimming_path.png`, `derive_s0_pareto.png`.", ""]
    write_result("derive_s0_l", "\n".join(lines), {"rows": rows, "compare": compare})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
