"""Search strategies behind one interface, like Optuna's samplers: NSGA-II, TPE, MES, random and slimming.

Each strategy says what its study optimises (directions, metric names), how a candidate's metrics become
objective values, how it runs on a study (:meth:`Strategy.run`), which trial is its best and whether it walks a
path: the sampler strategies (:class:`SamplerStrategy`) drive Optuna's ask/tell loop
(:func:`search.worker.run_worker`), slimming walks the paper's path and records each candidate as a trial
(:mod:`search.slimming`). Budgets are Optuna constraints (``trial.set_constraint``), which NSGA-II
and TPE honour and every strategy records.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar, Optional

import optuna
from optuna.trial import FrozenTrial

from conf.registry import Registry
from conf.schemas import NSGA2SearchSchema, SamplerSearchSchema, SearchSchema, SlimmingSearchSchema, TPESearchSchema, typed
from search.metrics import PARETO_DIRECTIONS, PARETO_METRICS, Metrics, pareto_values
from search.results import best_feasible, completed
from search.slimming import SlimmingSettings, record_candidates, slim, slimming_path
from search.worker import run_worker

__all__ = ["PARETO_DIRECTIONS", "PARETO_METRICS", "pareto_values", "Strategy", "SamplerStrategy", "SearchContext",
           "STRATEGIES", "get_strategy", "register_strategy"]


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


class Strategy(abc.ABC):
    """A search strategy (the way Optuna's ``BaseSampler`` is a sampler): subclass it, set the class attributes,
    implement :meth:`run`, and register an instance with :func:`register_strategy` (plus its
    ``conf/search/<name>.yaml``). The hooks below have defaults that fit a sampler on the Pareto objectives."""

    name: ClassVar[str]
    description: ClassVar[str]
    directions: ClassVar[list[str]] = PARETO_DIRECTIONS
    metric_names: ClassVar[tuple[str, ...]] = tuple(PARETO_METRICS)
    settings_schema: ClassVar[type[SearchSchema]] = SamplerSearchSchema  # its typed search.* settings (conf/schemas/search.py)

    def values(self, m: Metrics) -> list[float]:
        """A candidate's objective values, in the order of :attr:`directions`."""
        return pareto_values(m)

    def settings(self, node: Any = None) -> SearchSchema:
        """Its settings typed: from the ``search`` config group (or a plain mapping); None gives the defaults."""
        return typed({"name": self.name, **(dict(node) if node is not None else {})}, self.settings_schema)

    @abc.abstractmethod
    def run(self, study: optuna.Study, ctx: SearchContext) -> list[dict[str, Any]]:
        """Work on ``study`` (resuming what is there); returns the path taken (a path-walking strategy) or ``[]``."""

    def best_trial(self, study: optuna.Study) -> Optional[FrozenTrial]:
        """The trial ``--best`` exports: by default :func:`search.results.best_feasible`."""
        return best_feasible(study)

    def path_trials(self, study: optuna.Study) -> Optional[list[FrozenTrial]]:
        """The applied steps of a path-walking strategy, in order (plotted on export); None for the others."""
        return None


class SamplerStrategy(Strategy):
    """A strategy that is an Optuna sampler driven by the ask/tell loop of :func:`search.worker.run_worker`."""

    @abc.abstractmethod
    def make_sampler(self, settings: Any, seed: int) -> optuna.samplers.BaseSampler:
        """The sampler for one worker (``settings``: an instance of :attr:`settings_schema`)."""

    def run(self, study: optuna.Study, ctx: SearchContext) -> list[dict[str, Any]]:
        """Ask/tell until the study holds ``search.n_trials`` complete trials (over all workers)."""
        seed = ctx.seed + 1000 * ctx.worker + len(study.get_trials(deepcopy=False))
        study.sampler = self.make_sampler(ctx.settings, seed)
        assert isinstance(ctx.settings, SamplerSearchSchema)
        run_worker(study, ctx.storage, self, ctx.space, ctx.evaluator, ctx.budget, ctx.settings.n_trials,
                   ctx.context, ctx.heartbeat_s, ctx.grace_s, progress=ctx.progress)
        return []


class NSGA2Strategy(SamplerStrategy):
    name = "nsga2"
    description = "Pareto front of (proxy top-1, LUT latency, parameters), budgets as constraints"
    settings_schema = NSGA2SearchSchema

    def make_sampler(self, settings: NSGA2SearchSchema, seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.NSGAIISampler(population_size=settings.population_size, seed=seed)


class TPEStrategy(SamplerStrategy):
    name = "tpe"
    description = "maximise proxy top-1 under the latency/params budget (constraints)"
    directions = ["maximize"]
    metric_names = ("top1",)
    settings_schema = TPESearchSchema

    def values(self, m: Metrics) -> list[float]:
        return [m.top1]

    def make_sampler(self, settings: TPESearchSchema, seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(n_startup_trials=settings.n_startup_trials, seed=seed,
                                          multivariate=settings.multivariate)


class MESStrategy(TPEStrategy):
    name = "mes"
    description = "maximise top-1 x MES / 100 (accuracy-efficiency trade-off) under the budget"
    metric_names = ("top1_x_mes",)

    def values(self, m: Metrics) -> list[float]:
        return [m.top1 * m.mes / 100.0]


class RandomStrategy(SamplerStrategy):
    name = "random"
    description = "uniform random members (baseline)"

    def make_sampler(self, settings: SamplerSearchSchema, seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=seed)


class SlimmingStrategy(Strategy):
    name = "slimming"
    description = ("the paper's fine-grained joint search: from the largest member, the action with the smallest "
                   "accuracy drop per MES gained, until the budget is met")
    settings_schema = SlimmingSearchSchema

    def run(self, study: optuna.Study, ctx: SearchContext) -> list[dict[str, Any]]:
        """The paper's slimming path; every evaluated candidate becomes a COMPLETE trial. Returns the path."""
        settings = SlimmingSettings.from_config(ctx.settings)
        path = slim(ctx.space, ctx.evaluator, ctx.budget, ctx.context, settings,
                    record_candidates(study, ctx.space, ctx.budget), ctx.progress)
        return [{"step": c.step, "action": c.action, "summary": c.arch.summary(), **c.metrics.as_dict()} for c in path]

    def best_trial(self, study: optuna.Study) -> Optional[FrozenTrial]:
        """The end of the path."""
        chosen = [t for t in completed(study) if t.user_attrs.get("chosen")]
        return max(chosen, key=lambda t: (t.user_attrs.get("step", 0), t.number)) if chosen else None

    def path_trials(self, study: optuna.Study) -> Optional[list[FrozenTrial]]:
        return slimming_path(study)


STRATEGIES: Registry[Strategy] = Registry("search.name", "strategy")  # each name also has its conf/search/<name>.yaml


def register_strategy(strategy: Strategy) -> Strategy:
    """Make ``strategy`` selectable as ``search=<its name>`` (with its conf/search/<name>.yaml)."""
    return STRATEGIES.register(strategy.name, strategy)


for _strategy in (NSGA2Strategy(), TPEStrategy(), MESStrategy(), RandomStrategy(), SlimmingStrategy()):
    register_strategy(_strategy)


def get_strategy(name: str) -> Strategy:
    """The registered strategy ``name`` (``search.name``), or a one-line error naming the setting."""
    return STRATEGIES.get_or_fail(name)
