"""Datasets for supernet training and evaluation, without torchvision.

``build_data(cfg)`` gives train / val / calib splits of ``fashion`` (Fashion-MNIST: the embedded
subset by default, the full IDX files with ``root``), ``digits`` (scikit-learn's bundled digits, for
fast tests), ``cifar10`` (python-batch directory) or ``imagefolder`` (ImageNet layout), plus
``holdout``: ``data.holdout`` training images (seeded, class-balanced) that training never sees, the
search's validation split (Once-for-All's ImageNet practice: the official val split is the test set).
Batches are deterministic: the epoch's order comes from (seed, epoch), each sample's augmentation
from (seed, epoch, index), so a run resumed at any step sees exactly the batches it would have seen,
for any number of loader workers, and every rank of a distributed run gets its own shard.
"""
from __future__ import annotations

import os
from typing import Any, Iterator, Mapping, Optional, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from conf.schemas import DataSchema, checked
from supernet.data.registry import DATASETS, DatasetSpec, register_dataset
from supernet.data.sources import DataError, DecodeFailure, FolderSource
from supernet.data.subsets import balanced_subset
from supernet.data.transforms import EvalTransform, TrainTransform


def data_settings(data: Mapping[str, Any] | DataSchema) -> DataSchema:
    """The ``data`` settings typed by their schema (``DataSchema``, conf/schemas/supernet.py) and checked: the schema's
    ranges, then what the chosen dataset needs (a root, or none); one line naming the key otherwise."""
    cfg: DataSchema = checked(data, DataSchema, "data")
    need = DATASETS.get_or_fail(cfg.name).root
    if need == "required" and not cfg.root:
        raise DataError(f"data.root: required for the {cfg.name} dataset")
    if need == "forbidden" and cfg.root:
        raise DataError(f"data.root: the {cfg.name} dataset is bundled (scikit-learn); leave root unset")
    return cfg


class AugmentedDataset(Dataset):
    """Indexable by (index, seed): the image of ``source[index]`` transformed with a generator seeded by
    ``seed`` (decoded no larger than the transform needs); an undecodable image gives its :class:`DecodeFailure`."""

    def __init__(self, source, transform) -> None:
        self.source, self.transform = source, transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor | DecodeFailure, int]:
        index, seed = item
        img, label = self.source.load(index, self.transform.min_short_side)
        if isinstance(img, DecodeFailure):
            return img, label
        return self.transform(img, torch.Generator().manual_seed(seed)), label


def collate(samples: list[tuple[torch.Tensor | DecodeFailure, int]]) -> tuple[torch.Tensor, torch.Tensor] | DecodeFailure:
    """Stack a batch, or pass on the first image that failed to decode."""
    for img, _ in samples:
        if isinstance(img, DecodeFailure):
            return img
    return torch.stack([img for img, _ in samples]), torch.tensor([label for _, label in samples], dtype=torch.long)


class Loader:
    """A DataLoader whose decode failures are raised in the main process, as one-line :class:`DataError`."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in self.loader:
            if isinstance(batch, DecodeFailure):
                raise batch.error()
            yield batch


def available_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class IndexBatchSampler(Sampler):
    """Fixed batches over a given list of indices (evaluation: no shuffling, every image once)."""

    def __init__(self, indices: Sequence[int], batch_size: int, seed: int) -> None:
        self.indices, self.bs, self.seed = list(indices), batch_size, seed

    def __len__(self) -> int:
        return -(-len(self.indices) // self.bs)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for b in range(0, len(self.indices), self.bs):
            yield [(i, _sample_seed(self.seed, 0, i)) for i in self.indices[b : b + self.bs]]


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

    def __init__(self, cfg: DataSchema) -> None:
        self.cfg = cfg
        spec = DATASETS[cfg.name]
        splits = spec.read(cfg.root, cfg.calib_size, cfg.seed)
        self.num_classes = spec.classes(splits)
        if cfg.holdout:
            splits = self._hold_out(splits, cfg.holdout, cfg.seed)
        self.splits = splits
        self.train_tf = TrainTransform(cfg.image_size, cfg.mean, cfg.std, cfg.train_scale, cfg.train_ratio, cfg.hflip)
        self.eval_tf = EvalTransform(cfg.image_size, cfg.mean, cfg.std, cfg.crop_pct)

    @staticmethod
    def _hold_out(splits: dict[str, Any], n: int, seed: int) -> dict[str, Any]:
        train = splits["train"]
        if n > len(train) // 2:
            raise DataError(f"data.holdout: {n} exceeds half of the {len(train)} training images "
                            "(the search's held-out split must leave most of them to training)")
        held = set(balanced_subset(train.targets(), n, seed + 1))
        return {**splits, "holdout": train.subset(sorted(held)),
                "train": train.subset([i for i in range(len(train)) if i not in held])}

    @property
    def search_split(self) -> str:
        """The split a search scores: the held-out training images if any, else val."""
        return "holdout" if "holdout" in self.splits else "val"

    def workers(self) -> int:
        """``data.num_workers``, or (null) as many as the CPUs for decoded images and none for in-memory ones."""
        if self.cfg.num_workers is not None:
            return self.cfg.num_workers
        return available_cpus() if isinstance(self.splits["train"], FolderSource) else 0

    def _loader(self, split: str, batch_sampler: Sampler, train: bool, pin_memory: bool = False) -> Loader:
        ds = AugmentedDataset(self.splits[split], self.train_tf if train else self.eval_tf)
        return Loader(DataLoader(ds, batch_sampler=batch_sampler, num_workers=self.workers(), collate_fn=collate,
                                 pin_memory=pin_memory))

    def train_sampler(self, batch_size: int, epoch: int, rank: int = 0, world: int = 1, start_batch: int = 0) -> EpochBatchSampler:
        return EpochBatchSampler(len(self.splits["train"]), batch_size, self.cfg.seed, epoch, True, rank, world, start_batch)

    def train_loader(self, batch_size: int, epoch: int, rank: int = 0, world: int = 1, start_batch: int = 0,
                     pin_memory: bool = False) -> Loader:
        return self._loader("train", self.train_sampler(batch_size, epoch, rank, world, start_batch), True, pin_memory)

    def eval_loader(self, split: str, batch_size: int, limit: Optional[int] = None, indices: Optional[Sequence[int]] = None,
                    pin_memory: bool = False) -> Loader:
        """Deterministic loader over ``split`` ('val', 'calib' or 'holdout'): the images ``indices`` in that
        order, else the first ``limit`` (default: all) in split order."""
        if indices is None:
            indices = range(len(self.splits[split]) if limit is None else min(limit, len(self.splits[split])))
        return self._loader(split, IndexBatchSampler(indices, batch_size, self.cfg.seed), False, pin_memory)

    def labels(self, split: str) -> list[int]:
        """The labels of ``split`` in split order (no image decoded)."""
        return self.splits[split].targets()


def build_data(cfg: Mapping[str, Any] | DataSchema) -> Data:
    """Data splits and loaders from a ``data`` config group."""
    return Data(data_settings(cfg))


__all__ = ["Data", "DataSchema", "data_settings", "DataError", "DatasetSpec", "DATASETS", "build_data", "register_dataset",
           "EpochBatchSampler", "balanced_subset"]
