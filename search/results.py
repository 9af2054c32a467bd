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

RUN_FILE = "search.json"
RUN_FORMAT = "eformer-search/1"
TABLE_ATTRS = ("top1", "latency_ms", "params", "macs", "mes", "feasible", "strategy", "budget", "summary",
               "arch_hash", "step", "action", "chosen", "score")


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """The run record written by eformer-search (``<run_dir>/search.json``)."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise UserError(f"{path}: not found; --run must be an eformer-search run directory")
    try:
        run = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg})") from None
    if run.get("format") != RUN_FORMAT:
        raise UserError(f"{path}: unsupported format {run.get('format')!r} (expected {RUN_FORMAT})")
    return run


def load_study(run: dict[str, Any]) -> optuna.Study:
    return optuna.load_study(study_name=run["study_name"], storage=open_storage(run["storage"]))


def completed(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if "arch" in t.user_attrs]


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, values and the recorded candidate attributes."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"number": t.number, "state": t.state.name}
        for i, v in enumerate(t.values or []):
            row[f"value_{i}"] = v
        row.update({k: t.user_attrs.get(k) for k in TABLE_ATTRS})
        row["arch"] = json.dumps(t.user_attrs["arch"]) if "arch" in t.user_attrs else None
        rows.append(row)
    return pd.DataFrame(rows)


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


def best_trial(study: optuna.Study, strategy: str) -> Optional[FrozenTrial]:
    """slimming: the end of the path; single-objective: the best feasible value; otherwise the most
    accurate feasible trial (ties: faster)."""
    trials = completed(study)
    if strategy == "slimming":
        chosen = [t for t in trials if t.user_attrs.get("chosen")]
        return max(chosen, key=lambda t: (t.user_attrs.get("step", 0), t.number)) if chosen else None
    feas = [t for t in trials if t.user_attrs.get("feasible", True)]
    if not feas:
        return None
    if len(study.directions) == 1:
        return max(feas, key=lambda t: (t.value, -t.number))
    return max(feas, key=lambda t: (t.user_attrs["top1"], -t.user_attrs["latency_ms"]))


def slimming_path(study: optuna.Study) -> list[FrozenTrial]:
    """The applied steps of a slimming study, in order (one per step)."""
    by_step: dict[int, FrozenTrial] = {}
    for t in completed(study):
        if t.user_attrs.get("chosen"):
            step = t.user_attrs["step"]
            if step not in by_step or " + " in (t.user_attrs.get("action") or ""):
                by_step[step] = t
    return [by_step[s] for s in sorted(by_step)]
