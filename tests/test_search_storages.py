"""Search storages with several (and killed) workers: journal files, SQLite, a real PostgreSQL server, the
stale-trial watch, the printed storage strings in optuna-dashboard and the optuna CLI, and Hydra's joblib launcher."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState
from search_assets import cli, overrides

from helpers import kill_when
from search.results import completed, load_study
from search.run_record import read_run
from search.storage import HEARTBEAT, SURPLUS, JournalFlock, StaleWatch, open_storage, trial_id


@pytest.mark.slow
def test_three_journal_workers_exact_count(assets, tmp_path):
    run = tmp_path / "journal"
    procs = [cli(assets, run, "search=random", "search.n_trials=24", "storage=journal", f"worker={i}") for i in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    study = load_study(read_run(run))
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == 24
    assert len({t.number for t in trials}) == len(trials)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert all(t.system_attrs.get(SURPLUS) for t in trials if t.state == TrialState.FAIL)
    assert not [t for t in trials if {"heartbeat", "surplus"} & set(t.user_attrs)]  # bookkeeping is not browsed


@pytest.mark.slow
def test_killed_worker_loses_nothing_and_rerun_continues(assets, tmp_path):
    run = tmp_path / "killed"
    args = ("search=random", "search.n_trials=30", "storage=journal", "storage.heartbeat_s=0.3", "storage.grace_s=1.5",
            "proxy.cache=null")
    proc = cli(assets, run, *args, start_new_session=True)
    journal = run / "study.journal"
    before: list = []

    def eight_complete() -> bool:
        if not journal.is_file():
            return False
        storage = open_storage(f"journal:{journal}")
        names = optuna.get_all_study_names(storage)
        if not names:
            return False
        assert len(names) == 1 and names[0].startswith("random-none-")
        study = optuna.load_study(study_name=names[0], storage=storage)
        before[:] = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
        return len(before) >= 8

    kill_when(proc, eight_complete)
    assert 8 <= len(before) < 30
    rerun = cli(assets, run, *args)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err[-800:]
    study = load_study(read_run(run))
    trials = study.get_trials()
    done = {t.number: t for t in trials if t.state == TrialState.COMPLETE}
    assert len(done) == 30
    for t in before:  # completed before the kill: kept unchanged
        assert done[t.number].values == t.values and done[t.number].params == t.params
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    reaped = [t for t in trials if t.user_attrs.get("failed_reason")]
    assert all(t.state == TrialState.FAIL for t in reaped)


HOLD_AND_DIE = """
import os, signal, sys
from pathlib import Path
from search.storage import JournalFlock
JournalFlock(Path(sys.argv[1])).acquire()
print("held", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_writer_killed_holding_the_journal_lock_stalls_no_one(tmp_path):
    """Optuna's default journal lock, left by a SIGKILLed writer, is broken only after 30 s; ours goes at once."""
    journal = tmp_path / "study.journal"
    child = subprocess.run([sys.executable, "-c", HOLD_AND_DIE, str(journal)], capture_output=True, text=True, timeout=60)
    assert child.returncode == -9 and child.stdout == "held\n", child.stderr[-500:]
    storage = open_storage(str(journal))
    started = time.monotonic()
    optuna.create_study(study_name="after-the-kill", storage=storage).optimize(lambda t: t.suggest_float("x", 0, 1), 3)
    assert time.monotonic() - started < 5.0
    assert len(optuna.load_study(study_name="after-the-kill", storage=storage).trials) == 3


def test_journal_lock_excludes_threads_and_processes(tmp_path):
    lock = JournalFlock(tmp_path / "study.journal")
    order: list[str] = []
    lock.acquire()
    other = __import__("threading").Thread(target=lambda: (lock.acquire(), order.append("thread"), lock.release()))
    other.start()
    probe = subprocess.Popen([sys.executable, "-c", HOLD_AND_DIE, str(tmp_path / "study.journal")],
                             stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)
    order.append("main")
    assert probe.poll() is None  # still waiting for the lock the main thread holds
    lock.release()
    other.join(timeout=30)
    assert probe.wait(timeout=60) == -9 and probe.stdout.read() == "held\n"
    assert order[0] == "main" and "thread" in order
    with pytest.raises(RuntimeError, match="released without being held"):
        lock.release()


def beat(study: optuna.Study, storage, trial: optuna.Trial, value: float) -> None:
    storage.set_trial_system_attr(trial_id(study, storage, trial.number), HEARTBEAT, value)


def test_stale_watch_fails_only_trials_it_saw_silent():
    storage = open_storage("memory:")
    study = optuna.create_study(storage=storage)
    silent, alive = study.ask(), study.ask()
    clock = [0.0]
    watch = StaleWatch(grace_s=10, clock=lambda: clock[0])
    for step in range(1, 40):  # looks every second; only the live trial's heartbeat moves
        beat(study, storage, alive, float(step))
        reaped = watch.look(study, storage)
        clock[0] += 1.0
        if reaped:
            break
    assert reaped == [silent.number] and 10 < step <= 12
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {silent.number: TrialState.FAIL, alive.number: TrialState.RUNNING}
    reason = study.get_trials()[silent.number].user_attrs["failed_reason"]
    assert reason == "no heartbeat (worker died)"


def test_stale_watch_forgives_a_stall_that_froze_everyone():
    storage = open_storage("memory:")
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    beat(study, storage, trial, 1.0)
    clock = [0.0]
    watch = StaleWatch(grace_s=10, clock=lambda: clock[0])
    assert watch.look(study, storage) == []
    clock[0] += 30.0  # e.g. every process blocked 30 s on a lock left by a killed worker
    assert watch.look(study, storage) == []  # the gap interrupts the watch: the unchanged heartbeat is not held against it
    clock[0] += 1.0
    beat(study, storage, trial, 2.0)  # its owner beats again
    for _ in range(20):
        assert watch.look(study, storage) == []
        beat(study, storage, trial, clock[0] + 3)
        clock[0] += 1.0


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    """A real PostgreSQL server for this module (pgserver: the PostgreSQL binaries in a pip wheel, so the test
    extra installs the server itself - no system package, no root, no network). Skipped only where the test
    extra is not installed; `.ci/run` installs it."""
    pgserver = pytest.importorskip("pgserver")
    pytest.importorskip("psycopg")
    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    uri = server.get_uri()  # postgresql://postgres:@/postgres?host=<socket dir>
    yield uri.replace("postgresql://", "postgresql+psycopg://", 1)
    server.cleanup()


@pytest.mark.slow
def test_postgres_three_workers_one_killed_exact_count(assets, tmp_path, postgres):
    args = ("search=random", "search.n_trials=30", "storage=url", f"storage.url='{postgres}'", "storage.heartbeat_s=0.3",
            "storage.grace_s=2", "proxy.kind=analytic")
    procs = [cli(assets, tmp_path / f"w{i}", *args, f"worker={i}", start_new_session=True) for i in range(3)]
    storage = open_storage(postgres)

    def some_complete() -> bool:
        names = optuna.get_all_study_names(storage)
        return bool(names) and len(completed(optuna.load_study(study_name=names[0], storage=storage))) >= 5

    kill_when(procs[0], some_complete)
    outs = [p.communicate(timeout=300) for p in procs[1:]]
    assert all(p.returncode == 0 for p in procs[1:]), [o[1][-800:] for o in outs]
    names = optuna.get_all_study_names(storage)
    assert len(names) == 1 and names[0].startswith("random-none-")
    run = read_run(tmp_path / "w1")
    assert run["storage"] == postgres and run["study_name"] == names[0]
    study = optuna.load_study(study_name=run["study_name"], storage=run["storage"])  # the recorded string, as-is
    trials = study.get_trials()
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 30
    assert not [t for t in trials if t.state == TrialState.RUNNING]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_printed_storage_strings_work_in_optuna_dashboard_and_cli(assets, tmp_path):
    """search.json's storage string opens the study as-is: optuna.load_study (SQLite), the optuna CLI (journal
    file), and optuna-dashboard (the optional extra), whose HTTP API shows our metric names and attributes."""
    import urllib.request

    p = cli(assets, tmp_path / "sq", "search=random", "search.n_trials=6", "proxy.kind=analytic")
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-800:]
    run = read_run(tmp_path / "sq")
    study = optuna.load_study(study_name=run["study_name"], storage=run["storage"])
    assert len(study.trials) >= 6 and study.metric_names == ["top1", "latency_ms", "params_m"]
    target = out.split("browse the study with: optuna-dashboard ")[1].split()[0]
    assert target == run["storage"]
    port = _free_port()
    server = subprocess.Popen(["optuna-dashboard", target, "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                studies = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2))
                break
            except OSError:
                time.sleep(0.2)
        summary = next(s for s in studies["study_summaries"] if s["study_name"] == run["study_name"])
        detail = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}?after=0", timeout=10))
        assert detail["objective_names"] == ["top1", "latency_ms", "params_m"]
        complete = [t for t in detail["trials"] if t["state"] == "Complete"]
        assert len(complete) == 6
        keys = {a["key"] for a in complete[0]["user_attrs"]}
        assert {"top1", "latency_ms", "params", "summary"} <= keys
    finally:
        server.terminate()
        server.wait(timeout=30)
    p = cli(assets, tmp_path / "jr", "search=random", "search.n_trials=3", "proxy.kind=analytic", "storage=journal")
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-800:]
    run = read_run(tmp_path / "jr")
    assert run["storage"] == str((tmp_path / "jr" / "study.journal").resolve())
    res = subprocess.run(["optuna", "studies", "--storage", run["storage"], "-f", "json"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert [s["name"] for s in json.loads(res.stdout)] == [run["study_name"]]


@pytest.mark.slow
def test_joblib_launcher_three_workers_one_study(assets, tmp_path):
    """`-m hydra/launcher=joblib worker=0,1,2`: three parallel workers (hydra-joblib-launcher) on one journal study."""
    extra = [o for o in overrides(assets, tmp_path / "jl") if not o.startswith("proxy.cache")]
    res = subprocess.run([sys.executable, "-m", "search.app", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=3",
                          "worker=0,1,2", *extra, "search=random", "search.n_trials=18", "storage=journal", "proxy.kind=analytic"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-1500:]
    study = load_study(read_run(tmp_path / "jl"))
    trials = study.get_trials()
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 18
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert res.stdout.count("18 trials in") == 3, res.stdout[-1500:]
