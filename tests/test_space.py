"""The search space: presets are members, sampling, extremes, membership reasons, hashing."""
from __future__ import annotations

import random

import pytest

from supernet import ArchConfig
from supernet.space import SearchSpace, SpaceError


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return SearchSpace.load("efficientformerv2")


@pytest.mark.parametrize("name", ["s0", "s1", "s2", "l"])
def test_presets_are_members(space, name):
    assert space.violations(ArchConfig.preset(name)) == []


def test_default_space_choices(space):
    s1, s2, s3, s4 = space.stages
    assert s1.widths == (32, 40) and s2.widths == tuple(range(48, 81, 8))
    assert s3.widths == tuple(range(96, 193, 8)) and s4.widths == tuple(range(176, 385, 16))
    assert all(s.expansions == (2, 3, 4) for s in space.stages)
    assert s3.attn_blocks == tuple(range(1, 7)) and s4.attn_blocks == tuple(range(1, 7))
    assert (s1.max_depth, s2.max_depth, s3.max_depth, s4.max_depth) == (5, 5, 15, 10)
    assert space.stage_choices(2)["depth_pairs"][0] == (0, 1)


def test_largest_and_smallest(space):
    big, small = space.largest(), space.smallest()
    assert big.widths == (40, 80, 192, 384) and big.depths == (5, 5, 15, 10)
    assert [s.num_attn for s in big.stages] == [0, 0, 6, 6] and set(sum(big.expansions, ())) == {4}
    assert small.widths == (32, 48, 96, 176) and small.depths == (1, 1, 1, 1)
    assert set(sum(small.expansions, ())) == {2}
    rng = random.Random(0)
    from supernet import count_params

    for _ in range(30):
        arch = space.sample(rng)
        assert space.contains(arch)
        assert count_params(small) <= count_params(arch) <= count_params(big)


def test_violation_messages(space):
    arch = ArchConfig.from_parts((32, 48, 200, 400), ([4], [4], [5] + [4] * 15, [4] * 8), (0, 0, 7, 1))
    reasons = " | ".join(space.violations(arch))
    assert "stages[2].width: 200 is not one of 96..192 step 8" in reasons
    assert "stages[3].width: 400 is not one of 176..384 step 16" in reasons
    assert "stages[2]: 7 attention blocks is not one of 1..6" in reasons
    assert "stages[2]: depth 16 exceeds the maximum 15" in reasons
    assert "stages[2].blocks[0].expansion: 5 is not one of 2, 3, 4" in reasons
    interleaved = ArchConfig.preset("s0").to_dict()
    blocks = interleaved["stages"][2]["blocks"]
    blocks[0], blocks[-1] = blocks[-1], blocks[0]
    assert "attention blocks must come after the FFN blocks" in " ".join(space.violations(ArchConfig.from_dict(interleaved)))
    with pytest.raises(SpaceError, match="is not a member of space efficientformerv2"):
        space.check_member(arch)


def test_hash_is_content_only(space):
    data = space.to_dict()
    renamed = SearchSpace.from_dict({**data, "name": "other"})
    assert renamed.hash == space.hash
    data["stages"][0]["widths"] = [32]
    assert SearchSpace.from_dict(data).hash != space.hash
    assert SearchSpace.load("tiny").hash != space.hash


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(colour=1), "unknown key(s) colour"),
        (lambda d: d["stages"].pop(), "expected a list of 4 stages"),
        (lambda d: d["stages"][0].update(widths=[30]), "are not positive multiples of 8"),
        (lambda d: d["stages"][0].update(attn_blocks=[1]), "attention blocks are only allowed in stages 3 and 4"),
        (lambda d: d["stages"][1].update(expansions=[9]), "must be within"),
        (lambda d: d["stages"][2].update(widths={"min": 96}), "a range needs 'min' and 'max'"),
        (lambda d: d["stages"][2].update(max_depth=0), "max_depth: 0 must be a positive integer"),
    ],
)
def test_malformed_spaces(space, mutate, message):
    data = space.to_dict()
    mutate(data)
    with pytest.raises(SpaceError) as err:
        SearchSpace.from_dict(data)
    assert message in str(err.value)


def test_unknown_space_name():
    with pytest.raises(SpaceError, match="neither a built-in space"):
        SearchSpace.load("huge")
