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
from typing import Callable, Mapping, Sequence


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How one latency is measured: ``warmup`` untimed calls, then ``repeats`` samples of ``number`` calls.

    ``cache="cold"`` flushes the CPU caches before every timed call (and re-touches the input): a
    piece inside a network finds its weights evicted by the rest of the network, which a piece
    timed alone in a loop does not (see experiments/results/lut_default.md).
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
    """Evicts the CPU caches by writing a buffer larger than the cache (see :func:`default_flush_bytes`)."""

    def __init__(self, flush_mb: int = 0) -> None:
        import numpy as np

        size = flush_mb * 2**20 if flush_mb else default_flush_bytes(last_level_cache_bytes())
        self.buffer = np.zeros(size // 4, dtype=np.float32)

    def __call__(self) -> None:
        self.buffer += 1.0


def time_cold(fn: Callable[[], object], flush: Callable[[], None], touch: Callable[[], object], number: int = 1) -> float:
    """Milliseconds per call of ``fn``, each call after a cache flush and a re-read of its input."""
    total = 0.0
    for _ in range(number):
        flush()
        touch()
        start = time.perf_counter()
        fn()
        total += time.perf_counter() - start
    return total * 1e3 / number


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
) -> dict[str, Stats]:
    """Collect ``protocol.repeats`` samples (ms) from each sampler round-robin, in a freshly shuffled
    order every round, after running each warm-up; drift and "who runs after whom" effects are shared."""
    for warm in warmups.values():
        warm()
    samples: dict[str, list[float]] = {k: [] for k in samplers}
    order = list(samplers)
    rng = random.Random(seed)
    for _ in range(protocol.repeats):
        rng.shuffle(order)
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
