"""Proxy scoring throughput: today's inference path against the previous one, side by side in one run.

    python -m experiments.bench_scoring             # writes experiments/results/bench_scoring.md (about 2 minutes)

The main job's proxy (BN recalibration on the 500 calibration images, then the 2,500 val images, 32 px, batches
of 500) evaluates the members of ``experiments.profile_proxy`` from an empty cache, whole split, on two paths:

- ``baseline``: ``supernet.layers.ONE_PIXEL_LINEAR = False`` (oneDNN's convolution for every 1x1 conv);
- ``default``: a 1x1 conv on one-pixel maps (the last stage at 32 px) as one linear layer.

Paths alternate member by member, round by round (noise bursts hit both); ratios are of medians. The two paths'
scores are compared too: the same arithmetic in another order, so they agree to rounding.
"""
from __future__ import annotations

import argparse
import statistics

import torch

import supernet.layers as layers
from experiments.common import machine_header, write_result
from experiments.profile_proxy import fresh_proxy, members, timed
from supernet.data import build_data
from supernet.elastic import Supernet

PATHS = {"baseline": False, "default": True}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (after one untimed round)")
    parser.add_argument("--no-write", action="store_true", help="print only (the tests)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    data = build_data({"name": "fashion", "calib_size": 500})
    net = Supernet("efficientformerv2", image_size=32, num_classes=10)
    chosen = members(net)
    times: dict[tuple[str, str], list[float]] = {(m, p): [] for m in chosen for p in PATHS}
    loss_diff = 0.0
    try:
        for r in range(args.rounds + 1):
            for name, (arch, ref) in chosen.items():
                for path, flag in PATHS.items():
                    layers.ONE_PIXEL_LINEAR = flag
                    seconds = timed(net, data, arch, ref, None)
                    if r:
                        times[(name, path)].append(seconds)
        for arch, _ in chosen.values():
            scores = []
            for flag in PATHS.values():
                layers.ONE_PIXEL_LINEAR = flag
                scores.append(fresh_proxy(net, data)(arch)["loss"])
            loss_diff = max(loss_diff, abs(scores[0] - scores[1]))
    finally:
        layers.ONE_PIXEL_LINEAR = True
    med = {key: statistics.median(v) for key, v in times.items()}
    ratios = {m: med[(m, "baseline")] / med[(m, "default")] for m in chosen}
    rows = [f"| {m} | {med[(m, 'baseline')]:.2f} | {med[(m, 'default')]:.2f} | {ratios[m]:.2f}x |" for m in chosen]
    lines = [
        "# Proxy scoring: one-pixel 1x1 convs as linear layers vs oneDNN's convolution", "",
        machine_header(), "",
        f"`python -m experiments.bench_scoring --rounds {args.rounds}`: whole-split evaluations (BN recalibration on 500 "
        "images, 2,500 val images, 32 px, batches of 500) from an empty cache, default-space supernet; the paths "
        f"alternate; median seconds over {args.rounds} rounds.", "",
        "| member | baseline (s) | default (s) | ratio |", "|---|---|---|---|", *rows, "",
        f"Largest |difference| of the two paths' proxy losses over these members: {loss_diff:.1e} (rounding).",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_result("bench_scoring", text, {"rounds": args.rounds, "seconds": {f"{m}|{p}": v for (m, p), v in times.items()},
                                             "median": {f"{m}|{p}": v for (m, p), v in med.items()}, "ratio": ratios,
                                             "max_loss_diff": loss_diff})
    return {"ratio": ratios, "max_loss_diff": loss_diff}


if __name__ == "__main__":
    main()
