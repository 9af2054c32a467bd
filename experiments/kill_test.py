"""Repeated kill test: N search workers share one study, one is SIGKILLed mid-study, the survivors must finish.

    python -m experiments.kill_test                     # 10 journal + 10 SQLite + 5 PostgreSQL runs
    python -m experiments.kill_test --runs 3 --storages journal

Each run starts ``--workers`` ``eformer-search`` processes (random strategy, a tiny supernet scored by the real
supernet proxy, a tiny real-onnxruntime LUT) on one fresh study of ``--trials`` trials, SIGKILLs one of them once
``--kill-after`` trials are complete (a different worker each run), and waits for the others. A run passes when
every survivor exits 0, the study holds exactly ``--trials`` COMPLETE trials and no RUNNING one. Results:
experiments/results/kill_test.{md,json}.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import optuna
from optuna.trial import TrialState
from tqdm import tqdm

from experiments.common import machine_header, write_result
from search.storage import open_storage


def make_assets(d: Path) -> tuple[Path, Path]:
    """The search tests' tiny supernet (digits context) and tiny LUT whose latencies follow MACs (deterministic
    budgets), made in ``d``: their supernet file and their LUT file."""
    from tests.search_assets import make_search_assets

    make_search_assets(d)
    return d / "supernet.pt", d / "tiny.parquet"


def storage_args(kind: str, run_dir: Path, pg_url: Optional[str]) -> tuple[list[str], str]:
    if kind == "journal":
        return ["storage=journal"], f"journal:{run_dir / 'study.journal'}"
    if kind == "sqlite":
        return ["storage=sqlite"], f"sqlite:///{run_dir / 'study.db'}"
    assert pg_url is not None
    return ["storage=url", f"storage.url='{pg_url}'"], pg_url


def study_counts(url: str) -> tuple[int, int, int]:
    """(COMPLETE, RUNNING, FAIL) trials of the one study in ``url`` (zeros before it exists)."""
    storage = open_storage(url)
    names = optuna.get_all_study_names(storage)
    if not names:
        return 0, 0, 0
    trials = optuna.load_study(study_name=names[-1], storage=storage).get_trials(deepcopy=False)
    return tuple(sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.FAIL))


def one_run(i: int, kind: str, work: Path, supernet: Path, lut: Path, args: argparse.Namespace, pg_url: Optional[str]) -> dict[str, Any]:
    run_dir = work / f"{kind}-{i}"
    run_dir.mkdir(parents=True)
    extra, url = storage_args(kind, run_dir, pg_url)
    base = [sys.executable, "-m", "search.app", f"supernet={supernet}", f"lut_file={lut}", f"run_dir={run_dir}",
            "proxy.cache=null", "proxy.calib_images=32", "proxy.val_images=64", "progress=false", "threads=1",
            "mes.units.latency_ms=1.0", "search=random", f"search.n_trials={args.trials}", f"seed={i}",
            "storage.heartbeat_s=0.5", f"storage.grace_s={args.grace_s}", *extra]
    logs = [open(run_dir / f"worker{w}.log", "w") for w in range(args.workers)]
    procs = [subprocess.Popen([*base, f"worker={w}"], stdout=logs[w], stderr=subprocess.STDOUT, start_new_session=True)
             for w in range(args.workers)]
    victim = i % args.workers
    started = time.time()
    killed_at = None
    while time.time() - started < args.timeout:
        try:
            complete = study_counts(url)[0]
        except Exception:
            complete = 0
        if complete >= args.kill_after or procs[victim].poll() is not None:
            break
        time.sleep(0.2)
    if procs[victim].poll() is None:
        os.killpg(procs[victim].pid, signal.SIGKILL)
        killed_at = complete
    procs[victim].wait()
    codes = []
    for w, p in enumerate(procs):
        if w == victim:
            continue
        try:
            codes.append(p.wait(timeout=max(1.0, args.timeout - (time.time() - started))))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            codes.append("hang")
    for fh in logs:
        fh.close()
    complete, running, failed = study_counts(url)
    crashes = [c for c in codes if c != 0]
    survivors = [(run_dir / f"worker{w}.log").read_text() for w in range(args.workers) if w != victim]
    tracebacks = sum("Traceback" in log for log in survivors)
    failures = [log[-1500:] for log, c in zip(survivors, codes) if c != 0 or "Traceback" in log]
    return {"run": i, "storage": kind, "victim": victim, "killed_after_complete": killed_at, "survivor_exit_codes": codes,
            "survivor_crashes": len(crashes), "survivor_tracebacks": tracebacks, "complete": complete, "running": running,
            "failed": failed, "exact": complete == args.trials and running == 0, "seconds": round(time.time() - started, 1),
            "failure_logs": failures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per file storage")
    parser.add_argument("--pg-runs", type=int, default=5, help="PostgreSQL runs (needs the test extra: pgserver, psycopg)")
    parser.add_argument("--storages", default="journal,sqlite,postgres")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--kill-after", type=int, default=6)
    parser.add_argument("--grace-s", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    kinds = args.storages.split(",")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="kill-test-") as tmp:
        work = Path(tmp)
        supernet, lut = make_assets(work)
        server, pg_url = None, None
        if "postgres" in kinds:
            import pgserver

            server = pgserver.get_server(work / "pg", cleanup_mode="stop")
            pg_url = server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
        plan = [(i, k) for k in kinds for i in range(args.pg_runs if k == "postgres" else args.runs)]
        for i, kind in tqdm(plan, desc="kill test", unit="run"):
            if kind == "postgres":  # one database per run: a fresh study, like the file storages
                db = f"kill{i}"
                server.psql(f"CREATE DATABASE {db};")
                url = pg_url.replace("/postgres?", f"/{db}?")
            else:
                url = None
            rows.append(one_run(i, kind, work, supernet, lut, args, url))
        if server is not None:
            server.cleanup()
    lines = [
        "# Repeated kill test: survivors of a SIGKILLed search worker", "",
        f"`python -m experiments.kill_test` - {args.workers} workers per study (random strategy, supernet proxy, tiny space), "
        f"{args.trials} trials, one worker SIGKILLed after {args.kill_after} complete trials (a different one each run), "
        f"heartbeat 0.5 s, grace {args.grace_s:g} s.", "", machine_header(), "",
        "| storage | runs | survivor crashes | survivor tracebacks | exact trial count | no RUNNING left | median s/run |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for kind in kinds:
        rs = [r for r in rows if r["storage"] == kind]
        if not rs:
            continue
        secs = sorted(r["seconds"] for r in rs)
        lines.append(f"| {kind} | {len(rs)} | {sum(r['survivor_crashes'] for r in rs)} | {sum(r['survivor_tracebacks'] for r in rs)} | "
                     f"{sum(r['complete'] == args.trials for r in rs)}/{len(rs)} | {sum(r['running'] == 0 for r in rs)}/{len(rs)} | "
                     f"{secs[len(secs) // 2]:.1f} |")
    total = len(rows)
    lines += ["", f"All runs: {total}; survivor crashes {sum(r['survivor_crashes'] for r in rows)}; "
                  f"exact {sum(r['exact'] for r in rows)}/{total}. Per run: `kill_test.json`."]
    print(write_result("kill_test", "\n".join(lines) + "\n", {"args": vars(args), "rows": rows}).read_text())


if __name__ == "__main__":
    main()
