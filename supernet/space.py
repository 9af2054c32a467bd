"""The search space: which ArchConfigs the supernet can run.

Per stage, one set of choices for every dimension of ``supernet.dimensions`` (width, depth as counts of
FFN and attention blocks under a cap, the FFN expansion of each block, and the values of the per-block
dimensions registered beside them). Members place their attention blocks after their FFN blocks (as the
released models do). The space is pure architecture: image size, classes and distillation are the context a
member is used in (``SearchSpace.member(..., **context)``). Its content hash (name excluded) identifies it in
latency tables and search studies.

YAML (``conf/space/*.yaml``); each stage key belongs to one dimension (a registered per-block dimension adds
its own, optional key: its module in ``supernet.dimensions`` says which)::

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

from supernet.arch import BLOCK_OPTIONS, NUM_STAGES, ArchConfig
from supernet.dimensions import DIMENSIONS, SPACE_WIDE_KEYS, STAGE_KEYS, Draft, SpaceError, depth_pairs
from supernet.io_utils import read_yaml_mapping

__all__ = ["SearchSpace", "SpaceError", "StageSpace"]


@dataclasses.dataclass(frozen=True)
class StageSpace:
    """Choices of one stage, as the dimensions parsed them (``choices``: the pairs of every dimension's parsed
    keys, in registry order); each reads as a field or an item (``stage.widths``, ``stage["widths"]``)."""

    choices: tuple[tuple[str, Any], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_key", dict(self.choices))

    def __getitem__(self, key: str) -> Any:
        return self._by_key[key]

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self._by_key[key]
        except KeyError:
            raise AttributeError(key) from None

    @property
    def max_ffn(self) -> int:
        """FFN slots the supernet needs: the most FFN blocks any member of this stage can have."""
        return max(f for f in self.ffn_blocks if f + min(self.attn_blocks) <= self.max_depth)

    @property
    def max_attn(self) -> int:
        return max(self.attn_blocks)

    def depth_pairs(self) -> list[tuple[int, int]]:
        """All valid (num FFN blocks, num attention blocks) of this stage."""
        return depth_pairs(self)

    def block_kinds(self) -> list[str]:
        """The kinds of block this stage's members can hold."""
        return (["ffn"] if self.max_ffn > 0 else []) + (["attn"] if self.max_attn > 0 else [])


def _parse_stage(raw: Any, defaults: Mapping[str, Any], i: int) -> StageSpace:
    where = f"stages[{i}]"
    if not isinstance(raw, Mapping):
        raise SpaceError(f"{where}: expected a mapping")
    unknown = set(raw) - set(STAGE_KEYS)
    if unknown:
        raise SpaceError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(STAGE_KEYS))} "
                         f"(the dimensions {', '.join(DIMENSIONS)})")
    fields: dict[str, Any] = {}
    for dim in DIMENSIONS.values():
        fields.update(dim.parse(raw, defaults, where, i))
    return StageSpace(tuple(fields.items()))


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
        allowed = {"name", "stages", *SPACE_WIDE_KEYS}
        extra = set(data) - allowed
        if extra:
            raise SpaceError(f"{source}: unknown key(s) {', '.join(sorted(extra))}; allowed: {', '.join(sorted(allowed))}")
        raw_stages = data.get("stages")
        if not isinstance(raw_stages, Sequence) or isinstance(raw_stages, (str, bytes)) or len(raw_stages) != NUM_STAGES:
            raise SpaceError(f"{source}: stages: expected a list of {NUM_STAGES} stages")
        defaults = {k: data[k] for k in SPACE_WIDE_KEYS if k in data}
        stages = tuple(_parse_stage(raw, defaults, i) for i, raw in enumerate(raw_stages))
        return cls(stages, str(data.get("name", "space")))

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
        """The YAML form: each stage as its dimensions write it back."""
        stages = []
        for s in self.stages:
            out: dict[str, Any] = {}
            for dim in DIMENSIONS.values():
                out.update(dim.dump(s))
            stages.append(out)
        return {"name": self.name, "stages": stages}

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

    @staticmethod
    def build(drafts: Sequence[Draft], **context: Any) -> ArchConfig:
        """The member whose stages hold these drafts (one per stage; see ``supernet.dimensions``)."""
        options = {name: [d[name] for d in drafts] for name in DIMENSIONS if name in BLOCK_OPTIONS}
        return ArchConfig.from_parts([d["width"] for d in drafts], [d["expansion"] for d in drafts],
                                     [d["depth"][1] for d in drafts], options, **context)

    @staticmethod
    def drafts_of(arch: ArchConfig) -> list[Draft]:
        """Every stage of ``arch`` as a draft: each dimension's value."""
        return [{name: dim.read(stage) for name, dim in DIMENSIONS.items()} for stage in arch.stages]

    def _drafts(self, pick: str, rng: random.Random | None = None) -> list[Draft]:
        drafts = []
        for s in self.stages:
            draft: Draft = {}
            for name, dim in DIMENSIONS.items():  # in draw order: depth fixes the block count first
                draft[name] = dim.sample(s, draft, rng) if pick == "sample" else getattr(dim, pick)(s, draft)
            drafts.append(draft)
        return drafts

    def largest(self, **context: Any) -> ArchConfig:
        """Every dimension's largest value: widest, the most attention blocks, the deepest, the largest expansions."""
        return self.build(self._drafts("largest"), **{"name": "largest", **context})

    def smallest(self, **context: Any) -> ArchConfig:
        """Every dimension's smallest value: narrowest, shallowest (fewest attention blocks among the shallowest),
        the smallest expansions."""
        return self.build(self._drafts("smallest"), **{"name": "smallest", **context})

    def sample(self, rng: random.Random, **context: Any) -> ArchConfig:
        """A random member: per stage a (FFN, attention) count pair, a width, and an expansion per block."""
        return self.build(self._drafts("sample", rng), **{"name": "sample", **context})

    def num_members(self) -> int:
        """How many distinct members the space holds: per stage the product of its stage-level dimensions' choices
        times, summed over its (FFN, attention) pairs, the per-block dimensions' choices for each block."""
        total = 1
        for s in self.stages:
            stage_level, per_ffn, per_attn = 1, 1, 1
            for dim in DIMENSIONS.values():
                stage_level *= dim.stage_factor(s)
                per_ffn *= dim.block_factor(s, "ffn")
                per_attn *= dim.block_factor(s, "attn")
            total *= stage_level * sum(per_ffn ** f * per_attn ** a for f, a in s.depth_pairs())
        return total

    def stage_choices(self, stage: int) -> dict[str, Any]:
        """The choices of one stage: each dimension's (as lists), and its (ffn, attn) pairs."""
        s = self.stages[stage]
        return {**{k: list(v) if isinstance(v, tuple) else v for k, v in s.choices}, "depth_pairs": s.depth_pairs()}

    def violations(self, arch: ArchConfig) -> list[str]:
        """Why ``arch`` is not a member (empty if it is): every dimension's reasons, stage by stage."""
        return [reason for i, (stage, s) in enumerate(zip(arch.stages, self.stages))
                for dim in DIMENSIONS.values() for reason in dim.violations(s, stage, f"stages[{i}]")]

    def contains(self, arch: ArchConfig) -> bool:
        return not self.violations(arch)

    def check_member(self, arch: ArchConfig) -> None:
        """Raise SpaceError naming every rule ``arch`` breaks."""
        reasons = self.violations(arch)
        if reasons:
            raise SpaceError(f"{arch.name} is not a member of space {self.name} ({self.hash}): " + "; ".join(reasons))

