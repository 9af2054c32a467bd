"""The README's device recipes run exactly as printed, with stand-ins for the phone: an ``adb`` script that
keeps the pushed file in a local folder, and an ``onnxruntime_perf_test`` that runs it with onnxruntime and
prints its latency in the real binary's format."""
from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from latency_lut.lut import LatencyLUT

ROOT = Path(__file__).resolve().parents[1]

ADB = """#!/bin/sh
# stand-in for adb: the phone's /data/local/tmp is $FAKE_PHONE
case "$1" in
  push) cp "$2" "$FAKE_PHONE/$(basename "$3")" ;;
  shell) shift; cmd=$(echo "$*" | sed "s#/data/local/tmp#$FAKE_PHONE#g"); exec sh -c "$cmd" ;;
  *) echo "adb stand-in: unsupported $1" >&2; exit 1 ;;
esac
"""

PERF_TEST = f"""#!{sys.executable}
# stand-in for onnxruntime_perf_test -e cpu -r REPEATS -x THREADS MODEL
import sys, time, numpy as np, onnxruntime as ort
args = sys.argv[1:]
opts = dict(zip(args[:-1:2], args[1:-1:2]))
so = ort.SessionOptions(); so.intra_op_num_threads = int(opts.get("-x", 1))
s = ort.InferenceSession(args[-1], so, providers=["CPUExecutionProvider"])
i = s.get_inputs()[0]
x = np.random.rand(*i.shape).astype(np.float32)
s.run(None, {{i.name: x}})
t = []
for _ in range(int(opts.get("-r", 10))):
    t0 = time.perf_counter(); s.run(None, {{i.name: x}}); t.append(time.perf_counter() - t0)
print("Average inference time cost: %.4f ms" % (1000 * sum(t) / len(t)))
"""


def readme_commands(after: str) -> list[str]:
    """The command lines of the first ```bash block after the line containing ``after``."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text[text.index(after):], re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def phone(tmp_path: Path) -> dict[str, str]:
    bin_dir, fake = tmp_path / "bin", tmp_path / "phone"
    bin_dir.mkdir()
    fake.mkdir()
    for path, text in ((bin_dir / "adb", ADB), (fake / "onnxruntime_perf_test", PERF_TEST)):
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_PHONE": str(fake)}


@pytest.mark.slow
@pytest.mark.parametrize("after", ["Keep the template in a file", "Inline, the template needs Hydra's quotes"])
def test_phone_recipe_as_printed(tmp_path, after):
    env = phone(tmp_path)
    for line in readme_commands(after):
        res = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, (line, res.stderr[-1500:])
    lut = LatencyLUT.load(tmp_path / "luts" / "pixel7-tiny.parquet")
    assert lut.meta["complete"] and len(lut) > 10
    assert lut.meta["device"]["backend"] == "command" and "onnxruntime_perf_test" in lut.meta["device"]["command"]
    assert (lut.table["median_ms"] > 0).all()


@pytest.mark.slow
def test_gpu_recipe_composes_and_refuses_cleanly_without_cuda(tmp_path):
    line = next(c for c in readme_commands("### Build a LUT for a phone") if "CUDAExecutionProvider" in c)
    res = subprocess.run(["bash", "-c", line + " --cfg job"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "- CUDAExecutionProvider" in res.stdout and "name: ort-cuda" in res.stdout
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        res = subprocess.run(["bash", "-c", line], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert res.returncode == 2 and "device.providers: CUDAExecutionProvider not available" in res.stderr
        assert "Traceback" not in res.stderr and not (tmp_path / "luts").exists()
