"""The expansion dimension: each block's FFN expansion ratio."""
from __future__ import annotations

from supernet.arch import ALLOWED_EXPANSIONS
from supernet.dimensions.base import Dimension, SpaceError, choices_of, fmt_choices, step_down


class Expansion(Dimension):
    """Each block's FFN expansion ratio."""

    name, keys, space_wide, per_block = "expansion", ("expansions",), ("expansions",), True
    action, action_kinds, param_rank = "expansion", ("expansion",), 2

    def parse(self, raw, defaults, where, stage):
        exp_raw = raw.get("expansions", defaults.get("expansions"))
        if exp_raw is None:
            raise SpaceError(f"{where}: no expansions given (set 'expansions' at the top or in the stage)")
        exps = choices_of(exp_raw, f"{where}.expansions")
        if set(exps) - set(ALLOWED_EXPANSIONS):
            raise SpaceError(f"{where}.expansions: {list(exps)} must be within {list(ALLOWED_EXPANSIONS)}")
        return {"expansions": exps}

    def read(self, stage):
        return [b.expansion for b in stage.blocks]

    def block_hash_share(self, block):
        return [block.expansion]

    def signature_choices(self, choices, kind):
        return {"expansion": tuple(choices["expansions"])}

    def largest(self, choices, draft):
        return [choices["expansions"][-1]] * sum(draft["depth"])

    def smallest(self, choices, draft):
        return [choices["expansions"][0]] * sum(draft["depth"])

    def sample(self, choices, draft, rng):
        return [rng.choice(choices["expansions"]) for _ in range(sum(draft["depth"]))]

    def block_factor(self, choices, kind):
        return len(choices["expansions"])

    def violations(self, choices, stage, where):
        return [f"{where}.blocks[{j}].expansion: {b.expansion} is not one of {fmt_choices(choices['expansions'])}"
                for j, b in enumerate(stage.blocks) if b.expansion not in choices["expansions"]]

    def params(self, choices, stage):
        return {f"s{stage}_e{j}": list(choices["expansions"]) for j in range(choices["max_depth"])}

    def decode(self, choices, stage, params, draft):
        return [params[f"s{stage}_e{j}"] for j in range(sum(draft["depth"]))]

    def encode(self, choices, stage, built):
        # unused slots take the largest choice (inert: only the first ffn + attn are read)
        return {f"s{stage}_e{j}": built.blocks[j].expansion if j < built.depth else choices["expansions"][-1]
                for j in range(choices["max_depth"])}

    def shrinks(self, choices, built, scope):
        return [("expansion", j) for j in range(built.depth)] if scope == "block" else [("expansion", -1)]

    def shrink(self, choices, draft, kind, block):
        exps = draft["expansion"]
        blocks = [block] if block >= 0 else [j for j, e in enumerate(exps) if e == max(exps, default=0)]
        return block < len(exps) and step_down(exps, blocks, choices["expansions"])

    def describe(self, kind, block, stage, before, after):
        if block >= 0:
            return f"stage {stage + 1} block {block + 1} expansion {before['expansion'][block]}->{after['expansion'][block]}"
        return (f"stage {stage + 1} expansions {''.join(map(str, before['expansion']))}->"
                f"{''.join(map(str, after['expansion']))}")
