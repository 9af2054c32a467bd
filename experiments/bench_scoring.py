"""Proxy scoring throughput: today's inference path against the previous one, side by side in one run.

    python -m experiments.bench_scoring             # writes experiments/results/bench_scoring.md (about 8 minutes)

Two changes, measured where each shows:

1. ``supernet.layers.ONE_PIXEL_LINEAR``: a 1x1 conv on one-pixel maps (the last stage at 32 px) as one linear
   layer instead of oneDNN's convolution. The main job's proxy (BN recalibration on the 500 calibration images,
   then the 2,500 val images, 32 px, batches of 500) evaluates the members of ``experiments.profile_proxy`` from
   an empty cache, whole split, with the switch off and on alternately in one process.
2. :func:`supernet.host_memory.reuse_freed_memory` (what the apps call) on top: a slimming search as
   ``eformer-search`` runs it (the main job's slimming settings, budget L, a fresh proxy cache, an untrained
   default-space supernet and the committed LUT), each in its own process (malloc's settings cannot be undone in
   one), baseline (both changes off) and default (both on) alternating round by round. Its minor page faults and
   system time are counted, and the two searches must choose the same members.

Ratios are of medians. The two paths' scores are compared too: the same arithmetic in another order, or the same
arithmetic in other memory, so they agree to rounding.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PATHS = ("baseline", "default")
ROOT = Path(__file__).resolve().parent.parent


def per_member(rounds: int) -> tuple[dict, float]:
    """Part 1: {(member, path): seconds} over ``rounds`` alternating rounds, and the largest loss difference."""
    import torch

    import supernet.layers as layers
    from experiments.profile_proxy import members, timed
    from supernet.data import build_data
    from supernet.elastic import Supernet

    torch.manual_seed(0)
    data = build_data({"name": "fashion", "calib_size": 500})
    net = Supernet("efficientformerv2", image_size=32, num_classes=10)
    chosen = members(net)
    times: dict[tuple[str, str], list[float]] = {(m, p): [] for m in chosen for p in PATHS}
    losses: dict[tuple[str, str], float] = {}
    try:
        for r in range(rounds + 1):
            for name, (arch, ref) in chosen.items():
                for path in PATHS:
                    layers.ONE_PIXEL_LINEAR = path == "default"
                    seconds, score = timed(net, data, arch, ref, None)
                    losses[(name, path)] = score["loss"]
                    if r:
                        times[(name, path)].append(seconds)
    finally:
        layers.ONE_PIXEL_LINEAR = True
    diff = max(abs(losses[(m, "baseline")] - losses[(m, "default")]) for m in chosen)
    return {k: statistics.median(v) for k, v in times.items()}, diff


def search_worker(path: str, work: Path) -> dict:
    """Part 2, one process: the slimming search on ``path``; its seconds, system time, page faults and choice."""
    import supernet.host_memory as host_memory
    import supernet.layers as layers
    from conf import compose
    from search.app import run_search
    from search.results import load_study
    from search.slimming import slimming_path

    if path == "baseline":
        layers.ONE_PIXEL_LINEAR = False
        host_memory.reuse_freed_memory = lambda: False
    run_dir = work / f"search-{path}"
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    lut = ROOT / "luts" / "ort-cpu-efficientformerv2-224.parquet"
    run = run_search(compose("eformer_search", [
        "search=slimming", "budget=l", f"supernet={work / 'supernet.pt'}", f"lut_file={lut}", "proxy.cache=null",
        "progress=false", f"run_dir={run_dir}", "search.expansion_scope=stage", "search.moves_per_step=6", "search.race=true"]))
    seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    steps = slimming_path(load_study(run))
    chosen, losses = [t.user_attrs["arch"] for t in steps], [t.values[0] for t in steps]
    shutil.rmtree(run_dir)
    return {"seconds": seconds, "system_s": after.ru_stime - before.ru_stime, "faults": after.ru_minflt - before.ru_minflt,
            "trials": run["trials"], "path": chosen, "losses": losses}


def per_search(rounds: int) -> tuple[dict, list[dict], list[dict]]:
    """Part 2: alternating processes per path; medians and every run."""
    import torch
    from omegaconf import OmegaConf

    from conf import compose
    from supernet.elastic import Supernet
    from supernet.space import SearchSpace

    runs: dict[str, list[dict]] = {p: [] for p in PATHS}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        torch.manual_seed(0)
        data = OmegaConf.to_container(compose("eformer_train", []).data, resolve=True)  # the main job's data settings
        Supernet(SearchSpace.load("efficientformerv2"), image_size=32, num_classes=10, distillation=False).save(
            work / "supernet.pt", train_config={f"data.{k}": v for k, v in data.items()})
        for _ in range(rounds):
            for path in PATHS:
                res = subprocess.run([sys.executable, "-m", "experiments.bench_scoring", "--search-worker", path, str(work)],
                                     capture_output=True, text=True, check=True, cwd=ROOT)
                runs[path].append(json.loads(res.stdout.strip().splitlines()[-1]))
    med = {(p, k): statistics.median(r[k] for r in runs[p]) for p in PATHS for k in ("seconds", "system_s", "faults")}
    return med, runs["baseline"], runs["default"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of each part")
    parser.add_argument("--no-write", action="store_true", help="print only (the tests)")
    parser.add_argument("--search-worker", nargs=2, metavar=("PATH", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.search_worker:
        print(json.dumps(search_worker(args.search_worker[0], Path(args.search_worker[1]))))
        return {}
    from experiments.common import machine_header, write_result

    members_s, member_diff = per_member(args.rounds)
    search_s, base_runs, new_runs = per_search(args.rounds)
    names = list(dict.fromkeys(m for m, _ in members_s))
    ratios = {m: members_s[(m, "baseline")] / members_s[(m, "default")] for m in names}
    search_ratio = search_s[("baseline", "seconds")] / search_s[("default", "seconds")]
    same = all(b["path"] == n["path"] for b, n in zip(base_runs, new_runs))
    loss_diff = max(abs(x - y) for b, n in zip(base_runs, new_runs) for x, y in zip(b["losses"], n["losses"]))
    rows = [f"| {m} | {members_s[(m, 'baseline')]:.2f} | {members_s[(m, 'default')]:.2f} | {ratios[m]:.2f}x |" for m in names]
    lines = [
        "# Proxy scoring: today's inference path vs the previous one", "",
        machine_header(), "",
        f"`python -m experiments.bench_scoring --rounds {args.rounds}`; medians over {args.rounds} alternating rounds.", "",
        "## 1. One-pixel 1x1 convs as linear layers (`supernet.layers.ONE_PIXEL_LINEAR`), per whole-split evaluation", "",
        "BN recalibration on 500 images, then 2,500 val images, 32 px, batches of 500, default-space supernet, from an "
        "empty cache; off and on alternately in one process.", "",
        "| member | oneDNN convolution (s) | linear layer (s) | ratio |", "|---|---|---|---|", *rows, "",
        f"Largest |difference| of the proxy losses: {member_diff:.1e}.", "",
        "## 2. Both changes in a slimming search (`supernet.host_memory.reuse_freed_memory` on top)", "",
        "`eformer-search search=slimming budget=l` with the main job's slimming settings (stage-wise expansions, 6 moves "
        "per step, racing), a fresh proxy cache, an untrained default-space supernet and the committed LUT; each search "
        "in its own process, baseline (both off) and default (both on) alternating.", "",
        "| path | seconds | system time (s) | minor page faults | trials |", "|---|---|---|---|---|",
        *[f"| {p} | {search_s[(p, 'seconds')]:.1f} | {search_s[(p, 'system_s')]:.2f} | {search_s[(p, 'faults')]:,.0f} | "
          f"{(base_runs if p == 'baseline' else new_runs)[0]['trials']} |" for p in PATHS], "",
        f"**The search: {search_ratio:.2f}x faster.** Same path member for member in every round: {same}; largest "
        f"|difference| of the path's proxy losses: {loss_diff:.1e}.",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_result("bench_scoring", text, {"rounds": args.rounds, "member_seconds": {f"{m}|{p}": v for (m, p), v in members_s.items()},
                                             "member_ratio": ratios, "member_loss_diff": member_diff,
                                             "search": {"baseline": base_runs, "default": new_runs}, "search_ratio": search_ratio,
                                             "same_path": same, "search_loss_diff": loss_diff})
    return {"member_ratio": ratios, "search_ratio": search_ratio, "same_path": same}


if __name__ == "__main__":
    main()
