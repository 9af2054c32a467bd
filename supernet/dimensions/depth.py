"""The depth dimension: a stage's FFN and attention block counts (attention last), under a cap."""
from __future__ import annotations

from typing import Any, Mapping

from supernet.arch import ATTN_STAGES
from supernet.dimensions.base import Dimension, SpaceError, choices_of, fmt_choices


def depth_pairs(choices: Mapping[str, Any]) -> list[tuple[int, int]]:
    """All valid (FFN blocks, attention blocks) of a stage."""
    return [(f, a) for f in choices["ffn_blocks"] for a in choices["attn_blocks"] if 1 <= f + a <= choices["max_depth"]]


def _pair(f: int, a: int) -> str:
    return f"{f}f{a}a"


class Depth(Dimension):
    """How many FFN blocks and attention blocks a stage has (attention blocks after the FFN blocks), under a cap."""

    name, keys, action, action_kinds = "depth", ("ffn_blocks", "attn_blocks", "max_depth"), "drop", ("drop_ffn", "drop_attn")
    param_rank = 1

    def parse(self, raw, defaults, where, stage):
        if "ffn_blocks" not in raw:
            raise SpaceError(f"{where}: missing required key 'ffn_blocks'")
        ffn = choices_of(raw["ffn_blocks"], f"{where}.ffn_blocks")
        attn = choices_of(raw.get("attn_blocks", [0]), f"{where}.attn_blocks")
        if min(ffn) < 0 or min(attn) < 0:
            raise SpaceError(f"{where}: block counts must be >= 0")
        if stage not in ATTN_STAGES and attn != (0,):
            raise SpaceError(f"{where}.attn_blocks: attention blocks are only allowed in stages 3 and 4")
        max_depth = raw.get("max_depth", max(ffn) + max(attn))
        if not isinstance(max_depth, int) or isinstance(max_depth, bool) or max_depth < 1:
            raise SpaceError(f"{where}.max_depth: {max_depth!r} must be a positive integer")
        out = {"ffn_blocks": ffn, "attn_blocks": attn, "max_depth": max_depth}
        if not depth_pairs(out):
            raise SpaceError(f"{where}: no block counts satisfy 1 <= ffn + attn <= max_depth")
        return out

    def read(self, stage):
        return (stage.num_ffn, stage.num_attn)

    def block_hash_share(self, block):
        return [block.type]

    def largest(self, choices, draft):
        a = max(choices["attn_blocks"])
        return (max(f for f, aa in depth_pairs(choices) if aa == a), a)

    def smallest(self, choices, draft):
        return min(depth_pairs(choices), key=lambda p: (p[0] + p[1], p[1]))

    def sample(self, choices, draft, rng):
        return rng.choice(depth_pairs(choices))

    def violations(self, choices, stage, where):
        reasons = []
        kinds = [b.type for b in stage.blocks]
        if "attn" in kinds and kinds.index("attn") < len(kinds) - stage.num_attn:
            reasons.append(f"{where}: attention blocks must come after the FFN blocks")
        if stage.num_ffn not in choices["ffn_blocks"]:
            reasons.append(f"{where}: {stage.num_ffn} FFN blocks is not one of {fmt_choices(choices['ffn_blocks'])}")
        if stage.num_attn not in choices["attn_blocks"]:
            reasons.append(f"{where}: {stage.num_attn} attention blocks is not one of {fmt_choices(choices['attn_blocks'])}")
        if stage.depth > choices["max_depth"]:
            reasons.append(f"{where}: depth {stage.depth} exceeds the maximum {choices['max_depth']}")
        return reasons

    def params(self, choices, stage):
        return {f"s{stage}_depth": [_pair(f, a) for f, a in depth_pairs(choices)]}

    def decode(self, choices, stage, params, draft):
        f, a = (int(x) for x in params[f"s{stage}_depth"].rstrip("a").split("f"))
        return (f, a)

    def encode(self, choices, stage, built):
        return {f"s{stage}_depth": _pair(built.num_ffn, built.num_attn)}

    def shrinks(self, choices, built, scope):
        return [("drop_ffn", -1), ("drop_attn", -1)]

    def shrink(self, choices, draft, kind, block):
        f, a = draft["depth"]
        if kind == "drop_ffn":
            if f == 0:
                return False
            gone, f = f - 1, f - 1   # a stage's last FFN block
        else:
            if a == 0:
                return False
            gone, a = f + a - 1, a - 1   # its last attention block
        if (f, a) not in depth_pairs(choices):
            return False
        for values in draft.values():  # every per-block dimension's list over the stage's blocks
            if isinstance(values, list):
                del values[gone]
        draft["depth"] = (f, a)
        return True

    def describe(self, kind, block, stage, before, after):
        return f"stage {stage + 1} drop {'attention' if kind == 'drop_attn' else 'FFN'} block"
