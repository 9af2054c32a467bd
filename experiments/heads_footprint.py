"""What the attention-heads dimension touches: the product modules that name it, measured by taking it out.

    python -m experiments.heads_footprint

Copies the committed tree (``git archive HEAD``) into a scratch repository, applies
``experiments/heads_footprint.patch`` - the heads dimension removed: its module and registry entry, its
slicing in ``supernet/blocks.py``, its cost in ``supernet/signatures.py``, its space YAML and its slimming
action, plus the test helper's random heads - and reports ``git diff --stat`` of the product packages (read
backwards, it is what adding the dimension touches) and the fast suite run in the copy without
``tests/test_heads.py``: everything else holds without the dimension, and the only failures are the tests
that name heads. A patch that no longer applies means a change since made the dimension reach further: the
script says so and fails.
"""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from experiments.common import machine_header, write_result

ROOT = Path(__file__).resolve().parent.parent
PATCH = Path(__file__).with_suffix(".patch")
PRODUCT = ("supernet", "latency_lut", "search", "conf")
NAMING_HEADS = ("tests/test_dimensions.py::test_bad_dimension_choices_fail_in_one_line_naming_the_dimension",  # its cases
                "tests/test_dimensions.py::test_slimming_actions_come_from_the_dimensions")  # the action list


def sh(args: list[str], cwd: Path, check: bool = True) -> str:
    out = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if check and out.returncode:
        raise SystemExit(f"{' '.join(args)}: exit {out.returncode}\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return out.stdout


def main() -> None:
    head = sh(["git", "rev-parse", "--short", "HEAD"], ROOT).strip()
    with tempfile.TemporaryDirectory(prefix="heads-footprint-") as tmp:
        work = Path(tmp)
        archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
        ident = ["-c", "user.email=footprint@example.invalid", "-c", "user.name=footprint"]
        sh(["git", "init", "-q"], work)
        sh(["git", "add", "-A"], work)
        sh(["git", *ident, "commit", "-qm", f"HEAD {head}"], work)
        applied = subprocess.run(["git", "apply", "--index", str(PATCH)], cwd=work, capture_output=True, text=True)
        if applied.returncode:
            raise SystemExit(f"{PATCH.name} no longer applies to {head}: the heads dimension reaches further now\n"
                             f"{applied.stderr[-2000:]}")
        stat = sh(["git", "diff", "--cached", "--stat", "HEAD", "--", *PRODUCT], work)
        files = sh(["git", "diff", "--cached", "--name-only", "HEAD", "--", *PRODUCT], work).split()
        modules = [f for f in files if f.endswith(".py")]
        t = time.time()
        run = subprocess.run([sys.executable, "-m", "pytest", "-m", "not slow", "-q", "-p", "no:cacheprovider", "-o",
                              "addopts=", "--ignore=tests/test_heads.py"], cwd=work, capture_output=True, text=True)
        seconds = time.time() - t
    tail = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr[-500:]
    failed = re.findall(r"^FAILED (.+?)(?: - .*)?$", run.stdout, re.M)
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|errors?)", tail)}
    lines = ["# The attention-heads dimension's footprint", "", machine_header(), "",
             f"`python -m experiments.heads_footprint` on {head}: the committed tree in a scratch repository, with "
             f"`experiments/heads_footprint.patch` applied (the heads dimension taken out). `git diff --stat` of the "
             f"product packages ({', '.join(PRODUCT)}), read backwards, is what adding the dimension touches:", "",
             "```", stat.rstrip(), "```", "",
             f"**{len(modules)} product Python modules** ({', '.join(modules)}) and {len(files) - len(modules)} YAML "
             f"files ({', '.join(f for f in files if not f.endswith('.py'))}).", "",
             f"The fast suite in the copy without `tests/test_heads.py` (`pytest -m \"not slow\"`, {seconds:.0f} s): "
             f"`{tail}`. The failures are the tests that name heads:", ""]
    lines += [f"- `{f}`" for f in failed] or ["- none"]
    lines += ["", "Every other fast test passes without the dimension, among them the pinned space hashes, preset and "
              "extreme architecture hashes, seeded samples and the 638 pieces of the committed LUT (tests/test_dimensions.py)."]
    write_result("heads_footprint", "\n".join(lines) + "\n",
                 {"head": head, "stat": stat, "files": files, "modules": modules, "summary": tail, "counts": counts,
                  "failed": failed, "seconds": seconds})
    print("\n".join(lines))
    if run.returncode not in (0, 1) or not all(f.startswith(NAMING_HEADS) for f in failed):
        raise SystemExit("a test that does not name heads fails without the dimension")


if __name__ == "__main__":
    main()
