"""Accuracy proxies for candidate architectures, behind one interface (:class:`AccuracyProxy`).

* :class:`SupernetProxy` - the supernet member scored on the search's split (the held-out training
  images the supernet recorded, else val) after BN recalibration on the calibration split (the same
  computation as ``supernet.evaluation.evaluate_member``). Both stream from the DataLoader in batches
  on a compute device: scores are accumulated batch by batch, BN statistics are pooled sums over the
  calibration batches (:mod:`supernet.bn_calibration`), and what is kept between evaluations - the
  image batches and a reference member's stage inputs - lives in a :class:`TensorStore` of fixed size
  (``proxy.memory_mb``): what fits is kept, the rest is decoded or recomputed, with the same results.
  Each score carries a continuous companion - the cross-entropy - and the bootstrap standard deviation
  of both over the scored images, so a search can tell a real difference from noise. Scores are cached
  by architecture hash in a JSONL file shared by processes (screenings - a racing search's partial
  per-image scores - in a sidecar file beside it, never among the scores), and evaluated incrementally: a candidate
  that differs from the reference member only from stage ``s`` on reuses the reference's stage-``s``
  inputs (and its statistics of the earlier stages) and recalibrates and runs only stages ``s..4``.
* :class:`AnalyticProxy` - a cheap, monotone stand-in (from MACs) to benchmark the search machinery.
"""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Iterator, Optional, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from search.params import arch_hash
from search.proxy_cache import Screening, append_line, jsonl_rows, screenings_path
from search.proxy_inputs import ImageSplit, TensorStore, choose_images
from supernet.arch import ArchConfig
from supernet.bn_calibration import batch_statistics, recalibrate_bn
from supernet.data import Data
from supernet.elastic import Supernet
from supernet.errors import UserError
from supernet.signatures import count_macs
from supernet.train.precision import Precision

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


def score_values(correct: torch.Tensor, losses: torch.Tensor) -> dict[str, float]:
    """Top-1 (%) and mean cross-entropy from per-image correctness (0/100) and losses, with bootstrap noise."""
    return {"top1": float(correct.mean()), "loss": float(losses.double().mean()),
            "top1_std": bootstrap_std(correct), "loss_std": bootstrap_std(losses)}


def score_logits(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Top-1 (%), mean cross-entropy and their bootstrap standard deviations."""
    correct, losses = per_image(logits, labels)
    return score_values(correct, losses)


def per_image(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image correctness (0 or 100, float64) and cross-entropy, on the CPU."""
    correct = (logits.argmax(1) == labels).double() * 100.0
    losses = F.cross_entropy(logits.float(), labels, reduction="none")
    return correct.cpu(), losses.cpu()


IMAGES = -1  # the level of an image batch; levels 0-3 are the inputs of stages 0-3 (supernet.forward_range)


class SupernetProxy:
    """Supernet-member score with BN recalibration, caching and incremental evaluation, streamed."""

    name = "supernet"
    chain_references = True  # a reference sharing stages with the last one reuses them (False: from the images)

    def __init__(self, supernet: Supernet, calib: ImageSplit, val: ImageSplit, device: torch.device | str = "cpu",
                 memory_bytes: int = 512 << 20, precision: Optional[Precision] = None,
                 cache_path: Optional[str | os.PathLike] = None, cache_key: str = "") -> None:
        self.device = torch.device(device)
        self.net = supernet.to(self.device).eval()
        self.calib, self.val = calib, val
        self.store = TensorStore(memory_bytes)
        self.precision = precision or Precision("fp32", self.device.type, None)
        self.cache_path = Path(cache_path) if cache_path else None
        self.cache_key = cache_key
        self.cache: dict[str, dict[str, float]] = {}
        self.evaluations = 0   # whole-split evaluations
        self.screenings = 0    # partial ones (racing)
        self._screened: dict[tuple[str, int], Screening] = {}
        self._ref: Optional[ArchConfig] = None
        self._pending_ref: Optional[ArchConfig] = None  # a scored reference whose stage inputs are not computed yet
        self._ref_stats: dict[str, torch.Tensor] = {}
        self._weights = self._weights_version()
        self._load_cache()

    @classmethod
    def from_data(cls, supernet: Supernet, data: Data, calib_images: Optional[int] = None, val_images: Optional[int] = None,
                  cache_path=None, cache_key: str = "", device: torch.device | str = "cpu", batch_size: int = 500,
                  memory_mb: float = 512, precision: Optional[Precision] = None, seed: int = 0) -> "SupernetProxy":
        """A proxy over ``data``'s calibration split and search split (held-out training images, else val);
        ``calib_images`` / ``val_images`` take a seeded, class-balanced part (None: the whole split)."""
        device = torch.device(device)
        pin = device.type == "cuda"
        split = data.search_split
        calib = ImageSplit("calib", data, "calib", choose_images(data, "calib", calib_images, seed), batch_size, pin)
        val = ImageSplit("val", data, split, choose_images(data, split, val_images, seed + 1), batch_size, pin)
        size = data.cfg.image_size
        batch_bytes = min(batch_size, max(len(calib.labels), len(val.labels))) * 3 * size * size * 4
        if memory_mb * 2**20 < batch_bytes:
            raise UserError(f"proxy.memory_mb: {memory_mb:g} MB cannot hold one batch of {batch_size} images at {size} px "
                            f"({batch_bytes / 2**20:.0f} MB); raise it or lower proxy.batch_size")
        return cls(supernet, calib, val, device, int(memory_mb * 2**20), precision, cache_path, cache_key)

    # ------------------------------------------------------------------ cache
    def _load_cache(self) -> None:
        """The scores and screenings earlier runs with the same key stored (skipping torn lines and older formats)."""
        for row in jsonl_rows(self.cache_path, self.cache_key):
            try:
                self.cache[str(row["arch_hash"])] = {k: float(row[k]) for k in SCORE_KEYS}
            except (KeyError, TypeError, ValueError):
                continue
        if self.cache_path is None:
            return
        for row in jsonl_rows(screenings_path(self.cache_path), self.cache_key):
            s = Screening.from_row(row)
            if s is not None and 0 < s.batches <= len(self.val) and len(s.losses) == self.screened_images(s.batches):
                self._screened[(str(row["arch_hash"]), s.batches)] = s

    def _store(self, h: str, res: dict[str, float]) -> None:
        self.cache[h] = res
        if self.cache_path is not None:
            append_line(self.cache_path, {"key": self.cache_key, "arch_hash": h, **res})

    def _store_screening(self, h: str, s: Screening) -> None:
        self._screened[(h, s.batches)] = s
        if self.cache_path is not None:
            append_line(screenings_path(self.cache_path), s.to_row(self.cache_key, h))

    def cached(self, arch: ArchConfig) -> Optional[dict[str, float]]:
        self._check_weights()
        return self.cache.get(arch_hash(self.net.member(arch)))

    def _weights_version(self) -> tuple[tuple[int, int], ...]:
        """Storage and version counter of every parameter: ``load_state_dict``, ``load_member`` and any in-place
        write change it (BN statistics are buffers, rewritten by every recalibration, and do not count)."""
        return tuple((p.data_ptr(), p._version) for p in self.net.parameters())

    def _check_weights(self) -> None:
        """Forget what the supernet's old weights gave once they change in place: the scores (memory, and the
        file cache, whose key names the weights of the supernet file) and the reference's stage inputs."""
        now = self._weights_version()
        if now == self._weights:
            return
        self._weights = now
        self.cache.clear()
        self._screened.clear()
        self.cache_path = None
        self._ref, self._ref_stats, self._pending_ref = None, {}, None
        self.store.drop_where(lambda k: k[2] != IMAGES)

    # ------------------------------------------------------------------ inputs
    def _inputs(self, split: ImageSplit, level: int, batches: Optional[int] = None, first: int = 0) -> Iterator[torch.Tensor]:
        """Batches ``first`` to ``batches`` (None: the last) of ``split`` at ``level`` (the reference's stage inputs,
        or the images at ``IMAGES``): kept, or recomputed from the deepest kept level below it, decoding the images
        where none is kept. The plan is fixed before the first batch, so what this pass keeps cannot change it."""
        end = len(split) if batches is None else min(batches, len(split))
        plan = {b: self._base(split, b, level) for b in range(first, end)}
        loaded = split.load([b for b, (_, x) in plan.items() if x is None])
        for b, (start, x) in plan.items():
            if x is None:
                x = next(loaded).to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                self.store.put((split.name, b, IMAGES), x, priority=1)
            yield x if start == level else self.net.forward_range(x, start, level)

    def _base(self, split: ImageSplit, b: int, level: int) -> tuple[int, Optional[torch.Tensor]]:
        """The deepest kept level <= ``level`` of batch ``b`` and its tensor (``IMAGES``, None: decode them)."""
        for lv in range(level, IMAGES, -1):
            x = self.store.get((split.name, b, lv))
            if x is not None:
                return lv, x
        return IMAGES, self.store.get((split.name, b, IMAGES))

    def _keep_levels(self, split: ImageSplit, b: int, levels: dict[int, torch.Tensor]) -> None:
        for lv, t in levels.items():  # deeper stage inputs first: the smallest, and they save the most compute
            if lv > 0:
                self.store.put((split.name, b, lv), t, priority=2 + lv)
        if 0 in levels:
            self.store.put((split.name, b, 0), levels[0], priority=0)

    # ------------------------------------------------------------------ evaluation
    def _bn_state(self) -> dict[str, torch.Tensor]:
        return {n: b.clone() for n, b in self.net.named_buffers() if n.endswith(("running_mean", "running_var"))}

    @torch.no_grad()
    def _run(self, arch: ArchConfig, start: int, keep: bool, batches: Optional[int] = None,
             resume: Optional[Screening] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Recalibrate the BNs from stage ``start`` on over the calibration batches, then run the split's batches
        (the first ``batches`` of them, else all); with ``keep``, keep the stage inputs (levels ``start..3``) of both
        passes for a reference. ``resume``: a screening of ``arch`` to continue (its BN statistics, its batches'
        scores) instead. Returns the per-image correctness (0/100) and losses."""
        net = self.net
        net.set_active(arch)
        level = start if start else IMAGES
        assert resume is None or (resume.bn is not None and not keep)
        with self.precision.autocast():
            if resume is not None:  # the screening's recalibrated statistics
                for name, t in resume.bn.items():
                    net.get_buffer(name).copy_(t)
            else:
                self._recalibrate(start, level, keep)
            net.eval()
            first = resume.batches if resume is not None else 0
            correct = [resume.correct] if resume is not None else []
            losses = [resume.losses] if resume is not None else []
            for b, x in enumerate(self._inputs(self.val, level, batches, first), start=first):
                levels: dict[int, torch.Tensor] = {}
                logits = net.classify(net.forward_range(x, level, 4, levels if keep else None))
                if keep:
                    self._keep_levels(self.val, b, levels)
                c, l_ = self._score_batch(b, logits)
                correct.append(c)
                losses.append(l_)
        return torch.cat(correct), torch.cat(losses)

    def _recalibrate(self, start: int, level: int, keep: bool) -> None:
        """BN recalibration of the active member from stage ``start`` on over the calibration batches (the shared
        stages take the reference's statistics); with ``keep``, keep the calibration pass's stage inputs."""
        net = self.net
        if start > 0:  # the shared stages: the reference's statistics (another member may have run since)
            for name, t in self._ref_stats.items():
                net.get_buffer(name).copy_(t)
        prefix = nn.ModuleList([net.stem, *net.stages[:start]] if start else [])
        with batch_statistics(prefix):  # recomputed calibration inputs as a calibration pass makes them

            def calib_forward() -> Iterator[torch.Tensor]:
                for b, x in enumerate(self._inputs(self.calib, level)):
                    levels: dict[int, torch.Tensor] = {}
                    out = net.forward_range(x, level, 4, levels if keep else None)
                    if keep:
                        self._keep_levels(self.calib, b, levels)
                    yield out

            recalibrate_bn(net.bn_scope(start), calib_forward(), run=net.norm)

    def _score_batch(self, b: int, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.val.labels[b * self.val.batch_size : b * self.val.batch_size + len(logits)]
        return per_image(logits, y.to(logits.device))

    def _start(self, arch: ArchConfig) -> int:
        """The first stage where ``arch`` differs from the reference (0: no reference, evaluate it all)."""
        if self._ref is None:
            return 0
        n = len(arch.stages)
        return next((i for i in range(n) if arch.stages[i] != self._ref.stages[i]), n - 1)

    def screen_batches(self, fraction: float) -> int:
        """How many of the split's first batches hold ``fraction`` of its images (at least one)."""
        return max(1, min(len(self.val), round(fraction * len(self.val))))

    def screened_images(self, batches: int) -> int:
        """How many images the split's first ``batches`` batches hold."""
        return sum(len(c) for c in self.val.chunks[:batches])

    def screen(self, arch: ArchConfig, fraction: float) -> Screening:
        """Per-image scores of ``arch`` on the first batches holding ``fraction`` of the split (a class-balanced
        part, the same images for every candidate); kept in the sidecar of the score cache, never among the scores."""
        self._check_weights()
        arch = self.net.member(arch)
        k = self.screen_batches(fraction)
        key = (arch_hash(arch), k)
        if key not in self._screened:
            self._settle_reference()
            correct, losses = self._run(arch, self._start(arch), keep=False, batches=k)
            self.screenings += 1
            self._store_screening(key[0], Screening(losses, correct, k, self._bn_state()))
        return self._screened[key]

    def _forget_screened_bn(self, h: Optional[str] = None) -> None:
        """Drop the BN statistics kept with screenings (of ``h``, else all): what a continuation no longer needs."""
        for key, s in self._screened.items():
            if s.bn is not None and (h is None or key[0] == h):
                self._screened[key] = dataclasses.replace(s, bn=None)

    def reference(self, arch: ArchConfig) -> dict[str, float]:
        """Evaluate ``arch`` fully and keep its stage inputs (within the memory budget) for incremental
        evaluation of its neighbours. When ``arch``'s score is cached, that happens only once a neighbour has to
        be computed: a search that finds all it needs stored (a rerun, or a budget whose path an earlier budget
        walked) computes nothing."""
        self._check_weights()
        arch = self.net.member(arch)
        h = arch_hash(arch)
        if self._ref is not None and arch_hash(self._ref) == h and h in self.cache:
            self._pending_ref = None
            return self.cache[h]  # already the reference: its stage inputs are kept
        if h in self.cache:
            self._pending_ref = arch
            return self.cache[h]
        self._pending_ref = None
        return self._make_reference(arch, h)

    def _settle_reference(self) -> None:
        """Compute the pending reference's stage inputs: a neighbour is about to be computed incrementally."""
        if self._pending_ref is not None:
            arch, self._pending_ref = self._pending_ref, None
            self._make_reference(arch, arch_hash(arch))

    def _make_reference(self, arch: ArchConfig, h: str) -> dict[str, float]:
        """Score ``arch`` and keep its stage inputs. Where it shares its first ``s`` stages with the current
        reference (a slimming step's winner does), the reference's stage inputs up to level ``s`` and statistics of
        those stages are its own: only stages ``s..4`` run again, as in an incremental evaluation."""
        start = self._start(arch) if self.chain_references else 0
        shared = start if start else IMAGES  # the deepest level both references' stage inputs agree on
        self.store.drop_where(lambda k: k[2] > shared)
        self._ref = None
        self._forget_screened_bn()
        res = score_values(*self._run(arch, start, keep=True))
        self.evaluations += 1
        self._ref = arch
        self._ref_stats = self._bn_state()
        if h not in self.cache:
            self._store(h, res)
        return self.cache[h]

    def __call__(self, arch: ArchConfig) -> dict[str, float]:
        """Score of ``arch`` (cached; incremental when the reference shares its first stages)."""
        self._check_weights()
        arch = self.net.member(arch)
        h = arch_hash(arch)
        if h in self.cache:
            return self.cache[h]
        self._settle_reference()
        screened = [s for (sh, _), s in self._screened.items() if sh == h and s.bn is not None]
        resume = max(screened, key=lambda s: s.batches) if screened else None
        res = score_values(*self._run(arch, self._start(arch), keep=False, resume=resume))
        self._forget_screened_bn(h)
        self.evaluations += 1
        self._store(h, res)
        return res
