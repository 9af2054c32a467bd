"""Image transforms written in torch (no torchvision): random resized crop, flip, normalize,
resize + center crop. Each takes a (C, H, W) tensor - float in [0, 1], or uint8 as decoded (resized
as uint8 by torch's SIMD kernel, converted to float only after the final crop) - and a
torch.Generator. ``min_short_side`` tells a source the smallest
image the transform needs (None: full resolution; the random-resized crop at scale 0.08 needs it)."""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F


def to_float(img: torch.Tensor) -> torch.Tensor:
    """uint8 pixels to float in [0, 1]; float images unchanged."""
    return img.float().div_(255.0) if img.dtype == torch.uint8 else img


def resize(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (antialiased when shrinking) of a (C, H, W) tensor, float or uint8 (rounded)."""
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    shrink = size[0] < img.shape[-2] or size[1] < img.shape[-1]
    return F.interpolate(img[None], size=size, mode="bilinear", align_corners=False, antialias=shrink)[0]


def random_resized_crop(
    img: torch.Tensor,
    size: int,
    scale: Sequence[float],
    ratio: Sequence[float],
    gen: torch.Generator,
) -> torch.Tensor:
    """Crop a random area fraction in ``scale`` with aspect ratio in ``ratio``, resize to size x size
    (torchvision's algorithm: 10 tries, then a central crop of the clamped ratio)."""
    _, h, w = img.shape
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u = torch.rand(3, generator=gen).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[1])
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
            return to_float(resize(img[:, top : top + ch, left : left + cw], (size, size)))
    in_ratio = w / h
    if in_ratio < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        ch, cw = h, int(round(h * ratio[1]))
    else:
        cw, ch = w, h
    top, left = (h - ch) // 2, (w - cw) // 2
    return to_float(resize(img[:, top : top + ch, left : left + cw], (size, size)))


def resize_center_crop(img: torch.Tensor, size: int, crop_pct: float = 1.0) -> torch.Tensor:
    """Resize the shorter side to size / crop_pct, then take the central size x size crop."""
    _, h, w = img.shape
    short = int(math.floor(size / crop_pct))
    if h <= w:
        nh, nw = short, max(short, int(round(w * short / h)))
    else:
        nw, nh = short, max(short, int(round(h * short / w)))
    img = resize(img, (nh, nw))
    top, left = (nh - size) // 2, (nw - size) // 2
    return to_float(img[:, top : top + size, left : left + size])


def normalize(img: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.tensor(mean, dtype=img.dtype).view(-1, 1, 1)
    s = torch.tensor(std, dtype=img.dtype).view(-1, 1, 1)
    return (img - m) / s


@dataclasses.dataclass(frozen=True)
class TrainTransform:
    """Random resized crop, horizontal flip with probability ``hflip``, normalize."""

    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    min_short_side = None  # the crop may take 8 % of the area: decode at full resolution

    def __call__(self, img: torch.Tensor, gen: Optional[torch.Generator]) -> torch.Tensor:
        gen = gen or torch.Generator().manual_seed(0)
        img = random_resized_crop(img, self.size, self.scale, self.ratio, gen)
        if self.hflip > 0 and float(torch.rand(1, generator=gen)) < self.hflip:
            img = img.flip(-1)
        return normalize(img, self.mean, self.std)


@dataclasses.dataclass(frozen=True)
class EvalTransform:
    """Resize + center crop (``crop_pct``), normalize."""

    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float = 0.875

    @property
    def min_short_side(self) -> int:
        """The shorter side the resize brings every image to (a source may decode down to it)."""
        return int(math.floor(self.size / self.crop_pct))

    def __call__(self, img: torch.Tensor, gen: Optional[torch.Generator] = None) -> torch.Tensor:
        return normalize(resize_center_crop(img, self.size, self.crop_pct), self.mean, self.std)
