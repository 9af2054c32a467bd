"""Attention heads as an elastic dimension: the static twin, the supernet's slices, costs, LUT keys, the space,
the search encoding and the "fewer heads" slimming action."""
from __future__ import annotations

import random

import pytest
import torch
from test_model import _dispatch_macs

from helpers import randomize_stats
from search.params import arch_from_params, arch_hash, distributions, params_of
from search.report import format_rows, option_values
from search.slimming import Action, apply_action, candidate_actions
from supernet.arch import ArchConfig, ArchConfigError
from supernet.elastic import Supernet
from supernet.model import build_model
from supernet.signatures import arch_signatures, block_signature, count_macs, count_params
from supernet.space import SearchSpace

HEADS = SearchSpace.load("efficientformerv2_heads")
DEFAULT = SearchSpace.load("efficientformerv2")
CTX = {"image_size": 64, "num_classes": 10, "distillation": False}


def with_heads(arch: ArchConfig, heads: dict[tuple[int, int], int]) -> ArchConfig:
    data = arch.to_dict()
    for (i, j), h in heads.items():
        data["stages"][i]["blocks"][j]["heads"] = h
    return ArchConfig.from_dict(data)


S0_H4 = with_heads(ArchConfig.preset("s0"), {(2, 5): 4, (3, 3): 4})   # S0's last attention block in stages 3 and 4


def test_default_heads_change_nothing_and_fewer_heads_are_new_members():
    s0 = ArchConfig.preset("s0")
    assert S0_H4.to_dict() != s0.to_dict() and with_heads(s0, {(2, 5): 8}) == s0
    assert arch_hash(s0) == "37225dee8de55be1" and arch_hash(S0_H4) != arch_hash(s0)
    assert "heads" not in s0.to_yaml() and "{type: attn, expansion: 4, heads: 4}" in S0_H4.to_yaml()
    assert S0_H4.summary().endswith(" h-/-/8.4/8.4")
    assert DEFAULT.hash == "946fe6687d97" and HEADS.hash != DEFAULT.hash
    for name in ("s0", "s1", "s2", "l"):
        assert HEADS.contains(ArchConfig.preset(name))
    assert HEADS.contains(S0_H4) and not DEFAULT.contains(S0_H4)
    assert DEFAULT.violations(S0_H4) == ["stages[2].blocks[5].heads: 4 is not one of 8",
                                         "stages[3].blocks[3].heads: 4 is not one of 8"]


def test_costs_of_fewer_heads_are_exact():
    static = build_model(S0_H4.replace(**CTX))
    assert sum(p.numel() for p in static.parameters()) == count_params(S0_H4.replace(**CTX))
    assert count_macs(S0_H4.replace(**CTX)) == _dispatch_macs(static, 64)
    assert count_params(S0_H4) < count_params(ArchConfig.preset("s0"))
    sig = block_signature(2, "attn", 96, 4, 14, heads=4)
    assert sig.key == "attn-c96-e4-r14-s2-h4" and block_signature(2, "attn", 96, 4, 14).key == "attn-c96-e4-r14-s2"
    assert [s.key for s in arch_signatures(S0_H4)].count("attn-c176-e4-r7-s1-h4") == 1


@pytest.fixture(scope="module")
def supernet() -> Supernet:
    torch.manual_seed(0)
    return randomize_stats(Supernet(HEADS, **CTX), seed=5).eval()


def test_extract_equals_active_for_members_with_fewer_heads(supernet):
    rng = random.Random(3)
    members = [S0_H4, supernet.smallest(), ArchConfig.preset("s1")] + [HEADS.sample(rng) for _ in range(3)]
    assert any(b.heads == 4 for m in members[3:] for s in m.stages for b in s.blocks)
    x = torch.randn(2, 3, 64, 64)
    for arch in members:
        supernet.set_active(arch)
        with torch.no_grad():
            static = supernet.extract(arch).eval()
            assert float((static(x) - supernet(x)).abs().max()) <= 1e-5, arch.summary()
        assert sum(p.numel() for p in static.parameters()) == count_params(supernet.member(arch))


def test_load_member_writes_the_leading_heads_and_the_bias_cache_follows(supernet):
    arch = supernet.member(S0_H4)
    torch.manual_seed(1)
    static = randomize_stats(build_model(arch), seed=9).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        supernet.set_active(arch)
        supernet(x)   # fills the eval-mode bias caches
        supernet.load_member(arch, static.state_dict())
        supernet.set_active(arch)
        assert float((supernet(x) - static(x)).abs().max()) <= 1e-5
        block = supernet.stages[2].attn_blocks[1].token_mixer
        assert torch.equal(block.talking_head1.weight[:4, :4], static.stages[2].blocks[5].token_mixer.talking_head1.weight)
        assert torch.equal(block.attention_biases[:4], static.stages[2].blocks[5].token_mixer.attention_biases)


def test_the_lut_times_every_head_count():
    from latency_lut.build import space_signatures

    base = space_signatures(DEFAULT, 224, 1000, True)
    more = space_signatures(HEADS, 224, 1000, True)
    extra = [s for s in more if s not in set(base)]
    assert len(base) == 638 and extra and all(s.kind == "attn" and s.option("heads") == 4 for s in extra)
    assert len(extra) == sum(1 for s in base if s.kind == "attn")


def test_search_parameters_encode_heads_and_round_trip():
    params = params_of(S0_H4, HEADS)
    assert params["s2_h1"] == 4 and params["s3_h1"] == 4 and params["s2_h0"] == 8 and params["s2_h5"] == 8
    assert arch_from_params(params, HEADS, name=S0_H4.name) == S0_H4
    names = list(distributions(HEADS))
    assert names.index("s2_h0") == names.index("s2_e14") + 1 and names[-1] == "s3_h5"
    assert not any("_h" in k for k in distributions(DEFAULT))


def test_slimming_has_a_fewer_heads_action():
    s0 = ArchConfig.preset("s0")
    kinds = {a.kind for a, _ in candidate_actions(s0, HEADS)}
    assert "heads" in kinds and "heads" not in {a.kind for a, _ in candidate_actions(s0, DEFAULT)}
    fewer = apply_action(s0, Action("heads", 2, 4), HEADS)
    assert fewer == with_heads(s0, {(2, 4): 4})
    assert Action("heads", 2, 4).describe(s0, fewer) == "stage 3 block 5 heads 8->4"
    stage_wide = apply_action(s0, Action("heads", 3), HEADS)
    assert stage_wide == with_heads(s0, {(3, 2): 4, (3, 3): 4})
    assert apply_action(stage_wide, Action("heads", 3, 2), HEADS) is None   # 4 is the smallest
    assert apply_action(s0, Action("heads", 2, 0), HEADS) is None           # an FFN block has no heads


@pytest.mark.parametrize("change, message", [
    ({"heads": 4, "type": "ffn"}, "stages[2].blocks[0].heads: only attention blocks have heads (this is an FFN block)"),
    ({"heads": 0}, "stages[2].blocks[4].heads: 0 must be an integer in 1..16"),
    ({"heads": "four"}, "stages[2].blocks[4].heads: 'four' must be an integer in 1..16"),
])
def test_bad_heads_in_an_arch_are_one_line(change, message):
    data = ArchConfig.preset("s0").to_dict()
    j = 0 if change.get("type") == "ffn" else 4
    data["stages"][2]["blocks"][j].update({k: v for k, v in change.items() if k != "type"})
    with pytest.raises(ArchConfigError) as err:
        ArchConfig.from_dict(data)
    assert str(err.value) == message


@pytest.mark.slow
def test_the_pipeline_selects_the_space_for_its_lut_and_supernet(tmp_path):
    import subprocess
    import sys

    from conf import compose

    cfg = compose("eformer_pipeline", ["search_space=efficientformerv2_heads", f"work_dir={tmp_path}"])
    assert cfg.lut_overrides[1] == f"out={tmp_path}/lut/ort-cpu-efficientformerv2_heads-224.parquet"
    assert compose("eformer_train", ["space=efficientformerv2_heads"]).space.name == "efficientformerv2_heads"
    res = subprocess.run([sys.executable, "-m", "search.pipeline", "search_space=nope", f"work_dir={tmp_path / 'w'}"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and not (tmp_path / "w").exists()
    assert res.stderr.strip().splitlines()[-1] == ("eformer-pipeline: error: search_space: 'nope' is not one of the spaces "
                                                   "in conf/space (efficientformerv2, efficientformerv2_heads, tiny)")


@pytest.mark.slow
def test_fewer_heads_deploy_and_export_to_onnx(tmp_path):
    import numpy as np

    from supernet import fuse
    from supernet.onnx_export import export_onnx, ort_session

    model = randomize_stats(build_model(S0_H4.replace(image_size=96)), seed=4).eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        ref = model(x)
        for gemm in (False, True):
            assert float((fuse(model, gemm_kernels=gemm)(x) - ref).abs().max()) <= 1e-5
    path = export_onnx(model, tmp_path / "s0-h4.onnx", (1, 3, 96, 96))
    assert np.abs(ort_session(path).run(None, {"input": x.numpy()})[0] - ref.numpy()).max() <= 1e-4


def test_the_final_table_gains_a_heads_column_only_when_a_member_searched_them():
    s0 = ArchConfig.preset("s0")
    raw = s0.to_dict()
    raw["stages"][3]["blocks"][3]["heads"] = 4
    fewer = ArchConfig.from_dict(raw)

    def row(released: ArchConfig, derived: ArchConfig) -> dict:
        common = {"widths": [32], "depths": [1], "attn": [0], "expansions": ["4"], "params": 1e6, "macs": 1e9,
                  "lut_ms": 1.0, "measured_ms": 1.0, "steps": 1}
        return {"budget": "s0", "released": {**common, **option_values(released)},
                "derived": {**common, **option_values(derived)}}

    assert "heads" not in format_rows([row(s0, s0)])
    table = format_rows([row(s0, fewer)]).splitlines()
    assert "| heads of attention blocks |" in table[0] and table[1].count("|---") == 12
    assert "| - - 8.8 8.8 |" in table[2] and "| - - 8.8 8.4 |" in table[3]
