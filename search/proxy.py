"""Accuracy proxies for candidate architectures, behind one interface (:class:`AccuracyProxy`).

* :class:`SupernetProxy` - the supernet member scored on the whole held-out split after BN
  recalibration on the calibration split (the same computation as
  ``supernet.evaluation.evaluate_member`` with one calibration batch). Each score carries a
  continuous companion - the validation cross-entropy - and the bootstrap standard deviation of
  both over the validation images, so a search can tell a real difference from noise. Scores are
  cached by architecture hash in a JSONL file shared by processes, and evaluated incrementally: a
  candidate that differs from a reference member only from stage ``s`` on reuses the reference's
  stage-``s`` inputs and recalibrates and runs only stages ``s..4`` (exact: the earlier stages and
  their statistics are the same).
* :class:`AnalyticProxy` - a cheap, monotone stand-in (from MACs) to benchmark the search machinery.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Optional, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from search.params import arch_hash
from supernet.arch import ArchConfig
from supernet.bn_calibration import recalibrate_bn
from supernet.elastic import Supernet
from supernet.signatures import count_macs

SCORE_KEYS = ("top1", "loss", "top1_std", "loss_std")
BOOTSTRAP = 200  # resamples of the validation images for the score's noise


@runtime_checkable
class AccuracyProxy(Protocol):
    """What a search needs from an accuracy estimate."""

    name: str
    evaluations: int

    def __call__(self, arch: ArchConfig) -> dict[str, float]:
        """``top1`` (%), ``loss`` (lower is better) and their noise ``top1_std`` / ``loss_std``."""

    def cached(self, arch: ArchConfig) -> Optional[dict[str, float]]:
        """The stored score of ``arch``, or None when it would have to be computed."""

    def reference(self, arch: ArchConfig) -> Optional[dict[str, float]]:
        """Score ``arch`` and make it the base of incremental evaluation of its neighbours (if supported)."""


class AnalyticProxy:
    """``top1 = 100 - 40 / sqrt(MMACs)``: monotone in compute, microseconds per call (benchmarks only)."""

    name = "analytic"

    def __init__(self) -> None:
        self.evaluations = 0

    def __call__(self, arch: ArchConfig) -> dict[str, float]:
        self.evaluations += 1
        top1 = 100.0 - 40.0 / math.sqrt(count_macs(arch) / 1e6)
        return {"top1": top1, "loss": (100.0 - top1) / 100.0, "top1_std": 0.0, "loss_std": 0.0}

    def cached(self, arch: ArchConfig) -> None:
        """Nothing is cached (a call costs microseconds)."""

    def reference(self, arch: ArchConfig) -> None:
        """Incremental evaluation does not apply."""


def bootstrap_std(values: torch.Tensor, resamples: int = BOOTSTRAP, seed: int = 0) -> float:
    """Standard deviation of the mean of ``values`` over ``resamples`` bootstrap resamples (seeded)."""
    n = len(values)
    idx = torch.randint(0, n, (resamples, n), generator=torch.Generator().manual_seed(seed))
    return float(values.double()[idx].mean(1).std())


def score_logits(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Top-1 (%), mean cross-entropy and their bootstrap standard deviations."""
    correct = (logits.argmax(1) == labels).double() * 100.0
    losses = F.cross_entropy(logits.float(), labels, reduction="none")
    return {"top1": float(correct.mean()), "loss": float(losses.double().mean()),
            "top1_std": bootstrap_std(correct), "loss_std": bootstrap_std(losses)}


class SupernetProxy:
    """Supernet-member score with BN recalibration, caching and incremental evaluation."""

    name = "supernet"

    def __init__(self, supernet: Supernet, calib: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
                 cache_path: Optional[str | os.PathLike] = None, cache_key: str = "") -> None:
        self.net = supernet.eval()
        # channels-last: oneDNN's 1x1 and depthwise convs on these small maps run 1.5-3x faster in it (same results)
        self.calib = calib.contiguous(memory_format=torch.channels_last)
        self.val_x = val_x.contiguous(memory_format=torch.channels_last)
        self.val_y = val_y
        self.cache_path = Path(cache_path) if cache_path else None
        self.cache_key = cache_key
        self.cache: dict[str, dict[str, float]] = {}
        self.evaluations = 0
        self._ref: Optional[tuple[ArchConfig, list[torch.Tensor], list[torch.Tensor]]] = None
        self._load_cache()

    @classmethod
    def from_data(cls, supernet: Supernet, data, calib_images: Optional[int] = None, val_images: Optional[int] = None,
                  cache_path=None, cache_key: str = "") -> "SupernetProxy":
        """Calibration and validation tensors from a :class:`supernet.data.Data` (None: the whole split)."""
        calib = torch.cat([x for x, _ in data.eval_loader("calib", 256, limit=calib_images)])
        val = list(data.eval_loader("val", 256, limit=val_images))
        return cls(supernet, calib, torch.cat([x for x, _ in val]), torch.cat([y for _, y in val]), cache_path, cache_key)

    # ------------------------------------------------------------------ cache
    def _load_cache(self) -> None:
        if self.cache_path is None or not self.cache_path.is_file():
            return
        for line in self.cache_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
                if row.get("key") == self.cache_key:
                    self.cache[str(row["arch_hash"])] = {k: float(row[k]) for k in SCORE_KEYS}
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                continue  # a torn line from a killed writer, or an older format

    def _store(self, h: str, res: dict[str, float]) -> None:
        self.cache[h] = res
        if self.cache_path is not None:
            line = json.dumps({"key": self.cache_key, "arch_hash": h, **res}) + "\n"
            with open(self.cache_path, "a", encoding="utf-8") as fh:  # one short append: atomic on POSIX
                fh.write(line)

    def cached(self, arch: ArchConfig) -> Optional[dict[str, float]]:
        return self.cache.get(arch_hash(self.net.member(arch)))

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def _run(self, arch: ArchConfig, start: int, calib_in: torch.Tensor, val_in: torch.Tensor,
             keep: bool) -> tuple[dict[str, float], list[torch.Tensor], list[torch.Tensor]]:
        """Recalibrate the BNs from stage ``start`` on with the calibration inputs (one batch), then score
        the validation inputs; optionally keep the per-stage inputs of both passes (for a reference)."""
        net = self.net
        net.set_active(arch)
        calib_ins: list[torch.Tensor] = []
        val_ins: list[torch.Tensor] = []
        recalibrate_bn(net.bn_scope(start), [calib_in], 1,
                       run=lambda x: net.norm(net.forward_stages(x, start, calib_ins if keep else None)))
        logits = net.classify(net.forward_stages(val_in, start, val_ins if keep else None))
        self.evaluations += 1
        return score_logits(logits, self.val_y), calib_ins, val_ins

    def reference(self, arch: ArchConfig) -> dict[str, float]:
        """Evaluate ``arch`` fully and keep its stage inputs for incremental evaluation of its neighbours."""
        arch = self.net.member(arch)
        res, c, v = self._run(arch, 0, self.calib, self.val_x, keep=True)
        self._ref = (arch, c, v)
        h = arch_hash(arch)
        if h not in self.cache:
            self._store(h, res)
        return self.cache[h]

    def __call__(self, arch: ArchConfig) -> dict[str, float]:
        """Score of ``arch`` (cached; incremental when the reference shares its first stages)."""
        arch = self.net.member(arch)
        h = arch_hash(arch)
        if h in self.cache:
            return self.cache[h]
        start, calib_in, val_in = 0, self.calib, self.val_x
        if self._ref is not None:
            ref, c, v = self._ref
            n = len(arch.stages)
            start = next((i for i in range(n) if arch.stages[i] != ref.stages[i]), n - 1)
            if start > 0:
                calib_in, val_in = c[start], v[start]
        res, _, _ = self._run(arch, start, calib_in, val_in, keep=False)
        self._store(h, res)
        return res
