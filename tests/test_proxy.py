"""The supernet proxy: exact incremental evaluation, whole val split, continuous score with noise,
and the validate-proxy command end to end on a tiny space."""
from __future__ import annotations

import json
import random
import signal
import subprocess
import time

import pytest
import torch

from helpers import randomize_stats
from search.proxy import AccuracyProxy, AnalyticProxy, SupernetProxy, bootstrap_std
from supernet.data import build_data
from supernet.elastic import Supernet
from supernet.evaluation import evaluate_member

CTX = {"image_size": 32, "num_classes": 10, "distillation": False}


def _proxy_and_data():
    torch.manual_seed(0)
    net = Supernet("tiny", **CTX)
    randomize_stats(net)
    data = build_data({"name": "digits", "calib_size": 60})
    return net, data, SupernetProxy.from_data(net, data)


def test_incremental_proxy_equals_full_evaluate_member():
    net, data, proxy = _proxy_and_data()
    assert isinstance(proxy, AccuracyProxy) and isinstance(AnalyticProxy(), AccuracyProxy)
    assert len(proxy.val.labels) == len(data.splits["val"]) == 360 and len(proxy.calib.labels) == 60  # whole splits
    rng = random.Random(1)
    momenta = {n: m.momentum for n, m in net.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    ref = net.space.sample(rng, **CTX)
    proxy.reference(ref)
    checked = 0
    for _ in range(12):
        arch = net.space.sample(rng, **CTX)
        if rng.random() < 0.7:  # share the first stages with the reference: incremental path
            keep = rng.randint(1, 3)
            arch = arch.replace(stages=ref.stages[:keep] + arch.stages[keep:])
            if not net.space.contains(arch):
                continue
        got = proxy(arch)
        full = evaluate_member(net, arch, data.eval_loader("calib", 60), data.eval_loader("val", 500), 1)
        assert abs(got["top1"] - full["top1"]) < 1e-9, (arch.summary(), got, full)
        assert abs(got["loss"] - full["loss"]) < 1e-4
        assert got["top1_std"] > 0 and got["loss_std"] > 0
        checked += 1
    assert checked >= 8
    # recalibration restored each BN's own momentum (not a hard-coded value)
    assert momenta == {n: m.momentum for n, m in net.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}


def test_proxy_cache_is_shared_and_survives_torn_lines(tmp_path):
    net, data, _ = _proxy_and_data()
    cache = tmp_path / "cache.jsonl"
    a = SupernetProxy.from_data(net, data, cache_path=cache, cache_key="k")
    arch = net.smallest()
    first = a(arch)
    with open(cache, "a") as fh:
        fh.write('{"key": "k", "arch_hash": "x", "top1"')  # a writer killed mid-line
    b = SupernetProxy.from_data(net, data, cache_path=cache, cache_key="k")
    assert b.cached(arch) == first and b.evaluations == 0


def test_bootstrap_std_matches_the_binomial_noise():
    values = torch.tensor([100.0] * 800 + [0.0] * 200)  # top-1 80 % on 1000 images
    expected = (0.8 * 0.2 / 1000) ** 0.5 * 100
    assert abs(bootstrap_std(values, resamples=2000) - expected) < 0.15 * expected


def _tiny_supernet_and_lut(tmp_path):
    """A one-epoch tiny supernet on digits and a quick ORT LUT of its space."""
    train = ["eformer-train", "space=tiny", "data=digits", "data.calib_size=60", "train.epochs=1",
             "train.batch_size=64", "train.eval_presets=[]", "train.progress=false", f"run_dir={tmp_path / 'sn'}"]
    assert subprocess.run(train, capture_output=True).returncode == 0
    lut = tmp_path / "lut.parquet"
    from latency_lut.backends import OrtBackend
    from latency_lut.build import build_lut
    from latency_lut.timing import Protocol
    from supernet.space import SearchSpace

    build_lut(SearchSpace.load("tiny"), OrtBackend(threads=1), lut, protocol=Protocol(warmup=1, repeats=3),
              device_name="ort-test", progress=False, image_size=64, num_classes=10, distillation=False)
    return tmp_path / "sn", lut


@pytest.mark.slow
def test_validate_proxy_end_to_end(tmp_path):
    """Killed (SIGKILL) once two standalone runs have finished, then rerun: it keeps them untouched and trains
    only the rest; then the report, its statistics, the reuse of every run, and the bad inputs."""
    _, lut = _tiny_supernet_and_lut(tmp_path)
    cmd = ["eformer-search", "validate-proxy", f"supernet={tmp_path / 'sn'}", f"lut_file={lut}", "members=4", "pool=40",
           "bootstrap=200", "progress=false", f"run_dir={tmp_path / 'vp'}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while len(list((tmp_path / "vp").glob("standalone/*/seed*/final.json"))) < 2 and time.time() < deadline:
        assert proc.poll() is None, "validate-proxy ended before it could be killed"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # a finished run's training log has one line per step; the rerun must not add to it (nothing retrained)
    done = {p.parent: (p.parent / "train_log.jsonl").read_bytes() for p in (tmp_path / "vp").glob("standalone/*/seed*/final.json")}
    assert 2 <= len(done) < 8 and not (tmp_path / "vp" / "proxy_validation.json").exists()
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert {d: (d / "train_log.jsonl").read_bytes() for d in done} == done
    assert "Kendall tau" in res.stdout and "split-half ceiling" in res.stdout
    out = json.loads((tmp_path / "vp" / "proxy_validation.json").read_text())
    assert out["members"] == 4 and len({r["arch_hash"] for r in out["rows"]}) == 4 and out["standalone_seeds"] == [0, 1]
    lats = [r["latency_ms"] for r in out["rows"]]
    assert lats == sorted(lats)  # one member per latency stratum, in order
    edges = out["latency_bin_edges_ms"]
    assert len(edges) == 5 and edges == sorted(edges) and edges[0] <= lats[0] and lats[-1] <= edges[-1]
    for r in out["rows"]:
        assert len(r["standalone_top1_seeds"]) == 2 and r["steps"] == out["steps_per_member"] > 0
        assert r["standalone_top1"] == pytest.approx(sum(r["standalone_top1_seeds"]) / 2)
        assert all(0 <= v <= 100 for v in r["standalone_top1_seeds"])
        runs = sorted(p.name for p in (tmp_path / "vp" / "standalone").glob(f"{r['arch_hash'][:10]}-*/seed*"))
        assert runs == ["seed0", "seed1"]  # a run directory per seed: the seeds no longer collide
    for key in ("loss_vs_top1", "loss_vs_loss", "top1_vs_top1"):
        t = out["stats"][key]
        assert -1 <= t["low"] <= t["high"] <= 1
    assert -1 <= out["stats"]["ceiling"]["top1"]["tau"] <= 1
    assert (tmp_path / "vp" / "proxy_validation.png").stat().st_size > 1000
    again = subprocess.run(cmd, capture_output=True, text=True)  # every standalone run is reused
    assert again.returncode == 0 and json.loads((tmp_path / "vp" / "proxy_validation.json").read_text())["rows"] == out["rows"]
    bad = subprocess.run(cmd[:-1] + ["members=2", f"run_dir={tmp_path / 'vp2'}"], capture_output=True, text=True)
    assert bad.returncode == 2 and "members: 2 must be >= 3" in bad.stderr and not (tmp_path / "vp2").exists()
    bad = subprocess.run(cmd[:-1] + ["standalone_seeds=1", f"run_dir={tmp_path / 'vp3'}"], capture_output=True, text=True)
    assert bad.returncode == 2 and "standalone_seeds: 1 must be >= 2" in bad.stderr and not (tmp_path / "vp3").exists()
    bad = subprocess.run(cmd[:-1] + ["members=9217", "pool=10000", f"run_dir={tmp_path / 'vp4'}"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith(
        "eformer-search validate-proxy: error: members: 9217 is more than the 9216 distinct members space tiny holds")
    assert not (tmp_path / "vp4").exists()


def test_standalone_config_is_a_checked_train_config(tmp_path):
    """The standalone run of validate-proxy is typed and checked like a composed eformer-train config; a recorded
    setting out of range or unknown is refused by name."""
    from omegaconf import OmegaConf

    from conf import compose
    from conf.schemas import TrainApp
    from search.standalone import standalone_config
    from supernet.errors import UserError
    from supernet.train.checkpoint import flatten

    recorded = flatten(OmegaConf.to_container(compose("eformer_train", ["data=digits"]), resolve=True))
    arch = Supernet("tiny", **CTX).space.sample(random.Random(0), **CTX)
    cfg = standalone_config(recorded, arch, tmp_path / "sa", seed=3)
    assert isinstance(cfg, TrainApp)
    assert cfg.train.seed == 3 and cfg.finetune.arch == str(tmp_path / "sa" / "arch.yaml")
    with pytest.raises(UserError, match="train.epochs: 0 must be >= 1"):
        standalone_config({**recorded, "train.epochs": 0}, arch, tmp_path / "sb")
    with pytest.raises(UserError, match="train.no_such_setting"):
        standalone_config({**recorded, "train.no_such_setting": 1}, arch, tmp_path / "sc")
