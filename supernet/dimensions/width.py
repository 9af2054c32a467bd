"""The width dimension: a stage's channel width."""
from __future__ import annotations

from supernet.arch import WIDTH_MULTIPLE
from supernet.dimensions.base import Dimension, SpaceError, choices_of, fmt_choices, smaller


class Width(Dimension):
    """The stage's channel width."""

    name, keys, action, action_kinds, param_rank = "width", ("widths",), "width", ("width",), 0

    def parse(self, raw, defaults, where, stage):
        if "widths" not in raw:
            raise SpaceError(f"{where}: missing required key 'widths'")
        widths = choices_of(raw["widths"], f"{where}.widths")
        bad = [w for w in widths if w <= 0 or w % WIDTH_MULTIPLE]
        if bad:
            raise SpaceError(f"{where}.widths: {bad} are not positive multiples of {WIDTH_MULTIPLE}")
        return {"widths": widths}

    def read(self, stage):
        return stage.width

    def hash_share(self, stage):
        return [stage.width]

    def signature_choices(self, choices, kind):
        return {"width": tuple(choices["widths"])}

    def largest(self, choices, draft):
        return choices["widths"][-1]

    def smallest(self, choices, draft):
        return choices["widths"][0]

    def sample(self, choices, draft, rng):
        return rng.choice(choices["widths"])

    def stage_factor(self, choices):
        return len(choices["widths"])

    def violations(self, choices, stage, where):
        ok = stage.width in choices["widths"]
        return [] if ok else [f"{where}.width: {stage.width} is not one of {fmt_choices(choices['widths'])}"]

    def params(self, choices, stage):
        return {f"s{stage}_width": list(choices["widths"])}

    def decode(self, choices, stage, params, draft):
        return params[f"s{stage}_width"]

    def encode(self, choices, stage, built):
        return {f"s{stage}_width": built.width}

    def shrinks(self, choices, built, scope):
        return [("width", -1)]

    def shrink(self, choices, draft, kind, block):
        w = smaller(choices["widths"], draft["width"])
        if w is None:
            return False
        draft["width"] = w
        return True

    def describe(self, kind, block, stage, before, after):
        return f"stage {stage + 1} width {before['width']}->{after['width']}"
