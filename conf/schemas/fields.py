"""What a schema is made of: constrained fields, and the config tree whose files name a group's options."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING

CONF_DIR = Path(__file__).resolve().parent.parent  # the config tree: conf/<group>/*.yaml


def group_options(group: str) -> tuple[str, ...]:
    """The options of a config group: its YAML files (``conf/<group>/*.yaml``). The names a registry entry
    must match (``data.name``: the datasets; ``search.name``: the strategies)."""
    return tuple(sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")))


def setting(default: Any = MISSING, *, ge: Optional[float] = None, gt: Optional[float] = None,
            le: Optional[float] = None, choices: Optional[tuple] = None, subset_of: Optional[tuple] = None,
            multiple_of: Optional[int] = None, nonempty: Optional[bool] = None) -> Any:
    """A dataclass field with value constraints (checked by :func:`check_config`)."""
    meta = {k: v for k, v in {"ge": ge, "gt": gt, "le": le, "choices": choices, "subset_of": subset_of,
                              "multiple_of": multiple_of, "nonempty": nonempty}.items() if v is not None}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)

