"""Sampler-driven search strategies behind one interface (``slimming`` lives in search/slimming.py).

Each strategy says what its study optimises (directions), which Optuna sampler proposes members,
and how a candidate's metrics become objective values. Budgets are Optuna constraints
(``trial.set_constraint``), which NSGA-II and TPE honour and every strategy records.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import optuna

from search.metrics import Metrics
from supernet.errors import UserError

PARETO_DIRECTIONS = ["maximize", "minimize", "minimize"]  # top1, latency_ms, params_m
PARETO_METRICS = ["top1", "latency_ms", "params_m"]


def pareto_values(m: Metrics) -> list[float]:
    return [m.top1, m.latency_ms, m.params / 1e6]


@dataclasses.dataclass(frozen=True)
class Strategy:
    name: str
    directions: list[str]
    values: Callable[[Metrics], list[float]]
    make_sampler: Callable[[Mapping[str, Any], int], optuna.samplers.BaseSampler]
    description: str
    metric_names: tuple[str, ...] = tuple(PARETO_METRICS)


STRATEGIES: dict[str, Strategy] = {
    "nsga2": Strategy(
        "nsga2", PARETO_DIRECTIONS, pareto_values,
        lambda c, seed: optuna.samplers.NSGAIISampler(population_size=int(c.get("population_size", 24)), seed=seed),
        "Pareto front of (proxy top-1, LUT latency, parameters), budgets as constraints",
    ),
    "tpe": Strategy(
        "tpe", ["maximize"], lambda m: [m.top1],
        lambda c, seed: optuna.samplers.TPESampler(n_startup_trials=int(c.get("n_startup_trials", 10)), seed=seed,
                                                   multivariate=bool(c.get("multivariate", True))),
        "maximise proxy top-1 under the latency/params budget (constraints)", ("top1",),
    ),
    "mes": Strategy(
        "mes", ["maximize"], lambda m: [m.top1 * m.mes / 100.0],
        lambda c, seed: optuna.samplers.TPESampler(n_startup_trials=int(c.get("n_startup_trials", 10)), seed=seed,
                                                   multivariate=bool(c.get("multivariate", True))),
        "maximise top-1 x MES / 100 (accuracy-efficiency trade-off) under the budget", ("top1_x_mes",),
    ),
    "random": Strategy(
        "random", PARETO_DIRECTIONS, pareto_values,
        lambda c, seed: optuna.samplers.RandomSampler(seed=seed),
        "uniform random members (baseline)",
    ),
}

ALL_STRATEGIES = (*STRATEGIES, "slimming")


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise UserError(f"search.name: {name!r} is not a strategy; choose one of {', '.join(ALL_STRATEGIES)}")
    return STRATEGIES[name]
