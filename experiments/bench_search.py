"""Search-machinery throughput with LUT-only objectives: NSGA-II on in-memory storage, accuracy
replaced by the analytic proxy, through our worker loop (exact trial counts, heartbeats,
constraints, recorded attributes) vs a bare ``study.optimize`` with the same objective (baseline,
same run, interleaved repeats). Target: >= 50 trials/s.

    python -m experiments.bench_search      # writes experiments/results/bench_search.{md,json}
"""
from __future__ import annotations

import argparse
import statistics
import time

import optuna

from experiments.common import machine_header, write_result
from latency_lut.lut import LatencyLUT
from search.budgets import resolve_budget
from search.metrics import CandidateEvaluator, resolve_mes
from search.params import suggest_arch
from search.proxy import AnalyticProxy
from search.storage import open_storage
from search.strategies import get_strategy
from search.worker import run_worker
from supernet.space import SearchSpace

MES = {"units": {"latency_ms": "s0", "params_m": 3.5}, "exponents": {"latency_ms": 0.5, "params_m": 0.5}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lut", default="luts/ort-cpu-efficientformerv2-224.parquet")
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SearchSpace.load("efficientformerv2")
    lut = LatencyLUT.load(args.lut, space)
    evaluator = CandidateEvaluator(AnalyticProxy(), lut, resolve_mes(MES, lut))
    budget = resolve_budget("s1", lut, space)
    strategy = get_strategy("nsga2")
    context = lut.context

    def ours(seed: int) -> float:
        storage = open_storage("memory:")
        sampler = strategy.make_sampler(strategy.settings(), seed)
        study = optuna.create_study(storage=storage, directions=strategy.directions, sampler=sampler)
        t = time.perf_counter()
        run_worker(study, storage, strategy, space, evaluator, budget, args.trials, context, progress=False)
        return args.trials / (time.perf_counter() - t)

    def bare(seed: int) -> float:
        study = optuna.create_study(directions=strategy.directions, sampler=strategy.make_sampler(strategy.settings(), seed))

        def objective(trial: optuna.Trial) -> list[float]:
            return strategy.values(evaluator(suggest_arch(trial, space, **context)))

        t = time.perf_counter()
        study.optimize(objective, n_trials=args.trials)
        return args.trials / (time.perf_counter() - t)

    runs: dict[str, list[float]] = {"ours": [], "bare": []}
    for r in range(args.repeats):  # interleaved
        runs["bare"].append(bare(r))
        runs["ours"].append(ours(r))
    med = {k: statistics.median(v) for k, v in runs.items()}
    ratio = med["ours"] / med["bare"]
    lines = [
        "# Search throughput with LUT-only objectives (NSGA-II, in-memory storage)", "",
        machine_header(), "",
        f"Command: `python -m experiments.bench_search`. {args.trials} trials per study, {args.repeats} interleaved repeats, "
        "medians. Objective: analytic accuracy proxy (from MACs), LUT latency (calibrated predict), analytic params and MES, "
        f"budget S1 as constraints; default space, LUT `{args.lut}`.", "",
        "| loop | trials/s (median) | runs |", "|---|---|---|",
        f"| eformer-search worker (exact counts, heartbeats, constraints, recorded attributes) | {med['ours']:.1f} | "
        f"{', '.join(f'{x:.1f}' for x in runs['ours'])} |",
        f"| bare `study.optimize`, same objective (baseline) | {med['bare']:.1f} | {', '.join(f'{x:.1f}' for x in runs['bare'])} |",
        "", f"Ratio ours / bare: {ratio:.2f}. Target >= 50 trials/s: {'met' if med['ours'] >= 50 else 'NOT met'}.", "",
    ]
    write_result("bench_search", "\n".join(lines), {"trials": args.trials, "runs": runs, "median": med, "ratio": ratio})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
