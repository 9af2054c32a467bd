"""Schemas of supernet's settings: the data, training and fine-tuning."""
from __future__ import annotations

import dataclasses
from typing import List, Optional

from omegaconf import MISSING

from conf.schemas.fields import group_options, setting


@dataclasses.dataclass
class DataSchema:
    name: str = setting("fashion", choices=group_options("data"))  # each has its entry in supernet/data/registry.py
    root: Optional[str] = None
    image_size: int = setting(32, ge=32, le=2048, multiple_of=32)
    mean: List[float] = setting([0.5, 0.5, 0.5])
    std: List[float] = setting([0.5, 0.5, 0.5])
    train_scale: List[float] = setting([0.08, 1.0])
    train_ratio: List[float] = setting([0.75, 1.3333333])
    hflip: float = setting(0.5, ge=0.0, le=1.0)
    crop_pct: float = setting(0.875, gt=0.0, le=1.0)
    calib_size: int = setting(2000, ge=10)              # BN recalibration needs more than one image per statistic
    holdout: int = setting(0, ge=0)                     # training images held out as the search's val split
    num_workers: Optional[int] = setting(0, ge=0)       # null: as many as the CPUs (decoded images), 0 in memory
    seed: int = 0


@dataclasses.dataclass
class InitFromSchema:
    arch: str = MISSING
    weights: str = MISSING
    source: str = setting("official", choices=("official", "timm", "ours"))
    exclude_head: bool = True


@dataclasses.dataclass
class TrainSchema:
    epochs: int = setting(1, ge=1)
    batch_size: int = setting(128, ge=1)
    eval_batch_size: int = setting(500, ge=1)
    lr: float = setting(2e-3, gt=0.0)
    min_lr: float = setting(1e-5, ge=0.0)
    weight_decay: float = setting(0.05, ge=0.0)
    warmup_steps: int = setting(10, ge=0)
    label_smoothing: float = setting(0.1, ge=0.0, le=0.99)
    grad_clip: float = setting(5.0, gt=0.0)
    num_random: int = setting(2, ge=0)
    kd_temperature: float = setting(1.0, gt=0.0)
    inplace_distillation: bool = True
    distillation: bool = False
    drop_path_rate: float = setting(0.0, ge=0.0, le=0.99)
    layer_scale_init: float = setting(0.1, gt=0.0)
    checkpoint_every: int = setting(10, ge=1)
    bn_calib_batches: int = setting(1, ge=1)
    eval_presets: List[str] = setting(["s0", "s1", "s2", "l"], subset_of=("s0", "s1", "s2", "l"))
    seed: int = 0
    precision: str = setting("fp32", choices=("fp32", "bf16", "fp16"))
    channels_last: bool = True
    fused_optimizer: bool = True
    threads: Optional[int] = setting(None, ge=1)
    progress: bool = True
    init_from: Optional[InitFromSchema] = None


@dataclasses.dataclass
class FinetuneSchema:
    arch: Optional[str] = None
    weights: Optional[str] = None

