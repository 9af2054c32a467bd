"""Hostile and damaged input: no code execution from files, no expansion bombs, no path tricks,
damaged LUTs and unusable output paths refused with one line."""
from __future__ import annotations

import os
import pickle
import subprocess

import pytest
import torch

from latency_lut.lut import LatencyLUT, LUTError
from supernet.arch import ArchConfig, ArchConfigError
from supernet.convert import CheckpointError, read_checkpoint
from supernet.elastic import Supernet
from supernet.errors import UserError
from supernet.train.checkpoint import load_training_checkpoint


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious(path, marker):
    with open(path, "wb") as fh:
        pickle.dump({"format": "eformer-supernet/1", "payload": _Exploit(str(marker))}, fh, protocol=2)
    return path


def test_malicious_pickles_execute_nothing(tmp_path):
    marker = tmp_path / "pwned"
    bad = _malicious(tmp_path / "evil.pt", marker)
    with pytest.raises(CheckpointError, match="needs code to unpickle"):
        Supernet.load(bad)
    with pytest.raises(CheckpointError, match="needs code to unpickle"):
        read_checkpoint(bad)
    run = tmp_path / "run"
    run.mkdir()
    _malicious(run / "checkpoint.pt", marker)
    with pytest.raises(UserError, match="needs code to unpickle"):
        load_training_checkpoint(run, {})
    assert not marker.exists()


@pytest.mark.parametrize("text, message", [
    ("a: &a [x, x]\nb: [*a, *a]\n", "anchors (&name) are not allowed"),
    ("name: ${oc.env:HOME}\nstages: []\n", "name: '${oc.env:HOME}' is not a file-safe name"),
    ("name: ../../../x\nstages: []\n", "name: '../../../x' is not a file-safe name"),
    ("name: " + "n" * 5000 + "\nstages: []\n", "is not a file-safe name"),
])
def test_arch_yaml_is_data(tmp_path, text, message):
    path = tmp_path / "a.yaml"
    src = ArchConfig.preset("s0").to_yaml()
    path.write_text(src.replace("name: s0\n", text.split("stages")[0]) if "stages" in text else text)
    with pytest.raises(ArchConfigError) as err:
        ArchConfig.from_yaml(path)
    assert message in str(err.value) and len(str(err.value)) < 400


def test_oversized_yaml_and_absurd_widths(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("x: " + "y" * (2 << 20))
    with pytest.raises(ArchConfigError, match="bytes; a architecture file is at most"):
        ArchConfig.from_yaml(big)
    s0 = ArchConfig.preset("s0")
    with pytest.raises(ArchConfigError, match=r"stages\[0\].width: 1000000000 is not a positive multiple of 8 up to 4096"):
        s0.replace(stages=(s0.stages[0].__class__(10**9, s0.stages[0].blocks),) + s0.stages[1:])


def _damaged_lut(tmp_path, change):
    lut = LatencyLUT.load("luts/ort-cpu-efficientformerv2-224.parquet")
    change(lut)
    return lut.save(tmp_path / "bad.parquet")


@pytest.mark.parametrize("change, message", [
    (lambda lut: lut.table.__setitem__("q25_ms", float("nan")), "column 'q25_ms' row 0 has latency nan"),
    (lambda lut: lut.table.loc.__setitem__((5, "q25_ms"), -1.0), "column 'q25_ms' row 5 has latency -1.0"),
    (lambda lut: lut.table.loc.__setitem__((7, "q25_ms"), float("inf")), "row 7 has latency inf"),
    (lambda lut: setattr(lut, "table", lut.table.drop(columns=["q25_ms"])), "missing column(s) q25_ms"),
    (lambda lut: setattr(lut, "table", lut.table.drop(columns=["resolution"])), "missing column(s) resolution"),
    (lambda lut: lut.table.loc.__setitem__((2, "heads"), None), "column 'heads' has empty values"),
    (lambda lut: lut.meta.pop("space_hash"), "metadata field 'space_hash' is None"),
    (lambda lut: lut.meta.__setitem__("statistic", "mean"), "metadata field 'statistic' is 'mean'"),
    (lambda lut: lut.meta.__setitem__("calibration", {"a": "x", "b": 0}), "is not finite numbers a and b"),
])
def test_damaged_lut_is_one_line(tmp_path, change, message):
    path = _damaged_lut(tmp_path, change)
    with pytest.raises(LUTError) as err:
        LatencyLUT.load(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_lut_metadata_that_is_not_a_mapping(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"x": [1]}).replace_schema_metadata({b"eformer_lut": b"[1, 2]"})
    pq.write_table(table, tmp_path / "list.parquet")
    with pytest.raises(LUTError, match="LUT metadata is a list, expected a mapping"):
        LatencyLUT.load(tmp_path / "list.parquet")


@pytest.mark.slow
def test_export_output_paths_are_checked_first(tmp_path):
    weights = tmp_path / "w.pt"
    torch.save({"x": torch.zeros(1)}, weights)
    (tmp_path / "file").write_text("x")
    cases = [
        (["onnx", "--arch", "s0", "--weights", str(weights), "--out", str(weights)], "is also an input"),
        (["onnx", "--arch", "s0", "--out", str(tmp_path)], "is a directory"),
        (["onnx", "--arch", "s0", "--out", str(tmp_path / "file" / "x.onnx")], "is a file, so"),
        (["onnx", "--arch", "s0", "--opset", "99", "--out", str(tmp_path / "y.onnx")], "--opset: 99 is not supported"),
    ]
    for args, message in cases:
        res = subprocess.run(["eformer-export", *args], capture_output=True, text=True)
        assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, (args, res.stderr)
    assert torch.load(weights, weights_only=True)["x"].shape == (1,)  # the input is untouched
    assert not (tmp_path / "y.onnx").exists()


def test_disk_full_is_one_line_and_keeps_the_old_file(tmp_path):
    """A real ENOSPC from the kernel (/dev/full) in the middle of a write."""
    from supernet.io_utils import atomic_write, atomic_write_text

    target = atomic_write_text(tmp_path / "report.json", "old")

    def write_to_full_disk(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write("partial")
        with open("/dev/full", "w") as full:
            full.write("x" * 65536)
            full.flush()

    with pytest.raises(UserError, match=r"report.json: cannot write \(no space left on the device\); the previous file is intact"):
        atomic_write(target, write_to_full_disk)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path):
    from supernet.io_utils import atomic_write_text

    proc = subprocess.Popen(["sleep", "0"])
    proc.wait()  # a pid that no longer runs
    stale = tmp_path / f".lut.parquet.{proc.pid}.k1ll3d.tmp"
    stale.write_text("half")
    atomic_write_text(tmp_path / "lut.parquet", "whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lut.parquet"]


@pytest.mark.slow
def test_second_lut_build_of_one_file_is_refused(tmp_path):
    from latency_lut.build import exclusive_writer

    out = tmp_path / "t.parquet"
    with exclusive_writer(out):  # a build in progress (this process holds the lock)
        res = subprocess.run(["eformer-lut", "build", "space=tiny", "image_size=64", "num_classes=10", "lut=quick",
                              "lut.progress=false", f"out={out}"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "another eformer-lut build is writing this file" in res.stderr
    assert "Traceback" not in res.stderr and not out.exists()


def _run_record(**over):
    rec = {"format": "eformer-search/1", "strategy": "random", "study_name": "random-none-0", "storage": "sqlite:///x",
           "supernet": "s.pt", "lut": "l.parquet", "budget": {"name": "none"}, "deploy_context": {}, "trials": 1}
    rec.update(over)
    return {k: v for k, v in rec.items() if v is not None}


@pytest.mark.slow
@pytest.mark.parametrize("damage, message", [
    ("no_study_name", "field 'study_name' is None; expected a str"),
    ("list", "expected a JSON object, got list"),
    ("binary", "not valid JSON"),
    ("random_db", "cannot open 'sqlite:///"),
    ("missing_db", "study storage not found"),
    ("random_journal", "cannot open 'journal:"),
])
def test_damaged_run_directory_is_one_line(tmp_path, damage, message):
    import json

    run = tmp_path / "run"
    run.mkdir()
    db, journal = run / "study.db", run / "study.journal"
    records = {
        "no_study_name": _run_record(study_name=None),
        "list": [1, 2],
        "random_db": _run_record(storage=f"sqlite:///{db}"),
        "missing_db": _run_record(storage=f"sqlite:///{db}"),
        "random_journal": _run_record(storage=f"journal:{journal}"),
    }
    if damage == "binary":
        (run / "search.json").write_bytes(os.urandom(256))
    else:
        (run / "search.json").write_text(json.dumps(records[damage]))
    if damage == "random_db":
        db.write_bytes(os.urandom(8192))
    if damage == "random_journal":
        journal.write_bytes(os.urandom(8192))
    before = sorted(p.name for p in run.iterdir())
    res = subprocess.run(["eformer-export", "arch", "--run", str(run), "--best", "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in run.iterdir()) == before and not (tmp_path / "x").exists()


def _as_nobody(cmd: list[str]) -> list[str]:
    """``cmd`` run as the unprivileged user nobody (root reads any file); skipped where that is impossible."""
    import shutil

    runner = shutil.which("setpriv")
    if os.geteuid() != 0 or runner is None:
        pytest.skip("needs root and setpriv to drop to another user")
    return [runner, "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]


def test_user_files_are_read_through_one_guard(tmp_path):
    from supernet.io_utils import read_user_text

    d = tmp_path / "dir"
    d.mkdir()
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00bad")
    (tmp_path / "big").write_text("x" * 100)
    for path, message in ((tmp_path / "none", "arch file not found"), (d, "is a directory; expected a arch file"),
                          (tmp_path / "bin", "not UTF-8 text"), (tmp_path / "big", "100 bytes; a arch file is at most 10")):
        with pytest.raises(UserError, match=f"^{path}: {message}"):
            read_user_text(path, UserError, "arch", max_bytes=10)


@pytest.mark.slow
def test_unreadable_arch_file_is_one_line_for_another_user(tmp_path):
    arch = tmp_path / "a.yaml"
    arch.write_text(ArchConfig.preset("s0").to_yaml())
    arch.chmod(0o000)
    tmp_path.chmod(0o755)
    res = subprocess.run(_as_nobody(["eformer-lut", "predict", f"arch_file={arch}"]), capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    lines = [x for x in res.stderr.splitlines() if "onnxruntime" not in x]  # ORT may warn it cannot persist telemetry
    assert res.returncode == 2 and lines == [f"eformer-lut: error: {arch}: cannot be read (permission denied)"]


@pytest.mark.slow
def test_failed_export_leaves_nothing_and_zero_is_not_unset(tmp_path):
    weights = tmp_path / "nan.pt"
    from supernet.model import build_model

    model = build_model(ArchConfig.preset("s0").replace(image_size=64, num_classes=10))
    sd = {k: (torch.full_like(v, float("nan")) if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    torch.save({"model": sd, "arch": model.arch.to_dict()}, weights)
    out = tmp_path / "x.onnx"
    res = subprocess.run(["eformer-export", "onnx", "--weights", str(weights), "--out", str(out), "--exporter", "fast"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "not finite" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".x.onnx.*"))
    res = subprocess.run(["eformer-export", "onnx", "--arch", "s0", "--image-size", "0", "--out", str(out)], capture_output=True,
                         text=True)
    assert res.returncode == 2 and "--image-size: 0 is not a multiple of 32" in res.stderr and not out.exists()


def test_storage_strings_are_checked(tmp_path):
    from pathlib import Path

    from search.storage import storage_url

    with pytest.raises(UserError, match=r"^storage.url: 'notaurl' is not a SQLAlchemy URL"):
        storage_url({"kind": "url", "url": "notaurl"}, tmp_path)
    with pytest.raises(UserError, match=r"^storage.file: 'postgresql://h/db' is not a file path"):
        storage_url({"kind": "journal", "file": "postgresql://h/db"}, tmp_path)
    assert storage_url({"kind": "url", "url": "sqlite:///x.db"}, tmp_path) == "sqlite:///x.db"
    assert storage_url({"kind": "journal"}, Path(tmp_path)) == str(tmp_path.resolve() / "study.journal")


def test_lock_files_go_with_the_run_that_made_them(tmp_path):
    from supernet.io_utils import LockBusy, file_lock

    lock = tmp_path / ".x.lock"
    with file_lock(lock):
        with pytest.raises(LockBusy):
            with file_lock(lock, blocking=False):
                pass
        assert lock.exists()
    assert not lock.exists()
    with pytest.raises(RuntimeError):
        with file_lock(lock):
            raise RuntimeError("a failed run")
    assert not lock.exists()


COMPOSITION_ERRORS = [  # what Hydra refuses while composing: one line naming the key, exit 2
    (["eformer-search", "threads=abc"], "eformer-search: error: threads: Value 'abc' of type 'str' could not be converted to Integer"),
    (["eformer-search", "search.n_trials=5"], "eformer-search: error: search.n_trials: Key 'n_trials' not in 'SlimmingSearchSchema'"),
    (["eformer-search", "search=anneal"], "Could not find 'search/anneal'; Available options in 'search': mes, nsga2, random, slimming"),
    (["eformer-train", "threads=[1"], "eformer-train: error: threads=[1: no viable alternative at input '[1'"),
    (["eformer-lut", "build", "device.threads=abc"], "eformer-lut: error: device.threads: Value 'abc'"),
    (["eformer-pipeline", "budgets=[s0]", "lut_overrides=abc"], "eformer-pipeline: error: lut_overrides: Invalid value assigned"),
    (["eformer-pipeline", "nsga2_overrides=[search.n_trials=5]"], "; quote list items that hold '=': 'nsga2_overrides=[\"a.b=1\"]'"),
]


@pytest.mark.slow
def test_composition_errors_are_one_line_and_a_user_may_ask_for_hydras_full_report(tmp_path):
    procs = [subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for argv, _ in COMPOSITION_ERRORS]
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    full = subprocess.Popen(["eformer-search", "threads=abc"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for p, (argv, message) in zip(procs, COMPOSITION_ERRORS):
        _, err = p.communicate(timeout=120)
        assert p.returncode == 2 and err.count("\n") == 1 and message in err, (argv, err)
    _, err = full.communicate(timeout=120)
    assert full.returncode == 1 and "Traceback" in err and "ConfigCompositionException" in err
    assert not list(tmp_path.iterdir())  # nothing written


def test_pipeline_refuses_a_stage_override_or_work_dir_in_one_line_before_any_stage(tmp_path):
    from conf import compose
    from search.pipeline import run_pipeline

    (tmp_path / "f").write_bytes(b"x")
    for overrides, message in [
        (['nsga2_overrides=["search.n_trials=abc"]'], "nsga2_overrides: search.n_trials: Value 'abc' of type 'str' could not be "
                                                      "converted to Integer (Error merging override search.n_trials=abc)"),
        (['slimming_overrides=["search.bogus=1"]'], "slimming_overrides: search.bogus: Key 'bogus' not in 'SlimmingSearchSchema'"),
        ([f"work_dir={tmp_path / 'f' / 'w'}"], f"work_dir: cannot create {tmp_path / 'f' / 'w'}"),
    ]:
        with pytest.raises(UserError) as err:
            run_pipeline(compose("eformer_pipeline", [f"work_dir={tmp_path / 'w'}", *overrides]))
        assert str(err.value).startswith(message) and "\n" not in str(err.value), str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # no stage ran, nothing written
