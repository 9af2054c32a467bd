"""Standalone training of one architecture with the supernet's own recipe.

The ground truth a weight-sharing proxy is judged against: the member trained from scratch alone,
with the data, schedule, step budget and settings recorded in the supernet file, through
``eformer-train``'s fine-tuning mode (the same loop: resumable, one run directory per model).
Only ``train.seed`` (and the thread count) may differ.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Optional

from conf.schemas import TrainApp, checked
from supernet.arch import ArchConfig
from supernet.errors import UserError
from supernet.io_utils import atomic_write_text, make_dir
from supernet.train.app import run_training

# settings of the supernet's run that do not carry over to a standalone run (the last three only steer the
# sandwich rule: one member trained alone has no random members and no teacher)
_NOT_RECIPE = ("finetune.", "train.init_from", "train.eval_presets", "train.progress", "train.threads", "compute_device",
               "train.num_random", "train.inplace_distillation", "train.kd_temperature")


def recipe_config(train_config: Mapping[str, Any]) -> dict[str, Any]:
    """The nested eformer-train config of a supernet's recorded (flattened) training settings."""
    if not train_config or not any(k.startswith("train.") for k in train_config):
        raise UserError("supernet file: records no training settings (train it with eformer-train)")
    nested: dict[str, Any] = {}
    for key, value in train_config.items():
        if key.startswith(_NOT_RECIPE) or key.startswith("hydra"):
            continue
        node = nested
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return nested


def recipe_digest(train_config: Mapping[str, Any]) -> str:
    """8 hex digits naming the standalone recipe of a supernet's settings (seed and run directory excluded): two
    supernets trained alike up to their sandwich settings share their members' standalone runs."""
    cfg = recipe_config(train_config)
    cfg.pop("run_dir", None)
    cfg.get("train", {}).pop("seed", None)
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:8]


def standalone_run_dir(root: str | Path, arch_hash: str, train_config: Mapping[str, Any], seed: int) -> Path:
    """Where the standalone run of one member, recipe and seed lives under ``root``."""
    return Path(root) / f"{arch_hash[:10]}-{recipe_digest(train_config)}" / f"seed{int(seed)}"


def standalone_config(train_config: Mapping[str, Any], arch: ArchConfig, run_dir: str | Path, seed: int = 0,
                      threads: Optional[int] = None, progress: bool = False, compute_device: str = "auto") -> TrainApp:
    """The eformer-train config that trains ``arch`` alone from scratch with the supernet's recipe."""
    run_dir = Path(run_dir)
    make_dir(run_dir, "run_dir")
    arch_file = run_dir / "arch.yaml"
    if not arch_file.is_file():
        atomic_write_text(arch_file, arch.to_yaml())
    cfg = recipe_config(train_config)
    cfg["train"].update({"seed": int(seed), "eval_presets": [], "progress": bool(progress), "threads": threads,
                         "init_from": None,
                         # checkpoints (the whole supernet's weights) at epoch ends only: short runs, many of them
                         "checkpoint_every": 10**9})
    cfg["finetune"] = {"arch": str(arch_file), "weights": None}
    cfg["run_dir"] = str(run_dir)
    cfg["compute_device"] = compute_device
    try:  # typed and checked like a composed eformer-train config
        return checked(cfg, TrainApp, "")
    except UserError as err:
        raise UserError(f"supernet file: recorded training setting {err} (it does not fit eformer-train's config)") from None


def train_standalone(train_config: Mapping[str, Any], arch: ArchConfig, run_dir: str | Path, seed: int = 0,
                     threads: Optional[int] = None, compute_device: str = "auto") -> dict[str, Any]:
    """Train (or resume, or reuse) ``arch`` alone; returns its final top-1, loss and step count."""
    cfg = standalone_config(train_config, arch, run_dir, seed, threads, compute_device=compute_device)
    run_training(cfg)
    final = json.loads((Path(run_dir) / "final.json").read_text())
    last = [m for m in final["final_metrics"] if m["member"] == "arch"]
    if not last:
        raise RuntimeError(f"{run_dir}: no final evaluation recorded")
    return {"top1": float(last[-1]["top1"]), "loss": float(last[-1]["loss"]), "steps": int(final["steps"]),
            "seed": int(seed), "run_dir": str(run_dir)}
