"""The search space: which ArchConfigs the supernet can run.

Per stage: width choices, counts of FFN blocks and of attention blocks, a depth cap, and the FFN
expansion choices of each block. Members place their attention blocks after their FFN blocks (as
the released models do). The space is pure architecture: image size, classes and heads are the
context a member is used in (``SearchSpace.member(..., **context)``). Its content hash (name
excluded) identifies it in latency tables and search studies.

YAML (``conf/space/*.yaml``)::

    name: efficientformerv2
    expansions: [2, 3, 4]              # default for every stage
    stages:
      - widths: {min: 32, max: 40, step: 8}   # or an explicit list
        ffn_blocks: {min: 1, max: 5}
        attn_blocks: [0]
        max_depth: 5
        expansions: [2, 3, 4]         # optional per-stage override
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import json
import os
import random
from pathlib import Path
from typing import Any, Mapping, Sequence

from supernet.arch import ALLOWED_EXPANSIONS, ATTN_STAGES, NUM_STAGES, WIDTH_MULTIPLE, ArchConfig
from supernet.errors import UserError
from supernet.io_utils import read_yaml_mapping


class SpaceError(UserError):
    """A malformed space definition, or an architecture that is not a member."""


@dataclasses.dataclass(frozen=True)
class StageSpace:
    """Choices of one stage."""

    widths: tuple[int, ...]
    ffn_blocks: tuple[int, ...]
    attn_blocks: tuple[int, ...]
    max_depth: int
    expansions: tuple[int, ...]

    @property
    def max_ffn(self) -> int:
        """FFN slots the supernet needs: the most FFN blocks any member of this stage can have."""
        return max(f for f in self.ffn_blocks if f + min(self.attn_blocks) <= self.max_depth)

    @property
    def max_attn(self) -> int:
        return max(self.attn_blocks)

    def depth_pairs(self) -> list[tuple[int, int]]:
        """All valid (num FFN blocks, num attention blocks) of this stage."""
        return [
            (f, a)
            for f in self.ffn_blocks
            for a in self.attn_blocks
            if 1 <= f + a <= self.max_depth
        ]


def _choices(value: Any, field: str) -> tuple[int, ...]:
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


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """Per-stage choices; see the module docstring for the YAML form."""

    stages: tuple[StageSpace, ...]
    name: str = "space"

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "space") -> "SearchSpace":
        if not isinstance(data, Mapping):
            raise SpaceError(f"{source}: expected a mapping")
        extra = set(data) - {"name", "expansions", "stages"}
        if extra:
            raise SpaceError(f"{source}: unknown key(s) {', '.join(sorted(extra))}; allowed: name, expansions, stages")
        raw_stages = data.get("stages")
        if not isinstance(raw_stages, Sequence) or len(raw_stages) != NUM_STAGES:
            raise SpaceError(f"{source}: stages: expected a list of {NUM_STAGES} stages")
        default_exp = data.get("expansions")
        stages = []
        for i, raw in enumerate(raw_stages):
            where = f"stages[{i}]"
            if not isinstance(raw, Mapping):
                raise SpaceError(f"{where}: expected a mapping")
            allowed = {"widths", "ffn_blocks", "attn_blocks", "max_depth", "expansions"}
            if set(raw) - allowed:
                raise SpaceError(f"{where}: unknown key(s) {', '.join(sorted(set(raw) - allowed))}; allowed: {', '.join(sorted(allowed))}")
            for key in ("widths", "ffn_blocks"):
                if key not in raw:
                    raise SpaceError(f"{where}: missing required key '{key}'")
            widths = _choices(raw["widths"], f"{where}.widths")
            bad = [w for w in widths if w <= 0 or w % WIDTH_MULTIPLE]
            if bad:
                raise SpaceError(f"{where}.widths: {bad} are not positive multiples of {WIDTH_MULTIPLE}")
            ffn = _choices(raw["ffn_blocks"], f"{where}.ffn_blocks")
            attn = _choices(raw.get("attn_blocks", [0]), f"{where}.attn_blocks")
            if min(ffn) < 0 or min(attn) < 0:
                raise SpaceError(f"{where}: block counts must be >= 0")
            if i not in ATTN_STAGES and attn != (0,):
                raise SpaceError(f"{where}.attn_blocks: attention blocks are only allowed in stages 3 and 4")
            max_depth = raw.get("max_depth", max(ffn) + max(attn))
            if not isinstance(max_depth, int) or max_depth < 1:
                raise SpaceError(f"{where}.max_depth: {max_depth!r} must be a positive integer")
            exp_raw = raw.get("expansions", default_exp)
            if exp_raw is None:
                raise SpaceError(f"{where}: no expansions given (set 'expansions' at the top or in the stage)")
            exps = _choices(exp_raw, f"{where}.expansions")
            if set(exps) - set(ALLOWED_EXPANSIONS):
                raise SpaceError(f"{where}.expansions: {list(exps)} must be within {list(ALLOWED_EXPANSIONS)}")
            stage = StageSpace(widths, ffn, attn, max_depth, exps)
            if not stage.depth_pairs():
                raise SpaceError(f"{where}: no block counts satisfy 1 <= ffn + attn <= max_depth")
            stages.append(stage)
        return cls(tuple(stages), str(data.get("name", "space")))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> "SearchSpace":
        p = Path(path)
        data = read_yaml_mapping(p, SpaceError, "space")
        return cls.from_dict(data, str(p))

    @classmethod
    def load(cls, spec: "str | os.PathLike | Mapping[str, Any] | SearchSpace") -> "SearchSpace":
        """A space from a conf/space name (e.g. 'efficientformerv2', 'tiny'), a YAML path, or a mapping."""
        if isinstance(spec, SearchSpace):
            return spec
        if isinstance(spec, Mapping):
            return cls.from_dict(spec)
        builtin = Path(str(importlib.resources.files("conf") / "space" / f"{spec}.yaml"))
        if builtin.is_file():
            return cls.from_yaml(builtin)
        if Path(spec).is_file():
            return cls.from_yaml(spec)
        names = sorted(p.stem for p in builtin.parent.glob("*.yaml"))
        raise SpaceError(f"space {str(spec)!r} is neither a built-in space ({', '.join(names)}) nor a YAML file")

    # ------------------------------------------------------------------ identity
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "stages": [
                {
                    "widths": list(s.widths),
                    "ffn_blocks": list(s.ffn_blocks),
                    "attn_blocks": list(s.attn_blocks),
                    "max_depth": s.max_depth,
                    "expansions": list(s.expansions),
                }
                for s in self.stages
            ],
        }

    @property
    def hash(self) -> str:
        """Content hash (12 hex digits) of the choices; the name does not enter it."""
        content = json.dumps(self.to_dict()["stages"], sort_keys=True)
        return hashlib.sha256(content.encode()).hexdigest()[:12]

    # ------------------------------------------------------------------ members
    @staticmethod
    def member(
        widths: Sequence[int],
        expansions: Sequence[Sequence[int]],
        num_attn: Sequence[int],
        **context: Any,
    ) -> ArchConfig:
        """An ArchConfig with attention blocks last in each stage (the members' layout)."""
        return ArchConfig.from_parts(widths, expansions, num_attn, **context)

    def largest(self, **context: Any) -> ArchConfig:
        """Widest, with the most attention blocks, the deepest, and the largest expansions."""
        widths, exps, attn = [], [], []
        for s in self.stages:
            a = s.max_attn
            f = max(f for f, aa in s.depth_pairs() if aa == a)
            widths.append(s.widths[-1])
            exps.append([s.expansions[-1]] * (f + a))
            attn.append(a)
        return self.member(widths, exps, attn, **{"name": "largest", **context})

    def smallest(self, **context: Any) -> ArchConfig:
        """Narrowest, shallowest (fewest attention blocks among the shallowest), smallest expansions."""
        widths, exps, attn = [], [], []
        for s in self.stages:
            f, a = min(s.depth_pairs(), key=lambda p: (p[0] + p[1], p[1]))
            widths.append(s.widths[0])
            exps.append([s.expansions[0]] * (f + a))
            attn.append(a)
        return self.member(widths, exps, attn, **{"name": "smallest", **context})

    def sample(self, rng: random.Random, **context: Any) -> ArchConfig:
        """A random member: per stage a width, a (FFN, attention) count pair, and an expansion per block."""
        widths, exps, attn = [], [], []
        for s in self.stages:
            f, a = rng.choice(s.depth_pairs())
            widths.append(rng.choice(s.widths))
            exps.append([rng.choice(s.expansions) for _ in range(f + a)])
            attn.append(a)
        return self.member(widths, exps, attn, **{"name": "sample", **context})

    def num_members(self) -> int:
        """How many distinct members the space holds: per stage its widths times, summed over its (FFN, attention)
        pairs, the expansion choices of each block."""
        total = 1
        for s in self.stages:
            total *= len(s.widths) * sum(len(s.expansions) ** (f + a) for f, a in s.depth_pairs())
        return total

    def stage_choices(self, stage: int) -> dict[str, Any]:
        """The choices of one stage: widths, (ffn, attn) pairs and expansions."""
        s = self.stages[stage]
        return {"widths": list(s.widths), "depth_pairs": s.depth_pairs(), "expansions": list(s.expansions)}

    def violations(self, arch: ArchConfig) -> list[str]:
        """Why ``arch`` is not a member (empty if it is)."""
        reasons = []
        for i, (stage, s) in enumerate(zip(arch.stages, self.stages)):
            where = f"stages[{i}]"
            if stage.width not in s.widths:
                reasons.append(f"{where}.width: {stage.width} is not one of {_fmt(s.widths)}")
            kinds = [b.type for b in stage.blocks]
            if "attn" in kinds and kinds.index("attn") < len(kinds) - stage.num_attn:
                reasons.append(f"{where}: attention blocks must come after the FFN blocks")
            if stage.num_ffn not in s.ffn_blocks:
                reasons.append(f"{where}: {stage.num_ffn} FFN blocks is not one of {_fmt(s.ffn_blocks)}")
            if stage.num_attn not in s.attn_blocks:
                reasons.append(f"{where}: {stage.num_attn} attention blocks is not one of {_fmt(s.attn_blocks)}")
            if stage.depth > s.max_depth:
                reasons.append(f"{where}: depth {stage.depth} exceeds the maximum {s.max_depth}")
            for j, b in enumerate(stage.blocks):
                if b.expansion not in s.expansions:
                    reasons.append(f"{where}.blocks[{j}].expansion: {b.expansion} is not one of {_fmt(s.expansions)}")
        return reasons

    def contains(self, arch: ArchConfig) -> bool:
        return not self.violations(arch)

    def check_member(self, arch: ArchConfig) -> None:
        """Raise SpaceError naming every rule ``arch`` breaks."""
        reasons = self.violations(arch)
        if reasons:
            raise SpaceError(f"{arch.name} is not a member of space {self.name} ({self.hash}): " + "; ".join(reasons))


def _fmt(values: Sequence[int]) -> str:
    vals = list(values)
    if len(vals) > 3 and all(b - a == vals[1] - vals[0] for a, b in zip(vals, vals[1:])):
        step = vals[1] - vals[0]
        return f"{vals[0]}..{vals[-1]}" + (f" step {step}" if step != 1 else "")
    return ", ".join(map(str, vals))

