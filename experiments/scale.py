"""Does the search scale to 224 px image folders? Measured in one run on a generated ImageFolder of JPEGs.

    python -m experiments.scale            # writes experiments/results/scale.md (about 10 minutes on 2 cores)

1. Peak RSS of ``eformer-search`` (tiny space, 2 random trials, default proxy settings) scoring 500 and 3,000
   val images at 224 px: the proxy streams, so the ratio should stay near 1 (goal <= 1.25).
2. Proxy images/s at 224 px for S0-sized and L-sized members (default space, 1000 classes): with the images
   kept in memory (compute only) and decoded every evaluation (the memory budget holding one batch).
3. The loader against its ceiling: our DataLoader (eval transform, 2 workers) vs a bare Pillow decode (same
   JPEG draft) and the same resize of the same files in 2 processes.
4. Pooled BN statistics over several calibration batches vs one batch: the scores they give.
5. The projected cost of one slimming run on ImageNet (10,000 held-out images + 2,000 calibration images,
   members between S0 and L, the embedded run's evaluation count) from the measured per-image cost.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from latency_lut.machine import cpu_model
from supernet.hardware import cpuinfo

RESULTS = Path(__file__).resolve().parent / "results"
RSS_SIZES = (500, 3000)
SLIMMING_EVALUATIONS = 99  # slimming to S0 in the embedded main job (issue 19's profile)


def write_folder(root: Path, classes: int, train: int, val: int, size=(500, 375), seed: int = 0) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers import write_image_folder

    return write_image_folder(root, classes=classes, train=train, val=val, size=size, seed=seed)


def peak_rss_mb(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Peak resident memory (MB) of ``cmd`` (its largest process) and its wall time."""
    probe = ("import resource, subprocess, sys, time; t = time.time(); r = subprocess.run(sys.argv[1:], capture_output=True, text=True);"
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.time() - t, r.returncode);"
             "sys.stderr.write(r.stderr[-2000:])")
    res = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True, cwd=cwd)
    kb, wall, rc = res.stdout.split()
    if rc != "0":
        raise RuntimeError(f"{' '.join(cmd)} failed: {res.stderr}")
    return int(kb) / 1024, float(wall)


def rss_part(work: Path) -> list[str]:
    root = write_folder(work / "imgs", classes=10, train=12, val=300)
    data = ["space=tiny", "data=imagefolder", f"data.root={root}", "data.calib_size=10", "data.holdout=0"]
    subprocess.run(["eformer-train", *data, "train.epochs=1", "train.batch_size=16", "train.eval_presets=[]",
                    "train.progress=false", "run_dir=sn"], cwd=work, check=True, capture_output=True)
    subprocess.run(["eformer-lut", "build", "space=tiny", "lut=quick", "lut.progress=false", "out=lut.parquet"],
                   cwd=work, check=True, capture_output=True)
    lines = ["## 1. Peak RSS of eformer-search at 224 px", "",
             "`eformer-search search=random search.n_trials=2` on the tiny space, default proxy settings "
             "(`proxy.batch_size=500`, `proxy.memory_mb=512`), 10 calibration images, JPEGs of about 500x375.", "",
             "| val images scored | peak RSS (MB) | wall (s) |", "|---|---|---|"]
    rss = {}
    for n in RSS_SIZES:
        mb, wall = peak_rss_mb(["eformer-search", "supernet=sn", "lut_file=lut.parquet", "search=random", "search.n_trials=2",
                                "budget=none", "mes.units.latency_ms=1", "proxy.cache=null", f"proxy.val_images={n}",
                                "progress=false", f"run_dir=search-{n}"], work)
        rss[n] = mb
        lines.append(f"| {n} | {mb:.0f} | {wall:.1f} |")
    ratio = rss[RSS_SIZES[1]] / rss[RSS_SIZES[0]]
    lines += ["", f"Ratio {RSS_SIZES[1]} / {RSS_SIZES[0]} images: **{ratio:.2f}** (goal <= 1.25; before streaming: "
              "2.1 GB and 10.0 GB, 4.8x).", ""]
    print("\n".join(lines), flush=True)
    return lines


def proxy_rates(work: Path, trained: Path) -> tuple[list[str], dict[str, float]]:
    """Seconds per image of one proxy evaluation (calibration + scoring) for S0- and L-sized members."""
    from search.proxy import SupernetProxy
    from supernet.arch import ArchConfig
    from supernet.data import build_data
    from supernet.elastic import Supernet

    root = write_folder(work / "imgs-rate", classes=4, train=60, val=40, seed=1)
    data = build_data({"name": "imagefolder", "root": str(root), "image_size": 224, "calib_size": 24, "num_workers": None})
    torch.manual_seed(0)
    net = Supernet("efficientformerv2", image_size=224, num_classes=1000)
    images = len(data.splits["calib"]) + len(data.splits["val"])
    lines = ["## 2. Proxy throughput at 224 px", "",
             f"One full evaluation (no incremental reuse) = BN recalibration on {len(data.splits['calib'])} images + scoring "
             f"{len(data.splits['val'])}, "
             "default space supernet (1000 classes), batch 32, `torch` threads = 2. Kept: the images stay in the "
             "memory budget after the first evaluation (compute only); decoded: a budget of one batch.", "",
             "| member | kept: images/s | decoded: images/s |", "|---|---|---|"]
    per_image = {}
    for name in ("s0", "l"):
        arch = net.member(ArchConfig.preset(name))
        row = []
        for budget_mb in (4096, 32 * 3 * 224 * 224 * 4 / 2**20):
            proxy = SupernetProxy.from_data(net, data, batch_size=32, memory_mb=budget_mb)
            proxy(arch)  # warm-up (fills the store when it can); no reference: every call is a full evaluation
            times = []
            for _ in range(2):
                proxy.cache.clear()
                t = time.perf_counter()
                proxy(arch)
                times.append(time.perf_counter() - t)
            row.append(images / min(times))
        per_image[name] = 1 / row[1]
        lines.append(f"| {name.upper()}-sized (`{arch.summary()}`) | {row[0]:.1f} | {row[1]:.1f} |")
    lines.append("")
    print("\n".join(lines), flush=True)
    return lines, per_image


def _bare(path: str, short: int, size: int) -> int:
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        f = short / min(w, h)
        im.draft("RGB", (int(np.ceil(w * f)), int(np.ceil(h * f))))
        im = im.convert("RGB")
        w, h = im.size
        nw, nh = (short, max(short, round(w * short / h))) if h <= w else (max(short, round(h * short / w)), short)
        im = im.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - size) // 2, (nh - size) // 2
        arr = np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.float32)
    return arr.shape[0]


def _bare_star(args: tuple[str, int, int]) -> int:
    return _bare(*args)


def loader_part(work: Path) -> list[str]:
    from supernet.data import build_data

    root = write_folder(work / "imgs-loader", classes=4, train=30, val=100, seed=2)
    data = build_data({"name": "imagefolder", "root": str(root), "image_size": 224, "calib_size": 12, "num_workers": 2})
    files = [str(p) for p, _ in data.splits["val"].files]
    short = data.eval_tf.min_short_side
    ours, bare = [], []
    with mp.get_context("fork").Pool(2) as pool:
        for _ in range(3):  # interleaved rounds
            t = time.perf_counter()
            n = sum(len(x) for x, _ in data.eval_loader("val", 25))
            ours.append(n / (time.perf_counter() - t))
            t = time.perf_counter()
            n = len(pool.map(_bare_star, [(f, short, 224) for f in files], chunksize=25))
            bare.append(n / (time.perf_counter() - t))
    o, b = statistics.median(ours), statistics.median(bare)
    lines = ["## 3. The loader against bare decoding", "",
             f"{len(files)} JPEGs of about 500x375, evaluation transform (shorter side {short}, centre crop 224, "
             "normalize). Ours: the DataLoader with 2 workers (decode with JPEG draft to the needed size, uint8 until "
             "the resize, batches of 25 into the main process). Ceiling: Pillow alone (same draft, Pillow's bilinear "
             "resize, crop, float array) in a pool of 2 processes. Medians of 3 interleaved rounds (the first includes "
             "starting the workers).", "",
             "| | images/s |", "|---|---|", f"| ours (DataLoader, 2 workers) | {o:.0f} |", f"| bare Pillow, 2 processes | {b:.0f} |",
             "", f"Ratio: **{o / b:.2f}** (goal >= 0.8).", ""]
    print("\n".join(lines), flush=True)
    return lines


def pooled_bn_part(trained: Path, work: Path) -> list[str]:
    from search.proxy import SupernetProxy
    from supernet.data import build_data
    from supernet.elastic import Supernet

    net = Supernet.load(trained)
    root = write_folder(work / "imgs-bn", classes=10, train=130, val=20, size=(300, 240), seed=3)
    data = build_data({"name": "imagefolder", "root": str(root), "image_size": 224, "calib_size": 120, "num_workers": None})
    lines = ["## 4. Pooled BN statistics in batches vs one batch", "",
             "The tiny supernet of part 1 (trained for a few steps at 224 px) on another folder of the same 10 classes; "
             f"{len(data.splits['calib'])} calibration images in one batch vs batches of 40 and 10 (pooled sums; each batch "
             "normalized by its own statistics), 200 val images.", "",
             "| member | batch | top-1 (%) | loss | Δ loss vs one batch | loss bootstrap sd |", "|---|---|---|---|---|---|"]
    for label, arch in (("largest", net.largest()), ("smallest", net.smallest())):
        base = None
        for bs in (120, 40, 10):
            proxy = SupernetProxy.from_data(net, data, batch_size=bs, val_images=200)
            r = proxy(arch)
            base = base or r
            lines.append(f"| {label} | {bs} | {r['top1']:.2f} | {r['loss']:.5f} | {r['loss'] - base['loss']:+.5f} | "
                         f"{r['loss_std']:.5f} |")
    lines += ["", "With one batch the statistics are the one-pass ones exactly; in several batches each BN's input was "
              "normalized upstream with its batch's statistics, so the difference grows as batches shrink. The proxy "
              "therefore calibrates in batches of `proxy.batch_size` (500 by default: the embedded calibration split is "
              "one batch).", ""]
    print("\n".join(lines), flush=True)
    return lines


def projection(per_image: dict[str, float]) -> list[str]:
    mid = (per_image["s0"] + per_image["l"]) / 2
    images = 10_000 + 2_000
    secs = mid * images * SLIMMING_EVALUATIONS
    return ["## 5. Projected cost of one slimming run on ImageNet", "",
            f"10,000 held-out training images + 2,000 calibration images per evaluation, {SLIMMING_EVALUATIONS} "
            "evaluations (the embedded slimming run to S0), members between S0 and L (the mean of their measured "
            "decoded per-image cost):", "",
            "| device | s / image (S0, L) | one evaluation | one slimming run |", "|---|---|---|---|",
            f"| this CPU (2 cores) | {per_image['s0']:.4f}, {per_image['l']:.4f} | {mid * images / 60:.1f} min | "
            f"{secs / 3600:.1f} h |",
            "| one GPU | not measured in this run (no GPU was available; `experiments/gpu_check.py` measures it) | | |", ""]


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    torch.set_num_threads(2)
    started = time.time()
    head = ["# Search at 224 px on an image folder: memory, throughput, loader", "",
            f"Measured on {cpu_model()} (family {cpuinfo().get('cpu family', '?')}, model {cpuinfo().get('model', '?')}, "
            f"{torch.get_num_threads()} torch threads), python {platform.python_version()}, "
            f"torch {torch.__version__}; {time.strftime('%Y-%m-%d')}. Regenerate: `python -m experiments.scale`.", ""]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        body = rss_part(work)
        body += loader_part(work)
        rate_lines, per_image = proxy_rates(work, work / "sn" / "supernet.pt")
        body += rate_lines
        body += pooled_bn_part(work / "sn" / "supernet.pt", work)
        body += projection(per_image)
    body.append(f"Whole run: {time.time() - started:.0f} s.")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scale.md").write_text("\n".join(head + body) + "\n")
    print(f"wrote {RESULTS / 'scale.md'}")


if __name__ == "__main__":
    main()
