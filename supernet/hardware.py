"""What this CPU reports about itself (/proc/cpuinfo), shared by training (native bf16 detection)
and the LUT's machine identity."""
from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def cpuinfo() -> dict[str, str]:
    """The first processor's /proc/cpuinfo fields (empty where it cannot be read)."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if ":" in line:
                    key, _, value = line.partition(":")
                    info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def cpu_flags() -> set[str]:
    """The CPU feature flags (``avx512_bf16``, ``amx_bf16``, ...)."""
    return set(cpuinfo().get("flags", "").split())
