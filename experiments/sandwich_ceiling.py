"""How much faster a sandwich step could get without changing its math: its batch-independent share.

    python -m experiments.sandwich_ceiling      # writes experiments/results/sandwich_ceiling.md (about 2 minutes)

Each member of one sandwich step (largest, smallest, 2 random) runs forward + backward on the default training
path (``eformer-train``'s Trainer: channels-last, 32 px Fashion-MNIST) at several batch sizes, the sizes
interleaved round by round (noise bursts hit all). A least-squares line ``time = fixed + per_image * batch`` per
member splits the step at the main job's batch of 128 into what grows with the images (the kernels' arithmetic)
and what does not (Python, dispatch, weight slicing, small-kernel launch costs). The ceiling is the speed-up if
the fixed part vanished entirely: ``t(128) / (t(128) - fixed)``. Beyond it, the same arithmetic per image has to
run faster in the kernels themselves, or there has to be less of it, which changes what is learned (lower precision,
smaller batches or members). The optimizer step (fused AdamW) is outside these timings.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from experiments.bench_training import build
from experiments.common import machine_header, write_result
from supernet.train.sandwich import sandwich_members

BATCHES = (4, 16, 64, 128)
LABELS = ("largest", "smallest", "random 1", "random 2")


def member_seconds(trainer, x: torch.Tensor, y: torch.Tensor, arch) -> float:
    """One forward + backward of ``arch`` on (x, y), in seconds."""
    net = trainer.supernet
    net.set_active(arch)
    start = time.perf_counter()
    out = net(x)
    F.cross_entropy(out[0] if isinstance(out, tuple) else out, y).backward()
    return time.perf_counter() - start


def fit(batches: tuple[int, ...], seconds: list[float]) -> tuple[float, float]:
    """Least-squares ``fixed, per_image`` of ``seconds ~ fixed + per_image * batch``."""
    mb, ms = statistics.fmean(batches), statistics.fmean(seconds)
    slope = sum((b - mb) * (s - ms) for b, s in zip(batches, seconds)) / sum((b - mb) ** 2 for b in batches)
    return ms - slope * mb, slope


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (after one untimed round)")
    parser.add_argument("--no-write", action="store_true", help="print only (the tests)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build("default", Path(tmp))
        trainer.supernet.train()
        x, y = next(iter(trainer.data.train_loader(max(BATCHES), 0)))
        x = x.contiguous(memory_format=torch.channels_last)
        members = sandwich_members(trainer.space, 0, trainer.t.seed, trainer.t.num_random, **trainer.context)
        times: dict[tuple[int, int], list[float]] = {(k, b): [] for k in range(len(members)) for b in BATCHES}
        for r in range(args.rounds + 1):
            for b in BATCHES:
                for k, arch in enumerate(members):
                    s = member_seconds(trainer, x[:b], y[:b], arch)
                    if r:
                        times[(k, b)].append(s)
                trainer.supernet.zero_grad(set_to_none=True)
    med = {key: statistics.median(v) for key, v in times.items()}
    full = max(BATCHES)
    rows, total, fixed_total = [], 0.0, 0.0
    for k, label in enumerate(LABELS[:len(members)]):
        fixed, per_image = fit(BATCHES, [med[(k, b)] for b in BATCHES])
        total += med[(k, full)]
        fixed_total += max(0.0, fixed)
        rows.append(f"| {label} | " + " | ".join(f"{1000 * med[(k, b)]:.0f}" for b in BATCHES)
                    + f" | {1000 * fixed:.0f} | {1000 * per_image:.2f} |")
    ceiling = total / (total - fixed_total)
    lines = [
        "# How much of a sandwich step does not grow with the batch", "",
        machine_header(), "",
        f"`python -m experiments.sandwich_ceiling --rounds {args.rounds}`: each member of one sandwich step, forward + "
        f"backward on the default training path (channels-last, 32 px Fashion-MNIST), batch sizes interleaved; "
        f"median ms over {args.rounds} rounds; `fixed` and `per image` from a least-squares line over the batch sizes.", "",
        "| member | " + " | ".join(f"batch {b} (ms)" for b in BATCHES) + " | fixed (ms) | per image (ms) |",
        "|---" * (len(BATCHES) + 3) + "|", *rows, "",
        f"At batch {full} the four members take {total:.3f} s, of which {fixed_total:.3f} s "
        f"({100 * fixed_total / total:.0f} %) does not grow with the batch. **Removing all of it would make the step "
        f"{ceiling:.2f}x faster** (the issue's goal is 2x). The rest grows with the images: the kernels' arithmetic, "
        "which only faster kernels or less arithmetic (lower precision, smaller batches or members: a different "
        "recipe) can shorten.",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_result("sandwich_ceiling", text, {"batches": list(BATCHES), "rounds": args.rounds,
                                                "median_s": {f"{LABELS[k]}@{b}": v for (k, b), v in med.items()},
                                                "step_s": total, "fixed_s": fixed_total, "ceiling": ceiling})
    return {"ceiling": ceiling, "step_s": total, "fixed_s": fixed_total}


if __name__ == "__main__":
    main()
