"""Training precision: ``train.precision=fp32|bf16|fp16``.

* ``bf16`` autocasts on CPUs with native bfloat16 arithmetic (AVX512-BF16 or AMX-BF16, read from
  /proc/cpuinfo) and on CUDA GPUs that support it; elsewhere it is refused, never emulated (emulated
  bf16 is slower than fp32).
* ``fp16`` is CUDA automatic mixed precision with a gradient scaler.
* ``fp32`` runs without autocast.

Weights, optimizer state and BN statistics stay fp32 in every mode.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterator, Optional

import torch

from supernet.errors import UserError
from supernet.hardware import cpu_flags

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16)."""
    return bool(cpu_flags() & set(NATIVE_BF16_FLAGS))


@dataclasses.dataclass(frozen=True)
class Precision:
    """A resolved precision: ``name``, the autocast ``dtype`` (None: fp32) and the device type."""

    name: str
    device_type: str
    dtype: Optional[torch.dtype]

    @property
    def uses_scaler(self) -> bool:
        return self.name == "fp16"

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Autocast for the forward passes (nothing in fp32)."""
        if self.dtype is None:
            yield
        else:
            with torch.autocast(self.device_type, dtype=self.dtype):
                yield

    def grad_scaler(self) -> Optional["torch.amp.GradScaler"]:
        return torch.amp.GradScaler(self.device_type) if self.uses_scaler else None


def resolve_precision(name: str, device: torch.device, native_bf16: Optional[bool] = None,
                      key: str = "train.precision") -> Precision:
    """Check ``name`` against the device; unsupported combinations are user errors naming the field ``key``.

    ``native_bf16`` overrides the CPU detection (default: :func:`cpu_has_native_bf16`)."""
    if name not in PRECISIONS:
        raise UserError(f"{key}: {name!r} is not one of {', '.join(PRECISIONS)}")
    if name == "fp32":
        return Precision(name, device.type, None)
    if device.type == "cuda":
        if name == "bf16" and not torch.cuda.is_bf16_supported():
            raise UserError(f"{key}: bf16 is not supported by this GPU; use fp16 or fp32")
        return Precision(name, "cuda", _DTYPES[name])
    if name == "fp16":
        raise UserError(f"{key}: fp16 is for CUDA GPUs (this run is on the CPU); use bf16 or fp32")
    if not (cpu_has_native_bf16() if native_bf16 is None else native_bf16):
        raise UserError(f"{key}: bf16 needs a CPU with native bfloat16 (AVX512-BF16 or AMX); "
                        "this CPU has neither (emulation would be slower than fp32); use fp32")
    return Precision(name, "cpu", torch.bfloat16)
