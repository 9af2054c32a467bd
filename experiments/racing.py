"""Racing vs exhaustive slimming, side by side in one run on the main job's supernet and LUT.

    python -m experiments.racing [--work runs/pipeline] [--budgets s0,s1] [--settings pipeline|paper]

For each budget, slimming runs twice, each with its own empty proxy cache: exhaustive (every candidate
scored on the whole split) and racing (screened on a class-balanced fifth, confirmed on the whole split).
``--settings pipeline`` (results/racing.md): the main job's quick settings (stage-wise expansions, 6 moves
per step); ``paper`` (results/racing_paper.md): eformer-search's slimming defaults, the paper's walk (one
FFN's expansion at a time, one move per step). Reported: whole-split
evaluations, screenings, wall time, the members each path chose and the final member's proxy loss with
its bootstrap noise. Needs ``eformer-pipeline`` to have run (its LUT and supernet), or builds them.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Callable

from experiments.common import machine_header, write_result

SETTINGS = {  # name -> (overrides of search=slimming, the result's name, its title)
    "pipeline": (["search.expansion_scope=stage", "search.moves_per_step=6"], "racing", "the main job's settings"),
    "paper": ([], "racing_paper", "eformer-search's slimming defaults: the paper's walk"),
}


def run(work: Path, budget: str, race: bool, out: Path, settings: str = "pipeline") -> dict:
    """One slimming run with ``settings`` (a :data:`SETTINGS` name) and an empty proxy cache: its time, counts, path
    and best."""
    from conf import compose
    from search.app import run_search

    cfg = compose("eformer_search", ["search=slimming", f"budget={budget}", f"supernet={work}/supernet",
                                     f"lut_file={work}/lut/ort-cpu-efficientformerv2-224.parquet", "storage=memory",
                                     "proxy.cache=null", "progress=false", f"run_dir={out}", *SETTINGS[settings][0],
                                     f"search.race={str(race).lower()}"])
    t = time.time()
    rec = run_search(cfg)
    return {"race": race, "seconds": time.time() - t, "evaluations": rec["evaluations"],
            "screenings": rec.get("screenings", 0), "path": [p["summary"] for p in rec["path"]],
            "best": rec["best"]}


def interleaved(work: Path, budget: str, rounds: int, switch: Callable[[bool], None], key: str, labels: tuple[str, str],
                out: Path) -> dict[bool, list[dict]]:
    """Racing slimming runs (:func:`run`) with ``switch(False)`` (the baseline) and ``switch(True)``, interleaved
    ``rounds`` times so machine drift hits both; the switch is left on. Each row records ``key`` (on or off) and its
    round, and is printed as it comes. Returns the rows of each setting."""
    by: dict[bool, list[dict]] = {False: [], True: []}
    for r in range(rounds):
        for on in (False, True):
            switch(on)
            row = run(work, budget, True, out / f"{r}-{labels[on]}")
            row.update({key: on, "round": r})
            by[on].append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "path"}), flush=True)
    switch(True)
    return by


def interleaved_table(by: dict[bool, list[dict]], names: tuple[str, str], column: str) -> tuple[list[str], dict[bool, float]]:
    """The Markdown rows of :func:`interleaved`'s runs (``names``: the baseline's, then the switched setting's; ``column``:
    the first column's header) and each setting's median seconds."""
    sec = {on: statistics.median(x["seconds"] for x in by[on]) for on in by}
    lines = [f"| {column} | seconds (each run) | median | whole-split evaluations | screenings |", "|---|---|---|---|---|"]
    for on in (False, True):
        each = ", ".join(f"{x['seconds']:.0f}" for x in by[on])
        lines.append(f"| {names[on]} | {each} | {sec[on]:.0f} | {by[on][0]['evaluations']} | {by[on][0]['screenings']} |")
    return lines, sec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("runs/pipeline"))
    ap.add_argument("--budgets", default="s0,s1")
    ap.add_argument("--settings", choices=sorted(SETTINGS), default="pipeline")
    args = ap.parse_args()
    _, name, title = SETTINGS[args.settings]
    if not (args.work / "supernet" / "supernet.pt").is_file():
        raise SystemExit(f"{args.work}: run eformer-pipeline first (its supernet and LUT are the inputs)")
    rows = []
    for b in args.budgets.split(","):
        for race in (False, True):  # exhaustive first, then racing, on the same supernet and LUT
            r = run(args.work, b, race, Path("runs") / name / f"{b}-{'race' if race else 'exhaustive'}", args.settings)
            r["budget"] = b
            rows.append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "path"}), flush=True)
    lines = [f"# Racing vs exhaustive slimming ({title})", "", machine_header(), "",
             "Both paths on the same supernet and LUT, each with an empty proxy cache. Whole-split evaluation = BN "
             "recalibration on the 500 calibration images + scoring the 2,500 val images; a screening scores the first "
             "500 (class-balanced) after the same recalibration, and a confirmed candidate's whole-split evaluation "
             "continues from its screening.", "",
             "| budget | path | whole-split evaluations | screenings | seconds | final member | proxy loss ± sd | top-1 (%) ± sd |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        best = r["best"]
        lines.append(f"| {r['budget'].upper()} | {'racing' if r['race'] else 'exhaustive'} | {r['evaluations']} | {r['screenings']} | "
                     f"{r['seconds']:.0f} | `{best['summary']}` | {best['loss']:.4f} ± {best['loss_std']:.4f} | "
                     f"{best['top1']:.2f} ± {best['top1_std']:.2f} |")
    lines.append("")
    for b in args.budgets.split(","):
        ex, ra = [r for r in rows if r["budget"] == b]
        same = ex["path"] == ra["path"]
        differs = f"paths differ (exhaustive {len(ex['path'])} members, racing {len(ra['path'])})"
        lines.append(f"- {b.upper()}: {ex['evaluations'] / max(1, ra['evaluations']):.2f}x fewer whole-split evaluations; "
                     f"{'the same path, member for member' if same else differs}.")
    write_result(name, "\n".join(lines) + "\n", {"rows": rows})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
