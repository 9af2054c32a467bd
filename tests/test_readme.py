"""Every command the README prints is accounted for, and run exactly as printed wherever this machine can.

Each command line of the README's ``bash`` blocks has a row in :data:`HOW` (a new command fails
:func:`test_every_readme_command_is_accounted_for` until it gets one):

* ``ci``: ``.ci/run`` runs it verbatim (the install lines and the two quick-start commands);
* ``run``: run here, exactly as printed, in a scratch directory holding what the command expects
  (a copy of the committed LUT; a default-space supernet and a finished slimming run under ``runs/``);
* ``recipes``: run exactly as printed by ``tests/test_device_recipes.py`` (phone stand-ins, GPU composition);
* ``compose``: needs what no test machine has (eight GPUs and ImageNet, a database host, hours of training), or is
  a second whole main job (the heads space's pipeline: CI runs the default one):
  run exactly as printed plus Hydra's ``--cfg job`` (a sweep ``-m k=a,b``: once per value), which must compose;
* ``offline``: fetches from the internet (PyTorch's CPU wheel index): its pins are checked against
  ``constraints.txt``.

The experiment scripts of the reproduction table (``python -m experiments.<name>``) are benchmarks that take
minutes to hours; their modules must exist and define ``main``.
"""
from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()

PG = "\"storage.url='postgresql+psycopg://user:pw@db-host/optuna'\""
HOW = {
    "pip install -c constraints.txt . && eformer-pipeline": "ci",
    'pip install -c constraints.txt ".[test]" && ruff check . && pytest': "ci",
    "pip install -c constraints.txt .": "ci",
    "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu": "offline",
    "eformer-lut build": "run",
    "eformer-lut validate": "compose",
    "eformer-pipeline search_space=efficientformerv2_heads work_dir=runs/pipeline-heads": "compose",
    "eformer-lut build device.name=ort-cuda device.providers=[CUDAExecutionProvider]": "recipes",
    "echo 'adb push {onnx} /data/local/tmp/m.onnx >/dev/null && adb shell /data/local/tmp/onnxruntime_perf_test -e cpu "
    "-r {repeats} -x {threads} /data/local/tmp/m.onnx' > pixel7.cmd": "recipes",
    "eformer-lut build space=tiny device=command device.name=pixel7 device.command_file=pixel7.cmd "
    "\"device.regex='Average inference time cost: ([0-9.]+) ms'\" out=luts/pixel7-tiny.parquet": "recipes",
    "eformer-lut build space=tiny device=command device.name=pixel7 \"device.command='adb push {onnx} "
    "/data/local/tmp/m.onnx >/dev/null && adb shell /data/local/tmp/onnxruntime_perf_test -e cpu -r {repeats} -x "
    "{threads} /data/local/tmp/m.onnx'\" \"device.regex='Average inference time cost: ([0-9.]+) ms'\" "
    "out=luts/pixel7-tiny.parquet": "recipes",
    "torchrun --nproc_per_node=8 -m supernet.train.app data=imagefolder data.root=/data/imagenet "
    "data.image_size=224 train.epochs=300 train.batch_size=128 train.distillation=true run_dir=runs/train/imagenet": "compose",
    "eformer-search validate-proxy members=10 supernet=runs/train/fashion-efficientformerv2": "compose",
    "eformer-search supernet=runs/train/imagenet compute_device=cuda proxy.precision=bf16 proxy.memory_mb=16384": "compose",
    f"eformer-search search=nsga2 search.n_trials=2000 storage=url {PG} run_dir=runs/search/nsga2-imagenet "
    "worker=$i threads=1": "compose",
    "for i in 0 1 2; do eformer-search search=nsga2 storage=journal worker=$i threads=1 & done; wait": "compose",
    "eformer-search -m budget=s0,s1,s2,l": "compose",
    "eformer-export arch --run runs/pipeline/search/slimming-s0 --best": "run",
    "eformer-train finetune.arch=runs/pipeline/search/slimming-s0/export/best.yaml "
    "finetune.weights=runs/pipeline/search/slimming-s0/export/best.pt run_dir=runs/finetune/s0": "run",
    "eformer-export onnx --weights runs/finetune/s0/model.pt --out s0-found.onnx": "run",
}


def readme_commands(text: str = README) -> list[str]:
    """The command lines of every ``bash`` block: comments dropped, ``\\`` continuations joined."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        pending = ""
        for line in block.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            line = re.sub(r"\s+#\s.*$", "", line.rstrip())  # a trailing comment
            if line.endswith("\\"):
                pending += line[:-1].strip() + " "
                continue
            out.append(" ".join((pending + line.strip()).split()))
            pending = ""
    return out


def commands(how: str) -> list[str]:
    return [c for c in readme_commands() if HOW.get(c) == how]


def run(cmd: str, cwd: Path, timeout: float = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    res = subprocess.run(["bash", "-c", cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})
    assert res.returncode == 0, (cmd, res.stdout[-1500:], res.stderr[-2500:])
    return res


def test_every_readme_command_is_accounted_for():
    found = readme_commands()
    assert len(found) >= 15
    missing = [c for c in found if c not in HOW]
    assert not missing, f"README commands without a test (add them to HOW): {missing}"
    stale = [c for c in HOW if c not in found]
    assert not stale, f"HOW lists commands the README no longer prints: {stale}"


def test_ci_runs_the_install_and_quick_start_lines_verbatim():
    ci = (ROOT / ".ci" / "run").read_text()
    for cmd in commands("ci"):
        assert cmd in ci, f".ci/run does not run {cmd!r} as printed"


def test_offline_install_pins_agree_with_constraints():
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    for cmd in commands("offline"):
        words = shlex.split(cmd)
        torch_pin = next(w for w in words if w.startswith("torch=="))
        assert torch_pin == f"torch=={pins['torch']}"
        assert words[words.index("--index-url") + 1] == "https://download.pytorch.org/whl/cpu"


def test_reproduction_table_scripts_exist():
    names = re.findall(r"`python -m experiments\.(\w+)`", README)
    assert len(names) >= 15
    for name in names:
        tree = ast.parse((ROOT / "experiments" / f"{name}.py").read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body), name


def compose_variants(cmd: str) -> list[str]:
    """The command as printed with ``--cfg job`` after each of our apps' arguments (a sweep: one per value)."""
    sweep = re.search(r" -m (\S+)=(\S+,\S+)", cmd)
    if sweep:
        key, values = sweep.groups()
        return [cmd.replace(sweep.group(0), f" {key}={v}") + " --cfg job" for v in values.split(",")]
    if " & done" in cmd:  # a loop starting workers in the background
        return [cmd.replace(" & done", " --cfg job & done")]
    return [cmd + " --cfg job"]


@pytest.mark.slow
@pytest.mark.parametrize("cmd", commands("compose"))
def test_commands_that_need_other_hardware_compose_as_printed(cmd, tmp_path):
    for variant in compose_variants(cmd):
        res = run(variant, tmp_path, timeout=600, env={"i": "0"})
        jobs = 3 if "for i in 0 1 2" in cmd else 8 if "--nproc_per_node=8" in cmd else 1  # each prints its config
        printed = max(("\n" + res.stdout).count(key) for key in ("\nrun_dir:", "\nout:", "\nmembers:", "\nwork_dir:"))
        assert printed >= jobs, (variant, res.stdout[:800], res.stderr[-800:])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """What the README's ``run`` commands expect: the committed LUT under ``luts/`` and a finished slimming run at
    ``runs/pipeline/search/slimming-s0`` (a default-space supernet, untrained; the analytic proxy keeps it quick)."""
    from conf import compose
    from search.app import run_search
    from supernet.elastic import Supernet
    from supernet.space import SearchSpace

    d = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "luts", d / "luts")
    torch.manual_seed(0)
    net = Supernet(SearchSpace.load("efficientformerv2"), image_size=32, num_classes=10, distillation=False)
    data = OmegaConf.to_container(compose("eformer_train", []).data, resolve=True)
    net.save(d / "supernet.pt", train_config={f"data.{k}": v for k, v in data.items()})
    lut = d / "luts" / "ort-cpu-efficientformerv2-224.parquet"
    run_search(compose("eformer_search", [f"supernet={d / 'supernet.pt'}", f"lut_file={lut}",
                                          f"run_dir={d / 'runs/pipeline/search/slimming-s0'}", "proxy.kind=analytic",
                                          "progress=false", "search.moves_per_step=4", "search.expansion_scope=stage"]))
    return d


@pytest.mark.slow
def test_run_commands_work_as_printed(scratch):
    """``eformer-lut build`` resumes the committed LUT (complete: nothing to measure); then export the found S0,
    fine-tune it on the embedded data and export the result to ONNX, each exactly as printed."""
    cmds = commands("run")
    assert cmds and cmds[0] == "eformer-lut build"
    before = (scratch / "luts" / "ort-cpu-efficientformerv2-224.parquet").read_bytes()
    for cmd in cmds:
        res = run(cmd, scratch)
        if cmd == "eformer-lut build":
            assert "(complete=True)" in res.stdout
    assert (scratch / "luts" / "ort-cpu-efficientformerv2-224.parquet").read_bytes() == before
    export = scratch / "runs/pipeline/search/slimming-s0/export"
    assert (export / "best.yaml").is_symlink() and (export / "best.pt").resolve().is_file()
    assert (scratch / "runs/finetune/s0/model.pt").is_file() and (scratch / "s0-found.onnx").stat().st_size > 10_000
