"""One sandwich-rule step: largest, smallest and K random members; in-place distillation.

The largest member learns from the labels (label-smoothed cross-entropy); every other member learns
from the largest member's detached soft predictions (KL divergence). Gradients of all members
accumulate and the caller takes one optimizer step. Members are drawn from a generator seeded by
(seed, step), so every rank of a distributed run trains the same members.
"""
from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch import nn

from supernet.arch import ArchConfig
from supernet.space import SearchSpace


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
) -> list[float]:
    """Forward/backward every member on (x, y); returns the per-member losses (caller steps the optimizer).

    ``model`` is what runs the forward (the supernet, or its DistributedDataParallel wrapper);
    ``supernet`` is the bare Supernet whose active member is switched.
    """
    losses, teacher = [], None
    for k, arch in enumerate(members):
        supernet.set_active(arch)
        heads = _logits(model(x))
        if k == 0:
            loss = sum(F.cross_entropy(h, y, label_smoothing=label_smoothing) for h in heads) / len(heads)
            with torch.no_grad():
                teacher = F.softmax(sum(heads) / len(heads) / temperature, dim=1)
        else:
            loss = sum(
                F.kl_div(F.log_softmax(h / temperature, dim=1), teacher, reduction="batchmean") for h in heads
            ) / len(heads) * temperature**2
        loss.backward()
        losses.append(float(loss.detach()))
    return losses
