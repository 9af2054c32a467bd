"""Measurement protocol: warm-up, repeated timed runs, median and spread; interleaving for fair comparisons.

On a shared machine, timings drift by tens of percent between runs. Two rules keep comparisons
honest: take medians over many repeats, and interleave the candidates (round-robin) so drift hits
them alike.
"""
from __future__ import annotations

import dataclasses
import random
import statistics
import time
from typing import Callable, Mapping, Optional, Sequence


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How one latency is measured: ``warmup`` untimed calls, then ``repeats`` samples of ``number`` calls.

    ``cache="cold"``: the CPU caches are flushed once per round of interleaved samples, before any piece
    of the round runs, and each piece re-reads its input just before its timed call. Every piece therefore
    finds its own weights evicted (nothing touched them since the flush), as a piece inside a network does
    after the rest of the network ran, while the flush costs one buffer write per round instead of one per
    sample (``experiments/results/lut_ablation.md`` compares both). With ``number > 1`` only the first call
    of a sample is cold.
    """

    warmup: int = 5
    repeats: int = 20
    number: int = 1
    cache: str = "warm"
    flush_mb: int = 0  # 0: three times the last-level cache, bounded to [64, 96] MiB (see CacheFlusher)

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.repeats < 1 or self.number < 1:
            raise ValueError(f"protocol: need warmup >= 0, repeats >= 1, number >= 1 (got {self})")
        if self.cache not in ("warm", "cold"):
            raise ValueError(f"protocol.cache: {self.cache!r} is not 'warm' or 'cold'")


@dataclasses.dataclass(frozen=True)
class Stats:
    """Summary of timing samples in milliseconds."""

    median_ms: float
    iqr_ms: float
    cv: float
    min_ms: float
    n: int
    q25_ms: float = 0.0

    def value(self, statistic: str = "median") -> float:
        """The summary a LUT uses: ``median`` or ``q25`` (lower quartile, steadier on shared machines)."""
        return {"median": self.median_ms, "q25": self.q25_ms}[statistic]

    @classmethod
    def of(cls, samples_ms: Sequence[float]) -> "Stats":
        s = sorted(samples_ms)
        n = len(s)
        med = statistics.median(s)
        if n >= 4:
            q = statistics.quantiles(s, n=4, method="inclusive")
            q25, iqr = q[0], q[2] - q[0]
        else:
            q25, iqr = s[0], s[-1] - s[0]
        mean = statistics.fmean(s)
        cv = statistics.pstdev(s) / mean if mean > 0 else 0.0
        return cls(med, iqr, cv, s[0], n, q25)


def last_level_cache_bytes() -> int:
    """Size of the largest CPU cache reported by sysfs (0 if unknown)."""
    import glob

    best = 0
    for path in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*/size"):
        try:
            text = open(path).read().strip().upper()
            mult = {"K": 1024, "M": 1024**2}.get(text[-1], 1)
            best = max(best, int(text.rstrip("KM")) * mult)
        except (OSError, ValueError):
            continue
    return best


FLUSH_MIN_BYTES = 64 * 2**20
FLUSH_MAX_BYTES = 96 * 2**20


def default_flush_bytes(llc_bytes: int) -> int:
    """Bytes written per flush: three times the last-level cache, bounded to [64, 96] MiB.

    What it models: between two calls of one piece inside a deployed network, the rest of the network
    streams its weights and activations through the caches (tens of MB for S0-L at 224 px), which
    evicts the piece's own weights. A buffer larger than that working set models nothing more, but
    costs time on VMs whose sysfs reports a whole socket's cache (a 480 MiB L3 seen on 2-core
    Intel VMs would mean 1.4 GB written before every sample): hence the cap.
    """
    return min(max(3 * llc_bytes, FLUSH_MIN_BYTES), FLUSH_MAX_BYTES)


class CacheFlusher:
    """Evicts the CPU caches by writing a buffer larger than the cache (see :func:`default_flush_bytes`).
    One instance per size is kept by :func:`flusher` (the buffer is allocated once)."""

    def __init__(self, flush_mb: int = 0) -> None:
        import numpy as np

        size = flush_mb * 2**20 if flush_mb else default_flush_bytes(last_level_cache_bytes())
        self.buffer = np.zeros(size // 4, dtype=np.float32)

    def __call__(self) -> None:
        self.buffer += 1.0


_FLUSHERS: dict[int, CacheFlusher] = {}


def flusher(flush_mb: int = 0) -> CacheFlusher:
    """The shared flusher of that size (``0``: :func:`default_flush_bytes`)."""
    if flush_mb not in _FLUSHERS:
        _FLUSHERS[flush_mb] = CacheFlusher(flush_mb)
    return _FLUSHERS[flush_mb]


def time_touched(fn: Callable[[], object], touch: Callable[[], object], number: int = 1) -> float:
    """Milliseconds per call of ``fn`` (``number`` back-to-back calls) right after re-reading its input."""
    touch()
    return time_once(fn, number)


def time_once(fn: Callable[[], object], number: int = 1) -> float:
    """Milliseconds per call of ``fn`` averaged over ``number`` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) * 1e3 / number


def measure(fn: Callable[[], object], protocol: Protocol = Protocol()) -> Stats:
    """Time one callable under ``protocol``."""
    for _ in range(protocol.warmup):
        fn()
    return Stats.of([time_once(fn, protocol.number) for _ in range(protocol.repeats)])


def measure_samplers(
    samplers: Mapping[str, Callable[[], float]],
    warmups: Mapping[str, Callable[[], object]],
    protocol: Protocol = Protocol(),
    seed: int = 0,
    before_round: Optional[Callable[[], object]] = None,
) -> dict[str, Stats]:
    """Collect ``protocol.repeats`` samples (ms) from each sampler round-robin, in a freshly shuffled
    order every round, after running each warm-up; drift and "who runs after whom" effects are shared.
    ``before_round`` runs at the start of every round (the cache flush of the cold protocol)."""
    for warm in warmups.values():
        warm()
    samples: dict[str, list[float]] = {k: [] for k in samplers}
    order = list(samplers)
    rng = random.Random(seed)
    for _ in range(protocol.repeats):
        rng.shuffle(order)
        if before_round is not None:
            before_round()
        for key in order:
            samples[key].append(samplers[key]())
    return {k: Stats.of(v) for k, v in samples.items()}


def measure_interleaved(
    fns: Mapping[str, Callable[[], object]], protocol: Protocol = Protocol(), seed: int = 0
) -> dict[str, Stats]:
    """Time several callables interleaved (see :func:`measure_samplers`)."""

    def warm(fn: Callable[[], object]) -> Callable[[], None]:
        return lambda: [fn() for _ in range(protocol.warmup)]

    return measure_samplers(
        {k: (lambda f=fn: time_once(f, protocol.number)) for k, fn in fns.items()},
        {k: warm(fn) for k, fn in fns.items()},
        protocol,
        seed,
    )
