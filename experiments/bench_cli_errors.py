"""How fast does each CLI report a mistake in its options? This tree against a baseline commit, side by side.

    python -m experiments.bench_cli_errors [--baseline 7334162] [--rounds 7]

Each case is one CLI invocation with a bad option (exit 2, one line). The baseline runs from a detached git
worktree of ``--baseline`` (its modules first on ``PYTHONPATH``), this tree from the repository; the two alternate
case by case, round by round, so machine drift hits both. Reported: the median wall time of each, and the ratio.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from experiments.common import ROOT, machine_header, write_result

CASES = [  # (module with main(), argv)
    ("search.app", ["eformer-search", "search=anneal"]),
    ("search.app", ["eformer-search", "budget.latency_ms=-1"]),
    ("search.app", ["eformer-search", "validate-proxy", "members=2"]),
    ("latency_lut.app", ["eformer-lut", "build", "lut.repeats=0"]),
    ("supernet.train.app", ["eformer-train", "train.epochs=0"]),
    ("search.pipeline", ["eformer-pipeline", "budgets=[s9]"]),
    ("search.export_cli", ["eformer-export", "onnx", "--arch", "s7"]),
]


def run_case(tree: Path, module: str, argv: list[str], cwd: Path) -> tuple[float, int, str]:
    """Wall time, exit code and last stderr line of ``argv`` run from ``tree``'s ``module``."""
    code = f"import sys; sys.argv = {argv!r}; from {module} import main; main()"
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd,
                         env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin", "HOME": str(cwd)})
    lines = res.stderr.strip().splitlines()
    return time.perf_counter() - t, res.returncode, lines[-1] if lines else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", default="7334162", help="the commit to compare with (default: before deferred imports)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cli-errors-") as tmp:
        base, cwd = Path(tmp) / "baseline", Path(tmp) / "cwd"
        cwd.mkdir()
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(base), args.baseline], check=True)
        try:
            times: dict[tuple[int, str], list[float]] = {}
            for _ in range(args.rounds):
                for i, (module, argv) in enumerate(CASES):
                    for label, tree in (("baseline", base), ("this tree", ROOT)):
                        sec, rc, last = run_case(tree, module, argv, cwd)
                        if rc != 2 or ": error: " not in last:
                            raise SystemExit(f"{label}: {' '.join(argv)} gave exit {rc}: {last}")
                        times.setdefault((i, label), []).append(sec)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
    lines = ["# Option errors: time to the one-line message", "", machine_header(), "",
             f"`python -m experiments.bench_cli_errors --baseline {args.baseline} --rounds {args.rounds}`: each CLI with a bad "
             "option, run as a fresh process from a worktree of the baseline and from this tree, alternating; median of "
             f"{args.rounds} rounds.", "",
             "| command | baseline (s) | this tree (s) | ratio |", "|---|---|---|---|"]
    ratios = []
    for i, (_, argv) in enumerate(CASES):
        b, n = statistics.median(times[(i, "baseline")]), statistics.median(times[(i, "this tree")])
        ratios.append(b / n)
        lines.append(f"| `{' '.join(argv)}` | {b:.2f} | {n:.2f} | {b / n:.1f}x |")
    lines += ["", f"Median ratio over the {len(CASES)} commands: **{statistics.median(ratios):.1f}x** faster to the error."]
    text = "\n".join(lines) + "\n"
    if not args.no_write:
        write_result("bench_cli_errors", text, {"baseline": args.baseline, "rounds": args.rounds,
                                                "times": {f"{CASES[i][1]}|{label}": v for (i, label), v in times.items()}})
    print(text)


if __name__ == "__main__":
    main()
