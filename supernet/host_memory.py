"""Host memory reuse for the processes that run networks (training, the search's proxy, validate-proxy).

glibc's malloc gives allocations above its mmap threshold (128 KiB at first, then adjusted up to the largest
block freed so far) fresh pages from the kernel, and trims freed memory at the heap's top, so a forward pass
whose activations are a few MiB each faults in and zeroes new pages batch after batch: hundreds of thousands
of minor page faults and about half a second of system time per whole-split proxy evaluation of the largest
member at 32 px. Serving blocks below 32 MiB from the heap and keeping up to 128 MiB of freed heap mapped
lets each batch reuse the last one's pages (``experiments/results/bench_scoring.md`` counts the faults and
times the evaluations; a few tens of MB more resident memory). Results are bit-identical: only where memory
comes from changes.

Only glibc has ``mallopt``; elsewhere (musl, macOS) and where the user tuned malloc through its environment
variables, nothing is changed.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed on 64-bit (4 MiB * sizeof(long))
TRIM_THRESHOLD = 128 << 20
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")


def reuse_freed_memory() -> bool:
    """Keep freed activation memory for the next batch (glibc only; idempotent). Returns whether it applied."""
    if any(name in os.environ for name in USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
    except (OSError, TypeError):  # no C library to load
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # not glibc: its mallopt takes other parameters, if any
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
