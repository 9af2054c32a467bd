"""Supernet training throughput: today's default path against the previous one, side by side in one run.

    python -m experiments.bench_training            # writes experiments/results/bench_training.md (about 3 minutes)
    python -m experiments.bench_training --steps 1 --no-write --json out.json   # the test

Both paths are ``eformer-train``'s own :class:`Trainer` on the embedded default (default space, 32 px
Fashion-MNIST, batch 128, largest + smallest + 2 random members, in-place distillation, AdamW, gradient clipping),
built from the same seed, so both start from the same weights and see the same batches and members:

- ``baseline``: ``train.channels_last=false train.fused_optimizer=false`` (the path before this benchmark);
- ``default``: ``train.channels_last=true train.fused_optimizer=true``.

Steps alternate between the paths (noise bursts hit both); the ratio is of the medians of the per-step wall
times. The first step's gradients are compared tensor by tensor before any update: ``max |diff|`` and that
difference relative to the tensor's largest gradient.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from conf import compose
from conf.schemas import TrainApp, register_schemas, typed
from experiments.common import machine_header, write_result
from supernet.train.trainer import Trainer

PATHS = {"baseline": ["train.channels_last=false", "train.fused_optimizer=false"],
         "default": ["train.channels_last=true", "train.fused_optimizer=true"]}


def build(name: str, root: Path) -> Trainer:
    register_schemas()
    trainer = Trainer(typed(compose("eformer_train", [f"run_dir={root / name}", "train.progress=false", *PATHS[name]]),
                            TrainApp))
    trainer.resume(trainer.build())
    return trainer


def gradients(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in trainer.supernet.named_parameters() if p.grad is not None}


def compare(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
    """How far gradient ``b`` lies from ``a``: the largest |difference|, that over the largest |gradient|, and
    the norm of the difference over the norm of ``a`` (all parameters as one vector; the measure the 1e-5 check uses:
    per element, the conv biases ahead of a BN have a gradient of exactly zero in exact arithmetic, so theirs is
    rounding noise of 1e-9 on either path)."""
    assert a.keys() == b.keys(), "the two paths trained different parameters"
    va = torch.cat([a[k].double().flatten() for k in a])
    vb = torch.cat([b[k].double().flatten() for k in a])
    diff = (va - vb).abs()
    return {"max_abs_diff": float(diff.max()), "max_abs_diff_over_max_grad": float(diff.max() / va.abs().max()),
            "norm_rel_diff": float(diff.norm() / va.norm()), "tensors": len(a), "values": int(va.numel())}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=24, help="timed steps per path (after one untimed step each)")
    parser.add_argument("--no-write", action="store_true", help="print only (the tests)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {name: build(name, Path(tmp)) for name in PATHS}
        batch_size = trainers["default"].t.batch_size
        loader = trainers["default"].data.train_loader(batch_size, 0)
        batches = iter(loader)
        times: dict[str, list[float]] = {name: [] for name in PATHS}
        grads = {}
        for step in range(args.steps + 1):
            x, y = next(batches)
            for name, trainer in trainers.items():
                start = time.perf_counter()
                trainer.train_step(x, y, 0)
                elapsed = time.perf_counter() - start
                if step == 0:
                    grads[name] = gradients(trainer)
                else:
                    times[name].append(elapsed)
        check = compare(grads["baseline"], grads["default"])
    med = {name: statistics.median(t) for name, t in times.items()}
    ratio = med["baseline"] / med["default"]
    lines = ["# Supernet training throughput: default path vs baseline", "", machine_header(), "",
             f"`python -m experiments.bench_training --steps {args.steps}`: the main job's training step (eformer-train's "
             f"Trainer.train_step: batch {batch_size}, largest + smallest + 2 random members, AdamW, gradient clipping), "
             f"{args.steps} timed steps per path, alternating, after one untimed step.", "",
             "| path | settings | median s/step | images/s | ratio |", "|---|---|---|---|---|"]
    for name in PATHS:
        lines.append(f"| {name} | `{' '.join(PATHS[name])}` | {med[name]:.3f} | {batch_size / med[name]:.1f} | "
                     f"{med['baseline'] / med[name]:.2f}x |")
    lines += ["", f"**Default vs baseline: {ratio:.2f}x images/s per sandwich step.** First step's gradients (same "
              f"weights, batch, members), over {check['values']:,} values in {check['tensors']} tensors: "
              f"||diff|| / ||grad|| {check['norm_rel_diff']:.1e} (check: <= 1e-5), max |diff| {check['max_abs_diff']:.1e} "
              f"against a max |grad| of {check['max_abs_diff'] / check['max_abs_diff_over_max_grad']:.3f}."]
    text = "\n".join(lines) + "\n"
    data = {"steps": args.steps, "batch_size": batch_size, "seconds_per_step": times, "median": med, "ratio": ratio,
            "gradients": check}
    if not args.no_write:
        write_result("bench_training", text, data)
    if args.json:
        args.json.write_text(json.dumps(data))
    print(text)
    return data


if __name__ == "__main__":
    main()
