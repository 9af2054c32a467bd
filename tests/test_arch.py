"""ArchConfig: presets equal the released configurations, YAML round trip, validation messages."""
from __future__ import annotations

import random

import pytest

from helpers import random_arch
from supernet.arch import ArchConfig, ArchConfigError

RELEASED = {
    "s0": ((32, 48, 96, 176), (2, 2, 6, 4), 2, 0.0, ([4, 4], [4, 4], [4, 3, 3, 3, 4, 4], [4, 3, 3, 4])),
    "s1": ((32, 48, 120, 224), (3, 3, 9, 6), 2, 0.0, ([4] * 3, [4] * 3, [4, 4, 3, 3, 3, 3, 4, 4, 4], [4, 4, 3, 3, 4, 4])),
    "s2": (
        (32, 64, 144, 288), (4, 4, 12, 8), 4, 0.02,
        ([4] * 4, [4] * 4, [4, 4, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4], [4, 4, 3, 3, 3, 3, 4, 4]),
    ),
    "l": (
        (40, 80, 192, 384), (5, 5, 15, 10), 6, 0.1,
        ([4] * 5, [4] * 5, [4, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4], [4, 4, 4, 3, 3, 3, 3, 4, 4, 4]),
    ),
}


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_preset_equals_release(name):
    widths, depths, vit_num, dpr, expansions = RELEASED[name]
    arch = ArchConfig.preset(name)
    assert arch.widths == widths and arch.depths == depths
    assert arch.expansions == tuple(tuple(e) for e in expansions)
    assert arch.drop_path_rate == dpr and arch.image_size == 224 and arch.num_classes == 1000 and arch.distillation
    for i, stage in enumerate(arch.stages):
        kinds = [b.type for b in stage.blocks]
        n_attn = vit_num if i >= 2 else 0
        assert kinds == ["ffn"] * (len(kinds) - n_attn) + ["attn"] * n_attn  # the last vit_num blocks


def test_yaml_round_trip(tmp_path):
    rng = random.Random(0)
    for k in range(10):
        arch = random_arch(rng).replace(name=f"rand{k}")
        path = tmp_path / f"a{k}.yaml"
        arch.to_yaml(path)
        assert ArchConfig.from_yaml(path) == arch
    assert ArchConfig.from_dict(ArchConfig.preset("l").to_dict()) == ArchConfig.preset("l")


def _s0_dict():
    return ArchConfig.preset("s0").to_dict()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["stages"][2]["blocks"][5].update(expansion=7), "stages[2].blocks[5].expansion: 7 is not one of 1, 2, 3, 4, 5, 6"),
        (lambda d: d.update(image_size=100), "image size 100 is not a multiple of 32"),
        (lambda d: d["stages"][0]["blocks"][0].update(type="attn"), "attention blocks are only allowed in stages 3 and 4"),
        (lambda d: d.update(colour="red"), "unknown key(s) colour"),
        (lambda d: d["stages"][1].update(depth=3), "stages[1]: unknown key(s) depth"),
        (lambda d: d["stages"][3]["blocks"][0].update(kind="ffn"), "stages[3].blocks[0]: unknown key(s) kind"),
        (lambda d: d["stages"][1]["blocks"][0].update(type="conv"), "stages[1].blocks[0].type: 'conv' is not one of ffn, attn"),
        (lambda d: d["stages"][1].update(width=50), "stages[1].width: 50 is not a positive multiple of 8"),
        (lambda d: d["stages"][1].update(blocks=[]), "stages[1].blocks: a stage needs 1..64 blocks, got 0"),
        (lambda d: d["stages"].pop(), "stages: expected exactly 4 stages, got 3"),
        (lambda d: d.update(num_classes=0), "num_classes: 0 must be in 1..100000"),
        (lambda d: d.update(drop_path_rate=1.5), "drop_path_rate: 1.5 must be a number in [0, 1)"),
        (lambda d: d.update(distillation="yes"), "distillation: 'yes' is not true or false"),
        (lambda d: d["stages"][0]["blocks"][0].update(expansion=4.0), "stages[0].blocks[0].expansion: 4.0 is not one of"),
        (lambda d: d.update(image_size="224"), "image_size: '224' is not an integer"),
        (lambda d: d["stages"][2].pop("width"), "stages[2]: missing required key 'width'"),
    ],
)
def test_validation_messages(mutate, message):
    data = _s0_dict()
    mutate(data)
    with pytest.raises(ArchConfigError) as err:
        ArchConfig.from_dict(data)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_file_errors(tmp_path):
    with pytest.raises(ArchConfigError, match="not found"):
        ArchConfig.from_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages: [\n")
    with pytest.raises(ArchConfigError, match="bad.yaml: not valid YAML"):
        ArchConfig.from_yaml(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ArchConfigError, match="expected a mapping"):
        ArchConfig.from_yaml(listy)
    with pytest.raises(ArchConfigError, match="unknown preset 'm3'"):
        ArchConfig.preset("m3")
    with pytest.raises(ArchConfigError, match="neither a preset"):
        ArchConfig.resolve("s9")


def test_views_and_summary():
    arch = ArchConfig.preset("s0")
    assert [arch.resolution(i) for i in range(4)] == [56, 28, 14, 7]
    assert arch.summary() == "w32-48-96-176 d2-2-6-4 a0-0-2-2 e44/44/433344/4334"
    assert arch.num_blocks == 14 and hash(arch) == hash(ArchConfig.preset("s0"))
