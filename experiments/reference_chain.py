"""Chained vs from-scratch references in slimming, side by side in one run on the main job's supernet and LUT.

    python -m experiments.reference_chain [--work runs/pipeline] [--budget s0] [--rounds 2]

Each slimming step makes its winner the reference of the next step's neighbours. Chained (the default), a
winner that shares its first stages with the previous reference keeps their stage inputs and statistics and
runs only the stages it changed; from scratch (``SupernetProxy.chain_references = False``, the baseline) it is
evaluated again from the images. Both run the pipeline's slimming (racing, stage-wise expansions, 6 moves per
step) with an empty proxy cache, interleaved ``--rounds`` times. Reported: wall time (median), whole-split
evaluations, and whether both walk the same path to the same member with the same proxy loss.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from experiments.common import machine_header, write_result
from experiments.racing import interleaved, interleaved_table


def main() -> None:
    from search.proxy import SupernetProxy

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("runs/pipeline"))
    ap.add_argument("--budget", default="s0")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    if not (args.work / "supernet" / "supernet.pt").is_file():
        raise SystemExit(f"{args.work}: run eformer-pipeline first (its supernet and LUT are the inputs)")
    by = interleaved(args.work, args.budget, args.rounds, lambda on: setattr(SupernetProxy, "chain_references", on),
                     "chain", ("scratch", "chain"), Path("runs/reference_chain"))
    rows = by[False] + by[True]
    table, sec = interleaved_table(by, ("from scratch (baseline)", "chained"), "references")
    same = all(x["path"] == rows[0]["path"] and x["best"]["loss"] == rows[0]["best"]["loss"] for x in rows)
    best = rows[0]["best"]
    lines = [f"# Chained vs from-scratch slimming references ({args.budget.upper()}, the main job's settings)", "",
             machine_header(), "",
             f"{args.rounds} interleaved rounds on the same supernet and LUT, each run with an empty proxy cache.", "",
             *table]
    lines += ["", f"- Chained / from scratch: **{sec[True] / sec[False]:.2f}x** the wall time "
              f"({sec[False] / sec[True]:.2f}x faster).",
              f"- {'Every run walked the same path to' if same else 'The runs DIFFER; the first reached'} "
              f"`{best['summary']}` (proxy loss {best['loss']:.4f} ± {best['loss_std']:.4f}, "
              f"top-1 {best['top1']:.2f} ± {best['top1_std']:.2f} %)."]
    write_result("reference_chain", "\n".join(lines) + "\n", {"rows": rows, "median_seconds": sec, "same_path": same})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
