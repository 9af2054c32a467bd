"""Two-pass vs var_mean BN-recalibration statistics, side by side in one run on the main job's supernet and LUT.

    python -m experiments.bn_stats [--work runs/pipeline] [--repeats 5] [--rounds 1]

Each whole-split evaluation of the proxy recalibrates the member's BNs on the calibration batch, taking each BN
input's batch moments before normalizing it. The baseline (``PooledBatchStats.two_pass = False``) takes them with
``torch.var_mean``; two-pass (the default) takes the mean, then the sum of squared deviations from it, with plain
vectorized reductions. Reported, interleaved:

1. one evaluation of S0, S1, S2 and L from scratch (median of ``--repeats``);
2. the error of each way's statistics against float64 on the calibration inputs of S1's BNs;
3. slimming to S0 with the pipeline's settings (racing) and an empty proxy cache: wall time, and whether both
   walk the same path to the same member (and how far apart its proxy losses are).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from experiments.common import machine_header, write_result
from experiments.racing import interleaved, interleaved_table

PRESETS = ("s0", "s1", "s2", "l")


def eval_seconds(work: Path, repeats: int) -> dict[bool, dict[str, list[float]]]:
    """Seconds of one from-scratch proxy evaluation per preset, two-pass and var_mean interleaved."""
    from conf.schemas import ProxySchema
    from search.proxies import weight_sharing_proxy
    from supernet import ArchConfig
    from supernet.bn_calibration import PooledBatchStats
    from supernet.elastic import Supernet

    net = Supernet.load(work / "supernet")
    proxy = weight_sharing_proxy(ProxySchema(), net, "bn-stats", "cpu")
    out: dict[bool, dict[str, list[float]]] = {f: {p: [] for p in PRESETS} for f in (False, True)}
    proxy(net.member(ArchConfig.preset("s0")))  # warm-up: decoded images, allocator
    for _ in range(repeats):
        for p in PRESETS:
            for two_pass in (False, True):
                PooledBatchStats.two_pass = two_pass
                proxy._ref, proxy._pending_ref = None, None
                proxy.cache.clear()
                t = time.perf_counter()
                proxy(net.member(ArchConfig.preset(p)))
                out[two_pass][p].append(time.perf_counter() - t)
    PooledBatchStats.two_pass = True
    return out


def stat_errors(work: Path) -> dict[bool, dict[str, float]]:
    """Largest relative error of each way's per-batch mean and variance against float64, over S1's BN inputs."""
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    from conf.schemas import ProxySchema
    from search.proxies import weight_sharing_proxy
    from supernet import ArchConfig
    from supernet.bn_calibration import PooledBatchStats, batch_statistics
    from supernet.elastic import Supernet

    net = Supernet.load(work / "supernet")
    proxy = weight_sharing_proxy(ProxySchema(), net, "bn-stats", "cpu")
    net.set_active(net.member(ArchConfig.preset("s1")))
    inputs: list[torch.Tensor] = []

    class BatchNormInputs(TorchFunctionMode):  # torch's own hook on every F.batch_norm call
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is F.batch_norm:
                inputs.append(args[0].detach().clone())
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), batch_statistics(net), BatchNormInputs():  # the BN inputs of one calibration pass
        for x in proxy.calib.load([0]):
            net(x.contiguous(memory_format=torch.channels_last))
    err = {False: {"mean": 0.0, "var": 0.0}, True: {"mean": 0.0, "var": 0.0}}
    for x in inputs:
        dims = [0] + list(range(2, x.dim()))
        xd = x.double()
        t_mean = xd.mean(dims, keepdim=True)
        t_m2, t_mean = (xd - t_mean).square().sum(dims), t_mean.flatten()
        sd = (t_m2 / (x.numel() // x.shape[1])).sqrt().clamp_min(1e-30)  # the mean's error relative to the spread
        for two_pass in (False, True):
            PooledBatchStats.two_pass = two_pass
            s = PooledBatchStats()
            s.add(x)
            err[two_pass]["mean"] = max(err[two_pass]["mean"], ((s.mean - t_mean).abs() / sd).max().item())
            err[two_pass]["var"] = max(err[two_pass]["var"], ((s.m2 - t_m2).abs() / t_m2.clamp_min(1e-30)).max().item())
    PooledBatchStats.two_pass = True
    return {**err, "bns": len(inputs)}


def main() -> None:
    from supernet.bn_calibration import PooledBatchStats

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("runs/pipeline"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    if not (args.work / "supernet" / "supernet.pt").is_file():
        raise SystemExit(f"{args.work}: run eformer-pipeline first (its supernet and LUT are the inputs)")
    torch.set_grad_enabled(False)
    evals = eval_seconds(args.work, args.repeats)
    med = {f: {p: statistics.median(evals[f][p]) for p in PRESETS} for f in evals}
    print(json.dumps({str(k): v for k, v in med.items()}), flush=True)
    errors = stat_errors(args.work)
    print(json.dumps({str(k): v for k, v in errors.items()}), flush=True)
    torch.set_grad_enabled(True)
    by = interleaved(args.work, "s0", args.rounds, lambda on: setattr(PooledBatchStats, "two_pass", on), "two_pass",
                     ("var_mean", "two-pass"), Path("runs/bn_stats"))
    rows = by[False] + by[True]
    table, sec = interleaved_table(by, ("var_mean (baseline)", "two-pass"), "statistics")
    same = all(x["path"] == rows[0]["path"] for x in rows)
    loss_gap = max(abs(x["best"]["loss"] - rows[0]["best"]["loss"]) for x in rows)
    lines = ["# Two-pass vs var_mean BN-recalibration statistics (the proxy's evaluations)", "", machine_header(), "",
             f"One from-scratch whole-split evaluation (BN recalibration on the 500 calibration images, scoring the 2,500 "
             f"val images), median of {args.repeats}, the two ways interleaved:", "",
             "| member | var_mean (s) | two-pass (s) | two-pass / var_mean |", "|---|---|---|---|"]
    for p in PRESETS:
        lines.append(f"| {p.upper()} | {med[False][p]:.3f} | {med[True][p]:.3f} | {med[True][p] / med[False][p]:.2f} |")
    lines += ["", f"Largest error against float64 over the {errors['bns']} BN inputs of S1's calibration pass: mean "
              f"(relative to the channel's standard deviation) var_mean {errors[False]['mean']:.1e}, two-pass "
              f"{errors[True]['mean']:.1e}; sum of squared deviations (relative) var_mean {errors[False]['var']:.1e}, two-pass "
              f"{errors[True]['var']:.1e}.", "",
              f"Slimming to S0 (the main job's settings, racing, empty proxy cache), {args.rounds} interleaved round(s):", "",
              *table]
    best = rows[0]["best"]
    lines += ["", f"- Two-pass / var_mean: **{sec[True] / sec[False]:.2f}x** the slimming wall time.",
              f"- {'Both walked the same path, member for member, to' if same else 'The paths DIFFER; the first reached'} "
              f"`{best['summary']}` (proxy loss {best['loss']:.4f} ± {best['loss_std']:.4f}; the runs' losses of it "
              f"differ by at most {loss_gap:.1e})."]
    write_result("bn_stats", "\n".join(lines) + "\n",
                 {"eval_seconds": {str(k): v for k, v in evals.items()}, "errors": {str(k): v for k, v in errors.items()},
                  "slimming": rows, "same_path": same})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
