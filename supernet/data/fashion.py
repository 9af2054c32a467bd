"""Fashion-MNIST (Zalando Research, MIT licence): the embedded default task.

Two ways to get it:

* the compact, class-balanced subset shipped inside the package (``fashion_subset.npz``: 10,000
  train / 2,500 val / 500 calibration images, 28x28 grey), so ``pip install`` alone gives a
  working default; built from the original IDX files by :func:`build_subset`
  (``python -m experiments.make_fashion_subset``);
* the full 70,000 images from a directory of the original IDX files (``data.root=``; Debian's
  ``dataset-fashion-mnist`` installs them in /usr/share/datasets/fashion-mnist), plain or gzipped.

Both give train (from the official training set), calib (held-out training images, for BN
recalibration) and val (the official test set, or a balanced part of it).
"""
from __future__ import annotations

import gzip
import io
import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from supernet.data.sources import DataError, TensorSource
from supernet.io_utils import atomic_write

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
EMBEDDED = Path(__file__).resolve().parent / "fashion_subset.npz"
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_DTYPE = {0x08: np.uint8}


def _find(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    raise DataError(f"data.root: {root} has no {stem}[.gz] (expected the four Fashion-MNIST IDX files)")


def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
    """An IDX file (plain or gzipped) of unsigned bytes with ``ndim`` dimensions, checked against its header."""
    p = Path(path)
    try:
        raw = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{p}: cannot be read ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{p}: not an IDX file (bad magic number)")
    code, dims = raw[2], raw[3]
    if code not in _IDX_DTYPE:
        raise DataError(f"{p}: IDX element type 0x{code:02x}; expected unsigned bytes (0x08)")
    if dims != ndim:
        raise DataError(f"{p}: IDX file with {dims} dimension(s); expected {ndim}")
    header = 4 + 4 * dims
    if len(raw) < header:
        raise DataError(f"{p}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DataError(f"{p}: {len(raw) - header} data bytes for shape {shape} (expected {expected}); truncated or damaged")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_idx_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 28, 28) uint8, labels (N,) int64) of the official ``train`` or ``test`` split."""
    images = read_idx(_find(root, FILES[f"{split}_images"]), 3)
    labels = read_idx(_find(root, FILES[f"{split}_labels"]), 1).astype(np.int64)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{root}: {FILES[split + '_images']} holds {images.shape[1:]} images; expected 28x28")
    if len(images) != len(labels):
        raise DataError(f"{root}: {len(images)} {split} images but {len(labels)} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise DataError(f"{root}: {split} labels outside 0..{len(CLASSES) - 1}")
    return images, labels


def _balanced(labels: np.ndarray, per_class: int, rng: np.random.Generator, exclude: Optional[np.ndarray] = None) -> np.ndarray:
    """``per_class`` indices of each class (seeded), sorted, avoiding ``exclude``."""
    taken = np.zeros(len(labels), bool) if exclude is None else np.isin(np.arange(len(labels)), exclude)
    out = []
    for c in range(len(CLASSES)):
        idx = np.flatnonzero((labels == c) & ~taken)
        if len(idx) < per_class:
            raise DataError(f"Fashion-MNIST: class {c} has {len(idx)} images, {per_class} needed")
        out.append(rng.choice(idx, per_class, replace=False))
    return np.sort(np.concatenate(out))


def build_subset(root: str | os.PathLike, out: str | os.PathLike = EMBEDDED, train_per_class: int = 1000,
                 val_per_class: int = 250, calib_per_class: int = 50, seed: int = 0) -> Path:
    """Write the embedded subset (compressed npz) from the original IDX files in ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    x, y = read_idx_split(root, "train")
    xt, yt = read_idx_split(root, "test")
    train = _balanced(y, train_per_class, rng)
    calib = _balanced(y, calib_per_class, rng, exclude=train)
    val = _balanced(yt, val_per_class, rng)

    def write(tmp: str) -> None:
        buf = io.BytesIO()
        np.savez_compressed(buf, train_x=x[train], train_y=y[train].astype(np.uint8), calib_x=x[calib],
                            calib_y=y[calib].astype(np.uint8), val_x=xt[val], val_y=yt[val].astype(np.uint8),
                            source=np.array("Fashion-MNIST (Zalando Research, MIT licence); "
                                            f"balanced subset, seed {seed}, from the official train/t10k IDX files"))
        Path(tmp).write_bytes(buf.getvalue())

    return atomic_write(out, write)


def _source(images: np.ndarray, labels: np.ndarray) -> TensorSource:
    t = torch.from_numpy(np.array(images, dtype=np.uint8, copy=True)).unsqueeze(1).repeat(1, 3, 1, 1)  # grey -> RGB, uint8
    return TensorSource(t, torch.from_numpy(labels.astype(np.int64)), 255.0)


def fashion_splits(root: Optional[str | os.PathLike] = None, calib: int = 500, seed: int = 0) -> dict[str, TensorSource]:
    """train / val / calib splits: the embedded subset (``root`` None) or the full IDX files in ``root``
    (``calib`` seeded, class-balanced training images held out for BN calibration)."""
    if root is None:
        if not EMBEDDED.is_file():
            raise DataError(f"{EMBEDDED}: the embedded Fashion-MNIST subset is missing from the installation")
        with np.load(EMBEDDED) as z:
            parts = {k: z[k] for k in ("train_x", "train_y", "val_x", "val_y", "calib_x", "calib_y")}
        n_calib = len(parts["calib_y"])
        if calib > n_calib:
            raise DataError(f"data.calib_size: {calib} exceeds the {n_calib} calibration images of the embedded subset")
        keep = _balanced(parts["calib_y"].astype(np.int64), calib // len(CLASSES), np.random.default_rng(seed)) \
            if calib < n_calib else np.arange(n_calib)
        return {
            "train": _source(parts["train_x"], parts["train_y"]),
            "val": _source(parts["val_x"], parts["val_y"]),
            "calib": _source(parts["calib_x"][keep], parts["calib_y"][keep]),
        }
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data.root: {root} is not a directory (expected the Fashion-MNIST IDX files)")
    x, y = read_idx_split(root, "train")
    xt, yt = read_idx_split(root, "test")
    if calib < len(CLASSES) or calib >= len(x):
        raise DataError(f"data.calib_size: {calib} must be between {len(CLASSES)} and {len(x) - 1}")
    held = _balanced(y, calib // len(CLASSES), np.random.default_rng(seed))
    rest = np.setdiff1d(np.arange(len(x)), held)
    return {"train": _source(x[rest], y[rest]), "calib": _source(x[held], y[held]), "val": _source(xt, yt)}
