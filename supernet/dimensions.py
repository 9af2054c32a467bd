"""The search space's dimensions: each elastic choice of a member, defined once.

A member of the space is, per stage, one value of every dimension: its width, its depth (FFN and attention
block counts, attention last) and, per block, its FFN expansion and (attention blocks) its head count. A
:class:`Dimension` owns everything the rest of the framework needs to know about one of them:

- its keys in a stage of a space YAML, how they are checked, and how they are written back (its share of the
  space's content hash: the written form of every dimension, merged, is what :attr:`SearchSpace.hash` hashes);
- its share of a member's architecture hash (:func:`arch_key`: proxy caches and standalone runs are keyed by it);
- its largest, smallest and random value in a stage (the supernet's sandwich and the search's samples);
- how many values a stage holds (for :meth:`SearchSpace.num_members`) and why a value is not a member;
- its search parameters: categorical choices of a fixed-length encoding (NSGA-II's crossover needs one);
- its slimming actions: which shrinks apply to a member's stage, and the member after one.

A stage's value is a *draft*: a dict from dimension name to that dimension's value (``{"width": 32,
"depth": (2, 0), "expansion": [4, 4]}``). Per-block dimensions hold a list over the stage's blocks, in
order; the depth dimension decides how many blocks there are and removes a dropped block from every list.

``DIMENSIONS`` is the registry, in the order the values of a stage are drawn: depth first (it fixes the block
count), then width, then the per-block ones (expansion, heads). The order is part of :meth:`SearchSpace.sample`'s stream of random
draws, so seeded samples (the sandwich's random members) stay the same only if it does; it is also the order of
a stage's slimming actions. ``param_rank`` orders a stage's search parameters (the order a trial suggests
them in, which seeded Optuna samplers' draws depend on): width, depth, the expansions, then the heads.
"""
from __future__ import annotations

import abc
import itertools
import random
from typing import Any, Mapping, Optional, Sequence

from conf.registry import Registry
from supernet.arch import (
    ALLOWED_EXPANSIONS,
    ATTN_HEADS,
    ATTN_STAGES,
    MAX_HEADS,
    WIDTH_MULTIPLE,
    ArchConfig,
    BlockConfig,
    StageConfig,
)
from supernet.errors import UserError

Draft = dict[str, Any]


class SpaceError(UserError):
    """A malformed space definition, or an architecture that is not a member."""


def choices_of(value: Any, field: str) -> tuple[int, ...]:
    """Integer choices from a YAML list or a ``{min, max, step}`` range (sorted, distinct)."""
    if isinstance(value, Mapping):
        extra = set(value) - {"min", "max", "step"}
        if extra or not {"min", "max"} <= set(value):
            raise SpaceError(f"{field}: a range needs 'min' and 'max' (and optionally 'step'), got {dict(value)}")
        lo, hi, step = value["min"], value["max"], value.get("step", 1)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi, step)) or step < 1 or hi < lo:
            raise SpaceError(f"{field}: range {dict(value)} needs integers with min <= max and step >= 1")
        return tuple(range(lo, hi + 1, step))
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and len(value) > 0:
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise SpaceError(f"{field}: {list(value)} must be integers")
        return tuple(sorted(set(value)))
    raise SpaceError(f"{field}: expected a non-empty list or a {{min, max, step}} range, got {value!r}")


def fmt_choices(values: Sequence[int]) -> str:
    """``32..192 step 8`` for an arithmetic run of more than three values, else the values listed."""
    vals = list(values)
    if len(vals) > 3 and all(b - a == vals[1] - vals[0] for a, b in zip(vals, vals[1:])):
        step = vals[1] - vals[0]
        return f"{vals[0]}..{vals[-1]}" + (f" step {step}" if step != 1 else "")
    return ", ".join(map(str, vals))


def smaller(choices: Sequence[int], value: int) -> Optional[int]:
    """The next choice below ``value``, or None."""
    lower = [c for c in choices if c < value]
    return max(lower) if lower else None


class Dimension(abc.ABC):
    """One elastic choice of a stage (see the module docstring). ``choices`` below is the stage's parsed
    choices: the mapping :meth:`parse` returned (a :class:`~supernet.space.StageSpace` reads them as fields)."""

    name: str                       # the draft key
    keys: tuple[str, ...]           # its keys in a stage of the space YAML
    space_wide: tuple[str, ...] = ()  # keys that may also be given once at the top, for every stage
    per_block: bool = False         # a list over the stage's blocks
    action: Optional[str] = None    # its name in ``search.actions`` (None: slimming does not shrink it)
    action_kinds: tuple[str, ...] = ()
    param_rank: int = 0             # where its parameters come in a stage's encoding (the suggest order of a trial)

    @abc.abstractmethod
    def parse(self, raw: Mapping[str, Any], defaults: Mapping[str, Any], where: str, stage: int) -> dict[str, Any]:
        """Its checked choices from one stage's YAML mapping (``defaults``: the space-wide keys)."""

    def dump(self, choices: Mapping[str, Any]) -> dict[str, Any]:
        """Its YAML keys as written back (the space's hash is taken over this form)."""
        return {k: (list(choices[k]) if isinstance(choices[k], tuple) else choices[k]) for k in self.keys}

    @abc.abstractmethod
    def read(self, stage: StageConfig) -> Any:
        """Its value in a built stage."""

    @abc.abstractmethod
    def largest(self, choices: Mapping[str, Any], draft: Draft) -> Any: ...

    @abc.abstractmethod
    def smallest(self, choices: Mapping[str, Any], draft: Draft) -> Any: ...

    @abc.abstractmethod
    def sample(self, choices: Mapping[str, Any], draft: Draft, rng: random.Random) -> Any: ...

    @abc.abstractmethod
    def violations(self, choices: Mapping[str, Any], stage: StageConfig, where: str) -> list[str]:
        """Why the stage's value is not one of the choices (empty if it is)."""

    @abc.abstractmethod
    def params(self, choices: Mapping[str, Any], stage: int) -> dict[str, list[Any]]:
        """Its search parameters in stage ``stage`` and their categorical choices (a fixed set, whatever the member)."""

    @abc.abstractmethod
    def decode(self, choices: Mapping[str, Any], stage: int, params: Mapping[str, Any], draft: Draft) -> Any:
        """Its value from search parameters (``draft`` holds the dimensions decoded before it)."""

    @abc.abstractmethod
    def encode(self, choices: Mapping[str, Any], stage: int, built: StageConfig) -> dict[str, Any]:
        """The parameters of :meth:`params` that encode a built stage."""

    def hash_share(self, stage: StageConfig) -> list[Any]:
        """Its part of a stage's entry in the architecture hash (stage-level dimensions; see :func:`arch_key`)."""
        return []

    def block_hash_share(self, block: BlockConfig) -> list[Any]:
        """Its part of a block's entry in the architecture hash (per-block values, the block kind)."""
        return []

    def signature_choices(self, choices: Mapping[str, Any], kind: str) -> dict[str, tuple[Any, ...]]:
        """Its fields of a block signature (``supernet.signatures.block_signature``'s keywords) and their choices
        for a block of ``kind`` in this stage: what the LUT must time, and (largest) what the supernet allocates."""
        return {}

    def stage_factor(self, choices: Mapping[str, Any]) -> int:
        """How many values a stage-level dimension has (per-block ones count per block: :meth:`block_factor`)."""
        return 1

    def block_factor(self, choices: Mapping[str, Any], kind: str) -> int:
        """How many values a per-block dimension has in a block of ``kind``."""
        return 1

    def shrinks(self, choices: Mapping[str, Any], built: StageConfig, scope: str) -> list[tuple[str, int]]:
        """Its slimming actions on a stage, as (kind, block); block -1 acts on the stage as a whole."""
        return []

    def shrink(self, choices: Mapping[str, Any], draft: Draft, kind: str, block: int) -> bool:
        """Apply one action to ``draft`` in place; False where it leaves the stage's choices."""
        raise NotImplementedError(f"dimension {self.name} has no action {kind}")

    def describe(self, kind: str, block: int, stage: int, before: Draft, after: Draft) -> str:
        raise NotImplementedError


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
        for dim in DIMENSIONS.values():
            if dim.per_block:
                del draft[dim.name][gone]
        draft["depth"] = (f, a)
        return True

    def describe(self, kind, block, stage, before, after):
        return f"stage {stage + 1} drop {'attention' if kind == 'drop_attn' else 'FFN'} block"


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
        if not blocks or block >= len(exps):
            return False
        for j in blocks:
            e = smaller(choices["expansions"], exps[j])
            if e is None:
                return False
            exps[j] = e
        return True

    def describe(self, kind, block, stage, before, after):
        if block >= 0:
            return f"stage {stage + 1} block {block + 1} expansion {before['expansion'][block]}->{after['expansion'][block]}"
        return (f"stage {stage + 1} expansions {''.join(map(str, before['expansion']))}->"
                f"{''.join(map(str, after['expansion']))}")


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
        return {"attn_heads": tuple(choices["heads"])} if kind == "attn" else {}

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
        if not blocks:
            return False
        for j in blocks:
            h = smaller(choices["heads"], heads[j])
            if h is None:
                return False
            heads[j] = h
        return True

    def describe(self, kind, block, stage, before, after):
        if block >= 0:
            return f"stage {stage + 1} block {block + 1} heads {before['heads'][block]}->{after['heads'][block]}"
        f = before["depth"][0]
        return (f"stage {stage + 1} heads {'.'.join(map(str, before['heads'][f:]))}->"
                f"{'.'.join(map(str, after['heads'][f:]))}")


DIMENSIONS: Registry[Dimension] = Registry("space dimension", "dimension of the search space", SpaceError)
for _dim in (Depth(), Width(), Expansion(), Heads()):   # the draw order of SearchSpace.sample: do not reorder
    DIMENSIONS.register(_dim.name, _dim)

STAGE_KEYS = tuple(k for d in DIMENSIONS.values() for k in d.keys)
SPACE_WIDE_KEYS = tuple(k for d in DIMENSIONS.values() for k in d.space_wide)
ACTION_KINDS = tuple(d.action for d in DIMENSIONS.values() if d.action)
BY_PARAM_RANK = tuple(sorted(DIMENSIONS.values(), key=lambda d: d.param_rank))


def block_variants(choices: Mapping[str, Any], kind: str) -> list[dict[str, Any]]:
    """Every combination of the dimensions' signature fields for a block of ``kind`` in a stage (the pieces a
    LUT times), e.g. ``[{"width": 96, "expansion": 2}, ...]``."""
    fields: dict[str, tuple[Any, ...]] = {}
    for d in DIMENSIONS.values():
        fields.update(d.signature_choices(choices, kind))
    return [dict(zip(fields, combo)) for combo in itertools.product(*fields.values())]


def largest_variant(choices: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The signature fields of the largest block of ``kind`` in a stage (the weights the supernet allocates)."""
    fields: dict[str, Any] = {}
    for d in DIMENSIONS.values():
        fields.update({k: max(v) for k, v in d.signature_choices(choices, kind).items()})
    return fields


def arch_key(arch: ArchConfig) -> list[Any]:
    """What identifies the architecture itself (no context, no name), as every dimension shares it: per stage the
    stage-level values, then per block its values (``[[width, [[type, expansion], ...]], ...]`` for the default
    dimensions). A dimension whose value is its default adds nothing, so existing hashes stay valid."""
    dims = list(DIMENSIONS.values())
    return [[*(v for d in dims for v in d.hash_share(stage)),
             [[v for d in dims for v in d.block_hash_share(b)] for b in stage.blocks]] for stage in arch.stages]


def dimension_of_action(kind: str) -> Dimension:
    """The dimension whose slimming action ``kind`` is (``drop_ffn``, ``width``, ...)."""
    for d in DIMENSIONS.values():
        if kind in d.action_kinds:
            return d
    raise ValueError(f"no dimension has the action {kind!r}")
