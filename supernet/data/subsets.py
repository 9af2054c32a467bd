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
    sizes = np.array([len(idx) for idx in by_class])
    quota = np.zeros(len(by_class), dtype=np.int64)
    left, order = n, np.argsort(sizes, kind="stable")
    for pos, i in enumerate(order):  # water-filling: classes smaller than the equal share give all they have
        if sizes[i] > left // (len(order) - pos):
            rest = order[pos:]
            base, extra = divmod(left, len(rest))
            quota[rest] = base
            quota[rng.choice(rest, size=extra, replace=False)] += 1  # each of these holds more than base
            break
        quota[i] = sizes[i]
        left -= sizes[i]
    chosen = np.concatenate([idx[:q] for idx, q in zip(by_class, quota)])
    return rng.permutation(chosen).tolist()


def stratified_order(labels: Sequence[int], seed: int) -> list[int]:
    """Every index of ``labels`` in a seeded order whose every prefix holds each class in proportion to its
    size (within one image): the j-th of a class's n images goes at position (j + offset) / n, offsets seeded.
    A search can then score a class-balanced part of a split by taking its first batches."""
    y = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    keys = np.empty(len(y))
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        keys[idx] = (np.arange(len(idx)) + rng.uniform(0.0, 1.0)) / len(idx)
    return np.lexsort((rng.permutation(len(y)), keys)).tolist()
