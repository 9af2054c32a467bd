"""Reading a finished (or running) search back: trials as a table, the best member, the Pareto front."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from search.storage import open_storage
from supernet.arch import ArchConfig
from supernet.errors import UserError


def load_study(run: dict[str, Any]) -> optuna.Study:
    """The study a run record names; a missing or unreadable storage is a one-line error."""
    storage = run["storage"]
    if storage.startswith("sqlite:///") and not Path(storage[len("sqlite:///"):]).is_file():
        raise UserError(f"{storage[len('sqlite:///'):]}: study storage not found (the run directory is incomplete)")
    try:
        return optuna.load_study(study_name=run["study_name"], storage=open_storage(storage))
    except KeyError:
        raise UserError(f"study {run['study_name']!r} not found in {storage}") from None
    except UserError:
        raise
    except Exception as exc:  # a damaged database or journal file (e.g. "file is not a database")
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{storage}: cannot read the study storage ({type(exc).__name__}: {first[:200]})") from None


def completed(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if "arch" in t.user_attrs]


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """Optuna's own ``trials_dataframe()`` (number, values named by the study's metric names, params,
    datetimes, duration, state, user attributes, constraints) with the architecture as one JSON column;
    bookkeeping attributes (heartbeats, surplus markers, the nested arch dict) left out."""
    df = study.trials_dataframe(multi_index=False)
    drop = [c for c in df.columns if c in ("user_attrs_arch", "user_attrs_slim_key") or c.startswith("system_attrs_")]
    df = df.drop(columns=drop)
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    df["arch"] = [json.dumps(by_number[n].user_attrs["arch"]) if "arch" in by_number[n].user_attrs else None
                  for n in df["number"]]
    return df


def arch_of(trial: FrozenTrial) -> ArchConfig:
    return ArchConfig.from_dict(trial.user_attrs["arch"], source=f"trial {trial.number}")


def pareto(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Feasible trials not dominated on (proxy top-1 up, LUT latency down), one per architecture."""
    feas = {t.user_attrs["arch_hash"]: t for t in trials if t.user_attrs.get("feasible", True)}
    pts = sorted(feas.values(), key=lambda t: (t.user_attrs["latency_ms"], -t.user_attrs["top1"]))
    front, best = [], float("-inf")
    for t in pts:
        if t.user_attrs["top1"] > best:
            front.append(t)
            best = t.user_attrs["top1"]
    return front


def best_feasible(study: optuna.Study) -> Optional[FrozenTrial]:
    """Single-objective: the best feasible value; otherwise the most accurate feasible trial (ties: faster)."""
    feas = [t for t in completed(study) if t.user_attrs.get("feasible", True)]
    if not feas:
        return None
    if len(study.directions) == 1:
        return max(feas, key=lambda t: (t.value, -t.number))
    return max(feas, key=lambda t: (t.user_attrs["top1"], -t.user_attrs["latency_ms"]))
