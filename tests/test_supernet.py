"""The weight-sharing supernet: extract == active forward, BN recalibration, pretrained loading."""
from __future__ import annotations

import random

import pytest
import torch

from helpers import randomize_stats
from supernet import ArchConfig, build_model
from supernet.bn_calibration import recalibrate_bn
from supernet.convert import CheckpointError, convert_state_dict, read_checkpoint
from supernet.elastic import Supernet
from supernet.signatures import count_params

CTX = {"image_size": 32, "num_classes": 10, "distillation": False}


@pytest.fixture(scope="module")
def supernet() -> Supernet:
    torch.manual_seed(0)
    return randomize_stats(Supernet("efficientformerv2", **CTX), seed=3).eval()


def test_extract_equals_active_forward(supernet):
    rng = random.Random(0)
    members = [ArchConfig.preset(n) for n in ("s0", "s1", "s2", "l")]
    members += [supernet.largest(), supernet.smallest()] + [supernet.space.sample(rng) for _ in range(4)]
    x = torch.randn(4, 3, 32, 32)
    for arch in members:
        supernet.set_active(arch)
        with torch.no_grad():
            ref = supernet(x)
            static = supernet.extract(arch).eval()
            assert float((static(x) - ref).abs().max()) <= 1e-5, arch.summary()
        # the analytic count equals an instantiated build_model's (test_model), so this is the static twin's size
        assert sum(p.numel() for p in static.parameters()) == count_params(supernet.member(arch))


def test_set_active_rejects_non_members(supernet):
    bad = ArchConfig.preset("s0").to_dict()
    bad["stages"][2]["width"] = 200
    from supernet.space import SpaceError

    with pytest.raises(SpaceError, match="stages\\[2\\].width: 200"):
        supernet.set_active(ArchConfig.from_dict(bad))


def test_bn_recalibration_changes_and_fixes_statistics(supernet):
    arch = supernet.member(ArchConfig.preset("s0"))
    net = Supernet("efficientformerv2", **CTX).eval()
    net.load_state_dict(supernet.state_dict())
    bn = net.stem.conv1.bn
    width = arch.widths[0] // 2
    untouched = bn.running_mean[width:].clone()
    before = bn.running_mean[:width].clone()
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(16, 3, 32, 32, generator=g) * 2 + 1 for _ in range(3)]
    assert net.recalibrate_bn(arch, batches, n_batches=3) == 3
    after = bn.running_mean[:width]
    assert not torch.allclose(before, after)
    # exact: the mean of the three per-batch means of the first conv's output
    with torch.no_grad():
        conv = net.stem.conv1.conv
        expected = torch.stack([torch.nn.functional.conv2d(b, conv.weight[:width], conv.bias[:width], 2, 1).mean((0, 2, 3))
                                for b in batches]).mean(0)
    assert torch.allclose(after, expected, atol=1e-5)
    assert torch.equal(bn.running_mean[width:], untouched)  # only the member's slice changes
    # the recalibrated supernet member equals a recalibrated extracted copy
    static = supernet.extract(arch)
    recalibrate_bn(static, batches, 3)
    with torch.no_grad():
        net.set_active(arch)
        assert float((net(batches[0]) - static.eval()(batches[0])).abs().max()) <= 1e-5


def test_recalibration_fixes_a_member_accuracy_proxy():
    """A sliced member evaluated with the supernet's (largest-member) statistics is off; after
    recalibration its BN statistics equal those of the data it is evaluated on."""
    torch.manual_seed(0)
    net = Supernet("tiny", **CTX)
    x = torch.randn(64, 3, 32, 32) * 3 + 2
    net.train()
    net.set_active(net.largest())
    with torch.no_grad():
        for _ in range(20):
            net(x)  # running stats now reflect the largest member
    small = net.smallest()
    model = net.extract(small).eval()
    stale = model.stem.conv2.bn.running_mean.clone()
    recalibrate_bn(model, [x], 1)
    with torch.no_grad():
        feats = model.stem.conv2.conv(model.stem.conv1(x))
    assert torch.allclose(model.stem.conv2.bn.running_mean, feats.mean((0, 2, 3)), atol=1e-4)
    assert not torch.allclose(stale, model.stem.conv2.bn.running_mean, atol=1e-3)


def test_release_checkpoint_loads_into_supernet(s0_fixture):
    net = Supernet("efficientformerv2", image_size=224, num_classes=1000, distillation=True)
    sd = convert_state_dict(read_checkpoint(s0_fixture / "eformer_s0_random.pth"), "official")
    net.load_member(ArchConfig.preset("s0"), sd)
    ref = torch.load(s0_fixture / "input_logits.pt", map_location="cpu", weights_only=True)
    with torch.no_grad():
        out = net.extract(ArchConfig.preset("s0")).eval()(ref["input"])
        net.eval().set_active(ArchConfig.preset("s0"))
        out2 = net(ref["input"])
    assert float((out - ref["logits"]).abs().max()) <= 1e-5
    assert float((out2 - ref["logits"]).abs().max()) <= 1e-5
    # L (the largest member) round-trips through the same mapping
    l_model = randomize_stats(build_model("l"), seed=5)
    net.load_member(ArchConfig.preset("l"), l_model.state_dict())
    back = net.extract(ArchConfig.preset("l")).state_dict()
    assert all(torch.equal(back[k], v) for k, v in l_model.state_dict().items())
    with pytest.raises(CheckpointError, match="do not fit member"):
        net.load_member(ArchConfig.preset("s1"), sd)


def test_save_and_load(tmp_path):
    net = randomize_stats(Supernet("tiny", **CTX), seed=7)
    net.save(tmp_path / "supernet.pt")
    back = Supernet.load(tmp_path)
    assert back.space == net.space and back.context == net.context
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), back.state_dict().values()))
    with pytest.raises(CheckpointError, match="supernet file not found"):
        Supernet.load(tmp_path / "nothing")


def test_eval_attention_bias_cache_follows_weight_loads():
    """After an eval forward, load_member of new weights (in-place copies) must not reuse the old bias table."""
    from supernet.arch import ArchConfig
    from supernet.model import build_model

    torch.manual_seed(0)
    arch = ArchConfig.preset("s0").replace(image_size=64, num_classes=10, distillation=False)
    net = Supernet("efficientformerv2", image_size=64, num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        net.set_active(arch)
        net(x)  # fills the eval-mode caches
        static = build_model(arch).eval()
        for name, p in static.named_parameters():
            if name.endswith("attention_biases"):
                p.normal_()
        net.load_member(arch, static.state_dict())
        net.set_active(arch)
        assert torch.allclose(net(x), static(x), atol=1e-5)
        for m in net.modules():  # an in-place write is seen too
            if hasattr(m, "attention_biases"):
                m.attention_biases.add_(1.0)
        for m in static.modules():
            if hasattr(m, "attention_biases"):
                m.attention_biases.add_(1.0)
        assert torch.allclose(net(x), static(x), atol=1e-5)
