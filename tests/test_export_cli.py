"""eformer-export convert / onnx: the CLI round trip and its error handling."""
from __future__ import annotations

import subprocess

import pytest
import torch

from supernet import build_model
from supernet.convert import convert_state_dict, load_converted, read_checkpoint


def run(*args, cwd=None):
    return subprocess.run(["eformer-export", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.slow
def test_convert_then_onnx_round_trip(s0_fixture, tmp_path):
    out = tmp_path / "s0.pth"
    res = run("convert", "--src", str(s0_fixture / "eformer_s0_random.pth"), "--arch", "s0", "--source", "official", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "3,600,256 parameters" in res.stdout
    model = load_converted(build_model("s0"), read_checkpoint(out)).eval()
    ref = torch.load(s0_fixture / "input_logits.pt", map_location="cpu", weights_only=True)
    with torch.no_grad():
        assert float((model(ref["input"]) - ref["logits"]).abs().max()) <= 1e-5
    onnx_path = tmp_path / "s0.onnx"
    # the legacy exporter through the CLI's switch (the default, dynamo, runs as printed in tests/test_readme.py)
    res = run("onnx", "--arch", "s0", "--weights", str(out), "--out", str(onnx_path), "--exporter", "torchscript")
    assert res.returncode == 0, res.stderr
    assert onnx_path.is_file() and "onnxruntime max |diff| vs PyTorch" in res.stdout


@pytest.mark.slow
def test_user_errors_are_one_line_and_write_nothing(s0_fixture, tmp_path):
    src = str(s0_fixture / "eformer_s0_random.pth")
    cases = [
        (("convert", "--src", src, "--arch", "s1", "--source", "official", "--out", str(tmp_path / "x.pth")),
         "does not fit the architecture"),
        (("convert", "--src", str(tmp_path / "none.pth"), "--arch", "s0", "--out", str(tmp_path / "x.pth")), "checkpoint file not found"),
        (("onnx", "--arch", "s7", "--out", str(tmp_path / "x.onnx")), "neither a preset"),
        (("onnx", "--arch", "s0", "--image-size", "100", "--out", str(tmp_path / "x.onnx")), "--image-size: 100 is not a multiple of 32"),
        (("onnx", "--arch", "s0", "--opset", "13", "--out", str(tmp_path / "x.onnx")), "--opset: 13 is below"),
        (("onnx", "--arch", "s0", "--image-size", "0", "--out", str(tmp_path / "x.onnx")), "--image-size: 0 is not a multiple"),
        (("onnx", "--arch", "s0", "--out", ""), "--out: empty; give a file path"),
    ]
    for args, message in cases:
        res = run(*args)
        assert res.returncode == 2, (args, res.stderr)
        assert message in res.stderr and "Traceback" not in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_timm_source_via_cli(tmp_path):
    sd = build_model("s0").state_dict()
    src = tmp_path / "timm.pth"
    torch.save(sd, src)
    res = run("convert", "--src", str(src), "--arch", "s0", "--source", "timm", "--out", str(tmp_path / "o.pth"))
    assert res.returncode == 0, res.stderr
    converted = convert_state_dict(read_checkpoint(tmp_path / "o.pth"), "ours")
    assert all(torch.equal(converted[k], v) for k, v in sd.items())
