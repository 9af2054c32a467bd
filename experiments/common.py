"""Helpers shared by the experiment scripts: result paths, machine header, README table splicing."""
from __future__ import annotations

import datetime as _dt
import json
import re
from pathlib import Path

from latency_lut.machine import machine_summary
from supernet.io_utils import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"


def machine_header() -> str:
    """A markdown line naming the machine, runtimes and date of a measurement."""
    from supernet.hardware import cpuinfo

    m, info = machine_summary(), cpuinfo()
    family = f", family {info['cpu family']} model {info.get('model', '?')}" if info.get("cpu family") else ""
    return (
        f"Measured on {m['cpu']}{family} ({m['logical_cpus']} logical CPUs), {m['os']}; python {m['python']}, "
        f"torch {m['torch']}, onnxruntime {m['onnxruntime']}; {_dt.date.today().isoformat()}."
    )


def write_result(name: str, markdown: str, data: object) -> Path:
    """Write ``results/<name>.md`` and ``results/<name>.json`` atomically; return the markdown path."""
    md = RESULTS / f"{name}.md"
    atomic_write_text(md, markdown)
    atomic_write_text(RESULTS / f"{name}.json", json.dumps(data, indent=2, default=str) + "\n")
    return md


def splice_readme(marker: str, text: str) -> bool:
    """Replace the README block between ``<!-- marker:start -->`` and ``<!-- marker:end -->``."""
    readme = ROOT / "README.md"
    if not readme.is_file():
        return False
    src = readme.read_text(encoding="utf-8")
    pattern = re.compile(rf"(<!-- {marker}:start -->\n).*?(<!-- {marker}:end -->)", re.S)
    if not pattern.search(src):
        return False
    atomic_write_text(readme, pattern.sub(lambda m: m.group(1) + text + m.group(2), src))
    return True
