"""Leaf operators, each static op followed by its elastic twin.

A static op has fixed channel counts. Its elastic twin (Once-for-All style) holds the weights of the
largest size and runs a prefix slice of them: the input width is read from the input tensor, the
output width from ``active_out`` (set by the supernet's ``set_active``; ``None`` keeps the full
width, or the input width for depthwise convs). Elastic twins subclass their static op, so their
parameter names are identical and :func:`supernet.mapping.prefix` gives the slice of any
supernet tensor that the static op loads.

``OPS`` / ``ELASTIC_OPS`` are the two op sets the block classes are built from.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from supernet.bn_calibration import calibration_batch_norm


class _ChannelsLastBatchNorm(torch.autograd.Function):
    """Training-mode batch norm of a channels-last (B, C, H, W) input (or a 1x1 map), seen as (B*H*W, C) rows.

    Used on the CPU only (CUDA keeps cuDNN's kernel). PyTorch's own channels-last CPU kernel takes the variance
    from running sums of x and x**2, which loses digits where a channel's mean is large next to its spread: 16x
    the contiguous kernel's gradient error against float64 in a sandwich step (experiments/results/bench_training.md).
    Here the variance is taken about the mean (two passes) and the backward is the textbook one, all column sums over rows that lie
    contiguous in memory. Returns (output, batch mean, biased batch variance).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps: float):
        B, C, H, W = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(-1, C)
        mean = rows.mean(0)
        centered = rows - mean
        var = centered.square().mean(0)
        invstd = torch.rsqrt(var + eps)
        ctx.save_for_backward(centered, invstd, weight)
        out = torch.addcmul(bias, centered, invstd * weight)
        return out.view(B, H, W, C).permute(0, 3, 1, 2), mean, var

    @staticmethod
    def backward(ctx, grad, _gmean, _gvar):
        centered, invstd, weight = ctx.saved_tensors
        B, C, H, W = grad.shape
        g = grad.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(-1, C)
        n = g.shape[0]
        gb = g.sum(0)
        gc = (g * centered).sum(0)  # d/d(xhat) summed, times the std
        scale = invstd * weight
        gx = torch.addcmul((gb * (-scale / n)).expand_as(g), g, scale.expand_as(g))
        gx.addcmul_(centered, gc * (-scale * invstd * invstd / n))
        return gx.view(B, H, W, C).permute(0, 3, 1, 2), gc * invstd, gb, None


def _channels_last_batch_norm(x: torch.Tensor, bn: nn.BatchNorm2d, channels: int, momentum: float) -> torch.Tensor:
    """Training-mode BN of a channels-last ``x`` (:class:`_ChannelsLastBatchNorm`); running statistics as F.batch_norm
    updates them (the unbiased variance)."""
    out, mean, var = _ChannelsLastBatchNorm.apply(x, bn.weight[:channels], bn.bias[:channels], bn.eps)
    if bn.running_mean is not None and bn.running_var is not None and momentum:
        n = x.numel() // channels
        with torch.no_grad():
            bn.running_mean[:channels].lerp_(mean, momentum)
            bn.running_var[:channels].lerp_(var * (n / max(n - 1, 1)), momentum)
    return out


def sliced_batch_norm(x: torch.Tensor, bn: nn.BatchNorm2d, channels: int) -> torch.Tensor:
    """BatchNorm over the first ``channels`` channels of ``bn``; running statistics update in place.

    Mirrors ``nn.BatchNorm2d``: momentum ``None`` means a cumulative average over the batches seen
    since ``num_batches_tracked`` was reset. While :mod:`supernet.bn_calibration` recalibrates the BN,
    its forward is the recalibration's.
    """
    calibrated = calibration_batch_norm(x, bn, channels)
    if calibrated is not None:
        return calibrated
    momentum = 0.0
    if bn.training and bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
        momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    use_batch_stats = bn.training or bn.running_mean is None
    if use_batch_stats and torch.is_grad_enabled() and x.device.type == "cpu" and x.dtype == bn.weight.dtype \
            and x.is_contiguous(memory_format=torch.channels_last):  # channels-last maps, and 1x1 maps of either layout
        return _channels_last_batch_norm(x, bn, channels, momentum)
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


# ---------------------------------------------------------------- depthwise 3x3 conv
TINY_MAP = 4  # output pixels at or below which the weight gradient is reduced here, not by oneDNN


def _tiny_weight_grad(x: torch.Tensor, grad: torch.Tensor, stride: int) -> torch.Tensor:
    """d(loss)/d(weight) of a depthwise 3x3 conv (padding 1) as 9 per-channel dot products over the
    valid (input, output) pixel pairs of each tap, with channels innermost (fast column sums)."""
    C, H, W = x.shape[1:]
    ho, wo = grad.shape[2:]
    xc = x.permute(0, 2, 3, 1)
    gc = grad.permute(0, 2, 3, 1)

    def valid(k: int, size: int, out: int) -> tuple[int, int]:  # output index range reading input p*s+k-1
        lo = max(0, -(-(1 - k) // stride))
        hi = min(out - 1, (size - k) // stride)
        return lo, hi

    taps = []
    for i in range(3):
        p0, p1 = valid(i, H, ho)
        for j in range(3):
            q0, q1 = valid(j, W, wo)
            if p1 < p0 or q1 < q0:
                taps.append(x.new_zeros(C))
                continue
            xs = xc[:, p0 * stride + i - 1 : p1 * stride + i : stride, q0 * stride + j - 1 : q1 * stride + j : stride]
            taps.append((xs * gc[:, p0 : p1 + 1, q0 : q1 + 1]).sum((0, 1, 2)))
    return torch.stack(taps, 1).view(C, 1, 3, 3)


def _channels_last(x: torch.Tensor) -> bool:
    """True where ``x`` (B, C, H, W) is stored channels-last and not also plain contiguous (maps of one pixel)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


ONE_PIXEL_LINEAR = True  # inference: a 1x1 conv on one-pixel maps as one linear layer (False: oneDNN's convolution)


def _exporting() -> bool:
    """True while a graph is being traced, compiled or exported (eager-only shortcuts stay out of it)."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride, padding) -> torch.Tensor:
    """F.conv2d, with shortcuts where oneDNN's convolution is slow.

    Training (the fused convolution backward is slow): a 1x1 conv on a channels-last input runs as one linear
    layer over the pixels (training's default layout: ``train.channels_last``); otherwise the bias is added
    separately (its gradient becomes a plain sum), and a 1x1 conv on a map of at most TINY_MAP pixels runs as
    a matrix product. Inference: a 1x1 conv on one-pixel maps (the last stage at 32 px), where oneDNN's
    convolution is slow, runs as one linear layer (``experiments/results/bench_scoring.md``), except while
    exporting."""
    if not (torch.is_grad_enabled() and bias.requires_grad):
        if (ONE_PIXEL_LINEAR and not _exporting()  # first: a traced graph must not branch on the input's shape
                and x.shape[2] * x.shape[3] == 1 and weight.shape[2:] == (1, 1) and tuple(stride) == (1, 1)):
            return F.linear(x.flatten(1), weight.flatten(1), bias).view(x.shape[0], -1, 1, 1)
        return F.conv2d(x, weight, bias, stride, padding)
    B, C, H, W = x.shape
    pointwise = weight.shape[2:] == (1, 1) and tuple(stride) == (1, 1)
    if pointwise and _channels_last(x):  # (B, H, W, C) in memory: one GEMM with the bias, no layout copies
        return F.linear(x.permute(0, 2, 3, 1), weight.reshape(weight.shape[0], C), bias).permute(0, 3, 1, 2)
    if pointwise and H * W <= TINY_MAP:
        out = torch.matmul(weight.reshape(weight.shape[0], C), x.reshape(B, C, H * W)) + bias.view(1, -1, 1)
        return out.view(B, -1, H, W)
    return F.conv2d(x, weight, None, stride, padding) + bias.view(1, -1, 1, 1)


class _DepthwiseConv3x3(torch.autograd.Function):
    """Depthwise 3x3 conv (padding 1) with a faster backward on CPU.

    PyTorch's fused convolution backward spends milliseconds on the bias gradient of a depthwise
    conv at any size, and on the weight gradient on 1x1 and 2x2 maps (stages 3-4 at small image
    sizes), which made those up to half of a supernet training step. Here the bias gradient is a
    plain sum, the weight gradient of tiny maps comes from :func:`_tiny_weight_grad`, and oneDNN
    computes the rest.

    Autocast-safe: under autocast the forward casts input, weight and bias to the autocast dtype
    itself (as ``F.conv2d`` would) and saves the cast tensors, so the backward sees one dtype; the
    gradients are returned in the dtypes of the original inputs, the tiny-map weight gradient is
    reduced in fp32.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride: int):
        ctx.dtypes = (x.dtype, weight.dtype, bias.dtype)
        if torch.is_autocast_enabled(x.device.type):
            dtype = torch.get_autocast_dtype(x.device.type)
            x, weight, bias = x.to(dtype), weight.to(dtype), bias.to(dtype)
        ctx.save_for_backward(x, weight)
        ctx.stride = stride
        with torch.autocast(x.device.type, enabled=False):
            return F.conv2d(x, weight, bias, stride, 1, 1, x.shape[1])

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        s = ctx.stride
        grad = grad.to(x.dtype)
        need_x, need_w, need_b, _ = ctx.needs_input_grad
        tiny = grad.shape[2] * grad.shape[3] <= TINY_MAP
        gx = gw = gb = None
        if need_x or (need_w and not tiny):
            layout = torch.channels_last if _channels_last(x) else torch.contiguous_format
            gx, gw, _ = torch.ops.aten.convolution_backward(
                grad.contiguous(memory_format=layout), x, weight, None, [s, s], [1, 1], [1, 1], False, [0, 0], x.shape[1],
                [need_x, need_w and not tiny, False],
            )
        if need_w and tiny:
            gw = _tiny_weight_grad(x.float(), grad.float(), s)
        if need_b:
            gb = grad.float().sum((0, 2, 3))
        dx, dw, db = ctx.dtypes
        return (gx.to(dx) if gx is not None and need_x else None, gw.to(dw) if gw is not None else None,
                gb.to(db) if gb is not None else None, None)


def depthwise_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int) -> torch.Tensor:
    """Depthwise 3x3 conv with padding 1 (``weight`` (C, 1, 3, 3) matching ``x``'s channels)."""
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return _DepthwiseConv3x3.apply(x, weight, bias, stride)
    return F.conv2d(x, weight, bias, stride, 1, 1, x.shape[1])


# ---------------------------------------------------------------- conv + BN (+ GELU)
def _inference(bn: Optional[nn.BatchNorm2d]) -> bool:
    """True where a ConvNorm may fold its BN on the fly: running statistics in use and no autograd."""
    return bn is not None and not bn.training and bn.running_var is not None and not torch.is_grad_enabled()


def bn_affine(bn: nn.BatchNorm2d, channels: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with ``bn(x) == x * scale + shift`` in inference, over its first ``channels`` channels:
    the one BN-folding formula (convs, the deploy head)."""
    c = bn.num_features if channels is None else channels
    assert bn.running_mean is not None and bn.running_var is not None
    scale = bn.weight[:c] / torch.sqrt(bn.running_var[:c] + bn.eps)
    return scale, bn.bias[:c] - bn.running_mean[:c] * scale


def folded_conv_bn(weight: torch.Tensor, bias: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of the conv followed by ``bn`` in inference (its first ``weight.shape[0]`` channels): one
    pass over the activations instead of two. Equal to conv-then-BN up to rounding (tests: <= 1e-5)."""
    scale, shift = bn_affine(bn, weight.shape[0])
    return weight * scale.view(-1, 1, 1, 1), bias * scale + shift


def gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU; in place in eager inference (callers pass a fresh tensor), out of place under autograd and in
    traced or exported graphs."""
    if torch.is_grad_enabled() or _exporting():
        return F.gelu(x)
    return torch.ops.aten.gelu_(x)


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
        if depthwise and (in_channels != out_channels or kernel_size != 3):
            raise ValueError("a depthwise ConvNorm is 3x3 with in_channels == out_channels")
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
        return self._conv_norm(x, self.conv.weight, self.conv.bias)

    def _conv_norm(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """conv (this weight/bias slice) + BN (its first channels; folded into the conv in inference) + GELU."""
        conv, bn = self.conv, self.bn
        fold = _inference(bn)
        if fold:
            assert bn is not None
            weight, bias = folded_conv_bn(weight, bias, bn)
        if self.depthwise:
            x = depthwise_conv3x3(x, weight, bias, conv.stride[0])
        else:
            x = conv2d(x, weight, bias, conv.stride, conv.padding)
        if bn is not None and not fold:
            x = sliced_batch_norm(x, bn, weight.shape[0])
        return gelu(x) if self.act else x

    @torch.no_grad()
    def fuse_(self) -> None:
        """Fold the BatchNorm into the conv (inference only); the output is unchanged."""
        if self.bn is None:
            return
        scale, shift = bn_affine(self.bn)
        self.conv.weight.mul_(scale.view(-1, 1, 1, 1))
        self.conv.bias.copy_(self.conv.bias * scale + shift)
        self.bn = None


class ElasticConvNorm(ConvNorm):
    """ConvNorm running a prefix slice: in = input width, out = ``active_out`` (or in, if depthwise)."""

    active_out: Optional[int] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cin, conv = x.shape[1], self.conv
        if self.depthwise:
            return self._conv_norm(x, conv.weight[:cin], conv.bias[:cin])
        cout = self.active_out or conv.out_channels
        return self._conv_norm(x, conv.weight[:cout, :cin], conv.bias[:cout])


# ---------------------------------------------------------------- plain depthwise conv
class DepthwiseConv(nn.Conv2d):
    """Depthwise 3x3 conv with bias and no norm (the local branch of the local-global query)."""

    def __init__(self, channels: int, stride: int = 1) -> None:
        super().__init__(channels, channels, 3, stride, 1, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depthwise_conv3x3(x, self.weight, self.bias, self.stride[0])


class ElasticDepthwiseConv(DepthwiseConv):
    """DepthwiseConv over the first ``x.shape[1]`` channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        return depthwise_conv3x3(x, self.weight[:c], self.bias[:c], self.stride[0])


# ---------------------------------------------------------------- BatchNorm
class BatchNorm(nn.BatchNorm2d):
    """BatchNorm2d (the head's norm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        calibrated = calibration_batch_norm(x, self, x.shape[1])
        return super().forward(x) if calibrated is None else calibrated


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
