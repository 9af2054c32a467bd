"""The heads dimension: each attention block's head count (stages 3-4)."""
from __future__ import annotations

from supernet.arch import ATTN_STAGES, BlockOption, register_block_option
from supernet.dimensions.base import Dimension, Draft, SpaceError, choices_of, fmt_choices, step_down
from supernet.signatures import ATTN_HEADS

MAX_HEADS = 16
HEADS = register_block_option(BlockOption("heads", ATTN_HEADS, ("attn",), 1, MAX_HEADS, "h", "attention blocks"))


class Heads(Dimension):
    """Each attention block's head count (stages 3-4; the attention downsampling keeps the release's 8).

    A stage without a ``heads`` key has the release's 8 only: it writes nothing into the space's hash, draws no
    random numbers and adds no search parameters, so spaces, seeded samples and studies from before this
    dimension stay the same. FFN blocks hold the default (they have no heads)."""

    name, keys, per_block = "heads", ("heads",), True
    action, action_kinds, param_rank = "heads", ("heads",), 3

    def parse(self, raw, defaults, where, stage):
        if "heads" not in raw:
            return {"heads": (ATTN_HEADS,)}
        heads = choices_of(raw["heads"], f"{where}.heads")
        if stage not in ATTN_STAGES:
            raise SpaceError(f"{where}.heads: only stages 3 and 4 have attention blocks")
        if not 1 <= heads[0] <= heads[-1] <= MAX_HEADS:
            raise SpaceError(f"{where}.heads: {list(heads)} must be within 1..{MAX_HEADS}")
        return {"heads": heads}

    def dump(self, choices):
        return {} if tuple(choices["heads"]) == (ATTN_HEADS,) else {"heads": list(choices["heads"])}

    def read(self, stage):
        return [b.heads for b in stage.blocks]

    def block_hash_share(self, block):
        return [] if block.heads == ATTN_HEADS else [block.heads]

    def signature_choices(self, choices, kind):
        return {"heads": tuple(choices["heads"])} if kind == "attn" else {}

    @staticmethod
    def _fill(draft: Draft, attn: list[int]) -> list[int]:
        return [ATTN_HEADS] * draft["depth"][0] + attn   # FFN blocks first, then the attention blocks

    def largest(self, choices, draft):
        return self._fill(draft, [choices["heads"][-1]] * draft["depth"][1])

    def smallest(self, choices, draft):
        return self._fill(draft, [choices["heads"][0]] * draft["depth"][1])

    def sample(self, choices, draft, rng):
        heads = choices["heads"]
        if len(heads) == 1:   # no draw: seeded samples of spaces without heads stay as they were
            return self._fill(draft, [heads[0]] * draft["depth"][1])
        return self._fill(draft, [rng.choice(heads) for _ in range(draft["depth"][1])])

    def block_factor(self, choices, kind):
        return len(choices["heads"]) if kind == "attn" else 1

    def violations(self, choices, stage, where):
        return [f"{where}.blocks[{j}].heads: {b.heads} is not one of {fmt_choices(choices['heads'])}"
                for j, b in enumerate(stage.blocks) if b.type == "attn" and b.heads not in choices["heads"]]

    def params(self, choices, stage):
        if len(choices["heads"]) == 1:
            return {}
        return {f"s{stage}_h{t}": list(choices["heads"]) for t in range(max(choices["attn_blocks"]))}

    def decode(self, choices, stage, params, draft):
        heads = choices["heads"]
        a = draft["depth"][1]
        return self._fill(draft, [params[f"s{stage}_h{t}"] for t in range(a)] if len(heads) > 1 else [heads[0]] * a)

    def encode(self, choices, stage, built):
        if len(choices["heads"]) == 1:
            return {}
        attn = [b.heads for b in built.blocks if b.type == "attn"]
        # unused slots take the largest choice (inert, as the expansions')
        return {f"s{stage}_h{t}": attn[t] if t < len(attn) else choices["heads"][-1]
                for t in range(max(choices["attn_blocks"]))}

    def shrinks(self, choices, built, scope):
        if len(choices["heads"]) == 1 or not built.num_attn:
            return []
        if scope == "block":
            return [("heads", j) for j, b in enumerate(built.blocks) if b.type == "attn"]
        return [("heads", -1)]

    def shrink(self, choices, draft, kind, block):
        heads, f = draft["heads"], draft["depth"][0]
        attn = range(f, len(heads))
        if block >= 0:
            blocks = [block] if block in attn else []
        else:
            top = max((heads[j] for j in attn), default=0)
            blocks = [j for j in attn if heads[j] == top]
        return step_down(heads, blocks, choices["heads"])

    def describe(self, kind, block, stage, before, after):
        if block >= 0:
            return f"stage {stage + 1} block {block + 1} heads {before['heads'][block]}->{after['heads'][block]}"
        f = before["depth"][0]
        return (f"stage {stage + 1} heads {'.'.join(map(str, before['heads'][f:]))}->"
                f"{'.'.join(map(str, after['heads'][f:]))}")
