"""Fashion-MNIST: the embedded subset, the full IDX reader, and one-line errors for damaged files."""
from __future__ import annotations

import gzip
import subprocess

import numpy as np
import pytest
import torch

from supernet.data import build_data
from supernet.data.fashion import EMBEDDED, build_subset, read_idx
from supernet.data.sources import DataError


def write_idx(path, array: np.ndarray, gz: bool = False) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def fake_fashion(root, n_train=300, n_test=60, gz=False):
    """A directory of the four IDX files with random images and balanced labels."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    sfx = ".gz" if gz else ""
    write_idx(root / f"train-images-idx3-ubyte{sfx}", rng.integers(0, 256, (n_train, 28, 28)), gz)
    write_idx(root / f"train-labels-idx1-ubyte{sfx}", np.arange(n_train) % 10, gz)
    write_idx(root / f"t10k-images-idx3-ubyte{sfx}", rng.integers(0, 256, (n_test, 28, 28)), gz)
    write_idx(root / f"t10k-labels-idx1-ubyte{sfx}", np.arange(n_test) % 10, gz)
    return root


def test_embedded_subset_is_the_balanced_default():
    assert EMBEDDED.is_file() and EMBEDDED.stat().st_size < 8 * 2**20
    data = build_data({"name": "fashion", "image_size": 32, "calib_size": 500})
    sizes = {k: len(v) for k, v in data.splits.items()}
    assert sizes == {"train": 10000, "val": 2500, "calib": 500} and data.num_classes == 10
    for split, per_class in (("train", 1000), ("val", 250), ("calib", 50)):
        assert torch.bincount(data.splits[split].labels, minlength=10).tolist() == [per_class] * 10
    x, y = next(iter(data.train_loader(16, 0)))
    assert x.shape == (16, 3, 32, 32) and torch.isfinite(x).all()
    assert len(build_data({"name": "fashion", "calib_size": 100}).splits["calib"]) == 100
    with pytest.raises(DataError, match="exceeds the 500 calibration images"):
        build_data({"name": "fashion", "calib_size": 600})


@pytest.mark.parametrize("gz", [False, True])
def test_full_idx_directory(tmp_path, gz):
    root = fake_fashion(tmp_path / "f", gz=gz)
    data = build_data({"name": "fashion", "root": str(root), "calib_size": 20})
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 280, "calib": 20, "val": 60}
    assert torch.bincount(data.splits["calib"].labels, minlength=10).tolist() == [2] * 10
    out = build_subset(root, tmp_path / "sub.npz", train_per_class=10, val_per_class=3, calib_per_class=2)
    with np.load(out) as z:
        assert z["train_x"].shape == (100, 28, 28) and z["val_x"].shape == (30, 28, 28) and z["calib_x"].shape == (20, 28, 28)


def _damage(root, kind):
    path = root / "train-images-idx3-ubyte"
    if kind == "missing":
        path.unlink()
    elif kind == "truncated":
        path.write_bytes(path.read_bytes()[:-100])
    elif kind == "shape":
        write_idx(path, np.zeros((300, 20, 20)))
    elif kind == "magic":
        path.write_bytes(b"\x12\x34" + path.read_bytes()[2:])
    elif kind == "labels":
        write_idx(root / "train-labels-idx1-ubyte", np.arange(299) % 10)
    elif kind == "gzip":
        (root / "t10k-labels-idx1-ubyte").unlink()
        (root / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")


@pytest.mark.parametrize("kind, message", [
    ("missing", "has no train-images-idx3-ubyte[.gz]"),
    ("truncated", "truncated or damaged"),
    ("shape", "holds (20, 20) images; expected 28x28"),
    ("magic", "not an IDX file"),
    ("labels", "300 train images but 299 labels"),
    ("gzip", "t10k-labels-idx1-ubyte.gz: cannot be read"),
])
@pytest.mark.slow
def test_damaged_idx_is_one_line_and_writes_nothing(tmp_path, kind, message):
    root = fake_fashion(tmp_path / "f")
    _damage(root, kind)
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        build_data({"name": "fashion", "root": str(root), "calib_size": 20})
    run_dir = tmp_path / "run"
    res = subprocess.run(["eformer-train", "data=fashion", f"data.root={root}", f"run_dir={run_dir}"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("eformer-train: error: ") and message.split("[")[0] in lines[0]
    assert not run_dir.exists()


def test_read_idx_checks_dimensions(tmp_path):
    write_idx(tmp_path / "x", np.zeros((4, 28, 28)))
    assert read_idx(tmp_path / "x", 3).shape == (4, 28, 28)
    with pytest.raises(DataError, match="IDX file with 3 dimension"):
        read_idx(tmp_path / "x", 1)
