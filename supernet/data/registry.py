"""The datasets ``data.name`` selects: a new dataset is one :class:`DatasetSpec` registered here.

A spec says how its train / val / calib sources are read (from ``data.root``, the calibration size and the
seed), how many classes it has, and whether it needs a root: ``required`` (files on disk), ``optional``
(embedded, or the full set from a root), ``forbidden`` (bundled with a library).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

from conf.registry import Registry
from supernet.data.fashion import fashion_splits
from supernet.data.sources import cifar10_splits, digits_splits, imagefolder_splits

Splits = dict[str, Any]  # split name -> source (TensorSource, FolderSource)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    name: str
    read: Callable[[Optional[str], int, int], Splits]  # (root, calib_size, seed) -> splits
    num_classes: Optional[int]  # None: the training split's class count (image folders)
    root: str = "required"  # required | optional | forbidden

    def classes(self, splits: Splits) -> int:
        return self.num_classes if self.num_classes is not None else len(splits["train"].classes)


DATASETS: Registry[DatasetSpec] = Registry("data.name", "dataset")  # each name also has its conf/data/<name>.yaml


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    if spec.root not in ("required", "optional", "forbidden"):
        raise ValueError(f"dataset {spec.name}: root must be required, optional or forbidden, not {spec.root!r}")
    return DATASETS.register(spec.name, spec)


register_dataset(DatasetSpec("fashion", lambda root, calib, seed: fashion_splits(root, calib, seed), 10, "optional"))
register_dataset(DatasetSpec("digits", lambda root, calib, seed: digits_splits(seed, calib=calib), 10, "forbidden"))
register_dataset(DatasetSpec("cifar10", lambda root, calib, seed: cifar10_splits(root, calib), 10))
register_dataset(DatasetSpec("imagefolder", lambda root, calib, seed: imagefolder_splits(root, calib, seed), None))
