"""eformer-train end to end: a real run, kill -9 + resume == uninterrupted, torchrun with 2 ranks."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import kill_when, rank_stderr, run_torchrun
from supernet.train.precision import cpu_has_native_bf16

ARGS = ["space=tiny", "data=digits", "train.epochs=2", "train.batch_size=64", "train.checkpoint_every=3",
        "train.progress=false", "train.eval_presets=[]"]


def train(run_dir, *extra, wait=True):
    cmd = ["eformer-train", *ARGS, f"run_dir={run_dir}", *extra]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    return subprocess.run(cmd, capture_output=True, text=True)


def log(run_dir):
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_run_metrics_and_resume_after_kill(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    res = train(a)
    assert res.returncode == 0, res.stderr
    for name in ("supernet.pt", "metrics.jsonl", "metrics.csv", "train_log.jsonl", "final.json", "checkpoint.pt"):
        assert (a / name).is_file(), name
    metrics = [json.loads(x) for x in (a / "metrics.jsonl").read_text().splitlines()]
    assert {m["member"] for m in metrics} == {"largest", "smallest"} and {m["epoch"] for m in metrics} == {0, 1}

    proc = train(b, wait=False)
    kill_when(proc, lambda: torch.load(b / "checkpoint.pt", weights_only=True)["step"] >= 9)
    assert json.loads((a / "final.json").read_text())["steps"] == 38  # a finished (2 epochs x 19 steps); b was killed
    assert not (b / "final.json").exists()
    res = train(b)
    assert res.returncode == 0, res.stderr
    la, lb = log(a), log(b)
    assert [r["step"] for r in lb] == list(range(1, len(la) + 1))  # nothing lost, nothing repeated
    assert [r["loss_total"] for r in la] == [r["loss_total"] for r in lb]  # the same loss curve
    fa, fb = (json.loads((d / "final.json").read_text()) for d in (a, b))
    assert fa["state_sha256_per_rank"] == fb["state_sha256_per_rank"]
    again = train(b)
    assert again.returncode == 0 and "already complete" in again.stdout
    # a changed setting is refused, not resumed into the same run (this test's finished run, not a run of its own)
    res = train(b, "train.lr=0.01")
    assert res.returncode == 2 and "different configuration (changed: train.lr)" in res.stderr
    assert "Traceback" not in res.stderr and json.loads((b / "final.json").read_text()) == fb


@pytest.mark.slow
def test_bad_data_dir_is_one_line(tmp_path):
    res = train(tmp_path / "r", "data=cifar10", "data.root=/nonexistent/cifar")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1] == (
        "eformer-train: error: data.root: /nonexistent/cifar is not a directory (expected CIFAR-10 python batches)"
    )


@pytest.mark.slow
def test_ddp_sandwich_step_all_reduces_once_with_exact_gradients(tmp_path):
    """no_sync for all members but the last: the gradients equal hand-averaged local sandwich steps."""
    script = Path(__file__).with_name("ddp_sandwich_parity.py")
    res, _ = run_torchrun(lambda attempt: [str(script)], tmp_path / "logs")
    assert res.returncode == 0, res.stderr[-1500:] + rank_stderr(tmp_path / "logs")
    assert "max_abs_diff 0.000e+00" in res.stdout or float(res.stdout.split("max_abs_diff ")[1].split()[0]) <= 1e-6


@pytest.mark.slow
@pytest.mark.skipif(not cpu_has_native_bf16(), reason="needs a CPU with native bf16")
def test_bf16_training_runs_and_learns(tmp_path):
    res = train(tmp_path / "bf16", "train.precision=bf16", "train.epochs=1")
    assert res.returncode == 0, res.stderr[-2000:]
    losses = [r["loss_largest"] for r in log(tmp_path / "bf16")]
    assert all(x == x for x in losses) and min(losses[-3:]) < losses[0]


@pytest.mark.parametrize("value, message", [
    ("fp16", "train.precision: fp16 is for CUDA GPUs"),
    ("int8", "train.precision: 'int8' is not one of fp32, bf16, fp16"),
])
@pytest.mark.slow
def test_unsupported_precision_is_one_line(tmp_path, value, message):
    res = train(tmp_path / "p", f"train.precision={value}")
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "p").exists()


def test_bf16_refused_without_native_support():
    from supernet.errors import UserError
    from supernet.train.precision import resolve_precision

    with pytest.raises(UserError, match="bf16 needs a CPU with native bfloat16"):
        resolve_precision("bf16", torch.device("cpu"), native_bf16=False)
    assert resolve_precision("bf16", torch.device("cpu"), native_bf16=True).dtype == torch.bfloat16


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    res, attempt = run_torchrun(lambda attempt: ["-m", "supernet.train.app", *ARGS, "train.epochs=1",
                                                 f"run_dir={tmp_path}/ddp{attempt}"], tmp_path / "logs")
    assert res.returncode == 0, res.stderr[-1500:] + rank_stderr(tmp_path / "logs")
    final = json.loads((tmp_path / f"ddp{attempt}" / "final.json").read_text())
    assert final["world"] == 2 and final["ranks_identical"]
    assert len(set(final["parameters_sha256_per_rank"])) == 1 and len(final["parameters_sha256_per_rank"]) == 2


@pytest.mark.slow
def test_multirun_gives_every_job_its_own_run_dir(tmp_path):
    res = subprocess.run(["eformer-train", "-m", "data=digits", "space=tiny", "train.epochs=1", "train.batch_size=256",
                          "train.progress=false", "train.lr=0.001,0.002", "run_dir=runs/t"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-800:]
    finals = sorted(p.parent.name for p in (tmp_path / "runs" / "t").rglob("final.json"))
    assert finals == [f"data=digits,space=tiny,train.batch_size=256,train.epochs=1,train.lr={lr}" for lr in ("0.001", "0.002")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"] and (tmp_path / "runs" / "t" / "multirun.yaml").is_file()


@pytest.mark.slow
def test_default_training_path_has_the_baseline_gradients(tmp_path):
    """experiments/bench_training: channels-last + fused AdamW against the contiguous, per-tensor path, both eformer-train
    Trainers from one seed; the first step's gradients agree to 1e-5 (norm of the difference over the norm, and every
    value absolutely)."""
    out = tmp_path / "bench.json"
    res = subprocess.run([sys.executable, "-m", "experiments.bench_training", "--steps", "1", "--no-write", "--json", str(out)],
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["gradients"]["norm_rel_diff"] <= 1e-5
    assert data["gradients"]["max_abs_diff"] <= 1e-5
    assert data["ratio"] > 0


@pytest.mark.parametrize("overrides", [[], ["space=tiny", "data=digits", "train.num_random=1"],
                                       ["finetune.arch=s0", "train.eval_presets=[]"]])
def test_typed_settings_keep_the_recorded_config_and_its_fingerprint(overrides):
    """The Trainer takes typed settings (the app types the composed config once); what it records in the supernet
    file and fingerprints for resuming is what the composed config held, so existing run directories resume."""
    from omegaconf import OmegaConf

    from conf import compose
    from conf.schemas import TrainApp, typed
    from supernet.train.checkpoint import flatten
    from supernet.train.trainer import Trainer

    cfg = compose("eformer_train", overrides)
    composed = flatten(OmegaConf.to_container(cfg, resolve=True))
    composed.pop("run_dir")
    assert Trainer(typed(cfg, TrainApp)).flat == composed


def test_sandwich_ceiling_fit_splits_fixed_and_per_image_time(monkeypatch):
    """experiments/sandwich_ceiling's least-squares line recovers a known fixed cost and per-image slope."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent))  # experiments/ is not installed
    from experiments.sandwich_ceiling import fit

    batches = (4, 16, 64, 128)
    fixed, per_image = fit(batches, [0.1 + 0.002 * b for b in batches])
    assert fixed == pytest.approx(0.1) and per_image == pytest.approx(0.002)
