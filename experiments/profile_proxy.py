"""Where a whole-split proxy evaluation of the main job spends its time: BN recalibration vs scoring, and operators.

    python -m experiments.profile_proxy      # writes experiments/results/profile_proxy.md

The main job's proxy (``proxy.*`` defaults: 500 calibration and 2,500 val images of the embedded subset at 32 px,
batches of 500, channels-last), on a default-space supernet (random weights: the time does not depend on them),
for the largest member (where slimming starts), the released S0 and L as members, and a member that differs from
the reference only in its last stage (an incremental evaluation). Each evaluation is timed from an empty cache,
interleaved over ``--rounds`` rounds (median). A screening of the first k batches times the recalibration plus k
batches, so the recalibration is ``2 t(1) - t(2)`` and one val batch ``t(2) - t(1)``. Then the operators of one
evaluation of the largest member under torch.profiler, with their shares of its self CPU time.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from experiments.common import machine_header, write_result
from search.proxy import SupernetProxy
from supernet.arch import ArchConfig
from supernet.data import build_data
from supernet.elastic import Supernet
from supernet.signatures import arch_signatures, count_macs

TOP = 20


def fresh_proxy(net: Supernet, data) -> SupernetProxy:
    """A proxy with the main job's settings and nothing cached."""
    return SupernetProxy.from_data(net, data)


def members(net: Supernet) -> dict[str, tuple[ArchConfig, ArchConfig | None]]:
    """Name -> (member, the reference it is evaluated against, or None for a whole evaluation)."""
    big = net.largest()
    last = big.replace(stages=big.stages[:3] + (ArchConfig.preset("s0").replace(**net.context).stages[3],))
    return {"largest": (big, None), "S0": (ArchConfig.preset("s0"), None), "L": (ArchConfig.preset("l"), None),
            "largest, last stage changed (incremental)": (last, big)}


def timed(net: Supernet, data, arch: ArchConfig, ref: ArchConfig | None, batches: int | None) -> tuple[float, object]:
    """Seconds of one evaluation of ``arch`` (all batches, or a screening of the first ``batches``), and what it
    returned (the score, or the screening)."""
    proxy = fresh_proxy(net, data)
    if ref is not None:
        proxy.reference(ref)
    t = time.perf_counter()
    result = proxy(arch) if batches is None else proxy.screen(arch, batches / len(proxy.val))
    return time.perf_counter() - t, result


def run_macs(arch: ArchConfig, last_stage_only: bool) -> int:
    """MACs per image of what an evaluation runs: the whole member, or its last stage's blocks and the head."""
    if not last_stage_only:
        return count_macs(arch)
    r = arch.resolution(3)
    return sum(s.macs for s in arch_signatures(arch) if (s.kind in ("ffn", "attn") and s.resolution == r) or s.kind == "head")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    data = build_data({"name": "fashion", "calib_size": 500, "image_size": 32})
    net = Supernet("efficientformerv2", image_size=32, num_classes=10, distillation=False).eval()
    n_val = len(fresh_proxy(net, data).val)
    cases = members(net)
    samples: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):  # interleaved: machine drift hits every cell alike
        for name, (arch, ref) in cases.items():
            for label, k in (("whole split", None), ("1 batch", 1), ("2 batches", 2)):
                samples.setdefault((name, label), []).append(timed(net, data, arch, ref, k)[0])
    med = {key: statistics.median(v) for key, v in samples.items()}
    lines = ["# Where a whole-split proxy evaluation spends its time", "", machine_header(), "",
             f"`python -m experiments.profile_proxy --rounds {args.rounds}`: the main job's proxy (500 calibration + "
             f"2,500 val images, 32 px, batches of 500: {n_val} val batches), default-space supernet; median of "
             f"{args.rounds} interleaved rounds, each from an empty cache. Recalibration = 2 t(1 batch) - t(2 batches); "
             "one val batch = t(2) - t(1).", "",
             "GFLOP/s: the MACs it runs per image (supernet.signatures: the whole member, or the changed last stage's "
             "blocks and the head) x 2 x 3,000 images over the whole-split time (BN, GELU and the moments not counted).", "",
             "| member | whole split (s) | recalibration (s) | one val batch of 500 (s) | recalibration share | GFLOP/s |",
             "|---|---|---|---|---|---|"]
    for name, (arch, ref) in cases.items():
        whole, one, two = (med[(name, x)] for x in ("whole split", "1 batch", "2 batches"))
        recal, batch = 2 * one - two, two - one
        macs = run_macs(net.member(arch), ref is not None)
        lines.append(f"| {name} | {whole:.2f} | {recal:.2f} | {batch:.2f} | {recal / whole:.0%} | "
                     f"{2 * macs * 3000 / whole / 1e9:.0f} |")
    big, _ = cases["largest"]
    proxy = fresh_proxy(net, data)
    proxy(net.smallest())  # warm: the images decoded and kept, as in a search
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        proxy(big)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    lines += ["", f"Operators of one whole-split evaluation of the largest member under torch.profiler ({total / 1e6:.2f} s "
              "of self CPU time), the images already decoded:", "", "| operator | calls | self CPU (ms) | share |",
              "|---|---|---|---|"]
    for e in events[:TOP]:
        lines.append(f"| `{e.key}` | {e.count} | {e.self_cpu_time_total / 1e3:.1f} | {e.self_cpu_time_total / total:.1%} |")
    shown = sum(e.self_cpu_time_total for e in events[:TOP]) / total
    lines += ["", f"The {TOP} operators shown hold {shown:.0%} of the self time."]
    write_result("profile_proxy", "\n".join(lines) + "\n", {"median_s": {f"{a} | {b}": v for (a, b), v in med.items()},
                                                            "samples": {f"{a} | {b}": v for (a, b), v in samples.items()},
                                                            "operators": [(e.key, e.count, e.self_cpu_time_total) for e in events[:TOP]]})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
