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

Each dimension lives in its own module (:mod:`.width`, :mod:`.depth`, :mod:`.expansion`, :mod:`.heads`), next to
nothing but :mod:`.base` (the :class:`Dimension` ABC and the YAML-choice helpers); a new dimension is a new module
and one entry here. ``DIMENSIONS`` is the registry, in the order the values of a stage are drawn: depth first (it fixes the block
count), then width, then the per-block ones (expansion, heads). The order is part of :meth:`SearchSpace.sample`'s stream of random
draws, so seeded samples (the sandwich's random members) stay the same only if it does; it is also the order of
a stage's slimming actions. ``param_rank`` orders a stage's search parameters (the order a trial suggests
them in, which seeded Optuna samplers' draws depend on): width, depth, the expansions, then the heads.
"""
from __future__ import annotations

import itertools
from typing import Any, Mapping

from conf.registry import Registry
from supernet.arch import ArchConfig
from supernet.dimensions.base import Dimension, Draft, SpaceError, choices_of, fmt_choices, smaller, step_down
from supernet.dimensions.depth import Depth, depth_pairs
from supernet.dimensions.expansion import Expansion
from supernet.dimensions.heads import Heads
from supernet.dimensions.width import Width

__all__ = ["ACTION_KINDS", "BY_PARAM_RANK", "DIMENSIONS", "SPACE_WIDE_KEYS", "STAGE_KEYS", "Depth", "Dimension", "Draft",
           "Expansion", "Heads", "SpaceError", "Width", "arch_key", "block_variants", "choices_of", "depth_pairs",
           "dimension_of_action", "fmt_choices", "largest_variant", "smaller", "step_down"]

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
