"""Deploy form: an inference-only network with the same outputs (tested to <= 1e-5), in two steps.

1. :func:`fuse_` folds every BatchNorm, layer scale and the attention logit scale into convs,
   freezes the gathered attention-bias tables, and merges the final BN and both classifier heads
   into one linear layer. This portable form is what the ONNX exporter writes.
2. :func:`gemm_kernels_` rewrites the eager execution for CPUs: 1x1 convs become batched GEMMs,
   the FFN keeps its hidden activations channels-last (so the depthwise conv takes oneDNN's fast
   channels-last path without layout copies), the x2 bilinear upsampling becomes one GEMM with
   its (fixed) interpolation matrix, and GELUs and residual adds run in place. ``experiments/bench_inference.py`` measures the gain.

:func:`fuse` applies both to a copy.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from supernet.blocks import Block, Head, Mlp, Upsample2x, _BiasedAttention
from supernet.layers import ConvNorm, ElasticConvNorm, Linear, bn_affine
from supernet.model import EfficientFormerV2


# ------------------------------------------------------------------ step 1: folding
@torch.no_grad()
def _fold_scale_into(conv: nn.Conv2d, gamma: torch.Tensor) -> None:
    conv.weight.mul_(gamma.view(-1, 1, 1, 1))
    conv.bias.mul_(gamma)


@torch.no_grad()
def _merged_head(norm: nn.BatchNorm2d | None, heads: list[nn.Linear]) -> Linear:
    """One Linear equal to the mean over ``heads`` of head(pool(norm(x)))."""
    weight = torch.stack([h.weight for h in heads]).mean(0)
    bias = torch.stack([h.bias for h in heads]).mean(0)
    if norm is not None:
        scale, shift = bn_affine(norm)
        bias = bias + weight @ shift
        weight = weight * scale.view(1, -1)
    out = Linear(weight.shape[1], weight.shape[0])
    out.weight.copy_(weight)
    out.bias.copy_(bias)
    return out


@torch.no_grad()
def fuse_(model: nn.Module) -> nn.Module:
    """Fold BN, layer scales, logit scale and heads in place (a network or a single piece)."""
    if any(isinstance(m, ElasticConvNorm) for m in model.modules()):
        raise TypeError("fuse() takes a static network; extract a member from the supernet first")
    model.eval()
    for m in model.modules():
        if isinstance(m, ConvNorm):
            m.fuse_()
    for m in model.modules():
        if isinstance(m, _BiasedAttention):
            m._fuse_bias_and_scale()
        if isinstance(m, Block):
            if m.ls1 is not None:
                _fold_scale_into(m.token_mixer.proj.conv, m.ls1.gamma)
                m.ls1 = None
            _fold_scale_into(m.mlp.fc2.conv, m.ls2.gamma)
            m.ls2 = None
    heads = [model] if isinstance(model, EfficientFormerV2) else []
    heads += [m for m in model.modules() if isinstance(m, Head)]
    for h in heads:
        members = [h.head] + ([h.head_dist] if h.head_dist is not None else [])
        h.head = _merged_head(h.norm, members)
        h.norm, h.head_dist = None, None
    if isinstance(model, EfficientFormerV2):
        model.deployed = True
    return model


# ------------------------------------------------------------------ step 2: eager CPU kernels
_gelu_ = torch.ops.aten.gelu_  # in place: no new activation buffer (inference only)


class InplaceResidualBlock(nn.Module):
    """A folded block whose residual adds write into the branch outputs (fewer large allocations)."""

    def __init__(self, block: Block) -> None:
        super().__init__()
        self.token_mixer = block.token_mixer
        self.mlp = block.mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.token_mixer is not None:
            x = self.token_mixer(x).add_(x)
        return self.mlp(x).add_(x)


class GemmPointwise(nn.Module):
    """A folded 1x1 conv as one batched GEMM: (Cout, Cin) @ (B, Cin, HW) + bias."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.register_buffer("weight", conv.weight.detach().flatten(1).clone())
        self.register_buffer("bias", conv.bias.detach().view(1, -1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        cout = self.weight.shape[0]
        out = torch.baddbmm(self.bias, self.weight.expand(B, cout, C), x.reshape(B, C, H * W))
        return out.view(B, cout, H, W)


class GemmMlp(nn.Module):
    """The folded FFN with channels-last hidden activations (no layout copies)."""

    def __init__(self, mlp: Mlp) -> None:
        super().__init__()
        self.register_buffer("w1t", mlp.fc1.conv.weight.detach().flatten(1).t().clone())  # (C, Ch)
        self.register_buffer("b1", mlp.fc1.conv.bias.detach().view(1, 1, -1).clone())
        self.mid = mlp.mid.conv
        self.register_buffer("w2", mlp.fc2.conv.weight.detach().flatten(1).clone())  # (C, Ch)
        self.register_buffer("b2", mlp.fc2.conv.bias.detach().view(1, -1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        ch = self.w1t.shape[1]
        h = torch.baddbmm(self.b1, x.reshape(B, C, H * W).transpose(1, 2), self.w1t.expand(B, C, ch))
        h = _gelu_(h).view(B, H, W, ch).permute(0, 3, 1, 2)  # NCHW view of channels-last memory
        h = _gelu_(self.mid(h)).permute(0, 2, 3, 1).reshape(B, H * W, ch)
        out = torch.baddbmm(self.b2, self.w2.expand(B, C, ch), h.transpose(1, 2))
        return out.view(B, C, H, W)


class GemmUpsample2x(nn.Module):
    """Bilinear x2 upsampling of an r x r map as one GEMM with its interpolation matrix."""

    def __init__(self, resolution: int) -> None:
        super().__init__()
        basis = torch.eye(resolution * resolution).view(-1, 1, resolution, resolution)
        self.register_buffer("matrix", Upsample2x()(basis).flatten(1))  # (r*r, 4*r*r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        return (x.reshape(B * C, H * W) @ self.matrix).view(B, C, 2 * H, 2 * W)


def _is_pointwise(m: nn.Module) -> bool:
    return (
        isinstance(m, ConvNorm)
        and m.bn is None
        and not m.act
        and m.conv.kernel_size == (1, 1)
        and m.conv.groups == 1
    )


@torch.no_grad()
def gemm_kernels_(model: nn.Module) -> nn.Module:
    """Swap folded FFNs, 1x1 convs and upsamplers for their GEMM forms and make residual adds in place."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Mlp) and child.fc1.bn is None:
                setattr(parent, name, GemmMlp(child))
            elif _is_pointwise(child):
                setattr(parent, name, GemmPointwise(child.conv))
            elif isinstance(child, Upsample2x):
                setattr(parent, name, GemmUpsample2x(parent.resolution))
    for parent in list(model.modules()):  # after the leaves, so the new blocks hold the swapped children
        for name, child in list(parent.named_children()):
            if isinstance(child, Block) and child.ls2 is None:
                setattr(parent, name, InplaceResidualBlock(child))
    return model


def fuse(model: nn.Module, gemm_kernels: bool = True) -> nn.Module:
    """The deploy form of a copy of ``model`` (the original is untouched).

    ``gemm_kernels=False`` keeps plain convs (the portable form the ONNX exporter writes).
    """
    out = fuse_(copy.deepcopy(model))
    return gemm_kernels_(out) if gemm_kernels else out
