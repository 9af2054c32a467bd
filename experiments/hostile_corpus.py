"""The developers' fault and hostile-input corpus: every CLI, tried as a careless user and as an attacker would.

    python -m experiments.hostile_corpus            # all cases (about 6 minutes on 2 cores)
    python -m experiments.hostile_corpus --only lut  # the cases of one class

Each case runs one command in a fresh directory (timeout 120 s) and is judged on: a non-zero exit; no
Python traceback; a short message (one line for our errors; Hydra's own few-line message for overrides that
fail at composition); no code executed (a marker file a malicious pickle would create); nothing written in the
working directory, and no changed input file. Results: experiments/results/hostile_corpus.{md,json}.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from experiments.common import RESULTS, machine_header, write_result
from experiments.hostile_cases import MARKER, Case, build_assets, cases


def run_case(case: Case, assets: Path, work: Path, timeout: float) -> dict:
    cwd = Path(tempfile.mkdtemp(prefix="case-", dir=work))
    case.setup(cwd, assets)
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in cwd.rglob("*") if p.is_file()}
    started = time.time()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    argv = case.argv
    if case.unprivileged and os.geteuid() == 0 and shutil.which("setpriv"):
        work.chmod(0o755)
        cwd.chmod(0o777)  # the other user's own working directory, and its own HOME (matplotlib caches fonts there)
        home = work / "home-nobody"
        home.mkdir(exist_ok=True)
        home.chmod(0o777)
        env["HOME"] = str(home)
        argv = [shutil.which("setpriv"), "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    try:
        res = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
        rc, err, hang = res.returncode, res.stderr, False
    except subprocess.TimeoutExpired as exc:
        rc, err, hang = None, (exc.stderr or b"").decode() if isinstance(exc.stderr, bytes) else (exc.stderr or ""), True
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in cwd.rglob("*") if p.is_file()}
    # dot-files are a killed writer's temporaries; lock files count: they must go with the run that made them
    written = sorted(str(p.relative_to(cwd)) for p in after if p not in before and p.name != MARKER
                     and (not p.name.startswith(".") or p.name.endswith(".lock")))
    changed = sorted(str(p.relative_to(cwd)) for p in before if p in after and before[p] != after[p])
    lines = [line for line in err.strip().splitlines() if line.strip() and "Warning" not in line and "warn(" not in line
             and "[W:onnxruntime" not in line]  # onnxruntime's telemetry notice when run as another user
    executed = (cwd / MARKER).exists()
    traceback = "Traceback (most recent call last)" in err
    # argparse's own form (Hydra's flag parser): a usage block, then one ``prog: error: ...`` line
    usage = bool(lines) and lines[0].startswith("usage:") and ": error: " in lines[-1] and len(lines) <= 12
    short = len(lines) == 1 or (case.hydra_message and usage)  # Hydra's composition errors are one line too
    clean = rc not in (0, None) and not traceback and not executed and (not written or case.keeps_work) and not changed and short and not hang
    shutil.rmtree(cwd, ignore_errors=True)
    return {"class": case.cls, "case": case.name, "argv": " ".join(case.argv), "rc": rc, "traceback": traceback, "executed": executed,
            "hang": hang, "written": written, "changed_inputs": changed, "message_lines": len(lines),
            "message": lines[-1][:300] if lines else "", "clean": clean, "seconds": round(time.time() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=None, help="run only the classes whose name contains this")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--into-report", action="store_true",
                        help="with --only: replace those classes' rows in the full report (results/hostile_corpus.json)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        work = Path(tmp)
        assets = work / "assets"
        assets.mkdir()
        build_assets(assets)
        todo = [c for c in cases(assets) if not args.only or args.only in c.cls]
        from tqdm import tqdm

        rows = [run_case(c, assets, work, args.timeout) for c in tqdm(todo, desc="hostile corpus", unit="case")]
    if args.only and args.into_report:
        old = json.loads((RESULTS / "hostile_corpus.json").read_text())["rows"]
        fresh = {r["class"] for r in rows}
        order = [r["class"] for r in old]
        rows = [r for r in old if r["class"] not in fresh] + rows
        rows.sort(key=lambda r: order.index(r["class"]) if r["class"] in order else len(order))
        args.only = None
    classes = sorted({r["class"] for r in rows}, key=[r["class"] for r in rows].index)
    lines = ["# Fault and hostile-input corpus", "",
             f"`python -m experiments.hostile_corpus` - {len(rows)} cases against eformer-train, eformer-lut, eformer-search and "
             "eformer-export. Clean = non-zero exit, no traceback, no code executed, nothing written in the working directory, "
             "inputs unchanged, no hang (120 s), and a one-line message (what Hydra refuses while composing too, led by the key; "
             "argparse's usage block plus one error line for Hydra's flags). The one case that writes is the slimming run that "
             "fails late: its study stays, resumable, as its message says.",
             "", machine_header(), "",
             "| class | cases | clean | tracebacks | code executed | written / changed | hangs |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for c in classes + ["all"]:
        rs = [r for r in rows if c == "all" or r["class"] == c]
        lines.append(f"| {'**all**' if c == 'all' else c} | {len(rs)} | {sum(r['clean'] for r in rs)} | {sum(r['traceback'] for r in rs)} | "
                     f"{sum(r['executed'] for r in rs)} | {sum(bool(r['written'] or r['changed_inputs']) for r in rs)} | {sum(r['hang'] for r in rs)} |")
    bad = [r for r in rows if not r["clean"]]
    lines += ["", "## Cases that are not clean" if bad else "All cases are clean.", ""]
    lines += [f"- {r['class']} / {r['case']}: rc {r['rc']}, {r['message_lines']} lines, written {r['written']}, last line: `{r['message']}`"
              for r in bad]
    lines += ["", "## Every case and its message", "", "| class | case | exit | message |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['class']} | {r['case']} | {r['rc']} | {r['message'].replace('|', '/')[:160]} |" for r in rows]
    print(write_result("hostile_corpus" if not args.only else f"hostile_corpus_{args.only.split()[0]}", "\n".join(lines) + "\n",
                       {"rows": rows}).read_text()[:3000])
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
