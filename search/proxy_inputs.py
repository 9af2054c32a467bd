"""What the supernet proxy streams: the images of a split in fixed batches (:class:`ImageSplit`, chosen by
:func:`choose_images`), and the tensors it keeps between evaluations within a fixed memory budget
(:class:`TensorStore`)."""
from __future__ import annotations

from typing import Iterator, Optional

import torch

from supernet.data import Data, balanced_subset
from supernet.data.subsets import stratified_order


class TensorStore:
    """Tensors kept between evaluations within ``budget`` bytes; a higher ``priority`` may evict lower ones."""

    def __init__(self, budget: int) -> None:
        self.budget, self.used = budget, 0
        self.items: dict[tuple, tuple[int, torch.Tensor]] = {}

    def get(self, key: tuple) -> Optional[torch.Tensor]:
        item = self.items.get(key)
        return None if item is None else item[1]

    def put(self, key: tuple, tensor: torch.Tensor, priority: int) -> bool:
        """Keep ``tensor`` if it fits, evicting lower-priority tensors when that makes it fit."""
        size = tensor.numel() * tensor.element_size()
        if key in self.items:
            self.drop(key)
        if self.used + size > self.budget:
            lower = sorted((p, k) for k, (p, _) in self.items.items() if p < priority)
            if self.used - sum(self.nbytes(k) for _, k in lower) + size > self.budget:
                return False
            for _, k in lower:
                if self.used + size <= self.budget:
                    break
                self.drop(k)
        self.items[key] = (priority, tensor)
        self.used += size
        return True

    def nbytes(self, key: tuple) -> int:
        t = self.items[key][1]
        return t.numel() * t.element_size()

    def drop(self, key: tuple) -> None:
        self.used -= self.nbytes(key)
        del self.items[key]

    def drop_where(self, match) -> None:
        for k in [k for k in self.items if match(k)]:
            self.drop(k)


class ImageSplit:
    """The images one split contributes, in fixed batches: ``indices`` of ``split`` in ``data``."""

    def __init__(self, name: str, data: Data, split: str, indices: list[int], batch_size: int, pin_memory: bool) -> None:
        self.name, self.data, self.split, self.batch_size, self.pin_memory = name, data, split, batch_size, pin_memory
        self.chunks = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
        all_labels = data.labels(split)
        self.labels = torch.tensor([all_labels[i] for i in indices], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.chunks)

    def load(self, batches: list[int]) -> Iterator[torch.Tensor]:
        """The image batches ``batches`` (in that order), decoded by the DataLoader."""
        if not batches:
            return iter(())
        flat = [i for b in batches for i in self.chunks[b]]  # only the split's last batch may be short: it comes last
        loader = self.data.eval_loader(self.split, self.batch_size, indices=flat, pin_memory=self.pin_memory)
        return (x for x, _ in loader)


def choose_images(data: Data, split: str, n: Optional[int], seed: int) -> list[int]:
    """Indices of ``split`` a proxy uses - all of them (None), or a seeded class-balanced ``n`` - in a stratified
    order: every prefix of batches is a class-balanced part of them (what a racing search screens on)."""
    labels = data.labels(split)
    chosen = list(range(len(labels))) if n is None or n >= len(labels) else balanced_subset(labels, n, seed)
    return [chosen[i] for i in stratified_order([labels[j] for j in chosen], seed)]
