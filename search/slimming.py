"""The paper's fine-grained joint search ("slimming"), EfficientFormerV2 Sec. 4.

Start at the largest member. Each step evaluates every action - drop a block, shrink a stage's
width by one step, shrink an FFN's expansion by one step - for proxy accuracy (supernet) and
MES gain (LUT latency, analytic parameters), applies the action with the smallest accuracy drop
per MES gained, and repeats until the budget is met. Depth follows the supernet's policy (FFN
blocks then attention blocks, each a prefix of its slots), so "drop a block" removes a stage's
last FFN block or its last attention block.

The accuracy drop is measured with ``score_by``: ``loss`` (default) - the increase of the proxy's
validation cross-entropy, a continuous score far less noisy than top-1 on a small validation split
(a one-image top-1 change is 0.04 points on 2,500 images, and every candidate of a step can tie) -
or ``top1`` (the paper's ΔAcc; ties broken by the loss).

``moves_per_step > 1`` applies the best few actions on different targets per step (fewer steps,
same action scores); ``expansion_scope: stage`` shrinks the largest expansions of a stage together
(fewer actions). Both are speed knobs for the quick demo; the defaults are the paper's.

Racing (``race: true``): each step first screens every candidate that gains MES on a class-balanced part
of the scored split (``screen_fraction`` of it, the same images for all: the proxy's first batches), scoring
its loss increase over the step's member image by image (a paired difference, far less noisy than two
separate scores). A candidate whose optimistic score (``race_z`` standard errors better) is still worse
than the pessimistic score of the ``moves_per_step``-th best stops there; the rest are confirmed on the
whole split and ranked as without racing. The race does not depend on what is already cached (a rerun, a
resumed run and a looser budget decide as the first run did), and costs nothing where the screenings are
stored. Partial scores never enter the proxy's score cache or the study (they live in its sidecar file).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Optional, Sequence

import optuna
from optuna.trial import FrozenTrial
from tqdm import tqdm

from search.budgets import Budget
from search.metrics import CandidateEvaluator, Metrics, pareto_values, trial_attrs
from search.params import distributions, params_of
from search.results import completed
from supernet.arch import ArchConfig
from supernet.dimensions import ACTION_KINDS, DIMENSIONS, dimension_of_action
from supernet.errors import UserError
from supernet.space import SearchSpace


class SlimmingError(UserError):
    """Slimming cannot meet its budget (names the budget and how far it got)."""


@dataclasses.dataclass(frozen=True)
class Action:
    """One dimension's shrink of one stage: ``kind`` is one of the dimension's action kinds (drop_ffn |
    drop_attn | width | expansion); ``block`` the block a per-block action acts on (-1: the stage)."""

    kind: str
    stage: int
    block: int = -1

    @property
    def target(self) -> tuple[int, str, int]:
        return (self.stage, self.kind, self.block)

    def describe(self, before: ArchConfig, after: ArchConfig) -> str:
        b, a = SearchSpace.drafts_of(before)[self.stage], SearchSpace.drafts_of(after)[self.stage]
        return dimension_of_action(self.kind).describe(self.kind, self.block, self.stage, b, a)


def apply_action(arch: ArchConfig, action: Action, space: SearchSpace) -> Optional[ArchConfig]:
    """``arch`` after ``action``, or None when the action leaves the space."""
    drafts = SearchSpace.drafts_of(arch)
    if not dimension_of_action(action.kind).shrink(space.stages[action.stage], drafts[action.stage], action.kind, action.block):
        return None
    out = space.build(drafts, name=arch.name, image_size=arch.image_size, num_classes=arch.num_classes,
                      distillation=arch.distillation)
    return out if space.contains(out) else None


def candidate_actions(arch: ArchConfig, space: SearchSpace, kinds: Sequence[str] = ACTION_KINDS,
                      expansion_scope: str = "block") -> list[tuple[Action, ArchConfig]]:
    """Every applicable action of the dimensions named in ``kinds`` and the member it leads to."""
    actions = [Action(kind, i, block)
               for i, stage in enumerate(arch.stages)
               for dim in DIMENSIONS.values() if dim.action in kinds
               for kind, block in dim.shrinks(space.stages[i], stage, expansion_scope)]
    out = []
    for a in actions:
        nxt = apply_action(arch, a, space)
        if nxt is not None:
            out.append((a, nxt))
    return out


@dataclasses.dataclass
class Candidate:
    step: int
    action: str
    arch: ArchConfig
    metrics: Metrics
    score: Optional[float]  # accuracy drop per MES gained (None: the step's starting member)
    chosen: bool = False
    move: Optional[Action] = None  # the action that produced this candidate


@dataclasses.dataclass(frozen=True)
class SlimmingSettings:
    actions: tuple[str, ...] = ACTION_KINDS
    expansion_scope: str = "block"
    moves_per_step: int = 1
    max_steps: int = 500
    score_by: str = "loss"
    race: bool = False
    screen_fraction: float = 0.2
    race_z: float = 2.0

    @classmethod
    def from_config(cls, s: Any) -> "SlimmingSettings":
        """From the typed ``search`` settings (conf.schemas.SlimmingSearchSchema; values checked by it)."""
        kinds = tuple(s.actions)
        bad = [k for k in kinds if k not in ACTION_KINDS]
        if bad or not kinds:
            raise UserError(f"search.actions: {bad[0] if bad else '[]'!r} - give a subset of {', '.join(ACTION_KINDS)}")
        return cls(kinds, s.expansion_scope, s.moves_per_step, s.max_steps, s.score_by, s.race, s.screen_fraction, s.race_z)

    def drop(self, before: Metrics, after: Metrics) -> float:
        """How much worse ``after`` scores than ``before`` (the numerator of the slimming score)."""
        if self.score_by == "loss":
            return after.loss - before.loss
        return before.top1 - after.top1 + 1e-3 * (after.loss - before.loss)  # ties broken by the loss


def slim(space: SearchSpace, evaluator: CandidateEvaluator, budget: Budget, context: dict[str, Any],
         settings: SlimmingSettings, record: Callable[[Candidate], None], progress: bool = True) -> list[Candidate]:
    """Walk from the largest member until ``budget`` is met; ``record`` sees every evaluated candidate
    (the step's start included) in order. Returns the path (the applied members, start first)."""
    cur = space.largest(name="slimmed", **context)
    m = evaluator(cur)
    start = Candidate(0, "start (largest member)", cur, m, None, chosen=True)
    record(start)
    path = [start]
    lat0 = m.latency_ms
    bar = tqdm(total=100, desc=f"slimming to {budget.name}", unit="%", disable=not progress, dynamic_ncols=True,
               bar_format="{l_bar}{bar}| {n:.0f}/{total} [{elapsed}<{remaining}, {postfix}]")
    started = time.time()
    step = 0
    try:
        while not budget.met(m.latency_ms, m.params):
            step += 1
            if step > settings.max_steps:
                raise SlimmingError(f"search.max_steps: slimming did not meet {budget.describe()} in {settings.max_steps} "
                                    f"steps (reached {m.latency_ms:.2f} ms, {m.params / 1e6:.2f} M params at {cur.summary()})")
            moves = candidate_actions(cur, space, settings.actions, settings.expansion_scope)
            if not moves:
                raise SlimmingError(f"budget: no action left at {cur.summary()} ({m.latency_ms:.2f} ms, "
                                    f"{m.params / 1e6:.2f} M params) and {budget.describe()} is not met")
            if any(evaluator.proxy.cached(a) is None for _, a in moves):
                evaluator.proxy.reference(cur)  # incremental evaluation of the neighbours
            moves = race(moves, cur, m, evaluator, settings)
            cands = []
            for action, nxt in moves:
                mc = evaluator(nxt)
                gain = mc.mes - m.mes
                score = settings.drop(m, mc) / gain if gain > 0 else None
                cands.append(Candidate(step, action.describe(cur, nxt), nxt, mc, score, move=action))
            ranked = sorted((c for c in cands if c.score is not None), key=lambda c: (c.score, -c.metrics.mes))
            if not ranked:  # LUT noise can make every remaining shrink look slower: go by budget progress instead
                for c in cands:
                    progress_ = _budget_progress(budget, m, c.metrics)
                    if progress_ > 0:
                        c.score = settings.drop(m, c.metrics) / progress_
                        c.action += " (no MES gain; scored per budget progress)"
                ranked = sorted((c for c in cands if c.score is not None), key=lambda c: c.score)
            if not ranked:
                raise SlimmingError(f"budget: no action at {cur.summary()} ({m.latency_ms:.2f} ms) improves MES or "
                                    f"approaches {budget.describe()}")
            applied, targets, labels = cur, set(), []
            for c in ranked:
                if len(labels) >= settings.moves_per_step or budget.met(*_budget_costs(evaluator, applied)):
                    break
                assert c.move is not None
                if c.move.target in targets:
                    continue
                nxt = apply_action(applied, c.move, space)
                if nxt is None:
                    continue
                applied, c.chosen = nxt, True
                targets.add(c.move.target)
                labels.append(c.action)
            for c in cands:
                record(c)
            cur = applied
            if evaluator.proxy.cached(cur) is None and not budget.met(*_budget_costs(evaluator, cur)):
                evaluator.proxy.reference(cur)  # the next step's base: scored once, as the reference, not also incrementally
            m = evaluator(cur)
            if len(labels) > 1:  # the composed member is a new point on the path: record it too
                record(Candidate(step, " + ".join(labels), cur, m, None, chosen=True))
            path.append(Candidate(step, " + ".join(labels), cur, m, None, chosen=True))
            done = 100.0 if budget.latency_ms is None else min(100.0, 100 * (lat0 - m.latency_ms) / max(1e-9, lat0 - budget.latency_ms))
            bar.n = max(bar.n, done)
            bar.set_postfix_str(f"step {step}, {m.latency_ms:.1f} ms, {m.params / 1e6:.2f} M, top1 {m.top1:.1f}, loss {m.loss:.3f}, "
                                f"{evaluator.proxy.evaluations} evals, {time.time() - started:.0f}s")
    finally:
        bar.close()
    return path


def race(moves: list[tuple[Action, ArchConfig]], cur: ArchConfig, m: Metrics, evaluator: CandidateEvaluator,
         settings: SlimmingSettings) -> list[tuple[Action, ArchConfig]]:
    """The moves worth a whole-split evaluation: all of them without racing; with it, the MES-gaining ones whose
    screened score is not clearly worse than the ``moves_per_step``-th best, whether or not they are already
    scored: the choice is the same with any cache. Those that gain no MES cannot be ranked while others do
    (see the module doc)."""
    screen = getattr(evaluator.proxy, "screen", None)
    if not settings.race or screen is None or settings.score_by != "loss":
        return moves
    gains = {i: evaluator.costs(a)[3] - m.mes for i, (_, a) in enumerate(moves)}
    gaining = [i for i, g in gains.items() if g > 0]
    if len(gaining) <= settings.moves_per_step:
        return moves  # nothing to race; without any MES gain the fallback ranking needs every whole-split score
    base = screen(cur, settings.screen_fraction)
    bounds = {}
    for i in gaining:
        d = screen(moves[i][1], settings.screen_fraction).losses.double() - base.losses.double()
        se = float(d.std()) / max(1, len(d)) ** 0.5 if len(d) > 1 else float("inf")
        score = float(d.mean()) / gains[i]
        bounds[i] = (score - settings.race_z * se / gains[i], score + settings.race_z * se / gains[i])
    uppers = sorted(hi for _, hi in bounds.values())
    cut = uppers[min(settings.moves_per_step, len(uppers)) - 1]
    keep = {i for i, (lo, _) in bounds.items() if lo <= cut}
    return [mv for i, mv in enumerate(moves) if i in keep]


def _budget_progress(budget: Budget, before: Metrics, after: Metrics) -> float:
    """Relative reduction of the violated budget quantities (latency and/or params) from ``before`` to ``after``."""
    gain = 0.0
    if budget.latency_ms is not None and before.latency_ms > budget.latency_ms:
        gain += (before.latency_ms - after.latency_ms) / before.latency_ms
    if budget.params is not None and before.params > budget.params:
        gain += (before.params - after.params) / before.params
    return gain


def _budget_costs(evaluator: CandidateEvaluator, arch: ArchConfig) -> tuple[float, int]:
    lat, params, _, _ = evaluator.costs(arch)
    return lat, params


def record_candidates(study: Any, space: SearchSpace, budget: Budget) -> Callable[[Candidate], None]:
    """The ``record`` callback of :func:`slim`: one COMPLETE trial per evaluated candidate (skipping
    those a previous, interrupted run already recorded)."""
    dists = distributions(space)
    seen = {t.user_attrs.get("slim_key") for t in completed(study)}

    def record(c: Candidate) -> None:
        key = f"{c.step}|{c.action}|{c.chosen}"
        if key in seen:
            return
        m = c.metrics
        attrs = trial_attrs(c.arch, m, strategy="slimming", budget=budget.name, feasible=budget.met(m.latency_ms, m.params),
                            step=c.step, action=c.action, chosen=c.chosen, score=c.score, slim_key=key)
        study.add_trial(optuna.trial.create_trial(
            values=pareto_values(m), params=params_of(c.arch, space), distributions=dists, user_attrs=attrs,
            constraints=budget.violations(m.latency_ms, m.params)))
        seen.add(key)

    return record


def slimming_path(study: optuna.Study) -> list[FrozenTrial]:
    """The applied steps of a slimming study, in order (one per step)."""
    by_step: dict[int, FrozenTrial] = {}
    for t in completed(study):
        if t.user_attrs.get("chosen"):
            step = t.user_attrs["step"]
            if step not in by_step or " + " in (t.user_attrs.get("action") or ""):
                by_step[step] = t
    return [by_step[s] for s in sorted(by_step)]
