"""EfficientFormerV2 building blocks (arXiv 2212.08059, Sec. 3 and Fig. 2), built from a leaf-op set.

Module and parameter names follow timm 1.0's ``efficientformer_v2`` so that timm checkpoints load
unchanged and the release's checkpoints load through a rename table (:mod:`supernet.convert`).
Every block is built from :class:`~supernet.layers.Ops`: ``OPS`` gives the static network,
``ELASTIC_OPS`` the weight-sharing supernet's blocks.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from supernet.layers import OPS, DropPath, Ops, gelu
from supernet.signatures import (
    ATTN_HEADS,
    ATTN_KEY_DIM,
    ATTN_RATIO,
    DOWN_HEADS,
    DOWN_KEY_DIM,
    DOWN_RATIO,
)


def relative_bias_index(q_res: int, k_res: int, q_step: int) -> torch.Tensor:
    """Index of the bias offset (|q_step*qx - kx|, |q_step*qy - ky|) for each (query, key) pair.

    Offsets are numbered dx * k_res + dy, which is the order the release assigns them in.
    """
    q = torch.arange(q_res) * q_step
    k = torch.arange(k_res)
    qi, qj = q.repeat_interleave(q_res), q.repeat(q_res)  # token n = row * res + col
    ki, kj = k.repeat_interleave(k_res), k.repeat(k_res)
    dx = (qi[:, None] - ki[None, :]).abs()
    dy = (qj[:, None] - kj[None, :]).abs()
    return dx * k_res + dy


class _BiasedAttention(nn.Module):
    """Shared bias-table handling: gather per forward in training, cached in eval (until the table changes),
    frozen when fused."""

    attention_biases: nn.Parameter
    attention_bias_idxs: torch.Tensor

    def _init_bias(self, heads: int, table: int, idxs: torch.Tensor) -> None:
        self.attention_biases = nn.Parameter(torch.zeros(heads, table))
        self.register_buffer("attention_bias_idxs", idxs, persistent=False)
        self._bias_cache: Optional[tuple[tuple[int, int], torch.Tensor]] = None  # (source version, gathered table)
        self.register_buffer("fused_bias", None, persistent=False)

    def train(self, mode: bool = True) -> "_BiasedAttention":
        self._bias_cache = None
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):  # device/dtype moves invalidate the cache
        self._bias_cache = None
        return super()._apply(fn, *args, **kwargs)

    def bias(self) -> torch.Tensor:
        if self.fused_bias is not None:
            return self.fused_bias
        if self.training or torch.jit.is_tracing():
            return self.attention_biases[:, self.attention_bias_idxs]
        # keyed by the table's storage and version counter: load_state_dict, load_member and any in-place write bump it
        source = (self.attention_biases.data_ptr(), self.attention_biases._version)
        if self._bias_cache is None or self._bias_cache[0] != source:
            self._bias_cache = (source, self.attention_biases[:, self.attention_bias_idxs].detach())
        return self._bias_cache[1]

    @torch.no_grad()
    def _fuse_bias_and_scale(self) -> None:
        """Store the gathered bias table and fold the logit scale into the query projection."""
        self.fused_bias = self.attention_biases[:, self.attention_bias_idxs].detach().clone()
        q_conv = self.q.proj.conv if isinstance(self.q, LocalGlobalQuery) else self.q.conv
        q_conv.weight.mul_(self.scale)
        q_conv.bias.mul_(self.scale)
        self.scale = 1.0


class Upsample2x(nn.Module):
    """Bilinear x2 upsampling (align_corners=False), as in the release's stride-2 attention."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class Attention(_BiasedAttention):
    """Attention4D: multi-head attention on 4-D tensors with talking heads and a local value branch.

    In stage 3 (``stride=2``) a depthwise stride-2 conv shrinks the tokens first and the output is
    upsampled x2 before the projection.

    Heads are elastic (:meth:`set_heads`): a member with ``h`` of the ``heads`` runs the leading ``h`` heads, i.e.
    the prefix of q, k and v's output channels (head ``i`` owns channels ``i*dim .. (i+1)*dim``), of the local value
    branch, the ``h x h`` top-left of both talking-head convs, the first ``h`` rows of the position biases and the
    first ``h * d`` input channels of the projection. The static model runs all of its heads.
    """

    def __init__(self, dim: int, resolution: int, stride: int = 1, ops: Ops = OPS, heads: int = ATTN_HEADS) -> None:
        super().__init__()
        self.num_heads, self.key_dim = heads, ATTN_KEY_DIM
        self.scale = ATTN_KEY_DIM ** -0.5
        self.d = ATTN_KEY_DIM * ATTN_RATIO
        self.dh = self.d * heads
        kh = ATTN_KEY_DIM * heads
        self.active_heads = heads
        self.stride = stride
        if stride == 2:
            self.resolution = -(-resolution // 2)
            self.stride_conv = ops.conv_norm(dim, dim, 3, 2, depthwise=True)
            self.upsample: Optional[nn.Module] = Upsample2x()
        else:
            self.resolution = resolution
            self.stride_conv = None
            self.upsample = None
        self.N = self.resolution**2
        self.q = ops.conv_norm(dim, kh)
        self.k = ops.conv_norm(dim, kh)
        self.v = ops.conv_norm(dim, self.dh)
        self.v_local = ops.conv_norm(self.dh, self.dh, 3, depthwise=True)
        self.talking_head1 = nn.Conv2d(heads, heads, 1)
        self.talking_head2 = nn.Conv2d(heads, heads, 1)
        self.proj = ops.conv_norm(self.dh, dim)
        self._init_bias(heads, self.N, relative_bias_index(self.resolution, self.resolution, 1))

    def set_heads(self, heads: int) -> None:
        """Run the leading ``heads`` heads (elastic ops only: q, k and v slice their outputs to match)."""
        if not 1 <= heads <= self.num_heads:
            raise ValueError(f"an attention block with {self.num_heads} heads cannot run {heads}")
        self.active_heads = heads
        for conv, per_head in ((self.q, self.key_dim), (self.k, self.key_dim), (self.v, self.d)):
            conv.active_out = heads * per_head

    def _talking_head(self, conv: nn.Conv2d, x: torch.Tensor, h: int) -> torch.Tensor:
        if h == self.num_heads:
            return conv(x)
        return F.conv2d(x, conv.weight[:h, :h], conv.bias[:h])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        if self.stride_conv is not None:
            x = self.stride_conv(x)
        h, n, r = self.active_heads, self.N, self.resolution
        q = self.q(x).reshape(B, h, -1, n).transpose(2, 3)
        k = self.k(x).reshape(B, h, -1, n)
        v = self.v(x)
        v_local = self.v_local(v)
        attn = q @ k
        if self.scale != 1.0:
            attn = attn * self.scale
        bias = self.bias()
        attn = self._talking_head(self.talking_head1, attn + (bias if h == self.num_heads else bias[:h]), h)
        attn = self._talking_head(self.talking_head2, attn.softmax(dim=-1), h)
        # (attn @ v)^T computed as v^T @ attn^T: lands in (B, heads, d, N) without a copy
        x = (v.reshape(B, h, -1, n) @ attn.transpose(2, 3)).reshape(B, h * self.d, r, r) + v_local
        if self.upsample is not None:
            x = self.upsample(x)
        return self.proj(gelu(x))


class LocalGlobalQuery(nn.Module):
    """Query of the attention downsampling: depthwise stride-2 conv + stride-2 sampling, then 1x1 conv + BN."""

    def __init__(self, in_dim: int, out_dim: int, ops: Ops = OPS) -> None:
        super().__init__()
        self.local = ops.depthwise(in_dim, stride=2)
        self.proj = ops.conv_norm(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x[:, :, ::2, ::2]  # AvgPool2d(kernel 1, stride 2)
        return self.proj(self.local(x) + pooled)


class AttentionDownsample(_BiasedAttention):
    """Attention4DDownsample: queries at ceil(r/2), keys/values at r; maps C_in -> C_out (no talking heads)."""

    def __init__(self, dim: int, out_dim: int, resolution: int, ops: Ops = OPS) -> None:
        super().__init__()
        self.num_heads, self.key_dim = DOWN_HEADS, DOWN_KEY_DIM
        self.scale = DOWN_KEY_DIM ** -0.5
        self.d = DOWN_KEY_DIM * DOWN_RATIO
        self.dh = self.d * DOWN_HEADS
        kh = DOWN_KEY_DIM * DOWN_HEADS
        self.resolution = resolution
        self.resolution2 = -(-resolution // 2)
        self.N, self.N2 = resolution**2, self.resolution2**2
        self.q = LocalGlobalQuery(dim, kh, ops)
        self.k = ops.conv_norm(dim, kh)
        self.v = ops.conv_norm(dim, self.dh)
        self.v_local = ops.conv_norm(self.dh, self.dh, 3, 2, depthwise=True)
        self.proj = ops.conv_norm(self.dh, out_dim)
        self._init_bias(DOWN_HEADS, self.N, relative_bias_index(self.resolution2, resolution, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        h = self.num_heads
        q = self.q(x).reshape(B, h, -1, self.N2).transpose(2, 3)
        k = self.k(x).reshape(B, h, -1, self.N)
        v = self.v(x)
        v_local = self.v_local(v)
        attn = q @ k
        if self.scale != 1.0:
            attn = attn * self.scale
        attn = (attn + self.bias()).softmax(dim=-1)
        r2 = self.resolution2
        x = (v.reshape(B, h, -1, self.N) @ attn.transpose(2, 3)).reshape(B, self.dh, r2, r2) + v_local
        return self.proj(gelu(x))


class Mlp(nn.Module):
    """Unified FFN: 1x1 conv + BN + GELU, depthwise 3x3 + BN + GELU, 1x1 conv + BN."""

    def __init__(self, dim: int, hidden: int, ops: Ops = OPS) -> None:
        super().__init__()
        self.fc1 = ops.conv_norm(dim, hidden, act=True)
        self.mid = ops.conv_norm(hidden, hidden, 3, depthwise=True, act=True)
        self.fc2 = ops.conv_norm(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.mid(self.fc1(x)))


class Block(nn.Module):
    """FFN block (``use_attn=False``) or attention block: x + ls1*Attention(x), then x + ls2*Mlp(x)."""

    def __init__(
        self,
        dim: int,
        expansion: int,
        resolution: int,
        use_attn: bool,
        stride: int = 1,
        drop_path: float = 0.0,
        ops: Ops = OPS,
        layer_scale_init: float = 1e-5,
        heads: int = ATTN_HEADS,
    ) -> None:
        super().__init__()
        self.token_mixer = Attention(dim, resolution, stride, ops, heads) if use_attn else None
        self.ls1 = ops.layer_scale(dim, layer_scale_init) if use_attn else None
        self.mlp = Mlp(dim, dim * expansion, ops)
        self.ls2: Optional[nn.Module] = ops.layer_scale(dim, layer_scale_init)
        self.drop_path = DropPath(drop_path)

    def set_options(self, heads: int = ATTN_HEADS) -> None:
        """Run the member's values of the block options (``BlockConfig.option_values``; elastic ops only)."""
        if self.token_mixer is not None:
            self.token_mixer.set_heads(heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.token_mixer is not None:
            y = self.token_mixer(x)
            if self.ls1 is not None:
                y = self.ls1(y)
            x = x + self.drop_path(y)
        y = self.mlp(x)
        if self.ls2 is not None:
            y = self.ls2(y)
        return x + self.drop_path(y)


class Downsample(nn.Module):
    """Embedding between stages: conv3x3 s2 + BN, plus the attention-downsampling branch into stage 4."""

    def __init__(self, in_dim: int, out_dim: int, resolution: int, use_attn: bool, ops: Ops = OPS) -> None:
        super().__init__()
        self.conv = ops.conv_norm(in_dim, out_dim, 3, 2)
        self.attn = AttentionDownsample(in_dim, out_dim, resolution, ops) if use_attn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.attn is not None:
            out = self.attn(x) + out
        return out


class Stem(nn.Module):
    """Two conv3x3 s2 + BN + GELU: 3 -> C/2 -> C at 1/4 resolution."""

    def __init__(self, width: int, ops: Ops = OPS) -> None:
        super().__init__()
        self.conv1 = ops.conv_norm(3, width // 2, 3, 2, act=True)
        self.conv2 = ops.conv_norm(width // 2, width, 3, 2, act=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


def classify(
    x: torch.Tensor,
    norm: Optional[nn.Module],
    head: nn.Module,
    head_dist: Optional[nn.Module],
    training: bool,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """BN, global average pool, head(s): (head, dist) when training with distillation, else their mean."""
    if norm is not None:
        x = norm(x)
    x = x.mean(dim=(2, 3))
    if head_dist is None:
        return head(x)
    out, dist = head(x), head_dist(x)
    return (out, dist) if training else (out + dist) / 2


class Head(nn.Module):
    """Standalone classifier head (norm, head, head_dist), e.g. for measuring it alone in the LUT."""

    def __init__(self, width: int, num_classes: int, distillation: bool, ops: Ops = OPS) -> None:
        super().__init__()
        self.norm: Optional[nn.Module] = ops.batch_norm(width)
        self.head = ops.linear(width, num_classes)
        self.head_dist = ops.linear(width, num_classes) if distillation else None

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return classify(x, self.norm, self.head, self.head_dist, self.training)
