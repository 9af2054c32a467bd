"""The weight-sharing supernet: one set of weights sized for the space's largest member.

Elastic dimensions (Once-for-All style; the elastic ops sit next to their static ops in
:mod:`supernet.layers`):

* width - every conv/BN/linear runs a prefix of its channels: the stem, the embeddings and the
  attention-downsampling branch (their outputs), the attention q/k/v inputs and projection output,
  the FFNs' inputs and outputs, layer scales and the head;
* expansion - each FFN runs a prefix of its hidden channels (``width * expansion``);
* block options (the per-block dimensions beyond the expansion) - each block runs its member's values itself
  (``Block.set_options``, beside the static ops in :mod:`supernet.blocks`);
* depth - **policy**: each stage holds FFN slots and attention slots; a member with ``f`` FFN
  blocks and ``a`` attention blocks in a stage runs FFN slots ``0..f-1`` then attention slots
  ``0..a-1``. The released models fit it directly (attention blocks are their last ``vit_num``
  blocks), e.g. L's stage 3 = FFN slots 0-8 + attention slots 0-5, S0's = FFN 0-3 + attention 0-1.

``extract(arch)`` copies a member's slices into ``build_model(arch)`` and ``load_member`` writes a
member's weights (e.g. a converted release checkpoint) back into the slices, through the one
mapping of :mod:`supernet.mapping`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import torch
from torch import nn

from supernet.arch import ArchConfig
from supernet.blocks import Block, Stem, classify
from supernet.bn_calibration import recalibrate_bn
from supernet.convert import CheckpointError, check_keys
from supernet.dimensions import largest_variant
from supernet.io_utils import atomic_torch_save, safe_torch_load
from supernet.layers import ELASTIC_OPS
from supernet.mapping import member_slots, prefix, supernet_key
from supernet.model import EfficientFormerV2, init_weights, make_block, make_downsample, skeleton
from supernet.signatures import block_signature, embedding_signatures
from supernet.space import SearchSpace, SpaceError

SUPERNET_FORMAT = "eformer-supernet/1"


class ElasticStage(nn.Module):
    """Downsampling embedding, FFN slots, attention slots; runs the active prefix of each slot list."""

    def __init__(self, downsample: Optional[nn.Module], ffn: list[Block], attn: list[Block]) -> None:
        super().__init__()
        self.downsample = downsample
        self.ffn_blocks = nn.ModuleList(ffn)
        self.attn_blocks = nn.ModuleList(attn)
        self.active_ffn, self.active_attn = len(ffn), len(attn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            x = self.downsample(x)
        for block in self.ffn_blocks[: self.active_ffn]:
            x = block(x)
        for block in self.attn_blocks[: self.active_attn]:
            x = block(x)
        return x


class Supernet(nn.Module):
    """Weight-sharing EfficientFormerV2 supernet over a :class:`SearchSpace`.

    ``image_size``, ``num_classes`` and ``distillation`` are the context every member shares.
    """

    def __init__(
        self,
        space: SearchSpace | str,
        image_size: int = 224,
        num_classes: int = 1000,
        distillation: bool = False,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.space = SearchSpace.load(space)
        self.drop_path_rate = drop_path_rate
        self.context: dict[str, Any] = {
            "image_size": image_size,
            "num_classes": num_classes,
            "distillation": distillation,
        }
        big = self.space.largest(**self.context)  # validates the context
        n_slots = sum(s.max_ffn + s.max_attn for s in self.space.stages)
        k = 0
        self.stem = Stem(big.widths[0], ELASTIC_OPS)
        stages = []
        for i, s in enumerate(self.space.stages):
            width, res = s.widths[-1], big.resolution(i)
            down = None
            if i > 0:
                sigs = embedding_signatures(i, big.widths[i - 1], width, big.resolution(i - 1))
                down = make_downsample(sigs, ELASTIC_OPS)
            slots = {}
            for kind, count in (("ffn", s.max_ffn), ("attn", s.max_attn)):
                slots[kind] = []
                for _ in range(count):
                    rate = drop_path_rate * k / max(n_slots - 1, 1)
                    slots[kind].append(make_block(block_signature(i, kind, resolution=res, **largest_variant(s, kind)),
                                                  rate, ELASTIC_OPS))
                    k += 1
            stages.append(ElasticStage(down, slots["ffn"], slots["attn"]))
        self.stages = nn.Sequential(*stages)
        width = big.widths[-1]
        self.norm = ELASTIC_OPS.batch_norm(width)
        self.head = ELASTIC_OPS.linear(width, num_classes)
        self.head_dist = ELASTIC_OPS.linear(width, num_classes) if distillation else None
        init_weights(self)
        self.active_arch: ArchConfig = big
        self.set_active(big)

    # ------------------------------------------------------------------ members
    def member(self, arch: ArchConfig) -> ArchConfig:
        """``arch`` in this supernet's context (image size, classes, distillation), drop path off."""
        return arch.replace(drop_path_rate=0.0, **self.context)

    def largest(self) -> ArchConfig:
        return self.space.largest(**self.context)

    def smallest(self) -> ArchConfig:
        return self.space.smallest(**self.context)

    def set_active(self, arch: ArchConfig) -> ArchConfig:
        """Select the member ``arch`` (must belong to the space; its context is taken from the supernet)."""
        arch = self.member(arch)
        self.space.check_member(arch)
        w = arch.widths
        self.stem.conv1.active_out = w[0] // 2
        self.stem.conv2.active_out = w[0]
        for i, (stage, cfg) in enumerate(zip(self.stages, arch.stages)):
            if stage.downsample is not None:
                stage.downsample.conv.active_out = w[i]
                if stage.downsample.attn is not None:
                    stage.downsample.attn.proj.active_out = w[i]
            stage.active_ffn, stage.active_attn = cfg.num_ffn, cfg.num_attn
            for block, (name, t) in zip(cfg.blocks, member_slots(arch)[i]):
                slot: Block = getattr(stage, name)[t]
                slot.mlp.fc1.active_out = w[i] * block.expansion
                slot.mlp.fc2.active_out = w[i]
                if slot.token_mixer is not None:
                    slot.token_mixer.proj.active_out = w[i]
                slot.set_options(**block.option_values())
        self.active_arch = arch
        return arch

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self.classify(self.forward_stages(x))

    def forward_stages(self, x: torch.Tensor, start: int = 0, keep: Optional[list[torch.Tensor]] = None) -> torch.Tensor:
        """The stem (if ``start == 0``) and stages ``start..`` of the active member; ``keep`` collects
        each stage's input (for evaluating members that differ only from a later stage on)."""
        if start == 0:
            x = self.stem(x)
        for stage in self.stages[start:]:
            if keep is not None:
                keep.append(x)
            x = stage(x)
        return x

    def forward_range(self, x: torch.Tensor, start: int, stop: int, keep: Optional[dict[int, torch.Tensor]] = None) -> torch.Tensor:
        """From level ``start`` to level ``stop`` of the active member, where level -1 is the image, level
        ``i`` (0-3) the input of stage ``i`` and level 4 the last stage's output; ``keep`` collects the
        stage inputs passed on the way (``{level: tensor}``)."""
        if start < 0:
            x = self.stem(x)
            start = 0
        for i in range(start, stop):
            if keep is not None:
                keep[i] = x
            x = self.stages[i](x)
        return x

    def classify(self, features: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Norm, pooling and head(s) of the last stage's features."""
        return classify(features, self.norm, self.head, self.head_dist, self.training)

    def bn_scope(self, start: int = 0) -> nn.Module:
        """The modules :meth:`forward_stages` from ``start`` (and the head norm) run: what a member
        that differs from ``start`` on must recalibrate."""
        parts = ([self.stem] if start == 0 else []) + list(self.stages[start:]) + [self.norm]
        scope = nn.ModuleList(parts)
        scope.training = self.training  # a new container defaults to training; keep the supernet's mode
        return scope

    # ------------------------------------------------------------------ twins
    @torch.no_grad()
    def extract(self, arch: Optional[ArchConfig] = None) -> EfficientFormerV2:
        """A static ``build_model(arch)`` holding copies of the member's weight slices (default: active)."""
        arch = self.member(arch or self.active_arch)
        self.space.check_member(arch)
        model = skeleton(arch).to_empty(device="cpu")  # every tensor is filled below: no random initialisation
        slots = member_slots(arch)
        full = self.state_dict()
        state = {k: prefix(full[supernet_key(k, slots)], v.shape).clone() for k, v in model.state_dict().items()}
        model.load_state_dict(state, strict=True)
        own = dict(self.named_buffers())  # the index tables (not in a state dict): the member's are the supernet's
        for name, buf in model.named_buffers():
            if name not in state:
                buf.copy_(own[supernet_key(name, slots)])
        return model.train(self.training)

    @torch.no_grad()
    def load_member(
        self, arch: ArchConfig, state_dict: Mapping[str, torch.Tensor], skip_prefixes: tuple[str, ...] = ()
    ) -> None:
        """Write a member's weights (our layout, e.g. a converted release checkpoint) into its slices.

        Keys starting with ``skip_prefixes`` (e.g. a 1000-class head) are neither expected nor loaded;
        anything else missing, unexpected or mis-shaped raises CheckpointError.
        """
        arch = self.member(arch)
        self.space.check_member(arch)
        expected = {k: v for k, v in skeleton(arch).state_dict().items() if not k.startswith(skip_prefixes or ("\0",))}
        check_keys(expected, state_dict, f"weights do not fit member {arch.summary()}")
        slots = member_slots(arch)
        full = self.state_dict()
        for key, value in state_dict.items():
            prefix(full[supernet_key(key, slots)], value.shape).copy_(value)

    def recalibrate_bn(self, arch: ArchConfig, batches: Iterable[torch.Tensor], n_batches: int) -> int:
        """Activate ``arch`` and re-estimate its BN statistics (its slices only)."""
        self.set_active(arch)
        return recalibrate_bn(self, batches, n_batches)

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike, **extra: Any) -> Path:
        """Write weights, space and context (atomically); :meth:`load` restores the supernet."""
        payload = {
            "format": SUPERNET_FORMAT,
            "space": self.space.to_dict(),
            "context": dict(self.context),
            "drop_path_rate": self.drop_path_rate,
            "state_dict": self.state_dict(),
            **extra,
        }
        return atomic_torch_save(payload, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Supernet":
        """A supernet saved by :meth:`save` (a file, or a training run directory holding supernet.pt)."""
        p = Path(path)
        if p.is_dir():
            p = p / "supernet.pt"
        if not p.is_file():
            raise CheckpointError(f"{p}: supernet file not found (train one with eformer-train)")
        payload = safe_torch_load(p, CheckpointError, "supernet")
        if not isinstance(payload, dict) or payload.get("format") != SUPERNET_FORMAT:
            raise CheckpointError(f"{p}: not a supernet file (expected format {SUPERNET_FORMAT})")
        missing = [k for k in ("space", "context", "drop_path_rate", "state_dict") if k not in payload]
        if missing:
            raise CheckpointError(f"{p}: supernet file lacks {', '.join(missing)} (retrain it with eformer-train)")
        try:
            space = SearchSpace.from_dict(payload["space"], "its space")
        except SpaceError as err:
            raise CheckpointError(f"{p}: was made for a space this version cannot read ({err}); retrain it with "
                                  "eformer-train") from None
        net = cls(space, drop_path_rate=payload["drop_path_rate"], **payload["context"])
        try:
            net.load_state_dict(payload["state_dict"], strict=True)
        except (RuntimeError, TypeError, AttributeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(f"{p}: its weights do not fit its space ({first}); retrain it with eformer-train") from None
        net.train_config = payload.get("train_config")  # the eformer-train settings (data, ...) if recorded
        net.source_path = p
        return net.eval()
