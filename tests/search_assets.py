"""What the search tests share: a tiny supernet and its tiny real-onnxruntime LUT, and the search CLI on them."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from conf import compose
from latency_lut.backends import OrtBackend
from latency_lut.build import build_lut
from latency_lut.lut import LatencyLUT
from latency_lut.timing import Protocol
from supernet.elastic import Supernet
from supernet.space import SearchSpace

TINY = SearchSpace.load("tiny")
DEPLOY = {"image_size": 64, "num_classes": 10, "distillation": False}


def build_search_assets(tmp_path_factory) -> Path:
    """:func:`make_search_assets` in a fresh directory of the test session."""
    return make_search_assets(tmp_path_factory.mktemp("search"))


def make_search_assets(d: Path) -> Path:
    """A tiny supernet (digits context, untrained but with varied weights) and its tiny LUT, latencies following
    MACs, in ``d`` (``supernet.pt``, ``tiny.parquet``); also the inputs of ``experiments.kill_test`` and the hostile
    corpus. Returns ``d``."""
    torch.manual_seed(0)
    net = Supernet(TINY, image_size=32, num_classes=10, distillation=False)
    data = OmegaConf.to_container(compose("eformer_train", ["data=digits"]).data, resolve=True)
    net.save(d / "supernet.pt", train_config={f"data.{k}": v for k, v in data.items()})
    build_lut(TINY, OrtBackend(threads=1), d / "tiny.parquet", protocol=Protocol(warmup=1, repeats=3),
              device_name="ort-test", progress=False, **DEPLOY)
    # Sub-millisecond pieces timed 3 times are at the mercy of machine load (a loaded CI box once timed the
    # largest tiny member faster than the smallest, so no budget between them existed). The search tests need
    # a LUT that orders members by size, not this machine's noise: latencies from the real file's MACs.
    lut = LatencyLUT.load(d / "tiny.parquet")
    for column in ("median_ms", "q25_ms", "min_ms"):
        lut.table[column] = 0.01 + lut.table["macs"] / 2e7
    lut.table["anchor_ms"] = 1.0  # no drift to divide out
    lut.save(d / "tiny.parquet")
    return d


def overrides(assets, run_dir, *extra):
    return [f"supernet={assets / 'supernet.pt'}", f"lut_file={assets / 'tiny.parquet'}", f"run_dir={run_dir}",
            f"proxy.cache={assets / 'proxy-cache.jsonl'}", "proxy.calib_images=32", "proxy.val_images=64",
            "progress=false", "threads=1", "mes.units.latency_ms=1.0", *extra]


def cli(assets, run_dir, *extra, **kw):
    cmd = [sys.executable, "-m", "search.app", *overrides(assets, run_dir, *extra)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
