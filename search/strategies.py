"""Search strategies behind one interface, like Optuna's samplers: NSGA-II, TPE, MES, random and slimming.

Each strategy says what its study optimises (directions, metric names), how a candidate's metrics become
objective values, and how it runs on a study (:meth:`Strategy.run`): the sampler strategies drive Optuna's
ask/tell loop (:func:`search.worker.run_worker`), slimming walks the paper's path and records each candidate
as a trial (:mod:`search.slimming`). Budgets are Optuna constraints (``trial.set_constraint``), which NSGA-II
and TPE honour and every strategy records.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import optuna

from conf.registry import Registry
from conf.schemas import NSGA2SearchSchema, SamplerSearchSchema, SearchSchema, SlimmingSearchSchema, TPESearchSchema, typed
from search.metrics import PARETO_DIRECTIONS, PARETO_METRICS, Metrics, pareto_values
from search.slimming import SlimmingSettings, record_candidates, slim
from search.worker import run_worker

__all__ = ["PARETO_DIRECTIONS", "PARETO_METRICS", "pareto_values", "Strategy", "SearchContext", "STRATEGIES",
           "get_strategy", "register_strategy"]


@dataclasses.dataclass
class SearchContext:
    """What a strategy needs besides its study: the space and deployment context, the evaluator (proxy + LUT),
    the budget, its own settings (``search.*``, typed by the strategy's ``settings_schema``) and the worker's
    storage parameters."""

    space: Any
    storage: Any  # the study's optuna.storages.BaseStorage (opened by search.storage.open_storage)
    context: dict[str, Any]
    evaluator: Any
    budget: Any
    settings: SearchSchema
    seed: int = 0
    worker: int = 0
    heartbeat_s: float = 5.0
    grace_s: float = 30.0
    progress: bool = True


def run_sampler(strategy: "Strategy", study: optuna.Study, ctx: SearchContext) -> list[dict[str, Any]]:
    """A sampler strategy: ask/tell until the study holds ``search.n_trials`` complete trials (over all workers)."""
    assert strategy.make_sampler is not None
    seed = ctx.seed + 1000 * ctx.worker + len(study.get_trials(deepcopy=False))
    study.sampler = strategy.make_sampler(ctx.settings, seed)
    assert isinstance(ctx.settings, SamplerSearchSchema)
    run_worker(study, ctx.storage, strategy, ctx.space, ctx.evaluator, ctx.budget, ctx.settings.n_trials,
               ctx.context, ctx.heartbeat_s, ctx.grace_s, progress=ctx.progress)
    return []


def run_slimming(strategy: "Strategy", study: optuna.Study, ctx: SearchContext) -> list[dict[str, Any]]:
    """The paper's slimming path; every evaluated candidate becomes a COMPLETE trial. Returns the path."""

    settings = SlimmingSettings.from_config(ctx.settings)
    path = slim(ctx.space, ctx.evaluator, ctx.budget, ctx.context, settings,
                record_candidates(study, ctx.space, ctx.budget), ctx.progress)
    return [{"step": c.step, "action": c.action, "summary": c.arch.summary(), **c.metrics.as_dict()} for c in path]


@dataclasses.dataclass(frozen=True)
class Strategy:
    name: str
    directions: list[str]
    values: Callable[[Metrics], list[float]]
    make_sampler: Optional[Callable[[Any, int], optuna.samplers.BaseSampler]]  # (typed settings, seed)
    description: str
    metric_names: tuple[str, ...] = tuple(PARETO_METRICS)
    driver: Callable[["Strategy", optuna.Study, SearchContext], list[dict[str, Any]]] = run_sampler
    settings_schema: type = SamplerSearchSchema  # the dataclass of its search.* settings (conf/schemas.py)

    def settings(self, node: Any = None) -> SearchSchema:
        """Its settings typed: from the ``search`` config group (or a plain mapping); None gives the defaults."""
        return typed({"name": self.name, **(dict(node) if node is not None else {})}, self.settings_schema)

    def run(self, study: optuna.Study, ctx: SearchContext) -> list[dict[str, Any]]:
        """Work on ``study`` (resuming what is there); returns the path taken (slimming) or ``[]``."""
        return self.driver(self, study, ctx)


def tpe_sampler(c: TPESearchSchema, seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(n_startup_trials=c.n_startup_trials, seed=seed, multivariate=c.multivariate)


STRATEGIES: Registry[Strategy] = Registry("search.name", "strategy")  # each name also has its conf/search/<name>.yaml


def register_strategy(strategy: Strategy) -> Strategy:
    """Make ``strategy`` selectable as ``search=<its name>`` (with its conf/search/<name>.yaml)."""
    return STRATEGIES.register(strategy.name, strategy)


register_strategy(Strategy(
    "nsga2", PARETO_DIRECTIONS, pareto_values,
    lambda c, seed: optuna.samplers.NSGAIISampler(population_size=c.population_size, seed=seed),
    "Pareto front of (proxy top-1, LUT latency, parameters), budgets as constraints", settings_schema=NSGA2SearchSchema,
))

register_strategy(Strategy(
    "tpe", ["maximize"], lambda m: [m.top1], tpe_sampler,
    "maximise proxy top-1 under the latency/params budget (constraints)", ("top1",), settings_schema=TPESearchSchema,
))

register_strategy(Strategy(
    "mes", ["maximize"], lambda m: [m.top1 * m.mes / 100.0], tpe_sampler,
    "maximise top-1 x MES / 100 (accuracy-efficiency trade-off) under the budget", ("top1_x_mes",),
    settings_schema=TPESearchSchema,
))

register_strategy(Strategy(
    "random", PARETO_DIRECTIONS, pareto_values,
    lambda c, seed: optuna.samplers.RandomSampler(seed=seed),
    "uniform random members (baseline)",
))

register_strategy(Strategy(
    "slimming", PARETO_DIRECTIONS, pareto_values, None,
    "the paper's fine-grained joint search: from the largest member, the action with the smallest accuracy drop "
    "per MES gained, until the budget is met", driver=run_slimming, settings_schema=SlimmingSearchSchema,
))


def get_strategy(name: str) -> Strategy:
    """The registered strategy ``name`` (``search.name``), or a one-line error naming the setting."""
    return STRATEGIES.get_or_fail(name)
