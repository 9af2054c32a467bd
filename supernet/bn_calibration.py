"""BatchNorm recalibration: re-estimate running statistics of one network (or supernet member).

Sliced members of a weight-sharing supernet see the shared running statistics of other members;
Once-for-All re-estimates them on ~2000 training images before evaluating a subnet. Here every BN
switches to a cumulative average (momentum None) for ``n_batches`` forward passes, everything else
stays in eval mode (no drop path), and the result is the exact mean of the per-batch statistics.
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional

import torch
from torch import nn


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor], n_batches: int,
                   run: Optional[Callable[[torch.Tensor], object]] = None) -> int:
    """Re-estimate BN statistics of ``model`` from up to ``n_batches`` input batches; returns batches used.

    ``run`` (default: ``model``) is what each batch is passed through; only the BNs inside ``model``
    are recalibrated (e.g. ``model`` = the later stages of a network, ``run`` = the forward from there).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    was_training = model.training
    momenta = [bn.momentum for bn in bns]
    model.eval()
    for bn in bns:
        bn.momentum = None
        bn.num_batches_tracked.zero_()
        bn.train()
    used = 0
    try:
        for x in batches:
            if used >= n_batches:
                break
            (run or model)(x[0] if isinstance(x, (tuple, list)) else x)
            used += 1
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
        model.train(was_training)
    if used == 0:
        raise ValueError("recalibrate_bn: no calibration batches")
    return used
