"""Do the machine's CPUs serve the main job better as torch threads or as processes? Measured side by side.

    python -m experiments.bench_parallelism     # writes experiments/results/bench_parallelism.md (about 5 minutes)

The main job runs one process with torch's intra-op threads over all CPUs. The alternative is one process per
CPU, one thread each, on independent work. Two workloads of the main job, each both ways, alternating rounds:

- **scoring** (slimming): one step's candidate evaluations (every action of the default space, stage-wise
  expansions, as the main job runs them) from a member's reference, on the main job's proxy (500 calibration +
  2,500 val images at 32 px), at the largest member (where slimming starts) and at S0. ``threads``: one process
  evaluates them all with all CPUs; ``processes``: the step forks one worker per CPU (one thread each) after the
  reference is made, each evaluating every other candidate.
- **training**: ``eformer-train``'s sandwich step (batch 128, largest + smallest + 2 random members). ``threads``:
  one trainer with all CPUs; ``processes``: one trainer per CPU, one thread each, stepping at the same time on
  their own batches (the throughput a member- or data-parallel split could reach at best, before any exchange).

The ratio is images (or candidates) per second of ``processes`` over ``threads``: above 1, the CPUs have compute
that intra-op threading leaves idle.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from experiments.bench_training import build  # eformer-train's Trainer with the main job's default path
from experiments.common import machine_header, write_result
from latency_lut.export_pool import pool_workers
from search.proxy import SupernetProxy
from search.slimming import candidate_actions
from supernet.arch import ArchConfig
from supernet.data import build_data
from supernet.elastic import Supernet
from supernet.space import SearchSpace


def forked(n: int, work: Callable[[int], None]) -> float:
    """Seconds until ``n`` forked children, one torch thread each, have each run ``work(rank)``."""
    start = time.perf_counter()
    pids = []
    for rank in range(n):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                torch.set_num_threads(1)
                work(rank)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError("a forked worker failed")
    return time.perf_counter() - start


def scoring_round(net: Supernet, data, space: SearchSpace, start: ArchConfig, n: int) -> dict[str, float]:
    """One slimming step's candidate evaluations from ``start``'s reference, both ways (seconds)."""
    archs = [a for _, a in candidate_actions(start, space, expansion_scope="stage")]
    out = {}
    for way in ("threads", "processes"):
        proxy = SupernetProxy.from_data(net, data)
        proxy.reference(start)
        if way == "threads":
            t = time.perf_counter()
            for a in archs:
                proxy(a)
            out[way] = time.perf_counter() - t
        else:
            out[way] = forked(n, lambda rank: [proxy(a) for a in archs[rank::n]])
    out["candidates"] = len(archs)
    return out


def training_round(root: Path, steps: int, n: int) -> dict[str, float]:
    """Seconds per sandwich step both ways (``processes``: per step of all ``n`` trainers together)."""
    out = {}
    for way in ("threads", "processes"):
        if way == "threads":
            t = build("default", root / f"{way}-{time.monotonic_ns()}")
            batches = iter(t.data.train_loader(t.t.batch_size, 0))
            t.train_step(*next(batches), 0)  # untimed first step
            start = time.perf_counter()
            for _ in range(steps):
                t.train_step(*next(batches), 0)
            out[way] = (time.perf_counter() - start) / steps
        else:
            trainers = [build("default", root / f"{way}{r}-{time.monotonic_ns()}") for r in range(n)]
            for t in trainers:
                t.train_step(*next(iter(t.data.train_loader(t.t.batch_size, 0))), 0)

            def work(rank: int) -> None:
                t = trainers[rank]
                batches = iter(t.data.train_loader(t.t.batch_size, rank + 1))
                for _ in range(steps):
                    t.train_step(*next(batches), 0)

            out[way] = forked(n, work) / steps / n
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6, help="timed training steps per round and way")
    ap.add_argument("--no-write", action="store_true", help="print only (the tests)")
    args = ap.parse_args(argv)
    n = pool_workers()  # the CPUs this process may run on
    torch.manual_seed(0)
    data = build_data({"name": "fashion", "calib_size": 500, "image_size": 32})
    net = Supernet("efficientformerv2", image_size=32, num_classes=10, distillation=False).eval()
    space = net.space
    starts = {"largest": net.largest(), "S0": net.member(ArchConfig.preset("s0").replace(**net.context))}
    scoring: dict[str, list[dict[str, float]]] = {k: [] for k in starts}
    training: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):  # alternating rounds: drift hits both ways alike
            for name, start in starts.items():
                scoring[name].append(scoring_round(net, data, space, start, n))
            training.append(training_round(Path(tmp), args.steps, n))
    med = lambda rows, k: statistics.median(r[k] for r in rows)  # noqa: E731
    lines = ["# CPUs as torch threads or as processes", "", machine_header(), "",
             f"`python -m experiments.bench_parallelism --rounds {args.rounds} --steps {args.steps}`: {n} CPUs; "
             f"`threads`: one process, {n} torch threads; `processes`: {n} forked processes, one thread each, "
             "on independent work. Median of the alternating rounds; ratio = throughput of processes over threads.", "",
             "| workload | threads (s) | processes (s) | processes / threads |", "|---|---|---|---|"]
    rows = {}
    for name, rs in scoring.items():
        th, pr = med(rs, "threads"), med(rs, "processes")
        rows[f"scoring at {name}"] = (th, pr)
        lines.append(f"| scoring: one slimming step at {name} ({int(rs[0]['candidates'])} candidates, whole split) | "
                     f"{th:.2f} | {pr:.2f} | {th / pr:.2f}x |")
    th, pr = med(training, "threads"), med(training, "processes")
    rows["training"] = (th, pr)
    lines.append(f"| training: one sandwich step of batch 128 (per step of all trainers) | {th:.3f} | {pr:.3f} | "
                 f"{th / pr:.2f}x |")
    text = "\n".join(lines) + "\n"
    data_out = {"cpus": n, "rounds": args.rounds, "steps": args.steps, "scoring": scoring, "training": training,
                "ratio": {k: th / pr for k, (th, pr) in rows.items()}}
    if not args.no_write:
        write_result("bench_parallelism", text, data_out)
    print(text)
    return data_out


if __name__ == "__main__":
    main()
