"""How the LUT measures and predicts: every option side by side in one run, against whole networks.

    python -m experiments.lut_ablation [--members 60]   # writes experiments/results/lut_ablation.{md,json}

1. ``--members`` random members of the default space (224 px, 1000 classes) are exported once and measured
   end to end (warm deployment loop, interleaved, 30 samples) in two independent passes, each with fresh
   onnxruntime sessions: pass 2 against pass 1 is the measurement's own repeatability, the ceiling.
2. The whole default space is built as a LUT under each measurement protocol: cold caches flushed before every
   sample (the protocol before this ablation), cold caches flushed once per round (the default), warm caches,
   and the quick protocol of ``eformer-pipeline``. Each build's time is recorded.
3. For every build, entries are read raw and drift-anchored (:mod:`latency_lut.build`), and each calibration of
   :mod:`latency_lut.calibration` (plain sum, global ``a * sum + b``, per kind with the piece count) is fitted on
   half of the members (pass 1) and judged on the other half.
"""
from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
from omegaconf import OmegaConf

from experiments.common import machine_header, write_result
from latency_lut.backends import OrtBackend, Prepared
from latency_lut.build import build_lut
from latency_lut.calibration import choose
from latency_lut.calibration import predict as predict_with
from latency_lut.lut import LatencyLUT
from latency_lut.timing import Protocol, flusher
from latency_lut.validate import accuracy_metrics, measure_networks
from supernet.space import SearchSpace

CTX = {"image_size": 224, "num_classes": 1000, "distillation": True}
ROOT = Path(__file__).resolve().parents[1]


class PerSampleFlush(OrtBackend):
    """The cold protocol as it was before this ablation: the cache flush before every timed sample."""

    def before_round(self, protocol: Protocol) -> Optional[Callable[[], object]]:
        return None

    def load(self, exported: Path, input_shape: Sequence[int], protocol: Protocol) -> Prepared:
        inner = super().load(exported, input_shape, protocol)
        flush = flusher(protocol.flush_mb)

        def sample() -> float:
            flush()
            return inner.sample()

        return Prepared(inner.warmup, sample, inner.close)


def conf_protocol(name: str) -> Protocol:
    return Protocol(**OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "lut" / f"{name}.yaml").protocol))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=60)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    space = SearchSpace.load("efficientformerv2")
    rng = random.Random(args.seed)
    archs = {f"m{i:03d}": space.sample(rng, **CTX) for i in range(args.members)}
    backend = OrtBackend(threads=2)
    t0 = time.time()
    p1, p2 = measure_networks(archs, backend, Protocol(3, 30, cache="warm"), seed=args.seed, progress=False, passes=2)
    e2e_s = time.time() - t0
    print(f"end to end: {len(archs)} networks, 2 passes, {e2e_s:.0f} s", flush=True)
    names = list(archs)
    order = names[:]
    random.Random(args.seed + 1).shuffle(order)
    fit, held = order[: len(order) // 2], order[len(order) // 2 :]
    y_fit = np.array([p1[k].q25_ms for k in fit])
    y_held = np.array([p1[k].q25_ms for k in held])
    ceiling = accuracy_metrics(np.array([p2[k].q25_ms for k in held]), y_held)
    default, quick = conf_protocol("default"), conf_protocol("quick")
    builds = {
        "cold, flush before every sample (before)": (PerSampleFlush(threads=2), default),
        "cold, flush once per round (default)": (backend, default),
        "warm": (backend, Protocol(default.warmup, default.repeats, default.number, "warm")),
        "cold, flush once per round, quick protocol (eformer-pipeline)": (backend, quick),
    }
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, (be, protocol)) in enumerate(builds.items()):
            t0 = time.time()
            lut = build_lut(space, be, Path(tmp) / f"lut{i}.parquet", protocol=protocol, progress=False, **CTX)
            build_s = time.time() - t0
            raw = LatencyLUT(lut.table.drop(columns="anchor_ms"), dict(lut.meta))
            for entries, table in (("raw", raw), ("drift-anchored", lut)):
                feats = {k: table.features(a) for k, a in archs.items()}
                _, candidates = choose([feats[k] for k in fit], y_fit)
                for model, cal in candidates.items():
                    m = accuracy_metrics(predict_with(cal, [feats[k] for k in held]), y_held)
                    rows.append({"protocol": name, "build_s": build_s, "entries": entries, "model": model, **m,
                                 "protocol_settings": protocol.__dict__})
            print(f"{name}: {build_s:.0f} s; " + ", ".join(
                f"{r['entries']}/{r['model']} tau {r['kendall_tau']:.3f}" for r in rows[-6:]), flush=True)

    def pct(v: float) -> str:
        return f"{100 * v:.0f}%"

    lines = [
        "# Latency LUT ablation: measurement protocols, drift anchor and calibrations side by side",
        "",
        f"`python -m experiments.lut_ablation --members {args.members}` (generated). {args.members} random members of the "
        "default space at 224 px (1000 classes, distillation head), ORT CPU 2 threads, batch 1. Truth: each network "
        "exported once, measured end to end in a warm loop, all interleaved, 30 samples, lower quartile, in two "
        f"independent passes with fresh sessions ({e2e_s:.0f} s). Every LUT is a full build of the default space (638 "
        f"entries); calibrations are fitted on {len(fit)} members (pass 1) and judged on the other {len(held)}.",
        "",
        machine_header(),
        "",
        "| LUT protocol | build (s) | entries | calibration | MAPE | within +-5% | within +-10% | Kendall tau |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| pass 2 vs pass 1 (the measurement's repeatability) | | | | {ceiling['mape_pct']:.2f}% | "
        f"{pct(ceiling['within_5pct'])} | {pct(ceiling['within_10pct'])} | {ceiling['kendall_tau']:.3f} |",
    ]
    for r in rows:
        lines.append(f"| {r['protocol']} | {r['build_s']:.0f} | {r['entries']} | {r['model']} | {r['mape_pct']:.2f}% | "
                     f"{pct(r['within_5pct'])} | {pct(r['within_10pct'])} | {r['kendall_tau']:.3f} |")
    best = max(rows, key=lambda r: r["kendall_tau"])
    lines += ["", f"Highest held-out tau: {best['protocol']}, {best['entries']} entries, {best['model']} "
              f"({best['kendall_tau']:.3f}; ceiling {ceiling['kendall_tau']:.3f})."]
    md = "\n".join(lines) + "\n"
    write_result("lut_ablation", md, {"members": args.members, "seed": args.seed, "end_to_end_s": e2e_s,
                                      "ceiling": ceiling, "rows": rows})
    print(md)


if __name__ == "__main__":
    main()
