"""How a member of the space is written as Optuna parameters (a fixed-length encoding).

Per stage ``i``: ``s{i}_width`` (categorical), ``s{i}_depth`` ("<ffn>f<attn>a", categorical) and
``s{i}_e{j}`` for every block slot ``j < max_depth`` (the first ffn+attn are used). A fixed set of
parameters keeps NSGA-II's crossover meaningful; unused expansion slots are inert.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution

from supernet.arch import ArchConfig
from supernet.space import SearchSpace


def _pair(f: int, a: int) -> str:
    return f"{f}f{a}a"


def distributions(space: SearchSpace) -> dict[str, CategoricalDistribution]:
    out: dict[str, CategoricalDistribution] = {}
    for i, st in enumerate(space.stages):
        out[f"s{i}_width"] = CategoricalDistribution(list(st.widths))
        out[f"s{i}_depth"] = CategoricalDistribution([_pair(f, a) for f, a in st.depth_pairs()])
        for j in range(st.max_depth):
            out[f"s{i}_e{j}"] = CategoricalDistribution(list(st.expansions))
    return out


def arch_from_params(params: dict[str, Any], space: SearchSpace, **context: Any) -> ArchConfig:
    widths, exps, attn = [], [], []
    for i, _ in enumerate(space.stages):
        f, a = (int(x) for x in params[f"s{i}_depth"].rstrip("a").split("f"))
        widths.append(params[f"s{i}_width"])
        exps.append([params[f"s{i}_e{j}"] for j in range(f + a)])
        attn.append(a)
    return space.member(widths, exps, attn, **context)


def suggest_arch(trial: optuna.Trial, space: SearchSpace, **context: Any) -> ArchConfig:
    """Sample a member through ``trial`` (every parameter of :func:`distributions` is suggested)."""
    params = {name: trial.suggest_categorical(name, dist.choices) for name, dist in distributions(space).items()}
    return arch_from_params(params, space, **context)


def params_of(arch: ArchConfig, space: SearchSpace) -> dict[str, Any]:
    """The parameters that encode ``arch`` (unused expansion slots take the largest choice)."""
    params: dict[str, Any] = {}
    for i, (stage, st) in enumerate(zip(arch.stages, space.stages)):
        params[f"s{i}_width"] = stage.width
        params[f"s{i}_depth"] = _pair(stage.num_ffn, stage.num_attn)
        for j in range(st.max_depth):
            params[f"s{i}_e{j}"] = stage.blocks[j].expansion if j < stage.depth else st.expansions[-1]
    return params


def arch_hash(arch: ArchConfig) -> str:
    """Identity of the architecture itself (widths and blocks), independent of context and name."""
    stages = [[s.width, [[b.type, b.expansion] for b in s.blocks]] for s in arch.stages]
    return hashlib.sha256(json.dumps(stages).encode()).hexdigest()[:16]
