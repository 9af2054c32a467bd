"""Training checkpoints: everything needed to resume bit-for-bit (CPU), written atomically."""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch

from supernet.errors import UserError
from supernet.io_utils import atomic_torch_save, safe_torch_load

CHECKPOINT = "checkpoint.pt"
# keys that may change between a run and its resumption
RESUMABLE_CHANGES = ("train.checkpoint_every", "data.num_workers", "train.threads", "train.progress", "compute_device")


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def fingerprint(flat: Mapping[str, Any]) -> str:
    kept = {k: v for k, v in flat.items() if k not in RESUMABLE_CHANGES}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def rng_state() -> dict[str, Any]:
    """Generator states as tensors and plain containers (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                      "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)}}


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    return atomic_torch_save(state, run_dir / CHECKPOINT)


def load_training_checkpoint(run_dir: Path, flat_config: Mapping[str, Any]) -> Optional[dict[str, Any]]:
    """The run's checkpoint, or None; refuses one made with a different configuration."""
    path = run_dir / CHECKPOINT
    if not path.is_file():
        return None
    state = safe_torch_load(path, UserError, "training checkpoint (delete it to start over)")
    if not isinstance(state, dict) or "fingerprint" not in state:
        raise UserError(f"{path}: not a training checkpoint of eformer-train; delete it to start over")
    if state.get("fingerprint") != fingerprint(flat_config):
        old = state.get("config", {})
        changed = sorted(
            k for k in set(old) | set(flat_config)
            if k not in RESUMABLE_CHANGES and old.get(k) != flat_config.get(k)
        )
        raise UserError(
            f"run_dir {run_dir} holds a run with a different configuration (changed: {', '.join(changed[:6])}); "
            "use another run_dir=... or delete that directory"
        )
    return state


def weights_digest(module: torch.nn.Module, parameters_only: bool = False) -> str:
    """SHA-256 of all parameters (and buffers, unless ``parameters_only``), to compare ranks or runs."""
    h = hashlib.sha256()
    items = module.named_parameters() if parameters_only else module.state_dict().items()
    for key, t in sorted(items):
        h.update(key.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()

