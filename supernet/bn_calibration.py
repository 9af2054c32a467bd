"""BatchNorm recalibration: re-estimate the running statistics of one network (or supernet member).

Sliced members of a weight-sharing supernet see the shared running statistics of other members;
Once-for-All re-estimates them on ~2000 training images before evaluating a subnet.

The calibration images stream through in batches. Every BN normalizes each batch with that batch's
own statistics (as in training) and accumulates **exact pooled sums** over all batches: per-batch mean
and sum of squared deviations combined in float64 (Chan's formula), so the stored mean and unbiased
variance are those of all the images the BN saw - not an average of per-batch variances (which
drops the spread of the batch means) nor of momentum updates. With one batch this is the one-pass
computation itself. With several, a BN's input was normalized upstream by batch rather than whole-set
statistics; that difference shrinks with the batch size (``experiments/results/scale.md`` measures it),
so callers use the largest batch their memory budget allows.

Everything else stays in eval mode (no drop path); each BN's mode is restored.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn


class PooledBatchStats:
    """Exact mean and variance of one BN's input over every batch it saw (its first ``channels`` channels).

    While attached to a BN (``bn._calibration``), :func:`calibration_batch_norm` routes the BN's forward
    here: the input's statistics are accumulated, and it is normalized with its own batch statistics.
    """

    two_pass = True  # a batch's moments in two vectorized passes (False: torch.var_mean, 5-7x slower on the CPU)

    def __init__(self) -> None:
        self.n = 0
        self.mean: Optional[torch.Tensor] = None   # float64
        self.m2: Optional[torch.Tensor] = None     # sum of squared deviations, float64

    def add(self, x: torch.Tensor) -> None:
        """Accumulate the moments of ``x`` (channels on dim 1): the batch mean, then the sum of squared deviations
        from it (the two-pass formula: no cancellation, float32 rounding like ``var_mean``'s Welford updates)."""
        dims = [0] + list(range(2, x.dim()))
        nb = x.numel() // x.shape[1]
        x = x.float()
        if self.two_pass:
            mean = x.mean(dims, keepdim=True)
            mean_b, m2_b = mean.flatten().double(), (x - mean).square_().sum(dims).double()
        else:
            var_b, mean_b = torch.var_mean(x, dim=dims, correction=0)
            mean_b, m2_b = mean_b.double(), var_b.double() * nb
        if self.mean is None:
            self.n, self.mean, self.m2 = nb, mean_b, m2_b
            return
        n = self.n + nb
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2_b + delta * delta * (self.n * nb / n)
        self.n = n

    def unbiased_var(self) -> torch.Tensor:
        assert self.m2 is not None
        return self.m2 / max(self.n - 1, 1)

    def normalize(self, x: torch.Tensor, bn: nn.BatchNorm2d, channels: int) -> torch.Tensor:
        self.add(x)
        return F.batch_norm(x, None, None, bn.weight[:channels], bn.bias[:channels], True, 0.0, bn.eps)


def calibration_batch_norm(x: torch.Tensor, bn: nn.BatchNorm2d, channels: int) -> Optional[torch.Tensor]:
    """The BN's output while it is being recalibrated (None when it is not): the hook of every BN forward."""
    stats: Optional[PooledBatchStats] = getattr(bn, "_calibration", None)
    return None if stats is None else stats.normalize(x, bn, channels)


def _bns(model: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


@contextlib.contextmanager
def _calibrating(model: nn.Module, bns: list[nn.BatchNorm2d]) -> Iterator[None]:
    modes = {m: m.training for m in model.modules()}  # each module's own mode (model may be a new container)
    model.eval()
    for bn in bns:
        bn.train()  # no folding into convs while statistics are collected
    try:
        yield
    finally:
        for bn in bns:
            bn.__dict__.pop("_calibration", None)
        for m, mode in modes.items():
            m.training = mode


@contextlib.contextmanager
def batch_statistics(model: nn.Module) -> Iterator[dict[nn.BatchNorm2d, PooledBatchStats]]:
    """Within: every BN of ``model`` normalizes each batch with its own statistics (as in a calibration
    pass) and accumulates them, without touching its running statistics; yields the accumulators."""
    bns = _bns(model)
    stats = {bn: PooledBatchStats() for bn in bns}
    with _calibrating(model, bns):
        for bn, s in stats.items():
            bn._calibration = s
        yield stats


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor], n_batches: Optional[int] = None,
                   run: Optional[Callable[[torch.Tensor], object]] = None) -> int:
    """Set the BN statistics of ``model`` to the pooled statistics of the calibration ``batches``; returns
    the batches used.

    ``batches`` yields input tensors (or tuples whose first item is the input); ``n_batches`` caps them.
    ``run`` (default: ``model``) is what each batch is passed through; only the BNs inside ``model`` are
    recalibrated (e.g. ``model`` = the later stages of a network, ``run`` = the forward from there). BNs
    off the path the batches take keep their statistics.
    """
    used = 0
    with batch_statistics(model) as stats:
        for x in batches:
            if n_batches is not None and used >= n_batches:
                break
            (run or model)(x[0] if isinstance(x, (tuple, list)) else x)
            used += 1
    if used == 0:
        raise ValueError("recalibrate_bn: no calibration batches")
    for bn, s in stats.items():
        if s.mean is None:
            continue
        c = s.mean.numel()
        bn.running_mean[:c] = s.mean.to(bn.running_mean.dtype)
        bn.running_var[:c] = s.unbiased_var().to(bn.running_var.dtype)
        bn.num_batches_tracked.fill_(1)
    return used
