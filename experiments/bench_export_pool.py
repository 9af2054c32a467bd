"""LUT validation's network exports: the export pool against exporting one network after another.

    python -m experiments.bench_export_pool          # writes experiments/results/bench_export_pool.md (about 3 minutes)
    python -m experiments.bench_export_pool --members 2 --rounds 1 --no-write   # a smoke run (the tests)

The networks are those ``eformer-lut validate`` exports (random members of the default space at 224 px, seed 0, and
S0-L), exported by the ORT backend exactly as there (TorchScript first, static batch 1). Rounds alternate: serial
(one process), then the pool (:mod:`latency_lut.export_pool`, one worker per CPU); the ratio is of the medians.
"""
from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from experiments.common import machine_header, write_result
from latency_lut.backends import OrtBackend
from latency_lut.export_pool import ExportPool
from supernet.arch import PRESETS, ArchConfig
from supernet.model import build_model
from supernet.space import SearchSpace


def networks(members: int) -> dict[str, ArchConfig]:
    space = SearchSpace.load("efficientformerv2")
    rng = random.Random(0)
    archs = {f"m{i:03d}": space.sample(rng, image_size=224, num_classes=1000) for i in range(members)}
    return archs | {p: ArchConfig.preset(p) for p in PRESETS}


def export_seconds(archs: dict[str, ArchConfig], workers: int) -> float:
    backend = OrtBackend()
    with tempfile.TemporaryDirectory() as tmp, ExportPool(backend, workers) as pool:
        start = time.perf_counter()
        files = pool.export({k: (build_model, a, (1, 3, a.image_size, a.image_size)) for k, a in archs.items()}, Path(tmp))
        elapsed = time.perf_counter() - start
        assert all(Path(f).stat().st_size > 0 for f in files.values())
    return elapsed


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10, help="random members (plus S0-L) per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    archs = networks(args.members)
    pool_size = ExportPool(OrtBackend()).workers
    times: dict[str, list[float]] = {"serial": [], "pool": []}
    for _ in range(args.rounds):
        times["serial"].append(export_seconds(archs, 1))
        times["pool"].append(export_seconds(archs, pool_size))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["serial"] / med["pool"]
    n = len(archs)
    text = "\n".join([
        "# LUT validation exports: export pool vs serial", "", machine_header(), "",
        f"`python -m experiments.bench_export_pool --members {args.members} --rounds {args.rounds}`: {n} networks "
        f"({args.members} random members of the default space at 224 px and S0-L), ORT backend's export (TorchScript "
        f"first, batch 1), {args.rounds} alternating rounds.", "",
        "| path | workers | median s per round | s per network |", "|---|---|---|---|",
        f"| serial | 1 | {med['serial']:.1f} | {med['serial'] / n:.2f} |",
        f"| pool | {pool_size} | {med['pool']:.1f} | {med['pool'] / n:.2f} |", "",
        f"**Pool vs serial: {ratio:.2f}x faster.** `eformer-lut validate` exports 34 networks (30 members and S0-L)."]) + "\n"
    data = {"networks": n, "workers": pool_size, "seconds": times, "median": med, "ratio": ratio}
    if not args.no_write:
        write_result("bench_export_pool", text, data)
    print(text)
    return data


if __name__ == "__main__":
    main()
