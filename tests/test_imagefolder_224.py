"""The pipeline's stages in order on a 224-px ImageFolder of real JPEG files: train -> slimming search ->
export -> fine-tune -> ONNX, with the tiny space (each stage writes what the embedded run writes)."""
from __future__ import annotations

import json
import subprocess
import time

import onnx
import pytest

from helpers import write_image_folder


def run(*cmd: str, cwd) -> str:
    res = subprocess.run(list(cmd), capture_output=True, text=True, cwd=cwd)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stdout[-1500:]}\n{res.stderr[-3000:]}"
    return res.stdout


@pytest.mark.slow
def test_imagefolder_224_end_to_end(tmp_path):
    started = time.time()
    root = write_image_folder(tmp_path / "imgs", classes=3, train=40, val=8)
    data = ["space=tiny", "data=imagefolder", f"data.root={root}", "data.calib_size=10", "data.holdout=15"]
    run("eformer-train", *data, "train.epochs=1", "train.batch_size=16", "train.eval_batch_size=16",
        "train.eval_presets=[]", "train.progress=false", "run_dir=sn", cwd=tmp_path)
    for f in ("supernet.pt", "final.json", "metrics.csv", "train_log.jsonl", "checkpoint.pt"):
        assert (tmp_path / "sn" / f).is_file(), f
    run("eformer-lut", "build", "space=tiny", "lut=quick", "lut.progress=false", "out=lut.parquet", cwd=tmp_path)
    from latency_lut.lut import LatencyLUT
    from supernet.space import SearchSpace

    lut, space = LatencyLUT.load(tmp_path / "lut.parquet"), SearchSpace.load("tiny")
    low, high = (lut.predict(lut.in_context(a)) for a in (space.smallest(), space.largest()))
    search = ["eformer-search", "supernet=sn", "lut_file=lut.parquet", "budget=none", f"budget.latency_ms={(low + high) / 2:.3f}",
              "mes.units.latency_ms=1", "proxy.cache=cache.jsonl", "proxy.batch_size=5", "search.race=true",
              "search.screen_fraction=0.34", "progress=false", "run_dir=search"]
    out = run(*search, cwd=tmp_path)
    assert "eformer-search: best (trial" in out
    record = json.loads((tmp_path / "search" / "search.json").read_text())
    # racing at 224 px: screened on the first of 3 batches, the screenings kept beside the score cache
    assert record["screenings"] > 0
    assert len((tmp_path / "cache.screenings.jsonl").read_text().splitlines()) == record["screenings"]
    run(*search[:-1], "run_dir=again", cwd=tmp_path)  # a new study on the same caches: same path, nothing computed
    again = json.loads((tmp_path / "again" / "search.json").read_text())
    assert again["path"] == record["path"] and again["evaluations"] == again["screenings"] == 0
    # the search scored the 15 held-out training images (class-balanced), never val/ or what it trained on
    assert record["proxy_data"]["split"] == "holdout" and record["proxy_data"]["images"] == 15
    assert record["context"]["image_size"] == 224 and record["context"]["num_classes"] == 3
    # TorchScript-first exports (the default, dynamo, runs at 224 px in tests/test_readme.py's commands as printed)
    run("eformer-export", "arch", "--run", "search", "--best", "--exporter", "fast", cwd=tmp_path)
    exp = tmp_path / "search" / "export"
    for f in ("best.yaml", "best.pt", "best.onnx", "trials.csv", "pareto.png", "export.json"):
        assert (exp / f).exists(), f
    run("eformer-train", *data, "train.epochs=1", "train.batch_size=16", "train.eval_batch_size=16", "train.progress=false",
        f"finetune.arch={exp / 'best.yaml'}", f"finetune.weights={exp / 'best.pt'}", "run_dir=ft", cwd=tmp_path)
    assert (tmp_path / "ft" / "model.pt").is_file()
    out = run("eformer-export", "onnx", "--weights", "ft/model.pt", "--out", "found.onnx", "--exporter", "fast", cwd=tmp_path)
    assert "input 1x3x224x224" in out
    onnx.checker.check_model(str(tmp_path / "found.onnx"))
    assert time.time() - started < 240  # 75 s on an idle 2-core AMD EPYC family-25 VM; the bound allows a loaded one


@pytest.mark.slow
def test_gpu_check_runs_with_tiny_settings(tmp_path):
    """experiments/gpu_check.py, the one script for a lent GPU machine, runs its code paths here on the CPU."""
    import sys

    out = tmp_path / "gpu_check.md"
    res = subprocess.run([sys.executable, "-m", "experiments.gpu_check", "--tiny", "--out", str(out)], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    text = out.read_text()
    assert "within tolerance" in text and "completed, supernet.pt written" in text and "| fp32 | channels_last |" in text
    assert "Channels-last vs contiguous, one fp32 sandwich step on cpu" in text and "(within 1e-5)" in text
