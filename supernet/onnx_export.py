"""ONNX export of a network or a single piece (deploy form, opset >= 17), and an onnxruntime session helper."""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from supernet.deploy import fuse
from supernet.errors import UserError
from supernet.io_utils import atomic_write

DEFAULT_OPSET = 17


EXPORTERS = ("auto", "dynamo", "torchscript")


def _torchscript_bytes(net: nn.Module, dummy: torch.Tensor, opset: int, dynamic_batch: bool) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # only the legacy exporter's own deprecation notices; anything else still shows
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # shape tests on static export shapes
        torch.onnx.export(
            net, (dummy,), buf, dynamo=False, opset_version=opset, input_names=["input"], output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None,
            do_constant_folding=True,
        )
    return buf.getvalue()


def _dynamo_bytes(net: nn.Module, dummy: torch.Tensor, opset: int, dynamic_batch: bool) -> bytes:
    import logging


    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms" x4
    try:
        program = torch.onnx.export(
            net, (dummy,), dynamo=True, opset_version=opset, input_names=["input"], output_names=["output"],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None,
            optimize=True, verbose=False,
        )
    finally:
        registration.setLevel(level)
    return program.model_proto.SerializeToString()


def onnx_bytes(
    model: nn.Module,
    input_shape: Sequence[int],
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    deploy: bool = True,
    exporter: str = "torchscript",
) -> bytes:
    """Serialise ``model`` (converted to its portable deploy form unless ``deploy=False``) to ONNX.

    ``input_shape`` is (B, C, H, W); the batch axis is dynamic when ``dynamic_batch``. ``exporter``:
    ``torchscript`` (the legacy exporter), ``dynamo`` (``torch.export`` + onnxscript, the current one) or
    ``auto`` (TorchScript, the dynamo exporter where TorchScript fails or is gone). TorchScript stays first
    on measurement: its graphs of the released models run 1.34-1.42x faster under onnxruntime CPU than the
    dynamo exporter's, and export 7-11x faster (``experiments/results/bench_exporters.md``).
    """
    if opset < 17:
        raise ValueError(f"opset: {opset} is below the supported minimum 17")
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter: {exporter!r} is not one of {', '.join(EXPORTERS)}")
    net = fuse(model, gemm_kernels=False) if deploy else model.eval()
    dummy = torch.zeros(*input_shape)
    if exporter == "dynamo":
        return _dynamo_bytes(net, dummy, opset, dynamic_batch)
    try:
        return _torchscript_bytes(net, dummy, opset, dynamic_batch)
    except Exception as exc:
        if exporter == "torchscript":
            raise
        warnings.warn(f"the TorchScript ONNX exporter failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                      "used the dynamo exporter instead", RuntimeWarning, stacklevel=2)
        return _dynamo_bytes(net, dummy, opset, dynamic_batch)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    input_shape: Sequence[int],
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    deploy: bool = True,
    exporter: str = "torchscript",
) -> Path:
    """Write ``model`` as ONNX to ``path`` atomically and check it with the ONNX checker."""
    import onnx

    data = onnx_bytes(model, input_shape, opset, dynamic_batch, deploy, exporter)
    onnx.checker.check_model(onnx.load_from_string(data))

    def _write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    return atomic_write(path, _write)


def ort_session(
    model: str | os.PathLike | bytes,
    threads: int = 2,
    inter_op_threads: int = 1,
    providers: Optional[Sequence[str]] = None,
    graph_optimization: str = "all",
    allow_spinning: bool = False,
):
    """An onnxruntime InferenceSession with explicit thread counts and optimisation level.

    Spinning is off by default: idle ORT worker threads otherwise busy-wait after each run and steal
    the cores from whatever runs next (another session, or PyTorch), which doubled measured
    latencies in interleaved benchmarks on a 2-core machine.
    """
    import onnxruntime as ort

    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if graph_optimization not in levels:
        raise ValueError(f"graph_optimization: {graph_optimization!r} is not one of {', '.join(levels)}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = inter_op_threads
    opts.graph_optimization_level = levels[graph_optimization]
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, sess_options=opts, providers=list(providers or ["CPUExecutionProvider"]))


ONNX_TOLERANCE = 1e-4


def check_onnx_parity(model: nn.Module, path: Path, threads: int = 2) -> float:
    """Max |onnxruntime - PyTorch| on a random batch of two; raises if above ONNX_TOLERANCE."""
    size = model.arch.image_size
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x).numpy()
    if not np.isfinite(ref).all():
        raise UserError(f"{path}: the PyTorch model's outputs are not finite (NaN/inf weights?); nothing to compare")
    got = ort_session(path, threads=threads).run(None, {"input": x.numpy()})[0]
    err = float(abs(ref - got).max())
    if not err <= ONNX_TOLERANCE:  # also catches NaN
        raise RuntimeError(f"{path}: onnxruntime differs from PyTorch by {err:.2e} (> {ONNX_TOLERANCE})")
    return err
