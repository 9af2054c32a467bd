"""Where a sandwich step of the main job's supernet training spends its time (torch.profiler).

    python -m experiments.profile_sandwich      # writes experiments/results/profile_sandwich.md

The embedded default: default space, 32 px Fashion-MNIST batch of 128, largest + smallest + 2 random members,
in-place distillation, AdamW step; 2 warm-up steps, then 3 profiled steps, for each training path: the
contiguous layout with the per-tensor AdamW (the path before channels-last training) and the default
(channels-last batches, fused AdamW). Each table lists the operators with the most self CPU time and their
shares of that path's profiled total.
"""
from __future__ import annotations

import time

import torch
from torch.profiler import ProfilerActivity, profile

from experiments.common import machine_header, write_result
from supernet.data import build_data
from supernet.elastic import Supernet
from supernet.layers import LayerScale
from supernet.train.sandwich import sandwich_members, sandwich_step

TOP = 25


PATHS = {"contiguous, per-tensor AdamW": (False, False), "channels-last, fused AdamW (default)": (True, True)}


def profile_path(channels_last: bool, fused: bool) -> tuple[float, list]:
    """Seconds per step and the profiler's operator averages of one path."""
    torch.manual_seed(0)
    data = build_data({"name": "fashion", "calib_size": 500})
    net = Supernet("efficientformerv2", image_size=32, num_classes=10)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, LayerScale):
                m.gamma.fill_(0.1)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, fused=fused or None)
    batches = iter(data.train_loader(128, 0))

    def step(i: int) -> None:
        x, y = next(batches)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        opt.zero_grad(set_to_none=True)
        sandwich_step(net.train(), net, sandwich_members(net.space, i, 0, 2, **net.context), x, y)
        opt.step()

    for i in range(2):
        step(i)
    t = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(2, 5):
            step(i)
    return (time.perf_counter() - t) / 3, list(prof.key_averages())


def main() -> None:
    torch.set_num_threads(2)
    lines = ["# Profile of one sandwich step (main job's supernet training)", "", machine_header(), ""]
    data = {}
    for name, (channels_last, fused) in PATHS.items():
        wall, events = profile_path(channels_last, fused)
        total = sum(e.self_cpu_time_total for e in events) or 1
        rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:TOP]
        lines += [f"## {name}", "",
                  f"Default space, 32 px, batch 128, 4 members per step (largest, smallest, 2 random), AdamW; {wall:.2f} s "
                  "per step under the profiler (3 steps after 2 warm-up). Self CPU time per operator, share of all "
                  "operators' self time.", "", "| operator | calls | self CPU (ms per step) | share |", "|---|---|---|---|"]
        for e in rows:
            share = 100 * e.self_cpu_time_total / total
            lines.append(f"| `{e.key}` | {e.count // 3} | {e.self_cpu_time_total / 1000 / 3:.1f} | {share:.1f} % |")
        shown = sum(e.self_cpu_time_total for e in rows)
        lines += ["", f"The {TOP} operators shown hold {100 * shown / total:.0f} % of the self time.", ""]
        data[name] = {"seconds_per_step": wall,
                      "top": [{"op": e.key, "calls": e.count, "self_us": e.self_cpu_time_total} for e in rows]}
    write_result("profile_sandwich", "\n".join(lines), data)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
