"""Datasets for supernet training and evaluation, without torchvision.

``build_data(cfg)`` gives train / val / calib splits of ``fashion`` (Fashion-MNIST: the embedded
subset by default, the full IDX files with ``root``), ``digits`` (scikit-learn's bundled digits, for
fast tests), ``cifar10`` (python-batch directory) or ``imagefolder`` (ImageNet layout).
Batches are deterministic: the epoch's order comes from (seed, epoch), each sample's augmentation
from (seed, epoch, index), so a run resumed at any step sees exactly the batches it would have seen,
for any number of loader workers, and every rank of a distributed run gets its own shard.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Mapping, Optional

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from supernet.data.fashion import fashion_splits
from supernet.data.sources import DataError, cifar10_splits, digits_splits, imagefolder_splits
from supernet.data.transforms import EvalTransform, TrainTransform

DATASETS = ("fashion", "digits", "cifar10", "imagefolder")
ROOT_OPTIONAL = ("fashion", "digits")  # embedded: no data.root needed
MIN_CALIB = 10  # BN recalibration needs a batch with more than one image per statistic


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The ``data`` config group (conf/data/*.yaml)."""

    name: str = "fashion"
    root: Optional[str] = None
    image_size: int = 32
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    train_scale: tuple[float, float] = (0.08, 1.0)
    train_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    crop_pct: float = 0.875
    calib_size: int = 2000
    num_workers: int = 0
    seed: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DataConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        extra = set(data) - fields
        if extra:
            raise DataError(f"data: unknown key(s) {', '.join(sorted(extra))}; allowed: {', '.join(sorted(fields))}")
        kw = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in data.items()}
        cfg = cls(**kw)
        if cfg.name not in DATASETS:
            raise DataError(f"data.name: {cfg.name!r} is not one of {', '.join(DATASETS)}")
        if cfg.name not in ROOT_OPTIONAL and not cfg.root:
            raise DataError(f"data.root: required for the {cfg.name} dataset")
        if cfg.name == "digits" and cfg.root:
            raise DataError("data.root: the digits dataset is bundled with scikit-learn; leave root unset")
        if not isinstance(cfg.image_size, int) or isinstance(cfg.image_size, bool) or cfg.image_size < 32 or cfg.image_size % 32:
            raise DataError(f"data.image_size: {cfg.image_size!r} is not a positive multiple of 32")
        if not isinstance(cfg.calib_size, int) or isinstance(cfg.calib_size, bool) or cfg.calib_size < MIN_CALIB:
            raise DataError(f"data.calib_size: {cfg.calib_size!r} must be an integer >= {MIN_CALIB} (BN recalibration)")
        return cfg


class AugmentedDataset(Dataset):
    """Indexable by (index, seed): the image of ``source[index]`` transformed with a generator seeded by ``seed``."""

    def __init__(self, source, transform) -> None:
        self.source, self.transform = source, transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = item
        img, label = self.source[index]
        return self.transform(img, torch.Generator().manual_seed(seed)), label


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + index) % (2**62)


class EpochBatchSampler(Sampler):
    """Global batches of a seeded per-epoch permutation; rank r takes its slice of each global batch.

    ``start_batch`` skips the batches already trained on (resume).
    """

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, shuffle: bool = True,
                 rank: int = 0, world: int = 1, start_batch: int = 0, drop_last: bool = True) -> None:
        self.n, self.bs, self.seed, self.epoch = n, batch_size, seed, epoch
        self.shuffle, self.rank, self.world, self.start = shuffle, rank, world, start_batch
        self.drop_last = drop_last

    def num_batches(self) -> int:
        g = self.bs * self.world
        return self.n // g if self.drop_last else -(-self.n // g)

    def __len__(self) -> int:
        return max(self.num_batches() - self.start, 0)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 7919 + self.epoch)).tolist()
        else:
            order = list(range(self.n))
        g = self.bs * self.world
        for b in range(self.start, self.num_batches()):
            chunk = order[b * g : (b + 1) * g][self.rank * self.bs : (self.rank + 1) * self.bs]
            if chunk:
                yield [(i, _sample_seed(self.seed, self.epoch, i)) for i in chunk]


class Data:
    """Splits plus loaders with the deterministic sampler."""

    def __init__(self, cfg: DataConfig) -> None:
        self.cfg = cfg
        if cfg.name == "fashion":
            splits = fashion_splits(cfg.root, cfg.calib_size, cfg.seed)
            self.num_classes = 10
        elif cfg.name == "digits":
            splits = digits_splits(cfg.seed, calib=cfg.calib_size)
            self.num_classes = 10
        elif cfg.name == "cifar10":
            splits = cifar10_splits(cfg.root, cfg.calib_size)
            self.num_classes = 10
        else:
            splits = imagefolder_splits(cfg.root, cfg.calib_size, cfg.seed)
            self.num_classes = len(splits["train"].classes)
        self.splits = splits
        self.train_tf = TrainTransform(cfg.image_size, cfg.mean, cfg.std, cfg.train_scale, cfg.train_ratio, cfg.hflip)
        self.eval_tf = EvalTransform(cfg.image_size, cfg.mean, cfg.std, cfg.crop_pct)

    def _loader(self, split: str, batch_sampler: EpochBatchSampler, train: bool) -> DataLoader:
        ds = AugmentedDataset(self.splits[split], self.train_tf if train else self.eval_tf)
        return DataLoader(ds, batch_sampler=batch_sampler, num_workers=self.cfg.num_workers)

    def train_sampler(self, batch_size: int, epoch: int, rank: int = 0, world: int = 1, start_batch: int = 0) -> EpochBatchSampler:
        return EpochBatchSampler(len(self.splits["train"]), batch_size, self.cfg.seed, epoch, True, rank, world, start_batch)

    def train_loader(self, batch_size: int, epoch: int, rank: int = 0, world: int = 1, start_batch: int = 0) -> DataLoader:
        return self._loader("train", self.train_sampler(batch_size, epoch, rank, world, start_batch), True)

    def eval_loader(self, split: str, batch_size: int, limit: Optional[int] = None) -> DataLoader:
        """Deterministic loader over ``split`` ('val' or 'calib'), optionally only its first ``limit`` images."""
        n = len(self.splits[split]) if limit is None else min(limit, len(self.splits[split]))
        sampler = EpochBatchSampler(n, batch_size, self.cfg.seed, 0, shuffle=False, drop_last=False)
        return self._loader(split, sampler, False)


def build_data(cfg: Mapping[str, Any] | DataConfig) -> Data:
    """Data splits and loaders from a ``data`` config group."""
    return Data(cfg if isinstance(cfg, DataConfig) else DataConfig.from_dict(cfg))


__all__ = ["Data", "DataConfig", "DataError", "build_data", "EpochBatchSampler"]
