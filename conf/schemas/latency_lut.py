"""Schemas of latency_lut's settings: the LUT protocol, validation and check, and the device backends."""
from __future__ import annotations

import dataclasses
from typing import List, Optional

from omegaconf import MISSING

from conf.schemas.fields import setting
from conf.schemas.vocabularies import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET


@dataclasses.dataclass
class ProtocolSchema:
    warmup: int = setting(5, ge=0)
    repeats: int = setting(20, ge=1)
    number: int = setting(1, ge=1)
    cache: str = setting("warm", choices=("warm", "cold"))
    flush_mb: int = setting(0, ge=0)


@dataclasses.dataclass
class LutValidateSchema:
    members: int = setting(60, ge=4)
    seed: int = 0
    fit_fraction: float = setting(0.5, gt=0.0, le=0.9)
    protocol: ProtocolSchema = dataclasses.field(default_factory=ProtocolSchema)
    report_dir: Optional[str] = None
    passes: int = setting(2, ge=1, le=2)


@dataclasses.dataclass
class LutCheckSchema:
    members: int = setting(6, ge=2)
    seed: int = 1
    tolerance: float = setting(0.10, gt=0.0, le=1.0)
    required_share: float = setting(0.8, gt=0.0, le=1.0)
    protocol: ProtocolSchema = dataclasses.field(default_factory=ProtocolSchema)


@dataclasses.dataclass
class LutSchema:
    protocol: ProtocolSchema = dataclasses.field(default_factory=ProtocolSchema)
    statistic: str = setting("q25", choices=("q25", "median"))
    interleave: int = setting(16, ge=1)
    progress: bool = True
    limit: Optional[int] = setting(None, ge=1)
    validate: LutValidateSchema = dataclasses.field(default_factory=LutValidateSchema)
    check: LutCheckSchema = dataclasses.field(default_factory=LutCheckSchema)


@dataclasses.dataclass
class DeviceSchema:
    """What every device backend's config has; each backend's schema extends it (latency_lut/backends.py)."""
    name: str = MISSING
    backend: str = MISSING
    threads: int = setting(2, ge=1)


@dataclasses.dataclass
class OrtDeviceSchema(DeviceSchema):
    name: str = "ort-cpu"
    backend: str = setting("ort", choices=("ort",))
    providers: List[str] = setting(["CPUExecutionProvider"])
    threads: int = setting(2, ge=1)
    inter_op_threads: int = setting(1, ge=1)
    graph_optimization: str = setting("all", choices=("disable", "basic", "extended", "all"))
    allow_spinning: bool = False
    opset: int = setting(DEFAULT_OPSET, ge=MIN_OPSET, le=MAX_OPSET)


@dataclasses.dataclass
class TorchDeviceSchema(DeviceSchema):
    name: str = "torch-cpu"
    backend: str = setting("torch", choices=("torch",))
    threads: int = setting(2, ge=1)
    deploy: bool = True


@dataclasses.dataclass
class CommandDeviceSchema(DeviceSchema):
    name: str = "subprocess-ort"
    backend: str = setting("command", choices=("command",))
    command: Optional[str] = None        # the template inline (Hydra quoting: "device.command='... {onnx} ...'")
    command_file: Optional[str] = None   # or a file holding the template (no shell or Hydra quoting needed)
    regex: str = r"median_ms=([0-9.]+)"
    timeout_s: float = setting(300.0, gt=0.0)
    threads: int = setting(2, ge=1)
    opset: int = setting(DEFAULT_OPSET, ge=MIN_OPSET, le=MAX_OPSET)

