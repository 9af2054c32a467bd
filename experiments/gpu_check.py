"""One prepared check of the CUDA paths, in a single call (<= 8 minutes on one GPU):

    python -m experiments.gpu_check                  # on a GPU machine: writes experiments/results/gpu_check.md
    python -m experiments.gpu_check --tiny --out X   # anywhere (CPU, tiny settings): the same code paths run

1. Sandwich-rule supernet steps at 224 px on synthetic tensors (default space, 1000 classes), fp32 and bf16
   autocast, contiguous and channels-last input: images/s per sandwich step and peak memory; one step's
   channels-last gradients against the contiguous ones.
2. Proxy scoring on the compute device against the CPU: images/s, and the same member's top-1 and loss on
   both (tolerance: top-1 within one image, loss within 1e-3 relative; TF32 and cuDNN kernels differ).
3. A one-process torchrun launch of eformer-train (NCCL on a GPU, gloo on the CPU).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sandwich_rates(device: torch.device, tiny: bool) -> list[str]:
    from supernet.elastic import Supernet
    from supernet.train.precision import resolve_precision
    from supernet.train.sandwich import sandwich_members, sandwich_step

    space, size, batch, steps = ("tiny", 64, 8, 2) if tiny else ("efficientformerv2", 224, 64, 6)
    torch.manual_seed(0)
    net = Supernet(space, image_size=size, num_classes=1000).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    lines = [f"## 1. Sandwich steps ({space} space, {size} px, batch {batch}, largest + smallest + 2 random)", "",
             "| precision | layout | images/s per step | s / step | peak memory (GiB) |", "|---|---|---|---|---|"]
    for name in ("fp32", "bf16"):
        try:
            precision = resolve_precision(name, device)
        except Exception as exc:  # bf16 on a CPU without native bf16
            lines.append(f"| {name} | | not run: {exc} | | |")
            continue
        for layout in ("contiguous", "channels_last"):  # eformer-train's train.channels_last
            xs = x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times = []
            for step in range(steps + 1):
                members = sandwich_members(net.space, step, 0, 2, **net.context)
                _sync(device)
                t = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                sandwich_step(net.train(), net, members, xs, y, precision=precision)
                opt.step()
                _sync(device)
                if step:  # the first step warms up kernels and allocator
                    times.append(time.perf_counter() - t)
            s = sorted(times)[len(times) // 2]
            peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
            lines.append(f"| {name} | {layout} | {batch / s:.1f} | {s:.3f} | {peak:.2f} |")
    lines += ["", layout_gradients(net, x, y, device)]
    return lines + [""]


def layout_gradients(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> str:
    """One fp32 sandwich step's gradients with a channels-last input against a contiguous one (same weights,
    members and batch): ||diff|| / ||grad|| over every parameter (CPU check: <= 1e-5)."""
    from supernet.train.sandwich import sandwich_members, sandwich_step

    grads = []
    for xs in (x, x.contiguous(memory_format=torch.channels_last)):
        torch.manual_seed(0)  # the same drop-path draws
        net.zero_grad(set_to_none=True)
        sandwich_step(net.train(), net, sandwich_members(net.space, 0, 0, 2, **net.context), xs, y)
        grads.append(torch.cat([p.grad.flatten().double() for p in net.parameters() if p.grad is not None]))
    rel = float((grads[0] - grads[1]).norm() / grads[0].norm())
    verdict = "within 1e-5" if rel <= 1e-5 else "ABOVE 1e-5 (TF32/cuDNN kernels differ on a GPU)"
    return f"Channels-last vs contiguous, one fp32 sandwich step on {device}: ||diff|| / ||grad|| {rel:.1e} ({verdict})."


def proxy_agreement(device: torch.device, tiny: bool, work: Path) -> list[str]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers import write_image_folder
    from search.proxy import SupernetProxy
    from supernet.arch import ArchConfig
    from supernet.data import build_data
    from supernet.elastic import Supernet

    root = write_image_folder(work / "imgs", classes=4, train=30, val=10 if tiny else 60)
    data = build_data({"name": "imagefolder", "root": str(root), "image_size": 64 if tiny else 224, "calib_size": 12,
                       "num_workers": None})
    torch.manual_seed(0)
    net = Supernet("tiny" if tiny else "efficientformerv2", image_size=data.cfg.image_size, num_classes=4)
    arch = net.largest() if tiny else net.member(ArchConfig.preset("s0"))
    images = len(data.splits["calib"]) + len(data.splits["val"])
    rows, scores = [], {}
    for dev in dict.fromkeys([torch.device("cpu"), device]):
        proxy = SupernetProxy.from_data(net, data, device=dev, batch_size=32)
        proxy(arch)  # warm-up, fills the image store
        proxy.cache.clear()
        _sync(dev)
        t = time.perf_counter()
        scores[dev.type] = proxy(arch)
        _sync(dev)
        rows.append(f"| {dev} | {images / (time.perf_counter() - t):.1f} | {scores[dev.type]['top1']:.2f} | "
                    f"{scores[dev.type]['loss']:.6f} |")
    a, b = scores["cpu"], scores[device.type]
    one_image = 100.0 / len(data.splits["val"])
    ok = abs(a["top1"] - b["top1"]) <= one_image + 1e-9 and abs(a["loss"] - b["loss"]) <= 1e-3 * abs(a["loss"])
    return [f"## 2. Proxy scoring ({arch.summary()}, {images} images incl. calibration, kept in memory)", "",
            "| device | images/s | top-1 (%) | loss |", "|---|---|---|---|", *rows, "",
            f"{device} vs CPU: |Δ top-1| = {abs(a['top1'] - b['top1']):.3f}, |Δ loss| = {abs(a['loss'] - b['loss']):.2e}: "
            f"{'within' if ok else 'OUTSIDE'} tolerance.", ""]


def torchrun_launch(device: torch.device, work: Path) -> list[str]:
    root = work / "imgs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", "-m", "supernet.train.app", "space=tiny",
           "data=imagefolder", f"data.root={root}", "data.image_size=64", "data.calib_size=12", "data.holdout=0", "train.epochs=1",
           "train.batch_size=16", "train.eval_presets=[]", "train.progress=false", f"compute_device={device.type}",
           f"run_dir={work / 'ddp'}"]
    t = time.time()
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    ok = res.returncode == 0 and (work / "ddp" / "supernet.pt").is_file()
    backend = "NCCL" if device.type == "cuda" else "gloo"
    said = [x for x in res.stderr.splitlines() if "error" in x.lower()] or res.stderr.strip().splitlines() or [""]
    tail = "" if ok else f" (exit {res.returncode}: {said[0][:300]})"
    return ["## 3. torchrun, one process", "", f"`torchrun --nproc_per_node=1 -m supernet.train.app ... compute_device="
            f"{device.type}` ({backend}): {'completed, supernet.pt written' if ok else 'FAILED'}{tail} in {time.time() - t:.0f} s.", ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny settings (any machine, about a minute on a CPU)")
    ap.add_argument("--out", type=Path, default=RESULTS / "gpu_check.md")
    args = ap.parse_args()
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    what = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU: CPU"
    lines = [f"# GPU check on {what}", "", f"torch {torch.__version__}, CUDA {torch.version.cuda}; "
             f"{'tiny settings' if args.tiny else 'full settings'}; {time.strftime('%Y-%m-%d %H:%M')}.", ""]
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        lines += sandwich_rates(device, args.tiny)
        lines += proxy_agreement(device, args.tiny, work)
        lines += torchrun_launch(device, work)
    lines.append(f"Whole check: {time.time() - started:.0f} s.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
