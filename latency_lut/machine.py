"""What machine and runtimes a measurement was taken on (recorded with every LUT and benchmark)."""
from __future__ import annotations

import os
import platform
from typing import Optional

from latency_lut.backends import BACKEND_CLASSES, HOST_KEYS
from latency_lut.timing import last_level_cache_bytes
from supernet.hardware import cpuinfo


def cpu_model() -> str:
    """CPU model name (e.g. 'AMD EPYC'), falling back to the platform processor string."""
    return cpuinfo().get("model name") or platform.processor() or platform.machine()


def peak_gflops(threads: int) -> tuple[Optional[float], str]:
    """Estimated FP32 peak of ``threads`` cores and how it was estimated (None if unknown).

    peak = threads x clock x 2 (FMA) x SIMD lanes (16 with AVX-512, 8 with AVX2) x 2 FMA units.
    """
    info = cpuinfo()
    flags = info.get("flags", "").split()
    try:
        mhz = float(info.get("cpu MHz", "0"))
    except ValueError:
        mhz = 0.0
    if not mhz or "fma" not in flags:
        return None, "unknown (no clock or FMA flag in /proc/cpuinfo)"
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    peak = threads * mhz / 1e3 * 2 * lanes * 2
    return peak, f"{threads} cores x {mhz / 1e3:.2f} GHz x 2 (FMA) x {lanes} FP32 lanes x 2 FMA units"


def runtime_versions() -> dict[str, str]:
    """Versions of the runtimes that affect measured latency."""
    import onnx
    import onnxruntime
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__,
    }


def machine_summary() -> dict[str, object]:
    """CPU model, logical CPU count, reported last-level cache, OS and runtime versions."""
    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "llc_bytes": last_level_cache_bytes(),
        "os": f"{platform.system()} {platform.release()}",
        **runtime_versions(),
    }


def identity_differences(recorded: dict[str, object], backend: str) -> list[str]:
    """How this machine differs from the one a LUT was ``recorded`` on ("cpu: A != B", ...), in the identity keys
    its ``backend`` declares (:attr:`latency_lut.backends.Backend.identity_keys`; a backend this version does not
    know: the host CPU's). A LUT timed through a shell command (a phone) declares none. Keys the LUT did not
    record (older LUTs) are skipped."""
    cls = BACKEND_CLASSES.get(backend)
    keys = cls.identity_keys if cls is not None else HOST_KEYS
    if not keys:
        return []
    here = machine_summary()
    return [f"{k} {recorded[k]} (here {here.get(k)})" for k in keys if k in recorded and recorded[k] != here.get(k)]
