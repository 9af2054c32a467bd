"""Deploy form (fused) and ONNX export parity."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import randomize_stats
from supernet import ArchConfig, build_model, fuse
from supernet.blocks import Mlp
from supernet.convert import convert_state_dict, load_converted, read_checkpoint
from supernet.deploy import GemmMlp, GemmPointwise, GemmUpsample2x
from supernet.layers import ConvNorm
from supernet.onnx_export import export_onnx, ort_session


def test_fused_fixture(s0_fixture):
    model = build_model("s0")
    load_converted(model, convert_state_dict(read_checkpoint(s0_fixture / "eformer_s0_random.pth"), "official"))
    ref = torch.load(s0_fixture / "input_logits.pt", map_location="cpu", weights_only=True)
    with torch.no_grad():
        for gemm in (False, True):
            out = fuse(model, gemm_kernels=gemm)(ref["input"])
            assert float((out - ref["logits"]).abs().max()) <= 1e-5


@pytest.mark.parametrize("name", ["s0", "s1", "s2", "l"])
def test_fused_equals_unfused(name):
    model = randomize_stats(build_model(ArchConfig.preset(name, image_size=96)), seed=1).eval()
    x = torch.randn(3, 3, 96, 96)
    with torch.no_grad():
        ref = model(x)
        for gemm in (False, True):
            deployed = fuse(model, gemm_kernels=gemm)
            assert float((deployed(x) - ref).abs().max()) <= 1e-5
            assert float((deployed(x[:1]) - ref[:1]).abs().max()) <= 1e-5


def test_fused_structure():
    deployed = fuse(build_model(ArchConfig.preset("s0", image_size=64)))
    mods = list(deployed.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in mods)
    assert not any(isinstance(m, (Mlp, ConvNorm)) and getattr(m, "bn", None) is not None for m in mods)
    assert any(isinstance(m, GemmMlp) for m in mods) and any(isinstance(m, GemmPointwise) for m in mods)
    assert any(isinstance(m, GemmUpsample2x) for m in mods)
    assert deployed.head_dist is None and deployed.norm is None
    with pytest.raises(RuntimeError, match="inference-only"):
        deployed.train()


@pytest.mark.slow
@pytest.mark.parametrize("name, exporter", [("s0", "dynamo"), ("s1", "dynamo"), ("s2", "torchscript"), ("l", "torchscript")])
def test_onnx_matches_pytorch(name, exporter, tmp_path):
    """Each released model in one of the exporters' graphs, each exporter on two of them (the default, auto, is
    dynamo: 5-8x the export time of TorchScript, whose graphs the LUT and the pipeline's exports use; L, the
    slowest to export, takes TorchScript)."""
    model = randomize_stats(build_model(name), seed=2).eval()
    path = export_onnx(model, tmp_path / f"{name}.onnx", (1, 3, 224, 224), exporter=exporter)
    import onnx

    assert max(op.version for op in onnx.load(str(path)).opset_import if op.domain in ("", "ai.onnx")) >= 17
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref = model(x).numpy()
    got = ort_session(path).run(None, {"input": x.numpy()})[0]
    assert np.abs(ref - got).max() <= 1e-4
