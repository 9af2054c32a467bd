"""The current (torch.export / dynamo) ONNX exporter against the legacy TorchScript one, on the released models.

    python -m experiments.bench_exporters

For S0, S1, S2 and L (224 px, deploy form, random weights): export time of each exporter, onnxruntime parity with
PyTorch, graph size, and the onnxruntime CPU latency of the two files measured interleaved in one run (2 threads,
warm, lower quartile), measured to choose the default exporter of `eformer-export` and of the LUT's pieces.
Results: experiments/results/bench_exporters.{md,json}.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from experiments.common import machine_header, write_result
from latency_lut.timing import Protocol, measure_samplers, time_once
from supernet.arch import PRESETS, ArchConfig
from supernet.model import build_model
from supernet.onnx_export import check_onnx_parity, export_onnx, ort_session


def main() -> None:
    rows, samplers, warmups = [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in PRESETS:
            model = build_model(ArchConfig.preset(name)).eval()
            for exporter in ("dynamo", "torchscript"):
                t0 = time.time()
                path = export_onnx(model, Path(tmp) / f"{name}-{exporter}.onnx", (1, 3, 224, 224), exporter=exporter)
                secs = time.time() - t0
                graph = onnx.load(str(path)).graph
                rows.append({"model": name, "exporter": exporter, "export_s": secs, "nodes": len(graph.node),
                             "parity_max_abs": check_onnx_parity(model, path)})
                sess = ort_session(str(path), threads=2)
                x = {"input": np.random.rand(1, 3, 224, 224).astype(np.float32)}
                key = f"{name}/{exporter}"
                samplers[key] = (lambda s=sess, x=x: time_once(lambda: s.run(None, x), 1))
                warmups[key] = (lambda s=sess, x=x: [s.run(None, x) for _ in range(5)])
        stats = measure_samplers(samplers, warmups, Protocol(warmup=5, repeats=40), seed=0)
    for r in rows:
        s = stats[f"{r['model']}/{r['exporter']}"]
        r["q25_ms"], r["median_ms"] = s.q25_ms, s.median_ms
    lines = ["# ONNX exporters: dynamo (torch.export + onnxscript) vs TorchScript", "",
             "`python -m experiments.bench_exporters` - released models at 224 px, deploy form; latency: onnxruntime CPU, "
             "2 threads, the eight files interleaved in one run, 40 samples each after 5 warm-up runs.", "", machine_header(), "",
             "| model | exporter | export (s) | ONNX nodes | parity max abs diff | q25 (ms) | median (ms) | q25 vs TorchScript |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        base = next(b for b in rows if b["model"] == r["model"] and b["exporter"] == "torchscript")
        lines.append(f"| {r['model'].upper()} | {r['exporter']} | {r['export_s']:.2f} | {r['nodes']} | {r['parity_max_abs']:.1e} | "
                     f"{r['q25_ms']:.2f} | {r['median_ms']:.2f} | {r['q25_ms'] / base['q25_ms']:.3f}x |")
    print(write_result("bench_exporters", "\n".join(lines) + "\n", {"rows": rows}).read_text())


if __name__ == "__main__":
    main()
