"""The static EfficientFormerV2 network for any valid :class:`~supernet.arch.ArchConfig`.

Structure (timm-style): arch table in ``supernet/presets``, leaf ops in :mod:`supernet.layers`, blocks in
:mod:`supernet.blocks`, stage and model here, builders :func:`build_model` and :func:`build_piece`.
Every block is built from its :class:`~supernet.signatures.BlockSignature`, the same one the cost
model and the latency table use.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from supernet.arch import ArchConfig
from supernet.blocks import AttentionDownsample, Block, Downsample, Head, Mlp, Stem, classify
from supernet.layers import OPS, Ops
from supernet.signatures import (
    BlockSignature,
    block_signature,
    embedding_signatures,
)


def drop_path_rates(arch: ArchConfig) -> list[list[float]]:
    """Per-block drop-path rates rising linearly over all blocks from 0 to ``arch.drop_path_rate``."""
    total = arch.num_blocks
    rates, k = [], 0
    for stage in arch.stages:
        row = []
        for _ in stage.blocks:
            row.append(arch.drop_path_rate * k / (total - 1) if total > 1 else 0.0)
            k += 1
        rates.append(row)
    return rates


def make_block(sig: BlockSignature, drop_path: float = 0.0, ops: Ops = OPS) -> Block:
    """The FFN or attention block described by ``sig``."""
    if sig.kind not in ("ffn", "attn"):
        raise ValueError(f"{sig.key} is not a block signature")
    return Block(sig.in_width, sig.expansion, sig.resolution, sig.kind == "attn", sig.stride, drop_path, ops,
                 **dict(sig.options))


def make_downsample(sigs: Sequence[BlockSignature], ops: Ops = OPS) -> Downsample:
    """The embedding described by ``embedding_signatures(...)`` (conv, plus attention downsampling)."""
    embed = sigs[0]
    use_attn = any(s.kind == "attn_down" for s in sigs)
    return Downsample(embed.in_width, embed.out_width, embed.resolution, use_attn, ops)


def build_piece(sig: BlockSignature, ops: Ops = OPS) -> nn.Module:
    """A standalone module for one signature (the latency table measures these)."""
    if sig.kind == "stem":
        module: nn.Module = Stem(sig.out_width, ops)
    elif sig.kind in ("ffn", "attn"):
        module = make_block(sig, 0.0, ops)
    elif sig.kind == "embed":
        module = Downsample(sig.in_width, sig.out_width, sig.resolution, False, ops)
    elif sig.kind == "attn_down":
        module = AttentionDownsample(sig.in_width, sig.out_width, sig.resolution, ops)
    elif sig.kind == "head":
        module = Head(sig.in_width, sig.out_width, sig.heads == 2, ops)
    else:
        raise ValueError(f"unknown signature kind {sig.kind!r}")
    init_weights(module)
    return module


class Stage(nn.Module):
    """Optional downsampling embedding followed by a sequence of blocks."""

    def __init__(self, downsample: Optional[nn.Module], blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            x = self.downsample(x)
        return self.blocks(x)


class EfficientFormerV2(nn.Module):
    """EfficientFormerV2 (arXiv 2212.08059) for one ArchConfig.

    ``forward`` returns (head, distillation head) logits in training mode when the distillation
    head is on, and their mean in eval mode. ``forward_features`` returns the last stage's map, or
    all four stage maps (for dense-prediction users); ``forward_head`` applies norm, pool and heads.
    """

    def __init__(self, arch: ArchConfig, ops: Ops = OPS) -> None:
        super().__init__()
        self.arch = arch
        self.num_classes = arch.num_classes
        self.deployed = False
        self.stem = Stem(arch.widths[0], ops)
        rates = drop_path_rates(arch)
        stages = []
        for i, stage in enumerate(arch.stages):
            down = None
            if i > 0:
                sigs = embedding_signatures(i, arch.widths[i - 1], stage.width, arch.resolution(i - 1))
                down = make_downsample(sigs, ops)
            blocks = [
                make_block(block_signature(i, b.type, stage.width, b.expansion, arch.resolution(i), **dict(b.options)),
                           rates[i][j], ops)
                for j, b in enumerate(stage.blocks)
            ]
            stages.append(Stage(down, blocks))
        self.stages = nn.Sequential(*stages)
        width = arch.widths[-1]
        self.norm: Optional[nn.Module] = ops.batch_norm(width)
        self.head = ops.linear(width, arch.num_classes)
        self.head_dist = ops.linear(width, arch.num_classes) if arch.distillation else None
        init_weights(self)

    def forward_features(self, x: torch.Tensor, return_stages: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """Last stage's feature map (B, C4, H/32, W/32), or the four stage maps if ``return_stages``."""
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs if return_stages else x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Norm, global average pool and classifier head(s) on a last-stage feature map."""
        return classify(x, self.norm, self.head, self.head_dist, self.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self.forward_head(self.forward_features(x))

    def train(self, mode: bool = True) -> "EfficientFormerV2":
        if mode and self.deployed:
            raise RuntimeError("this model is in deploy form (BN folded), which is inference-only")
        return super().train(mode)


def init_weights(module: nn.Module) -> None:
    """Release init: conv/linear weights truncated normal (std 0.02), biases 0; FFN mid conv keeps
    PyTorch's default init; BN default; layer scales 1e-5; bias tables zero."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, Mlp):
            m.mid.conv.reset_parameters()


def skeleton(arch: ArchConfig) -> EfficientFormerV2:
    """``EfficientFormerV2(arch)`` on the meta device: its modules, keys and shapes without memory or initialisation
    (random draws for every weight cost most of a build), for code that only reads the state dict's shapes or fills
    every tensor itself (:meth:`supernet.elastic.Supernet.extract`, ``load_member``)."""
    with torch.device("meta"):
        return EfficientFormerV2(arch)


def build_model(arch: ArchConfig | str, **overrides) -> EfficientFormerV2:
    """The static network for ``arch`` (an ArchConfig, a preset name or a YAML path)."""
    return EfficientFormerV2(ArchConfig.resolve(arch, **overrides))

