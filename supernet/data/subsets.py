"""Seeded, class-balanced subsets of a split (by labels alone, no image decoded).

An image folder is sorted by class, so "the first N images" of ImageNet's val split are its first
N / 50 classes. :func:`balanced_subset` takes the same number from every class (the remainder from
classes drawn with the seed; a class with too few images gives its share to the others) and returns the
chosen indices in a seeded shuffled order, so consecutive batches mix the classes too.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def balanced_subset(labels: Sequence[int], n: int, seed: int) -> list[int]:
    """``n`` indices of ``labels``, as equal per class as the classes allow, in a seeded order.

    ``n`` at or above ``len(labels)`` gives every index (still in the seeded order)."""
    y = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    if n >= len(y):
        return rng.permutation(len(y)).tolist()
    by_class = [rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)]
    quota = np.zeros(len(by_class), dtype=np.int64)
    left = n
    open_classes = [i for i, idx in enumerate(by_class) if len(idx)]
    while left > 0 and open_classes:  # water-filling: equal shares, capped by each class's size
        share, extra = divmod(left, len(open_classes))
        lucky = set(rng.choice(open_classes, size=extra, replace=False).tolist()) if extra else set()
        for i in open_classes:
            want = share + (1 if i in lucky else 0)
            take = min(want, len(by_class[i]) - int(quota[i]))
            quota[i] += take
            left -= take
        open_classes = [i for i in open_classes if quota[i] < len(by_class[i])]
    chosen = np.concatenate([idx[:q] for idx, q in zip(by_class, quota)])
    return rng.permutation(chosen).tolist()
