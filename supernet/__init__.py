"""EfficientFormerV2 models: ArchConfig, the static network, its analytic costs, checkpoint
conversion, deploy form and ONNX export; the weight-sharing supernet and its training.

The package's names load on first use (PEP 562), so what needs only the configs (``supernet.arch``,
``supernet.errors``, ...) does not import torch: a CLI reports a mistake in its options in a fraction
of a second instead of after torch has loaded."""
from __future__ import annotations

import importlib
from typing import Any

import supernet.dimensions  # noqa: F401  (the per-block dimensions register their block options)

_HOME = {  # public name -> the module that defines it
    "ArchConfig": "supernet.arch", "ArchConfigError": "supernet.arch", "BlockConfig": "supernet.arch",
    "StageConfig": "supernet.arch", "CheckpointError": "supernet.convert", "convert_state_dict": "supernet.convert",
    "load_checkpoint": "supernet.convert", "fuse": "supernet.deploy", "UserError": "supernet.errors",
    "EfficientFormerV2": "supernet.model", "build_model": "supernet.model", "build_piece": "supernet.model",
    "export_onnx": "supernet.onnx_export", "BlockSignature": "supernet.signatures",
    "arch_signatures": "supernet.signatures", "count_macs": "supernet.signatures", "count_params": "supernet.signatures",
}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'supernet' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
