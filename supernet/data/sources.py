"""Image sources: scikit-learn's bundled digits (the embedded default), CIFAR-10 python batches, and
ImageNet-style image folders. In-memory sources yield float (C, H, W) images in [0, 1]; an image folder
yields uint8 (C, H, W) images as decoded (the transforms convert to float after cropping), optionally
decoded at a reduced JPEG scale (Pillow's ``draft``) when the transform will only shrink them.
Every source gives its labels without decoding an image (``targets``)."""
from __future__ import annotations

import dataclasses
import math
import os
import pickle
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from supernet.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


class DataError(UserError):
    """A missing or malformed data directory or file."""


class TensorSource:
    """Images held in memory: uint8 (N, C, H, W) with a divisor to [0, 1], and labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, scale: float) -> None:
        self.images, self.labels, self.scale = images, labels, scale

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i].float() / self.scale, int(self.labels[i])

    def load(self, i: int, min_short_side: Optional[int] = None) -> tuple[torch.Tensor, int]:
        """Image ``i`` and its label (in memory: ``min_short_side`` does not apply)."""
        return self[i]

    def targets(self) -> list[int]:
        return self.labels.tolist()

    def subset(self, idx: Sequence[int]) -> "TensorSource":
        idx_t = torch.as_tensor(idx, dtype=torch.long)
        return TensorSource(self.images[idx_t], self.labels[idx_t], self.scale)


def digits_splits(seed: int = 0, val: int = 360, calib: int = 180) -> dict[str, TensorSource]:
    """scikit-learn's 1797 8x8 handwritten digits (bundled, no download), grey replicated to RGB,
    split once with a fixed permutation into train / val / calib (held out from training)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.from_numpy(d.images.astype(np.uint8)).unsqueeze(1).repeat(1, 3, 1, 1)  # values 0..16
    full = TensorSource(images, torch.from_numpy(d.target.astype(np.int64)), 16.0)
    perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(seed)).tolist()
    return {
        "val": full.subset(perm[:val]),
        "calib": full.subset(perm[val : val + calib]),
        "train": full.subset(perm[val + calib :]),
    }


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DataError(f"{path}: missing CIFAR-10 batch file")
    try:
        with open(path, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as exc:
        raise DataError(f"{path}: not a CIFAR-10 python batch ({type(exc).__name__})") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataError(f"{path}: expected 'data' of shape (N, 3072) and N labels, got {data.shape} / {len(labels)}")
    return data.reshape(-1, 3, 32, 32), labels


def cifar10_splits(root: str | os.PathLike, calib: int = 2000) -> dict[str, TensorSource]:
    """The standard python-batch directory (data_batch_1..5, test_batch); the last ``calib`` training
    images are held out for BN calibration, test_batch is the validation split."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data.root: {root} is not a directory (expected CIFAR-10 python batches)")
    parts = [_read_cifar_batch(root / f"data_batch_{i}") for i in range(1, 6)]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    xt, yt = _read_cifar_batch(root / "test_batch")
    if calib >= len(x):
        raise DataError(f"data.calib_size: {calib} is not smaller than the {len(x)} training images")
    n = len(x) - calib
    full = TensorSource(torch.from_numpy(x), torch.from_numpy(y), 255.0)
    return {
        "train": full.subset(range(n)),
        "calib": full.subset(range(n, len(x))),
        "val": TensorSource(torch.from_numpy(xt), torch.from_numpy(yt), 255.0),
    }


@dataclasses.dataclass(frozen=True)
class DecodeFailure:
    """An image that could not be decoded: returned by a loader worker instead of raised, so the main
    process reports it in one line (a worker's exception arrives wrapped in its traceback)."""

    path: str
    reason: str

    def error(self) -> "DataError":
        return DataError(f"{self.path}: cannot be decoded as an image ({self.reason})")


def decode_image(path: Path, min_short_side: Optional[int] = None) -> torch.Tensor:
    """uint8 (3, H, W) RGB pixels of an image file. With ``min_short_side``, a JPEG is decoded at the
    smallest DCT scale (1/2, 1/4, 1/8) whose shorter side is still >= ``min_short_side`` (Pillow's
    ``draft``: a reduced decode, several times cheaper; the pixels differ slightly from a full decode
    then resized, see tests/test_data.py)."""
    from PIL import Image

    with Image.open(path) as im:
        if min_short_side and im.format == "JPEG":
            w, h = im.size
            f = min_short_side / min(w, h)
            if f < 1:
                im.draft("RGB", (math.ceil(w * f), math.ceil(h * f)))
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


class FolderSource:
    """root/<class>/<image> files, decoded with Pillow on access (uint8)."""

    def __init__(self, files: list[tuple[Path, int]], classes: list[str]) -> None:
        self.files, self.classes = files, classes

    def __len__(self) -> int:
        return len(self.files)

    def load(self, i: int, min_short_side: Optional[int] = None) -> tuple[torch.Tensor | DecodeFailure, int]:
        """Image ``i`` (uint8, or a :class:`DecodeFailure`) and its label."""
        path, label = self.files[i]
        try:
            return decode_image(path, min_short_side), label
        except Exception as exc:
            return DecodeFailure(str(path), type(exc).__name__), label

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img, label = self.load(i)
        if isinstance(img, DecodeFailure):
            raise img.error()
        return img, label

    def targets(self) -> list[int]:
        return [label for _, label in self.files]

    def subset(self, idx: Sequence[int]) -> "FolderSource":
        return FolderSource([self.files[i] for i in idx], self.classes)


def _scan(split_dir: Path, classes: list[str], required: bool) -> list[tuple[Path, int]]:
    """(file, label) of every image under split_dir/<class>/; with ``required``, every class directory
    must exist and hold an image."""
    files = []
    for label, name in enumerate(classes):
        cdir = split_dir / name
        if not cdir.is_dir():
            if required:
                raise DataError(f"{cdir}: missing class directory (every class of train/ needs one)")
            continue
        try:
            found = [(p, label) for p in sorted(cdir.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
        except OSError as exc:
            raise DataError(f"{cdir}: cannot be listed ({exc.strerror or type(exc).__name__})") from None
        if not found:
            raise DataError(f"{cdir}: empty class directory (no file with extension {', '.join(IMAGE_EXTENSIONS)})")
        files += found
    return files


def imagefolder_splits(root: str | os.PathLike, calib: int = 2000, seed: int = 0) -> dict[str, FolderSource]:
    """ImageNet layout: root/train/<class>/*, root/val/<class>/*. ``calib`` training images (fixed,
    seeded choice) are held out for BN calibration."""
    root = Path(root)
    train_dir, val_dir = root / "train", root / "val"
    for d in (train_dir, val_dir):
        if not d.is_dir():
            raise DataError(f"data.root: {d} is missing (expected {root}/train/<class>/ and {root}/val/<class>/)")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{train_dir}: no class directories")
    unknown = sorted(p.name for p in val_dir.iterdir() if p.is_dir() and p.name not in classes)
    if unknown:
        raise DataError(f"{val_dir}: classes not in train/: {', '.join(unknown[:5])}")
    train = FolderSource(_scan(train_dir, classes, required=True), classes)
    val = FolderSource(_scan(val_dir, classes, required=False), classes)
    if len(train) == 0 or len(val) == 0:
        raise DataError(f"{root}: no images with extensions {', '.join(IMAGE_EXTENSIONS)} in train/ or val/")
    calib = min(calib, len(train) // 10)
    if calib < 10:
        raise DataError(f"{train_dir}: {len(train)} training images; BN recalibration needs at least 10 calibration "
                        "images, held out from at least 100 training images")
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
    return {"train": train.subset(sorted(perm[calib:])), "calib": train.subset(sorted(perm[:calib])), "val": val}
