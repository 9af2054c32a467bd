"""Checkpoint conversion: release fixture parity, timm layout, strict errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from supernet import build_model
from supernet.convert import CheckpointError, convert_state_dict, load_converted, read_checkpoint

DATA = Path(__file__).parent / "data"


def _fixture_model(s0_fixture):
    model = build_model("s0")
    load_converted(model, convert_state_dict(read_checkpoint(s0_fixture / "eformer_s0_random.pth"), "official"))
    return model.eval()


def test_release_fixture_logits(s0_fixture):
    model = _fixture_model(s0_fixture)
    ref = torch.load(s0_fixture / "input_logits.pt", map_location="cpu", weights_only=True)
    with torch.no_grad():
        logits = model(ref["input"])
    assert float((logits - ref["logits"]).abs().max()) <= 1e-5


def test_release_bias_indices_match(s0_fixture):
    raw = read_checkpoint(s0_fixture / "eformer_s0_random.pth")
    model = build_model("s0")
    assert torch.equal(raw["network.5.attn.attention_bias_idxs"], model.stages[3].downsample.attn.attention_bias_idxs)
    assert torch.equal(
        raw["network.4.4.token_mixer.attention_bias_idxs"], model.stages[2].blocks[4].token_mixer.attention_bias_idxs
    )


def test_bare_and_wrapped_state_dicts(s0_fixture):
    raw = read_checkpoint(s0_fixture / "eformer_s0_random.pth")
    a = convert_state_dict({"model": raw}, "official")
    b = convert_state_dict(raw, "official")
    c = convert_state_dict({f"module.{k}": v for k, v in raw.items()}, "official")
    assert a.keys() == b.keys() == c.keys()


def test_timm_layout_loads():
    """Our layout equals timm 1.0's (key -> shape list recorded from timm's own efficientformerv2_s0)."""
    layout = json.loads((DATA / "timm_efficientformerv2_s0_layout.json").read_text())["state_dict"]
    ours = {k: list(v.shape) for k, v in build_model("s0").state_dict().items()}
    assert ours == layout
    g = torch.Generator().manual_seed(0)
    timm_sd = {k: torch.randn(shape, generator=g) if shape else torch.tensor(0) for k, shape in layout.items()}
    timm_sd["stages.2.blocks.4.token_mixer.attention_bias_idxs"] = torch.zeros(49, 49, dtype=torch.long)
    model = load_converted(build_model("s0"), convert_state_dict(timm_sd, "timm"))
    assert torch.equal(model.head_dist.weight, timm_sd["head_dist.weight"])


def test_errors_list_missing_unexpected_misshaped(s0_fixture):
    sd = convert_state_dict(read_checkpoint(s0_fixture / "eformer_s0_random.pth"), "official")
    sd.pop("head.bias")
    sd["extra.weight"] = torch.zeros(1)
    sd["norm.weight"] = torch.zeros(5)
    model = build_model("s0")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_converted(model, sd, "ckpt.pth")
    msg = str(err.value)
    assert "missing: head.bias" in msg and "unexpected: extra.weight" in msg
    assert "mis-shaped: norm.weight (5,) (expected (176,))" in msg
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing half-loaded


def test_wrong_arch_is_refused(s0_fixture):
    sd = convert_state_dict(read_checkpoint(s0_fixture / "eformer_s0_random.pth"), "official")
    with pytest.raises(CheckpointError, match="does not fit the architecture"):
        load_converted(build_model("s1"), sd)


def test_unreadable_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        read_checkpoint(junk)
    with pytest.raises(CheckpointError, match="source"):
        convert_state_dict({"a": torch.zeros(1)}, "keras")
