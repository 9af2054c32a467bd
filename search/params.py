"""How a member of the space is written as Optuna parameters (a fixed-length encoding).

Each dimension of ``supernet.dimensions`` gives its parameters per stage ``i``: ``s{i}_width`` (categorical),
``s{i}_depth`` ("<ffn>f<attn>a", categorical) and ``s{i}_e{j}`` for every block slot ``j < max_depth`` (the
first ffn+attn are used). A fixed set of parameters keeps NSGA-II's crossover meaningful; unused expansion
slots are inert.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution

from supernet.arch import ArchConfig
from supernet.dimensions import BY_PARAM_RANK, DIMENSIONS, arch_key
from supernet.space import SearchSpace


def distributions(space: SearchSpace) -> dict[str, CategoricalDistribution]:
    """Every dimension's parameters in every stage, as categorical distributions."""
    return {name: CategoricalDistribution(choices)
            for i, st in enumerate(space.stages) for dim in BY_PARAM_RANK
            for name, choices in dim.params(st, i).items()}


def arch_from_params(params: dict[str, Any], space: SearchSpace, **context: Any) -> ArchConfig:
    drafts = []
    for i, st in enumerate(space.stages):
        draft: dict[str, Any] = {}
        for name, dim in DIMENSIONS.items():  # depth first: the per-block dimensions read its block count
            draft[name] = dim.decode(st, i, params, draft)
        drafts.append(draft)
    return space.build(drafts, **context)


def suggest_arch(trial: optuna.Trial, space: SearchSpace, **context: Any) -> ArchConfig:
    """Sample a member through ``trial`` (every parameter of :func:`distributions` is suggested)."""
    params = {name: trial.suggest_categorical(name, dist.choices) for name, dist in distributions(space).items()}
    return arch_from_params(params, space, **context)


def params_of(arch: ArchConfig, space: SearchSpace) -> dict[str, Any]:
    """The parameters that encode ``arch`` (unused expansion slots take the largest choice)."""
    return {name: value for i, (stage, st) in enumerate(zip(arch.stages, space.stages))
            for dim in BY_PARAM_RANK for name, value in dim.encode(st, i, stage).items()}


def arch_hash(arch: ArchConfig) -> str:
    """Identity of the architecture itself (every dimension's share, :func:`supernet.dimensions.arch_key`),
    independent of context and name."""
    return hashlib.sha256(json.dumps(arch_key(arch)).encode()).hexdigest()[:16]
