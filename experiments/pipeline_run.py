"""The main job as a user runs it: ``eformer-pipeline`` from scratch (timed), again (everything
reused), and a fresh run killed with SIGKILL during supernet training then rerun (finished stages
not redone, training resumed from its checkpoint).

    python -m experiments.pipeline_run      # writes experiments/results/pipeline_run.{md,json}
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from experiments.common import machine_header, write_result
from search.report import format_rows, proxy_noise_lines


def run(args: list[str], kill_after_marker: str | None = None, delay: float = 0.0) -> tuple[float, str, int]:
    """Run ``eformer-pipeline args``; optionally SIGKILL it ``delay`` s after ``kill_after_marker`` appears."""
    start = time.time()
    proc = subprocess.Popen(["eformer-pipeline", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    seen = None
    while proc.poll() is None:
        if kill_after_marker and seen is None and any(kill_after_marker in line for line in list(out)):
            seen = time.time()
        if seen is not None and time.time() - seen >= delay:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.2)
    proc.wait()
    reader.join(timeout=10)
    return time.time() - start, "".join(out), proc.returncode


def kill_and_rerun(work: Path, killed: Path, delay: float) -> tuple:
    """A fresh work dir killed with SIGKILL during training (the LUT taken from the first run), then rerun."""
    shutil.rmtree(killed, ignore_errors=True)
    # kill -9 during training of a fresh work dir (the LUT is taken from the first run to save time)
    lut = f"lut_overrides=['lut=quick','out={work}/lut/ort-cpu-efficientformerv2-224.parquet']"
    tk, outk, rck = run([f"work_dir={killed}", lut], kill_after_marker="[2/5]", delay=delay)
    ckpt_log = killed / "supernet" / "train_log.jsonl"
    steps_before = len(ckpt_log.read_text().splitlines()) if ckpt_log.is_file() else 0
    import torch

    ckpt = killed / "supernet" / "checkpoint.pt"
    resumed_from = int(torch.load(ckpt, weights_only=True)["step"]) if ckpt.is_file() else 0
    t3, out3, rc3 = run([f"work_dir={killed}", lut])
    assert rc3 == 0, out3[-3000:]
    return tk, outk, rck, t3, out3, rc3, resumed_from, steps_before


def kill_lines(delay, tk, rck, t3, rc3, resumed_from, steps_before, out3) -> list[str]:
    """The kill -9 rows and sentence of the report (none when the kill part was skipped)."""
    if tk is None:
        return ["", "(kill -9 / rerun part not run this time: `--no-kill`)", ""]
    reuse = next((ln for ln in out3.splitlines() if ln.startswith("reusing")), "no reuse line")
    return [f"| fresh run killed with SIGKILL {delay:.0f} s into training | {tk:.0f} | {rck} |",
            f"| rerun after the kill | {t3:.0f} | {rc3} |", "",
            f"After the kill the training checkpoint held step {resumed_from} ({steps_before} logged steps); the rerun "
            f"{'resumed from it' if 'resum' in out3.lower() or resumed_from > 0 else 'started over'}; the LUT stage printed "
            f"`{reuse}`.", ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default="runs/pipeline-experiment")
    parser.add_argument("--reuse-first", action="store_true", help="reuse the recorded first two runs (debugging)")
    parser.add_argument("--kill-delay", type=float, default=60.0, help="seconds into training before SIGKILL")
    parser.add_argument("--no-kill", action="store_true", help="only the first two runs (no kill -9 / rerun part)")
    args = parser.parse_args()
    work, killed = Path(args.work), Path(args.work + "-killed")
    first = work.with_name(work.name + "-first-runs.json")
    if args.reuse_first and first.is_file():  # only the kill/rerun part again (the first two runs as recorded)
        t1, out1, rc1, t2, out2, rc2 = json.loads(first.read_text())
    else:
        shutil.rmtree(work, ignore_errors=True)
        t1, out1, rc1 = run([f"work_dir={work}"])
        assert rc1 == 0, out1[-3000:]
        t2, out2, rc2 = run([f"work_dir={work}"])
        assert rc2 == 0, out2[-3000:]
        first.write_text(json.dumps([t1, out1, rc1, t2, out2, rc2]))
    reused2 = len(re.findall(r"^reusing |already complete", out2, re.M))
    if args.no_kill:
        tk = rck = t3 = rc3 = resumed_from = steps_before = None
        out3 = ""
    else:
        tk, outk, rck, t3, out3, rc3, resumed_from, steps_before = kill_and_rerun(work, killed, args.kill_delay)
    table = json.loads((work / "final.json").read_text())
    lines = [
        "# The main job: `eformer-pipeline` on the embedded Fashion-MNIST default", "", machine_header(), "",
        f"Command: `python -m experiments.pipeline_run{' --no-kill' if args.no_kill else ''}`.", "",
        "| run | wall time (s) | exit |", "|---|---|---|",
        f"| first run, fresh work dir | {t1:.0f} | {rc1} |",
        f"| second run, same command | {t2:.1f} | {rc2} (stages reused: {reused2}) |",
        *kill_lines(args.kill_delay, tk, rck, t3, rc3, resumed_from, steps_before, out3),
        "## Final table of the first run", "", format_rows(table["rows"]), "",
        "Latency: ORT CPU 2 threads, batch 1, 224 px, 1000 classes; LUT built with the quick protocol (`lut=quick`). "
        "Proxy: member of the Fashion-MNIST supernet (32 px) after BN recalibration on the 500-image calibration split, "
        "scored on the whole 2,500-image val split; ± = bootstrap standard deviation over the val images.", "",
        *proxy_noise_lines(table["rows"]), "",
        "## Output of the second run (tail)", "", "```", *out2.strip().splitlines()[-14:], "```", "",
    ]
    write_result("pipeline_run", "\n".join(lines), {"first_s": t1, "second_s": t2, "killed_s": tk, "rerun_s": t3,
                                                   "kill_exit": rck, "checkpoint_step_at_kill": resumed_from,
                                                   "table": table, "second_run_output": out2[-4000:],
                                                   "rerun_output": out3[-4000:]})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
