"""The one mapping between a static member network and the supernet's weights.

A member's parameter ``stages.{i}.blocks.{j}.<rest>`` lives in the supernet at
``stages.{i}.ffn_blocks.{t}.<rest>`` or ``stages.{i}.attn_blocks.{t}.<rest>``, where ``t`` counts
the blocks of that type before it in the stage (the depth policy: FFN slots first, then attention
slots, each used as a prefix). Every other key is the same. The member's tensor is the leading
(prefix) slice of the supernet's tensor along every dimension.
"""
from __future__ import annotations

import re

import torch

from supernet.arch import ArchConfig

_BLOCK_KEY = re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.(.*)$")


def member_slots(arch: ArchConfig) -> list[list[tuple[str, int]]]:
    """Per stage, per block: (slot list name, slot index) in the supernet."""
    slots = []
    for stage in arch.stages:
        counts = {"ffn": 0, "attn": 0}
        row = []
        for block in stage.blocks:
            row.append((f"{block.type}_blocks", counts[block.type]))
            counts[block.type] += 1
        slots.append(row)
    return slots


def supernet_key(member_key: str, slots: list[list[tuple[str, int]]]) -> str:
    """The supernet key holding a member key (``slots`` from :func:`member_slots`)."""
    m = _BLOCK_KEY.match(member_key)
    if not m:
        return member_key
    i, j, rest = int(m.group(1)), int(m.group(2)), m.group(3)
    name, t = slots[i][j]
    return f"stages.{i}.{name}.{t}.{rest}"


def prefix(tensor: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """The leading slice of ``tensor`` with ``shape`` (a view)."""
    if tensor.dim() != len(shape) or any(s > t for s, t in zip(shape, tensor.shape)):
        raise ValueError(f"cannot take a {tuple(shape)} prefix of a {tuple(tensor.shape)} tensor")
    return tensor[tuple(slice(0, s) for s in shape)]
