"""Evaluation of networks and supernet members (with BN recalibration)."""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from supernet.arch import ArchConfig
from supernet.bn_calibration import recalibrate_bn


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable, device: torch.device | str = "cpu") -> dict[str, float]:
    """Top-1 accuracy (%) and mean cross-entropy of ``model`` (eval mode) over (x, y) batches."""
    model.eval()
    correct, total, loss = 0, 0, 0.0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        total += len(y)
    if total == 0:
        raise ValueError("evaluate: no batches")
    return {"top1": 100.0 * correct / total, "loss": loss / total, "n": total}


def evaluate_member(
    supernet,
    arch: ArchConfig,
    calib_batches: Iterable,
    val_batches: Iterable,
    n_calib: int,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Extract ``arch`` from the supernet, re-estimate its BN statistics on ``n_calib`` calibration
    batches, and evaluate it; the supernet itself is not modified."""
    model = supernet.extract(arch).to(device)
    recalibrate_bn(model, (x.to(device) for x, _ in calib_batches), n_calib)
    return evaluate(model, val_batches, device)
