"""Leaf operators, each static op followed by its elastic twin.

A static op has fixed channel counts. Its elastic twin (Once-for-All style) holds the weights of the
largest size and runs a prefix slice of them: the input width is read from the input tensor, the
output width from ``active_out`` (set by the supernet's ``set_active``; ``None`` keeps the full
width, or the input width for depthwise convs). Elastic twins subclass their static op, so their
parameter names are identical and :func:`supernet.mapping.slice_to` can copy any prefix slice into
the static op.

``OPS`` / ``ELASTIC_OPS`` are the two op sets the block classes are built from.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def sliced_batch_norm(x: torch.Tensor, bn: nn.BatchNorm2d, channels: int) -> torch.Tensor:
    """BatchNorm over the first ``channels`` channels of ``bn``; running statistics update in place.

    Mirrors ``nn.BatchNorm2d``: momentum ``None`` means a cumulative average over the batches seen
    since ``num_batches_tracked`` was reset (used by BN recalibration).
    """
    momentum = 0.0
    if bn.training and bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
        momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    use_batch_stats = bn.training or bn.running_mean is None
    return F.batch_norm(
        x,
        bn.running_mean[:channels] if bn.running_mean is not None else None,
        bn.running_var[:channels] if bn.running_var is not None else None,
        bn.weight[:channels],
        bn.bias[:channels],
        use_batch_stats,
        momentum,
        bn.eps,
    )


# ---------------------------------------------------------------- conv + BN (+ GELU)
class ConvNorm(nn.Module):
    """Conv2d with bias, then BatchNorm2d (removed by :meth:`fuse_`), then optionally GELU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        depthwise: bool = False,
        act: bool = False,
    ) -> None:
        super().__init__()
        if depthwise and in_channels != out_channels:
            raise ValueError("a depthwise ConvNorm needs in_channels == out_channels")
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            kernel_size // 2,
            groups=in_channels if depthwise else 1,
        )
        self.bn: Optional[nn.BatchNorm2d] = nn.BatchNorm2d(out_channels)
        self.depthwise = depthwise
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.gelu(x) if self.act else x

    @torch.no_grad()
    def fuse_(self) -> None:
        """Fold the BatchNorm into the conv (inference only); the output is unchanged."""
        if self.bn is None:
            return
        bn = self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        self.conv.weight.mul_(scale.view(-1, 1, 1, 1))
        self.conv.bias.copy_((self.conv.bias - bn.running_mean) * scale + bn.bias)
        self.bn = None


class ElasticConvNorm(ConvNorm):
    """ConvNorm running a prefix slice: in = input width, out = ``active_out`` (or in, if depthwise)."""

    active_out: Optional[int] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cin = x.shape[1]
        conv = self.conv
        if self.depthwise:
            cout, weight = cin, conv.weight[:cin]
        else:
            cout = self.active_out or conv.out_channels
            weight = conv.weight[:cout, :cin]
        x = F.conv2d(x, weight, conv.bias[:cout], conv.stride, conv.padding, 1, cin if self.depthwise else 1)
        x = sliced_batch_norm(x, self.bn, cout)
        return F.gelu(x) if self.act else x


# ---------------------------------------------------------------- plain depthwise conv
class DepthwiseConv(nn.Conv2d):
    """Depthwise 3x3 conv with bias and no norm (the local branch of the local-global query)."""

    def __init__(self, channels: int, stride: int = 1) -> None:
        super().__init__(channels, channels, 3, stride, 1, groups=channels)


class ElasticDepthwiseConv(DepthwiseConv):
    """DepthwiseConv over the first ``x.shape[1]`` channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        return F.conv2d(x, self.weight[:c], self.bias[:c], self.stride, self.padding, 1, c)


# ---------------------------------------------------------------- BatchNorm
class BatchNorm(nn.BatchNorm2d):
    """BatchNorm2d (the head's norm)."""


class ElasticBatchNorm(BatchNorm):
    """BatchNorm2d over the first ``x.shape[1]`` channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sliced_batch_norm(x, self, x.shape[1])


# ---------------------------------------------------------------- Linear
class Linear(nn.Linear):
    """Linear classifier."""


class ElasticLinear(Linear):
    """Linear reading the first ``x.shape[-1]`` input features (output size fixed)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight[:, : x.shape[-1]], self.bias)


# ---------------------------------------------------------------- layer scale
class LayerScale(nn.Module):
    """Per-channel residual-branch scale ``gamma`` of shape (C,) (timm's LayerScale2d layout)."""

    def __init__(self, dim: int, init_value: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1)


class ElasticLayerScale(LayerScale):
    """LayerScale over the first ``x.shape[1]`` channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma[: x.shape[1]].view(1, -1, 1, 1)


# ---------------------------------------------------------------- drop path
class DropPath(nn.Module):
    """Stochastic depth per sample (identity in eval or when ``p == 0``)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


@dataclasses.dataclass(frozen=True)
class Ops:
    """The leaf operators a network is built from."""

    conv_norm: type[ConvNorm]
    depthwise: type[DepthwiseConv]
    batch_norm: type[BatchNorm]
    linear: type[Linear]
    layer_scale: type[LayerScale]


OPS = Ops(ConvNorm, DepthwiseConv, BatchNorm, Linear, LayerScale)
ELASTIC_OPS = Ops(ElasticConvNorm, ElasticDepthwiseConv, ElasticBatchNorm, ElasticLinear, ElasticLayerScale)
