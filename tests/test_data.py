"""Datasets and transforms without torchvision; deterministic, shardable, resumable batches."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from supernet.data import EpochBatchSampler, build_data
from supernet.data.sources import DataError
from supernet.data.transforms import EvalTransform, TrainTransform, random_resized_crop, resize_center_crop
from supernet.errors import UserError


def test_transforms():
    img = torch.rand(3, 40, 60)
    g = torch.Generator().manual_seed(0)
    crop = random_resized_crop(img, 32, (0.5, 1.0), (0.75, 1.33), g)
    assert crop.shape == (3, 32, 32)
    center = resize_center_crop(img, 32, crop_pct=1.0)
    assert center.shape == (3, 32, 32)
    ramp = torch.arange(64.0).view(1, 1, 64).expand(3, 64, 64) / 64
    assert torch.allclose(resize_center_crop(ramp, 32, 0.5), ramp[:, 16:48, 16:48])  # crop_pct 0.5: no resize
    tf = TrainTransform(32, (0.5,) * 3, (0.5,) * 3, (0.5, 1.0), (0.8, 1.25), hflip=1.0)
    a = tf(img, torch.Generator().manual_seed(3))
    b = tf(img, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (3, 32, 32)
    ev = EvalTransform(32, (0.0,) * 3, (1.0,) * 3, crop_pct=1.0)
    assert torch.equal(ev(img), ev(img))


def test_digits_splits_are_fixed_and_disjoint():
    d1 = build_data({"name": "digits", "image_size": 32, "calib_size": 180})
    d2 = build_data({"name": "digits", "image_size": 32, "calib_size": 180})
    sizes = {k: len(v) for k, v in d1.splits.items()}
    assert sizes == {"train": 1257, "val": 360, "calib": 180} and d1.num_classes == 10
    assert torch.equal(d1.splits["val"].images, d2.splits["val"].images)
    from sklearn.datasets import load_digits

    def items(images, labels):  # one sortable record per image (image bytes + label)
        return sorted(bytes(img.numpy().tobytes()) + bytes([int(lab)]) for img, lab in zip(images, labels))

    full = load_digits()
    every = items(torch.from_numpy(full.images.astype("uint8")).unsqueeze(1).repeat(1, 3, 1, 1), full.target)
    split = sorted(sum((items(v.images, v.labels) for v in d1.splits.values()), []))
    assert split == every  # the three splits partition the 1797 images: disjoint, nothing lost or repeated


def test_sampler_shards_and_resumes():
    full = list(EpochBatchSampler(100, 8, seed=1, epoch=2))
    r0 = list(EpochBatchSampler(100, 4, seed=1, epoch=2, rank=0, world=2))
    r1 = list(EpochBatchSampler(100, 4, seed=1, epoch=2, rank=1, world=2))
    assert [a + b for a, b in zip(r0, r1)] == full  # the ranks split each global batch
    assert list(EpochBatchSampler(100, 8, seed=1, epoch=2, start_batch=5)) == full[5:]
    assert full != list(EpochBatchSampler(100, 8, seed=1, epoch=3))
    data = build_data({"name": "digits", "image_size": 32, "calib_size": 180})
    xs = [x for x, _ in data.train_loader(32, epoch=1)]
    x4, _ = next(iter(data.train_loader(32, epoch=1, start_batch=4)))
    assert torch.equal(xs[4], x4)


def _fake_cifar(root, n=20):
    root.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(root / name, "wb") as fh:
            pickle.dump({b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}, fh)


def test_cifar10_directory(tmp_path):
    _fake_cifar(tmp_path / "cifar")
    data = build_data({"name": "cifar10", "root": str(tmp_path / "cifar"), "image_size": 32, "calib_size": 10})
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 90, "calib": 10, "val": 20}
    x, y = next(iter(data.train_loader(8, 0)))
    assert x.shape == (8, 3, 32, 32) and y.dtype == torch.long
    (tmp_path / "cifar" / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(DataError, match="data_batch_3: not a CIFAR-10 python batch"):
        build_data({"name": "cifar10", "root": str(tmp_path / "cifar"), "image_size": 32})
    _fake_cifar(tmp_path / "cifar2")
    (tmp_path / "cifar2" / "test_batch").unlink()
    with pytest.raises(DataError, match="test_batch: missing CIFAR-10 batch file"):
        build_data({"name": "cifar10", "root": str(tmp_path / "cifar2"), "image_size": 32, "calib_size": 10})


def test_imagefolder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 50), ("val", 3)):
        for cls in ("cat", "dog"):
            d = tmp_path / "imgs" / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(d / f"{i}.png")
    data = build_data({"name": "imagefolder", "root": str(tmp_path / "imgs"), "image_size": 32, "calib_size": 10})
    assert data.num_classes == 2 and len(data.splits["val"]) == 6
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 90, "calib": 10, "val": 6}
    x, y = next(iter(data.eval_loader("val", 4)))
    assert x.shape == (4, 3, 32, 32)
    (tmp_path / "imgs" / "train" / "cat" / "0.png").write_bytes(b"not an image")
    bad = build_data({"name": "imagefolder", "root": str(tmp_path / "imgs"), "image_size": 32, "calib_size": 10})
    with pytest.raises(DataError, match="cannot be decoded"):
        for split in ("train", "calib"):  # the damaged file is in one of them
            for _ in bad.eval_loader(split, 100):
                pass
    for f in list((tmp_path / "imgs" / "train" / "dog").iterdir())[5:]:  # too few images to hold out a calibration split
        f.unlink()
    with pytest.raises(DataError, match="at least 10 calibration images"):
        build_data({"name": "imagefolder", "root": str(tmp_path / "imgs"), "image_size": 32, "calib_size": 10})


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"name": "mnist"}, "data.name: 'mnist' is not one of cifar10, digits, fashion, imagefolder"),
        ({"name": "cifar10"}, "data.root: required for the cifar10 dataset"),
        ({"name": "cifar10", "root": "/nonexistent/x"}, "data.root: /nonexistent/x is not a directory"),
        ({"name": "imagefolder", "root": "/nonexistent/x"}, "data.root: /nonexistent/x/train is missing"),
        ({"name": "digits", "image_size": 40}, "data.image_size: 40 is not a multiple of 32"),
        ({"name": "digits", "image_size": 0}, "data.image_size: 0 must be >= 32"),
        ({"name": "digits", "calib_size": 1}, "data.calib_size: 1 must be >= 10"),
        ({"name": "digits", "root": "/tmp"}, "data.root: the digits dataset is bundled"),
        ({"name": "fashion", "root": "/nonexistent/f"}, "data.root: /nonexistent/f is not a directory"),
        ({"name": "digits", "colour": 1}, "data.colour: unknown key; allowed: name, root, image_size"),
    ],
)
def test_data_errors(cfg, message):
    with pytest.raises(UserError) as err:
        build_data(cfg)
    assert message in str(err.value)


def test_imagefolder_224_decoding_holdout_and_bad_folders(tmp_path):
    """uint8 decode, JPEG draft for the evaluation resize (what it changes, bounded), the held-out search
    split, and one-line errors for an undecodable file in a worker, an empty class and a missing class."""
    import torch

    from helpers import write_image_folder
    from supernet.data.sources import decode_image

    root = write_image_folder(tmp_path / "imgs", classes=3, train=34, val=3, size=(64, 48), val_size=(640, 500))
    cfg = {"name": "imagefolder", "root": str(root), "image_size": 224, "calib_size": 10, "holdout": 6, "num_workers": 2}
    data = build_data(cfg)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 86, "calib": 10, "holdout": 6, "val": 9}
    held = {p for p, _ in data.splits["holdout"].files}
    assert not held & {p for p, _ in data.splits["train"].files} and data.search_split == "holdout"
    assert sorted(data.labels("holdout")) == [0, 0, 1, 1, 2, 2]  # class-balanced
    with pytest.raises(DataError, match=r"^data.holdout: 60 exceeds half of the 92 training images"):
        build_data({**cfg, "holdout": 60})
    path = data.splits["val"].files[0][0]
    full, drafted = decode_image(path), decode_image(path, data.eval_tf.min_short_side)
    assert full.dtype == torch.uint8 and drafted.shape[1] < full.shape[1] and min(drafted.shape[1:]) >= 235
    a, b = data.eval_tf(full), data.eval_tf(drafted)
    diff = ((a - b) * torch.tensor(data.cfg.std).view(3, 1, 1) * 255).abs()  # in 0-255 pixel units
    assert a.shape == b.shape == (3, 224, 224) and diff.mean() < 3 and diff.max() < 80
    x, y = next(iter(data.eval_loader("val", 4)))  # through two worker processes
    assert x.shape == (4, 3, 224, 224) and x.dtype == torch.float32
    path.write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(DataError, match=rf"^{path}: cannot be decoded as an image \(\w+\)$"):  # one line, in the main process
        for _ in build_data(cfg).eval_loader("val", 4):
            pass
    empty = root / "train" / "n00000001"
    for f in empty.iterdir():
        f.unlink()
    with pytest.raises(DataError, match=rf"^{empty}: empty class directory"):
        build_data(cfg)
    empty.rmdir()
    (root / "train" / "extra").mkdir()
    (root / "train" / "extra" / "a.jpg").write_bytes((root / "train" / "n00000000" / "img_0001.JPEG").read_bytes())
    with pytest.raises(DataError, match=r"classes not in train/|missing class directory"):
        build_data(cfg)
