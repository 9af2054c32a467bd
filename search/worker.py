"""One worker of a sampler-driven study: ask, evaluate, tell, until the study holds exactly
``n_trials`` COMPLETE trials - however many workers share the storage and whenever they die.

Each round a worker (1) fails trials whose heartbeat stopped, (2) stops if ``n_trials`` trials are
complete, (3) waits if the complete and running ones already fill the quota, else (4) asks for a
trial and keeps it only if its number is among the first ``n_trials`` complete-or-running trials
(concurrent asks can overshoot; the surplus is told FAIL, marked with the system attribute ``eformer:surplus``,
and never evaluated).
"""
from __future__ import annotations

import time
from typing import Any, Protocol

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState
from tqdm import tqdm

from search.budgets import Budget
from search.metrics import CandidateEvaluator, Metrics, trial_attrs
from search.params import suggest_arch
from search.storage import SURPLUS, Heartbeat, StaleWatch, trial_id
from supernet.space import SearchSpace

LIVE = (TrialState.COMPLETE, TrialState.RUNNING)


def _live(study: optuna.Study) -> tuple[int, list[int]]:
    """(number of COMPLETE trials, sorted numbers of the COMPLETE and RUNNING ones)."""
    trials = study.get_trials(deepcopy=False, states=LIVE)
    return sum(t.state == TrialState.COMPLETE for t in trials), sorted(t.number for t in trials)


class Objective(Protocol):
    """What a worker needs of its strategy (a :class:`search.strategies.Strategy` is one)."""

    name: str

    def values(self, m: Metrics) -> list[float]: ...


def run_worker(study: optuna.Study, storage: BaseStorage, strategy: Objective, space: SearchSpace,
               evaluator: CandidateEvaluator, budget: Budget, n_trials: int, context: dict[str, Any],
               heartbeat_s: float = 5.0, grace_s: float = 30.0, poll_s: float = 1.0, progress: bool = True) -> int:
    """Work on ``study`` (held in ``storage``) until it has ``n_trials`` COMPLETE trials; returns how many this
    worker completed."""
    done_here = 0
    watch = StaleWatch(grace_s)
    bar = tqdm(total=n_trials, initial=min(_live(study)[0], n_trials), desc=f"search {strategy.name}", unit="trial",
               disable=not progress, dynamic_ncols=True)
    try:
        while True:
            watch.look(study, storage)
            complete, live = _live(study)
            bar.n = min(complete, n_trials)
            bar.refresh()
            if complete >= n_trials:
                return done_here
            if len(live) >= n_trials:
                time.sleep(min(poll_s, grace_s / 4))  # the remaining trials are running elsewhere; they may yet fail
                continue
            trial = study.ask()
            tid = trial_id(study, storage, trial.number)
            if trial.number not in _live(study)[1][:n_trials]:
                storage.set_trial_system_attr(tid, SURPLUS, True)
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                continue
            with Heartbeat(storage, tid, heartbeat_s):
                try:
                    arch = suggest_arch(trial, space, **context)
                    m = evaluator(arch)
                except optuna.exceptions.UpdateFinishedTrialError:
                    continue  # taken for dead (reaped as FAIL) by another worker while we suggested: go on
                except BaseException:
                    study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                    raise
                try:
                    for key, value in budget.violations(m.latency_ms, m.params).items():
                        trial.set_constraint(key, value)
                    for key, value in trial_attrs(arch, m, strategy=strategy.name, budget=budget.name,
                                                  feasible=budget.met(m.latency_ms, m.params)).items():
                        trial.set_user_attr(key, value)
                    told = study.tell(trial, strategy.values(m), skip_if_finished=True)
                except optuna.exceptions.UpdateFinishedTrialError:
                    continue  # another worker took this trial for dead (reaped as FAIL) while we evaluated: go on
                if told.state != TrialState.COMPLETE:
                    continue
            done_here += 1
            bar.set_postfix(top1=f"{m.top1:.1f}", lat=f"{m.latency_ms:.1f}ms")
    finally:
        bar.close()
