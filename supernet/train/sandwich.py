"""One sandwich-rule step: largest, smallest and K random members; in-place distillation.

The largest member learns from the labels (label-smoothed cross-entropy); every other member learns
from the largest member's detached soft predictions (KL divergence), or from the labels too when
in-place distillation is off. Gradients of all members
accumulate and the caller takes one optimizer step. Members are drawn from a generator seeded by
(seed, step), so every rank of a distributed run trains the same members.

Under DistributedDataParallel the gradients are all-reduced once per step: every member but the
last runs under ``no_sync`` (gradients accumulate locally), the last member's backward reduces the
accumulated sum.
"""
from __future__ import annotations

import contextlib
import random
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from supernet.arch import ArchConfig
from supernet.space import SearchSpace
from supernet.train.precision import Precision


def sandwich_members(space: SearchSpace, step: int, seed: int, num_random: int, **context) -> list[ArchConfig]:
    """[largest, smallest, K random members] for ``step`` (identical on every rank)."""
    rng = random.Random(seed * 1_000_003 + step)
    members = [space.largest(**context), space.smallest(**context)]
    members += [space.sample(rng, **context) for _ in range(num_random)]
    return members


def _logits(out: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
    return list(out) if isinstance(out, tuple) else [out]


def sandwich_step(
    model: nn.Module,
    supernet,
    members: list[ArchConfig],
    x: torch.Tensor,
    y: torch.Tensor,
    label_smoothing: float = 0.1,
    temperature: float = 1.0,
    precision: Optional[Precision] = None,
    scaler: Optional["torch.amp.GradScaler"] = None,
    inplace_distillation: bool = True,
) -> list[float]:
    """Forward/backward every member on (x, y); returns the per-member losses (caller steps the optimizer).

    ``model`` is what runs the forward (the supernet, or its DistributedDataParallel wrapper);
    ``supernet`` is the bare Supernet whose active member is switched. ``precision`` autocasts the
    forwards; ``scaler`` (fp16) scales the losses before backward. ``inplace_distillation=False``
    trains every member on the labels instead of on the largest member's predictions.
    """
    losses, teacher = [], None
    no_sync = getattr(model, "no_sync", None)
    autocast = precision.autocast if precision is not None else contextlib.nullcontext
    for k, arch in enumerate(members):
        supernet.set_active(arch)
        sync = no_sync() if no_sync is not None and k < len(members) - 1 else contextlib.nullcontext()
        with sync:
            with autocast():
                heads = [h.float() for h in _logits(model(x))]
            if k == 0 or not inplace_distillation:
                loss = sum(F.cross_entropy(h, y, label_smoothing=label_smoothing) for h in heads) / len(heads)
                with torch.no_grad():
                    teacher = F.softmax(sum(heads) / len(heads) / temperature, dim=1)
            else:
                loss = sum(
                    F.kl_div(F.log_softmax(h / temperature, dim=1), teacher, reduction="batchmean") for h in heads
                ) / len(heads) * temperature**2
            (scaler.scale(loss) if scaler is not None else loss).backward()
        losses.append(float(loss.detach()))
    return losses
