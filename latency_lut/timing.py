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
    """How one latency is measured: ``warmup`` untimed calls, then ``repeats`` samples of ``number`` calls."""

    warmup: int = 5
    repeats: int = 20
    number: int = 1

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.repeats < 1 or self.number < 1:
            raise ValueError(f"protocol: need warmup >= 0, repeats >= 1, number >= 1 (got {self})")


@dataclasses.dataclass(frozen=True)
class Stats:
    """Summary of timing samples in milliseconds."""

    median_ms: float
    iqr_ms: float
    cv: float
    min_ms: float
    n: int

    @classmethod
    def of(cls, samples_ms: Sequence[float]) -> "Stats":
        s = sorted(samples_ms)
        n = len(s)
        med = statistics.median(s)
        if n >= 4:
            q = statistics.quantiles(s, n=4)
            iqr = q[2] - q[0]
        else:
            iqr = s[-1] - s[0]
        mean = statistics.fmean(s)
        cv = statistics.pstdev(s) / mean if mean > 0 else 0.0
        return cls(med, iqr, cv, s[0], n)


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
