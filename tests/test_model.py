"""The static network: forward/backward, API, exact parameter counts, analytic costs."""
from __future__ import annotations

import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from helpers import random_arch
from supernet import ArchConfig, build_model, count_macs, count_params
from supernet.signatures import arch_signatures

PARAMS = {"s0": 3_600_256, "s1": 6_185_560, "s2": 12_710_112, "l": 26_322_288}
PUBLISHED_GMACS = {"s0": 0.40, "s1": 0.65, "s2": 1.25, "l": 2.56}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_exact_parameter_counts(name):
    arch = ArchConfig.preset(name)
    assert n_params(build_model(arch)) == PARAMS[name]
    assert count_params(arch) == PARAMS[name]


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_macs_match_published(name):
    assert abs(count_macs(ArchConfig.preset(name)) / 1e9 - PUBLISHED_GMACS[name]) <= 0.01


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_forward_backward_small_image(name):
    arch = ArchConfig.preset(name, image_size=64, num_classes=10)
    model = build_model(arch)
    x = torch.randn(2, 3, 64, 64)
    out, dist = model(x)  # train mode: (head, distillation head)
    assert out.shape == dist.shape == (2, 10)
    (out.sum() + dist.sum()).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        y = model(x)
        feats = model.forward_features(x)
        torch.testing.assert_close(y, model.forward_head(feats))
        pooled = model.norm(feats).mean((2, 3))
        torch.testing.assert_close(y, (model.head(pooled) + model.head_dist(pooled)) / 2)
    stages = model.forward_features(x, return_stages=True)
    assert [tuple(s.shape[1:]) for s in stages] == [(w, r, r) for w, r in zip(arch.widths, (16, 8, 4, 2))]


def test_no_distillation_head():
    arch = ArchConfig.preset("s0", image_size=32, distillation=False, num_classes=7)
    model = build_model(arch)
    assert model.head_dist is None
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)  # a single tensor, also in training
    assert n_params(model) == count_params(arch)


def test_analytic_params_match_instantiated_for_random_archs():
    rng = random.Random(1234)
    for _ in range(50):
        arch = random_arch(rng)
        assert count_params(arch) == n_params(build_model(arch)), arch


def _dispatch_macs(model, image_size):
    """An independent counter: PyTorch's FLOP counter on the aten calls (conv, mm, bmm) / 2."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.randn(1, 3, image_size, image_size))
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("name", ["s0", "l"])
def test_macs_equal_dispatch_counter_presets(name):
    arch = ArchConfig.preset(name)
    assert count_macs(arch) == _dispatch_macs(build_model(arch), 224)


def test_macs_equal_dispatch_counter_random():
    rng = random.Random(7)
    for _ in range(10):
        arch = random_arch(rng, image_sizes=(32, 64, 96))
        assert count_macs(arch) == _dispatch_macs(build_model(arch), arch.image_size), arch


def test_signatures_cover_network_in_order():
    sigs = list(arch_signatures(ArchConfig.preset("s0")))
    assert sigs[0].key == "stem-c32-r224" and sigs[-1].key == "head-c176-k1000-h2-r7"
    kinds = [s.kind for s in sigs]
    assert kinds.count("ffn") == 10 and kinds.count("attn") == 4
    assert kinds.count("embed") == 3 and kinds.count("attn_down") == 1
    assert [s.key for s in sigs if s.kind == "attn"] == ["attn-c96-e4-r14-s2"] * 2 + ["attn-c176-e3-r7-s1", "attn-c176-e4-r7-s1"]


def test_init_follows_release():
    model = build_model("s0")
    blk = model.stages[2].blocks[4]
    assert torch.all(blk.ls1.gamma == 1e-5) and torch.all(blk.token_mixer.attention_biases == 0)
    w = blk.mlp.fc1.conv.weight.detach()
    assert abs(float(w.std()) - 0.02) < 0.002  # truncated normal std 0.02 (bounds +-2, as in the release)
    assert float(blk.mlp.mid.conv.weight.detach().abs().max()) > 0.15  # depthwise mid: PyTorch default init
    assert torch.all(blk.mlp.fc1.conv.bias == 0)
