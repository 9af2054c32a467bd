"""The space's dimensions (supernet.dimensions): defined once, and the refactor onto them changed no identity.

The hashes below are those of before the dimensions existed: the committed LUT, studies, proxy caches and
supernet files are keyed by them, so a change here invalidates every one of those files."""
from __future__ import annotations

import dataclasses
import itertools
import random
import re
from pathlib import Path

import pytest

from conf.schemas import SlimmingSearchSchema, slimming_actions
from latency_lut.lut import LatencyLUT
from search.params import arch_from_params, arch_hash, distributions, params_of
from search.slimming import Action, apply_action, candidate_actions
from supernet.arch import BLOCK_OPTIONS, ArchConfig, ArchConfigError, BlockConfig, BlockOption
from supernet.dimensions import ACTION_KINDS, DIMENSIONS, SpaceError
from supernet.signatures import BlockSignature, arch_signatures, option_columns
from supernet.space import SearchSpace

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = SearchSpace.load("efficientformerv2")


def test_space_hashes_are_unchanged_and_match_the_committed_lut():
    assert DEFAULT.hash == "946fe6687d97" and SearchSpace.load("tiny").hash == "2f6fc1c8474f"
    assert LatencyLUT.load(ROOT / "luts" / "ort-cpu-efficientformerv2-224.parquet").meta["space_hash"] == DEFAULT.hash


def test_the_lut_times_exactly_the_pieces_the_dimensions_enumerate():
    from latency_lut.build import space_signatures

    lut = LatencyLUT.load(ROOT / "luts" / "ort-cpu-efficientformerv2-224.parquet")
    assert {s.key for s in space_signatures(DEFAULT, 224, 1000, True)} == set(lut.table["key"])


def test_arch_hashes_and_seeded_samples_are_unchanged():
    assert {p: arch_hash(ArchConfig.preset(p)) for p in ("s0", "s1", "s2", "l")} == {
        "s0": "37225dee8de55be1", "s1": "95a57d8ceba4648a", "s2": "3d4a130352dc4947", "l": "ee3e65162367da65"}
    assert (arch_hash(DEFAULT.largest()), arch_hash(DEFAULT.smallest())) == ("0e81811bf4138a62", "053f5cbd691a4bdd")
    rng = random.Random(3)  # the draw order (depth, width, expansions) decides the sandwich's random members
    assert [DEFAULT.sample(rng).summary() for _ in range(2)] == [
        "w32-80-160-224 d2-4-9-5 a0-0-4-4 e34/2423/224344334/42434",
        "w32-48-184-224 d1-5-10-7 a0-0-2-2 e2/32334/3344323222/3434334"]
    assert list(distributions(DEFAULT))[:4] == ["s0_width", "s0_depth", "s0_e0", "s0_e1"]  # a trial's suggest order


def test_every_dimension_reads_back_what_it_builds():
    rng = random.Random(0)
    for _ in range(40):
        arch = DEFAULT.sample(rng, name="custom")
        assert DEFAULT.build(SearchSpace.drafts_of(arch)) == arch
        assert arch_from_params(params_of(arch, DEFAULT), DEFAULT) == arch


def _brute_force_members(space: SearchSpace) -> int:
    per_stage = []
    for s in space.stages:
        n = 0
        for w, (f, a) in itertools.product(s.widths, s.depth_pairs()):
            n += len(list(itertools.product(s.expansions, repeat=f + a)))
        per_stage.append(n)
    total = 1
    for n in per_stage:
        total *= n
    return total


def test_member_count_is_the_product_of_the_dimensions_choices():
    small = SearchSpace.from_dict({"expansions": [2, 4], "stages": [
        {"widths": [32, 40], "ffn_blocks": [1, 2]}, {"widths": [48], "ffn_blocks": [1]},
        {"widths": [96], "ffn_blocks": [0, 1], "attn_blocks": [1, 2], "max_depth": 2},
        {"widths": [176, 192], "ffn_blocks": [0], "attn_blocks": [1]}]})
    assert small.num_members() == _brute_force_members(small) == (2 * (2 + 4)) * 2 * (2 + 4 + 4) * (2 * 2)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["stages"][2].update(kernel=[3, 5]),
     "stages[2]: unknown key(s) kernel; allowed: attn_blocks, expansions, ffn_blocks, heads, max_depth, widths "
     "(the dimensions depth, width, expansion, heads)"),
    (lambda d: d["stages"][0].update(heads=[4, 8]), "stages[0].heads: only stages 3 and 4 have attention blocks"),
    (lambda d: d["stages"][2].update(heads=[]), "stages[2].heads: expected a non-empty list"),
    (lambda d: d["stages"][3].update(heads=[4, 32]), "stages[3].heads: [4, 32] must be within 1..16"),
    (lambda d: d["stages"][3].update(heads=[0, 8]), "stages[3].heads: [0, 8] must be within 1..16"),
    (lambda d: d["stages"][1].update(widths=[]), "stages[1].widths: expected a non-empty list"),
    (lambda d: d["stages"][3].update(expansions=[]), "stages[3].expansions: expected a non-empty list"),
    (lambda d: d["stages"][0].update(ffn_blocks=[0], attn_blocks=[0]), "stages[0]: no block counts satisfy"),
])
def test_bad_dimension_choices_fail_in_one_line_naming_the_dimension(mutate, message):
    data = DEFAULT.to_dict()
    mutate(data)
    with pytest.raises(SpaceError) as err:
        SearchSpace.from_dict(data)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_slimming_actions_come_from_the_dimensions():
    field = next(f for f in dataclasses.fields(SlimmingSearchSchema) if f.name == "actions")
    assert ACTION_KINDS == tuple(field.metadata["subset_of"]) == ("drop", "width", "expansion", "heads") == slimming_actions()
    assert [d.name for d in DIMENSIONS.values()] == ["depth", "width", "expansion", "heads"]
    big = DEFAULT.largest()
    kinds = {a.kind for a, _ in candidate_actions(big, DEFAULT)}
    assert kinds == {"drop_ffn", "drop_attn", "width", "expansion"}
    dropped = apply_action(big, Action("drop_attn", 2), DEFAULT)
    assert dropped.stages[2].num_attn == 5 and dropped.depths[2] == 14 and DEFAULT.contains(dropped)
    assert Action("drop_attn", 2).describe(big, dropped) == "stage 3 drop attention block"
    thinner = apply_action(big, Action("width", 3), DEFAULT)
    assert thinner.widths[3] == 368 and Action("width", 3).describe(big, thinner) == "stage 4 width 384->368"
    assert apply_action(DEFAULT.smallest(), Action("width", 0), DEFAULT) is None


def test_a_supernet_file_of_a_space_this_version_cannot_read_says_to_retrain(tmp_path):
    import torch

    from supernet.convert import CheckpointError
    from supernet.elastic import Supernet

    net = Supernet(SearchSpace.load("tiny"), image_size=32, num_classes=10, distillation=False)
    payload = torch.load(net.save(tmp_path / "supernet.pt"), weights_only=False)
    payload["space"]["stages"][2]["kernel"] = [3, 5]   # made by a version with a kernel-size dimension
    torch.save(payload, tmp_path / "other.pt")
    with pytest.raises(CheckpointError) as err:
        Supernet.load(tmp_path / "other.pt")
    msg = str(err.value)
    assert "other.pt: was made for a space this version cannot read (stages[2]: unknown key(s) kernel" in msg
    assert msg.endswith("retrain it with eformer-train") and "\n" not in msg
    payload["space"]["stages"][2].pop("kernel")
    payload["state_dict"].pop(next(iter(payload["state_dict"])))
    torch.save(payload, tmp_path / "torn.pt")
    with pytest.raises(CheckpointError, match="torn.pt: its weights do not fit its space"):
        Supernet.load(tmp_path / "torn.pt")


def test_a_registered_block_option_needs_no_change_to_the_architecture_signatures_or_lut(monkeypatch):
    """A per-block dimension's option, once registered, is parsed, checked, summarised, written, keyed in the block
    signatures and given a LUT column by the generic code alone (here a made-up FFN ``kernel``; costs ignore it)."""
    monkeypatch.setitem(BLOCK_OPTIONS, "kernel", BlockOption("kernel", 3, ("ffn",), 3, 7, "k", "FFN blocks"))
    raw = ArchConfig.preset("s0").to_dict()
    raw["stages"][0]["blocks"][0]["kernel"] = 5
    raw["stages"][1]["blocks"][1]["kernel"] = 3  # the default: written nowhere, no different member
    arch = ArchConfig.from_dict(raw)
    assert (arch.stages[0].blocks[0].kernel, arch.stages[0].blocks[1].kernel) == (5, 3)
    assert arch.stages[1] == ArchConfig.preset("s0").stages[1] and arch.stages[0] != ArchConfig.preset("s0").stages[0]
    assert arch.summary().endswith(" k5.3/3.3/3.3.3.3/3.3") and "k" not in ArchConfig.preset("s0").summary().split()[-1]
    assert "{type: ffn, expansion: 4, kernel: 5}" in arch.to_yaml() and arch.to_yaml().count("kernel") == 1
    sigs = list(arch_signatures(arch))
    assert sigs[1].key == "ffn-c32-e4-r56-k5" and sigs[2].key == "ffn-c32-e4-r56"
    row = sigs[1].row()
    assert row["ffn_kernel"] == 5 and sigs[2].row()["ffn_kernel"] == 3 and sigs[0].row()["ffn_kernel"] == 0  # the stem
    assert BlockSignature.from_row(row) == sigs[1] and "ffn_kernel" in option_columns()
    for block, message in (({"type": "attn", "kernel": 5}, "only FFN blocks have kernel (this is an ATTN block)"),
                           ({"kernel": 9}, "9 must be an integer in 3..7"), ({"kernel": "5"}, "'5' must be an integer")):
        bad = ArchConfig.preset("s0").to_dict()
        bad["stages"][2]["blocks"][0].update(block)
        with pytest.raises(ArchConfigError, match=re.escape(f"stages[2].blocks[0].kernel: {message}")):
            ArchConfig.from_dict(bad)
    with pytest.raises(TypeError, match="BlockConfig.options: a mapping"):
        BlockConfig("attn", 4, 4)  # the old positional heads
