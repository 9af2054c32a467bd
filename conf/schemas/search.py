"""Schemas of search's settings: budgets, strategies, the MES, storages and the accuracy proxy."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional

from omegaconf import MISSING, OmegaConf

from conf.schemas.fields import CONF_DIR, group_options, setting


@dataclasses.dataclass
class BudgetSchema:
    preset: Optional[str] = setting(None, choices=("s0", "s1", "s2", "l"))
    latency_ms: Optional[float] = setting(None, gt=0.0)
    params_m: Optional[float] = setting(None, gt=0.0)


@dataclasses.dataclass
class SearchSchema:
    name: str = setting(MISSING, choices=group_options("search"))  # each has its entry in search/strategies.py


@dataclasses.dataclass
class SamplerSearchSchema(SearchSchema):
    n_trials: int = setting(100, ge=1)   # COMPLETE trials in the study, over all workers


@dataclasses.dataclass
class NSGA2SearchSchema(SamplerSearchSchema):
    population_size: int = setting(24, ge=2)


@dataclasses.dataclass
class TPESearchSchema(SamplerSearchSchema):
    n_startup_trials: int = setting(10, ge=0)
    multivariate: bool = True


def slimming_actions() -> tuple[str, ...]:
    """The slimming actions: ``search.actions`` of ``conf/search/slimming.yaml`` (every dimension's action; a test
    keeps them equal to ``supernet.dimensions.ACTION_KINDS``: conf cannot import supernet's package, a cycle)."""
    text = (CONF_DIR / "search" / "slimming.yaml").read_text(encoding="utf-8")
    return tuple(OmegaConf.create(text)["actions"])


SLIMMING_ACTIONS = slimming_actions()


@dataclasses.dataclass
class SlimmingSearchSchema(SearchSchema):
    actions: List[str] = setting(list(SLIMMING_ACTIONS), subset_of=SLIMMING_ACTIONS, nonempty=True)
    expansion_scope: str = setting("block", choices=("block", "stage"))
    moves_per_step: int = setting(1, ge=1)
    max_steps: int = setting(500, ge=1)
    score_by: str = setting("loss", choices=("loss", "top1"))
    race: bool = False                                       # screen candidates on part of the split first
    screen_fraction: float = setting(0.2, gt=0.0, le=1.0)
    race_z: float = setting(2.0, ge=0.0)


@dataclasses.dataclass
class MesSchema:
    """Mobile Efficiency Score: score * prod (M / U) ** -alpha; a unit is a number or a preset name (s0, ...)."""
    units: Dict[str, Any] = setting({"latency_ms": "s0", "params_m": 3.5})
    exponents: Dict[str, float] = setting({"latency_ms": 0.5, "params_m": 0.5})
    score: float = setting(100.0, gt=0.0)


@dataclasses.dataclass
class StorageSchema:
    kind: str = setting(MISSING, choices=("sqlite", "journal", "url", "memory"))
    file: Optional[str] = None
    url: Optional[str] = None
    heartbeat_s: float = setting(5.0, gt=0.0)
    grace_s: float = setting(30.0, gt=0.0)


@dataclasses.dataclass
class ProxySchema:
    kind: str = setting("supernet", choices=("supernet", "analytic"))
    calib_images: Optional[int] = setting(None, ge=2)
    val_images: Optional[int] = setting(None, ge=1)
    batch_size: int = setting(500, ge=2)
    memory_mb: float = setting(512.0, gt=0.0)
    precision: str = setting("fp32", choices=("fp32", "bf16", "fp16"))
    data: Optional[Any] = None
    cache: Optional[str] = None

