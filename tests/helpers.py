"""Test helpers: paths to the reference fixtures in tests/data, random valid architectures, BN randomisation."""
from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

from supernet.arch import ALLOWED_EXPANSIONS, ArchConfig, BlockConfig, StageConfig

REPO = Path(__file__).resolve().parents[1]
# Random-weight S0 in the release layout and its logits, made with the authors' code (copied from the
# project's reference material so that a clone alone runs every test).
S0_FIXTURE = REPO / "tests" / "data" / "official_efficientformerv2_s0"

torch.set_num_threads(2)


def random_arch(rng: random.Random, image_sizes=(32, 64, 96, 128, 224)) -> ArchConfig:
    """A random valid ArchConfig (attention blocks anywhere in stages 3-4, any order)."""
    stages = []
    for i in range(4):
        width = 8 * rng.randint(1, 12)
        blocks = []
        for _ in range(rng.randint(1, 4)):
            kind = "attn" if i >= 2 and rng.random() < 0.4 else "ffn"
            heads = rng.choice((1, 2, 4, 8, 12)) if kind == "attn" else 8
            blocks.append(BlockConfig(kind, rng.choice(ALLOWED_EXPANSIONS), {"heads": heads}))
        stages.append(StageConfig(width, tuple(blocks)))
    return ArchConfig(
        stages=tuple(stages),
        image_size=rng.choice(image_sizes),
        num_classes=rng.randint(1, 50),
        distillation=rng.random() < 0.5,
        drop_path_rate=rng.choice([0.0, 0.1]),
    )


@torch.no_grad()
def randomize_stats(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BN statistics, layer scales and bias tables, so folding/export checks can fail."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    for name, p in model.named_parameters():
        if name.endswith("gamma"):
            p.copy_(torch.rand(p.shape, generator=g) * 0.8 + 0.2)
        elif name.endswith("attention_biases"):
            p.copy_(torch.randn(p.shape, generator=g))
    return model


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 120.0, poll: float = 0.2) -> None:
    """SIGKILL ``proc``'s process group as soon as ``ready()`` holds (exceptions count as not yet), or at ``timeout``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if ready():
                break
        except Exception:
            pass
        time.sleep(poll)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def write_image_folder(root: Path, classes: int = 3, train: int = 20, val: int = 6, size: tuple[int, int] = (300, 240),
                       seed: int = 0, val_size: tuple[int, int] | None = None) -> Path:
    """An ImageNet-layout folder of real JPEG files (root/{train,val}/<class>/*.JPEG): each class a colour
    and stripe orientation, with noise, so a network can learn it; sizes vary around ``size``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("val", val)):
        base = val_size if split == "val" and val_size else size
        for c in range(classes):
            d = root / split / f"n{c:08d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                w, h = base[0] + int(rng.integers(-40, 41)), base[1] + int(rng.integers(-40, 41))
                yy, xx = np.mgrid[0:h, 0:w]
                stripes = np.sin((xx if c % 2 else yy) * (0.05 + 0.03 * c))[..., None]
                colour = np.array([(c * 80) % 256, (c * 150 + 60) % 256, (255 - c * 60) % 256], dtype=float)
                img = colour * (0.6 + 0.4 * stripes) + rng.normal(0, 25, (h, w, 3))
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f"img_{i:04d}.JPEG", quality=90)
    return root



GLOO_ABORT = re.compile(r"exitcode\s*:\s*-6\b")


def rank_stderr(log_dir: Path) -> str:
    """Each rank's stderr tail from a torchrun run teed into ``log_dir`` (torchrun's own report names no cause)."""
    return "\n".join(f"{p.relative_to(log_dir)}: {p.read_text()[-1500:]}" for p in sorted(log_dir.rglob("stderr.log")))


def run_torchrun(args: Callable[[int], list[str]], log_dir: Path,
                 nproc: int = 2) -> tuple[subprocess.CompletedProcess, int]:
    """``torchrun --standalone --nproc_per_node=nproc *args(attempt)`` on CPUs (gloo, one thread per rank), every
    rank's streams teed into ``log_dir/attempt<N>``. Returns the last attempt's process and its number.

    A run in which a rank died of SIGABRT is run once more, as attempt 1, and the first attempt's rank stderr is
    reported as a warning. Such an abort struck a 2-rank test in 2 of about 15 full-suite runs on these VMs (the
    CI of 12313b7, a local run on 2026-12-04), never in 80 runs of the training one alone (idle, beside two busy
    loops, beside the not-slow suite); torchrun's report named no cause, so the ranks' stderr is kept now. Any
    other failure, or a second abort, is returned as it is (``rank_stderr`` shows its cause)."""
    for attempt in (0, 1):
        logs = log_dir / f"attempt{attempt}"
        res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                              "--log-dir", str(logs), "--tee", "3", *args(attempt)],
                             capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if res.returncode == 0 or attempt or not GLOO_ABORT.search(res.stderr):
            break
        warnings.warn(f"a torchrun rank died of SIGABRT; running once more. Its ranks' stderr:\n{rank_stderr(logs)}",
                      stacklevel=2)
    return res, attempt
