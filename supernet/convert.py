"""Checkpoint conversion: the release's layout and timm 1.0's layout -> this project's layout.

Our parameter names follow timm 1.0, so timm checkpoints need only their non-persistent index
buffers dropped; the release (snap-research/EfficientFormer, ``eformer_*_450.pth``) is renamed by
the table below and its layer scales reshaped from (C, 1, 1) to (C,). Loading is strict: missing,
unexpected or mis-shaped keys raise :class:`CheckpointError` listing them.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from conf.schemas import CHECKPOINT_SOURCES as SOURCES
from supernet.errors import UserError
from supernet.io_utils import safe_torch_load


class CheckpointError(UserError):
    """A checkpoint cannot be read or does not fit the target architecture."""


# (pattern, replacement) applied in order to each key of the release's layout.
_OFFICIAL_RULES: list[tuple[str, str]] = [
    (r"^patch_embed\.0\.", "stem.conv1.conv."),
    (r"^patch_embed\.1\.", "stem.conv1.bn."),
    (r"^patch_embed\.3\.", "stem.conv2.conv."),
    (r"^patch_embed\.4\.", "stem.conv2.bn."),
    (r"^dist_head\.", "head_dist."),
    # blocks: network.{2i}.{j}.  (handled in _official_key)
    (r"\.layer_scale_1$", ".ls1.gamma"),
    (r"\.layer_scale_2$", ".ls2.gamma"),
    (r"\.mlp\.fc1\.", ".mlp.fc1.conv."),
    (r"\.mlp\.norm1\.", ".mlp.fc1.bn."),
    (r"\.mlp\.mid\.", ".mlp.mid.conv."),
    (r"\.mlp\.mid_norm\.", ".mlp.mid.bn."),
    (r"\.mlp\.fc2\.", ".mlp.fc2.conv."),
    (r"\.mlp\.norm2\.", ".mlp.fc2.bn."),
    (r"\.token_mixer\.(q|k|v|v_local|stride_conv)\.0\.", r".token_mixer.\1.conv."),
    (r"\.token_mixer\.(q|k|v|v_local|stride_conv)\.1\.", r".token_mixer.\1.bn."),
    (r"\.token_mixer\.proj\.1\.", ".token_mixer.proj.conv."),
    (r"\.token_mixer\.proj\.2\.", ".token_mixer.proj.bn."),
    # embeddings: network.{2i+1}.
    (r"\.downsample\.proj\.", ".downsample.conv.conv."),
    (r"\.downsample\.norm\.", ".downsample.conv.bn."),
    (r"\.downsample\.conv\.(weight|bias)$", r".downsample.conv.conv.\1"),
    (r"\.downsample\.bn\.", ".downsample.conv.bn."),
    (r"\.downsample\.attn\.q\.local\.0\.", ".downsample.attn.q.local."),
    (r"\.downsample\.attn\.q\.proj\.0\.", ".downsample.attn.q.proj.conv."),
    (r"\.downsample\.attn\.q\.proj\.1\.", ".downsample.attn.q.proj.bn."),
    (r"\.downsample\.attn\.(k|v|v_local)\.0\.", r".downsample.attn.\1.conv."),
    (r"\.downsample\.attn\.(k|v|v_local)\.1\.", r".downsample.attn.\1.bn."),
    (r"\.downsample\.attn\.proj\.1\.", ".downsample.attn.proj.conv."),
    (r"\.downsample\.attn\.proj\.2\.", ".downsample.attn.proj.bn."),
]


def _official_key(key: str) -> str:
    m = re.match(r"^network\.(\d+)\.(.*)$", key)
    if m:
        idx, rest = int(m.group(1)), m.group(2)
        if idx % 2 == 0:  # a stage: network.{2i}.{j}.*
            block, _, tail = rest.partition(".")
            key = f"stages.{idx // 2}.blocks.{block}.{tail}"
        else:  # an embedding into stage i+1
            key = f"stages.{idx // 2 + 1}.downsample.{rest}"
    for pattern, repl in _OFFICIAL_RULES:  # the rules match disjoint key parts
        key = re.sub(pattern, repl, key)
    return key


def unwrap_checkpoint(obj: Any, where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Return the state dict inside a release file (``{"model": ...}``), a trainer file
    (``{"state_dict": ...}``) or a bare state dict; strips a DistributedDataParallel ``module.`` prefix."""
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict", "model_ema"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{where}: expected a state dict (or a dict with a 'model' entry)")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{where}: entries that are not tensors: {', '.join(map(str, bad[:5]))}")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def convert_state_dict(state_dict: Mapping[str, Any], source: str = "official") -> dict[str, torch.Tensor]:
    """Rename a state dict from ``source`` ("official" release, "timm" 1.0, or "ours") to our layout.

    Index buffers (``attention_bias_idxs``) are dropped: they are derived from the resolution and
    rebuilt by the model. Shapes are checked when loading (:func:`load_converted`).
    """
    if source not in SOURCES:
        raise CheckpointError(f"source: {source!r} is not one of {', '.join(SOURCES)}")
    sd = unwrap_checkpoint(state_dict)
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key.endswith("attention_bias_idxs"):
            continue
        if source == "official":
            new = _official_key(key)
            if new.endswith((".ls1.gamma", ".ls2.gamma")) and value.dim() == 3:
                value = value.reshape(-1)
        else:
            new = key
        out[new] = value
    return out


def check_keys(expected: Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise CheckpointError ``<what>: missing ...; unexpected ...; mis-shaped ...`` unless ``state_dict`` has
    exactly ``expected``'s keys and shapes (no partial loads)."""
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    misshaped = [
        f"{k} {tuple(state_dict[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if keys:
            shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise CheckpointError(f"{what}: " + "; ".join(problems))


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], where: str = "checkpoint") -> None:
    """Raise CheckpointError listing missing, unexpected and mis-shaped keys (no partial loads)."""
    check_keys(model.state_dict(), state_dict, f"{where} does not fit the architecture")


def load_converted(model: nn.Module, state_dict: Mapping[str, torch.Tensor], where: str = "checkpoint") -> nn.Module:
    """Strictly load an already converted state dict into ``model``."""
    check_state_dict(model, state_dict, where)
    model.load_state_dict(state_dict, strict=True)
    return model


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint file (tensors only; no code execution) and unwrap its state dict."""
    p = Path(path)
    obj = safe_torch_load(p, CheckpointError, "PyTorch checkpoint")
    return unwrap_checkpoint(obj, str(p))


def load_checkpoint(model: nn.Module, path: str | os.PathLike, source: str = "ours") -> nn.Module:
    """Read ``path``, convert from ``source`` and load strictly into ``model``."""
    sd = convert_state_dict(read_checkpoint(path), source)
    return load_converted(model, sd, str(path))
