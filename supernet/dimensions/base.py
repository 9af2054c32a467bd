"""What a dimension of the search space is: the :class:`Dimension` ABC, its error, and the helpers every
dimension parses its YAML choices with (see :mod:`supernet.dimensions`)."""
from __future__ import annotations

import abc
import random
from typing import Any, Mapping, Optional, Sequence

from supernet.arch import BlockConfig, StageConfig
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


def step_down(values: list[int], blocks: Sequence[int], choices: Sequence[int]) -> bool:
    """Lower ``values[j]`` of each of ``blocks`` to its next smaller choice (a per-block slimming action); False
    where there is no block, or a block has no smaller choice."""
    if not blocks:
        return False
    for j in blocks:
        v = smaller(choices, values[j])
        if v is None:
            return False
        values[j] = v
    return True


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
