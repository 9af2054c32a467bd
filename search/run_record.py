"""The record of an eformer-search run (``<run_dir>/search.json``): where its study lives and what it searched.

Light on purpose (no optuna, pandas or torch): commands read it to check ``--run`` before loading their heavy parts.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from supernet.errors import UserError
from supernet.io_utils import read_user_bytes

RUN_FILE = "search.json"
RUN_FORMAT = "eformer-search/1"


RUN_FIELDS: dict[str, type] = {"strategy": str, "study_name": str, "storage": str, "supernet": str, "lut": str,
                               "budget": dict, "deploy_context": dict, "trials": int}


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """The run record written by eformer-search (``<run_dir>/search.json``), checked field by field."""
    path = Path(run_dir) / RUN_FILE
    if not path.exists():
        raise UserError(f"{path}: not found; --run must be an eformer-search run directory")
    try:
        run = json.loads(read_user_bytes(path, UserError, "eformer-search run record"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({getattr(exc, 'msg', None) or exc.reason})") from None
    if not isinstance(run, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(run).__name__}")
    if run.get("format") != RUN_FORMAT:
        raise UserError(f"{path}: unsupported format {run.get('format')!r} (expected {RUN_FORMAT})")
    for key, kind in RUN_FIELDS.items():
        if not isinstance(run.get(key), kind) or isinstance(run.get(key), bool):
            raise UserError(f"{path}: field {key!r} is {run.get(key)!r}; expected a {kind.__name__} (rerun eformer-search "
                            "to rewrite it)")
    if not isinstance(run["budget"].get("name"), str):
        raise UserError(f"{path}: field 'budget' has no 'name'; rerun eformer-search to rewrite it")
    return run
