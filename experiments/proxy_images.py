"""Does slimming choose the same members when the proxy scores fewer images? The whole split and a part of it, side by side.

    python -m experiments.proxy_images --work-dir runs/pipeline     # writes experiments/results/proxy_images.md

On a finished main job's supernet and LUT (``--work-dir``: an ``eformer-pipeline`` work dir), the main job's four
slimming searches (its ``slimming_overrides``, S0 first, then S1, S2 and L on the same score cache) run twice, each
from an empty cache: on the whole search split (``proxy.val_images=null``, the main job's 2,500 images) and on a
seeded, class-balanced part of it (``proxy.val_images=N``). Where the two paths end in different members, the part's
member is scored on the whole split too, and the two losses are compared against twice their combined noise
(the bootstrap standard deviations, as the main job's final table does).
"""
from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path
from typing import Any, Optional

from conf import compose
from conf.schemas import ProxySchema, typed
from experiments.common import machine_header, write_result
from search.app import file_digest, run_search
from search.pipeline import search_inputs, slimming_stage_overrides
from search.proxies import build_proxy
from search.results import arch_of, load_study
from supernet.elastic import Supernet

BUDGETS = ("s0", "s1", "s2", "l")


def slimming_runs(work: Path, root: Path, val_images: Optional[int]) -> dict[str, dict[str, Any]]:
    """The main job's slimming searches on ``work``'s supernet and LUT, scoring ``val_images`` (None: all)."""
    pipeline = compose("eformer_pipeline", [f"work_dir={work}"])
    inputs = search_inputs(pipeline, work / "supernet" / "supernet.pt", next((work / "lut").glob("*.parquet")),
                           root / "cache.jsonl")
    part = [f"proxy.val_images={'null' if val_images is None else val_images}", "progress=false"]
    return {b: run_search(compose("eformer_search", slimming_stage_overrides(pipeline, b, root / b, inputs) + part))
            for b in BUDGETS}


def whole_split_scores(work: Path, cache: Path, runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each run's final member scored on the whole split (the whole-split runs' cache: mostly already stored)."""
    supernet = Supernet.load(work / "supernet" / "supernet.pt")
    proxy = build_proxy(typed(compose("eformer_search", [f"proxy.cache={cache}"]).proxy, ProxySchema), supernet,
                        file_digest(supernet.source_path), "auto")
    out = {}
    for b, rec in runs.items():
        study = load_study(rec)
        out[b] = proxy(arch_of(study.trials[rec["best_trial"]]))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work-dir", type=Path, default=Path("runs/pipeline"), help="a finished eformer-pipeline work dir")
    ap.add_argument("--val-images", type=int, default=1250, help="the part of the split the second path scores")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    work = args.work_dir.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        whole_dir, part_dir = Path(tmp) / "whole", Path(tmp) / "part"
        whole = slimming_runs(work, whole_dir, None)
        part = slimming_runs(work, part_dir, args.val_images)
        rescored = whole_split_scores(work, whole_dir / "cache.jsonl", part)
    n_whole = whole["s0"]["proxy_data"]["images"]
    lines = ["# Slimming on the whole split vs a part of it", "", machine_header(), "",
             f"`python -m experiments.proxy_images --val-images {args.val_images}` on the main job's supernet and LUT "
             f"(`{args.work_dir}`): its four slimming searches from empty caches, scoring the whole split ({n_whole} "
             f"images) or a seeded class-balanced {args.val_images}. The part's final members are scored on the whole "
             "split; 2 x noise = twice the root sum of squares of the two bootstrap standard deviations.", "",
             "| budget | steps (whole / part) | same path | whole-split evaluations (whole / part) | seconds (whole / part) | "
             "final member, whole | final member, part | whole-split loss, whole | whole-split loss, part | difference | "
             "2 x noise |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    rows = {}
    for b in BUDGETS:
        w, p, r = whole[b], part[b], rescored[b]
        wp, pp = [s["summary"] for s in w["path"]], [s["summary"] for s in p["path"]]
        diff = r["loss"] - w["best"]["loss"]
        noise = 2 * math.hypot(r["loss_std"], w["best"]["loss_std"])
        rows[b] = {"same_path": wp == pp, "whole_path": wp, "part_path": pp, "whole_seconds": w["seconds"],
                   "part_seconds": p["seconds"], "whole_evaluations": w["evaluations"], "part_evaluations": p["evaluations"],
                   "whole_loss": w["best"]["loss"], "part_loss_on_whole": r["loss"], "difference": diff, "two_noise": noise}
        lines.append(f"| {b.upper()} | {len(wp) - 1} / {len(pp) - 1} | {'yes' if wp == pp else 'no'} | {w['evaluations']} / "
                     f"{p['evaluations']} | {w['seconds']:.0f} / {p['seconds']:.0f} | `{wp[-1]}` | `{pp[-1]}` | "
                     f"{w['best']['loss']:.4f} ± {w['best']['loss_std']:.4f} | {r['loss']:.4f} ± {r['loss_std']:.4f} | "
                     f"{diff:+.4f} | {noise:.4f} |")
    text = "\n".join(lines) + "\n"
    if not args.no_write:
        write_result("proxy_images", text, {"val_images": args.val_images, "whole_images": n_whole, "budgets": rows})
    print(text)
    return rows


if __name__ == "__main__":
    main()
