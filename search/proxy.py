"""Accuracy proxies for candidate architectures.

* :class:`SupernetProxy` - top-1 of the supernet member on the held-out split after BN
  recalibration on the calibration split (identical to ``supernet.evaluation.evaluate_member``),
  cached by architecture hash in a JSONL file shared by processes, and evaluated incrementally:
  a candidate that differs from a reference member only from stage ``s`` on reuses the reference's
  stage-``s`` inputs and recalibrates and runs only stages ``s..4`` (exact: the earlier stages and
  their statistics are the same).
* :class:`AnalyticProxy` - a cheap, monotone stand-in (from MACs) to benchmark the search machinery.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from supernet.arch import ArchConfig
from supernet.blocks import classify
from supernet.elastic import Supernet
from supernet.signatures import count_macs
from search.params import arch_hash


class AnalyticProxy:
    """``top1 = 100 - 40 / sqrt(MMACs)``: monotone in compute, microseconds per call (benchmarks only)."""

    name = "analytic"

    def __init__(self) -> None:
        self.evaluations = 0

    def __call__(self, arch: ArchConfig) -> dict[str, float]:
        self.evaluations += 1
        return {"top1": 100.0 - 40.0 / math.sqrt(count_macs(arch) / 1e6), "loss": float("nan")}

    def cached(self, arch: ArchConfig) -> None:
        """Nothing is cached (a call costs microseconds)."""

    def reference(self, arch: ArchConfig) -> None:
        """Incremental evaluation does not apply."""


class SupernetProxy:
    """Supernet-member accuracy with BN recalibration, caching and incremental evaluation."""

    name = "supernet"

    def __init__(self, supernet: Supernet, calib: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
                 cache_path: Optional[str | os.PathLike] = None, cache_key: str = "") -> None:
        self.net = supernet.eval()
        self.calib, self.val_x, self.val_y = calib, val_x, val_y
        self.cache_path = Path(cache_path) if cache_path else None
        self.cache_key = cache_key
        self.cache: dict[str, dict[str, float]] = {}
        self.evaluations = 0
        self._ref: Optional[tuple[ArchConfig, list[torch.Tensor], list[torch.Tensor]]] = None
        self._load_cache()

    @classmethod
    def from_data(cls, supernet: Supernet, data, calib_images: int, val_images: Optional[int],
                  cache_path=None, cache_key: str = "") -> "SupernetProxy":
        calib = torch.cat([x for x, _ in data.eval_loader("calib", 256, limit=calib_images)])
        val = list(data.eval_loader("val", 256, limit=val_images))
        return cls(supernet, calib, torch.cat([x for x, _ in val]), torch.cat([y for _, y in val]), cache_path, cache_key)

    # ------------------------------------------------------------------ cache
    def _load_cache(self) -> None:
        if self.cache_path is None or not self.cache_path.is_file():
            return
        for line in self.cache_path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn line from a killed writer
            if row.get("key") == self.cache_key:
                self.cache[row["arch_hash"]] = {"top1": row["top1"], "loss": row["loss"]}

    def _store(self, h: str, res: dict[str, float]) -> None:
        self.cache[h] = res
        if self.cache_path is not None:
            line = json.dumps({"key": self.cache_key, "arch_hash": h, **res}) + "\n"
            with open(self.cache_path, "a", encoding="utf-8") as fh:  # one short append: atomic on POSIX
                fh.write(line)

    def cached(self, arch: ArchConfig) -> Optional[dict[str, float]]:
        return self.cache.get(arch_hash(arch))

    # ------------------------------------------------------------------ evaluation
    def _bns(self, start: int) -> list[nn.BatchNorm2d]:
        mods: list[nn.Module] = [self.net.norm] + list(self.net.stages[start:])
        if start == 0:
            mods.append(self.net.stem)
        return [m for mod in mods for m in mod.modules() if isinstance(m, nn.BatchNorm2d)]

    @torch.no_grad()
    def _run(self, arch: ArchConfig, start: int, calib_in: torch.Tensor, val_in: torch.Tensor,
             keep: bool) -> tuple[dict[str, float], list[torch.Tensor], list[torch.Tensor]]:
        """Recalibrate the BNs from ``start`` on with the calibration inputs, then evaluate; optionally
        keep the per-stage inputs of both passes (for a reference member)."""
        net = self.net
        net.set_active(arch)
        bns = self._bns(start)
        for bn in bns:
            bn.momentum, bn.training = None, True
            bn.num_batches_tracked.zero_()
        calib_ins, val_ins = [], []
        x = net.stem(calib_in) if start == 0 else calib_in
        for i in range(start, 4):
            if keep:
                calib_ins.append(x)
            x = net.stages[i](x)
        net.norm(x)
        for bn in bns:
            bn.momentum, bn.training = 0.1, False
        x = net.stem(val_in) if start == 0 else val_in
        for i in range(start, 4):
            if keep:
                val_ins.append(x)
            x = net.stages[i](x)
        logits = classify(x, net.norm, net.head, net.head_dist, False)
        self.evaluations += 1
        res = {"top1": 100.0 * float((logits.argmax(1) == self.val_y).float().mean()),
               "loss": float(F.cross_entropy(logits, self.val_y))}
        return res, calib_ins, val_ins

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
        """Top-1 (%) and loss of ``arch`` (cached; incremental when a reference shares its first stages)."""
        arch = self.net.member(arch)
        h = arch_hash(arch)
        if h in self.cache:
            return self.cache[h]
        start, calib_in, val_in = 0, self.calib, self.val_x
        if self._ref is not None:
            ref, c, v = self._ref
            start = next((i for i in range(4) if arch.stages[i] != ref.stages[i]), 4)
            if start == 4:
                start = 3
            if start > 0:
                calib_in, val_in = c[start], v[start]
        res, _, _ = self._run(arch, start, calib_in, val_in, keep=False)
        self._store(h, res)
        return res

