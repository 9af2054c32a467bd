"""ONNX export of a network or a single piece (deploy form, opset >= 17), and an onnxruntime session helper."""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from conf.schemas import DEFAULT_OPSET, DYNAMO_MIN_OPSET, EXPORTERS, MIN_OPSET
from supernet.deploy import fuse
from supernet.errors import UserError
from supernet.io_utils import atomic_write

# which exporters each choice tries, in order; "fast" (TorchScript first) times pieces and whole networks in LUT
# builds and validations, and writes the main job's exports: TorchScript exports 5-10x faster, and after
# onnxruntime's optimisations both exporters' graphs are the same and run alike (experiments/results/bench_exporters.md)
_TRY = {"auto": ("dynamo", "torchscript"), "dynamo": ("dynamo",), "torchscript": ("torchscript",),
        "fast": ("torchscript", "dynamo")}


def _torchscript_bytes(net: nn.Module, dummy: torch.Tensor, opset: int, dynamic_batch: bool) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # only the legacy exporter's own deprecation notice (we use it on purpose, see _TRY); anything else still shows
        warnings.filterwarnings("ignore", message=r"You are using the legacy TorchScript-based ONNX export", category=DeprecationWarning)
        for category in (DeprecationWarning, FutureWarning):  # ... and its internals' notices about themselves
            warnings.filterwarnings("ignore", category=category, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # shape tests on static export shapes
        torch.onnx.export(
            net, (dummy,), buf, dynamo=False, opset_version=opset, input_names=["input"], output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None,
            do_constant_folding=True,
        )
    return buf.getvalue()


def _gelu_as_onnxruntime_fuses_it(self, approximate: str = "none"):
    """aten.gelu for opsets before ONNX's own Gelu (20): ``(x * (1 + erf(x / sqrt 2))) * 0.5``. torchlib writes
    ``x * (0.5 * (1 + erf(...)))``, which onnxruntime does not fuse into one Gelu kernel: 35 unfused GELUs made
    S0 1.37x slower (experiments/results/bench_exporters.md). The TorchScript exporter writes this order."""
    from onnxscript import opset18 as op

    if approximate != "none":
        raise NotImplementedError(f"gelu(approximate={approximate!r})")
    inner = op.Div(self, op.Constant(value_float=1.4142135623730951))
    return op.Mul(op.Mul(self, op.Add(op.Erf(inner), op.Constant(value_float=1.0))), op.Constant(value_float=0.5))


def _dynamo_bytes(net: nn.Module, dummy: torch.Tensor, opset: int, dynamic_batch: bool) -> bytes:
    import logging

    if opset < DYNAMO_MIN_OPSET:
        raise ValueError(f"opset: the dynamo exporter writes opset {DYNAMO_MIN_OPSET} or newer, not {opset}")
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms" x4
    table = {torch.ops.aten.gelu.default: _gelu_as_onnxruntime_fuses_it} if opset < 20 else None
    try:
        with warnings.catch_warnings():  # torch.export's own deprecation notice about its internals
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
            program = torch.onnx.export(
                net, (dummy,), dynamo=True, opset_version=opset, input_names=["input"], output_names=["output"],
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None,
                optimize=True, verbose=False, custom_translation_table=table,
            )
    finally:
        registration.setLevel(level)
    assert program is not None
    return program.model_proto.SerializeToString()


_EXPORT = {"torchscript": _torchscript_bytes, "dynamo": _dynamo_bytes}


def exporter_order(exporter: str, opset: int) -> tuple[str, ...]:
    """The exporters ``exporter`` tries, in order, at ``opset`` (the dynamo exporter needs opset >= 18)."""
    if exporter not in _TRY:
        raise ValueError(f"exporter: {exporter!r} is not one of {', '.join(EXPORTERS)}")
    order = _TRY[exporter]
    if opset < DYNAMO_MIN_OPSET and exporter != "dynamo":
        order = tuple(e for e in order if e != "dynamo")
    return order


def onnx_bytes(
    model: nn.Module,
    input_shape: Sequence[int],
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    deploy: bool = True,
    exporter: str = "auto",
) -> bytes:
    """Serialise ``model`` (converted to its portable deploy form unless ``deploy=False``) to ONNX.

    ``input_shape`` is (B, C, H, W); the batch axis is dynamic when ``dynamic_batch``. ``exporter``:
    ``auto`` (the current ``torch.export``-based exporter, TorchScript where it fails), ``dynamo`` or
    ``torchscript`` (the legacy exporter, also the only one for opset 17). Both write the same operators and,
    with the GELU translation above, the same graph after onnxruntime's optimisations: the same latency and
    outputs (``experiments/results/bench_exporters.md``).
    """
    if opset < MIN_OPSET:
        raise ValueError(f"opset: {opset} is below the supported minimum {MIN_OPSET}")
    order = exporter_order(exporter, opset)
    net = fuse(model, gemm_kernels=False) if deploy else model.eval()
    dummy = torch.zeros(*input_shape)
    for i, name in enumerate(order):
        try:
            return _EXPORT[name](net, dummy, opset, dynamic_batch)
        except Exception as exc:
            if i == len(order) - 1:
                raise
            warnings.warn(f"the {name} ONNX exporter failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                          f"used the {order[i + 1]} exporter instead", RuntimeWarning, stacklevel=2)
    raise AssertionError("unreachable")


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    input_shape: Sequence[int],
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    deploy: bool = True,
    exporter: str = "auto",
    check: Optional[Callable[[Path], object]] = None,
) -> Path:
    """Write ``model`` as ONNX to ``path`` atomically and check it with the ONNX checker, then with ``check``
    (called on the written file before it takes the name ``path``: if it raises, nothing is left at ``path``)."""
    import onnx

    data = onnx_bytes(model, input_shape, opset, dynamic_batch, deploy, exporter)
    onnx.checker.check_model(onnx.load_from_string(data))

    def _write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    return atomic_write(path, _write, None if check is None else lambda tmp: check(Path(tmp)))


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


def check_onnx_parity(model: nn.Module, path: Path, threads: int = 2, name: Optional[str | os.PathLike] = None) -> float:
    """Max |onnxruntime - PyTorch| on a random batch of two; raises if above ONNX_TOLERANCE (messages name
    ``name``, default ``path``)."""
    size = model.arch.image_size
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x).numpy()
    shown = name or path
    if not np.isfinite(ref).all():
        raise UserError(f"{shown}: the PyTorch model's outputs are not finite (NaN/inf weights?); nothing written")
    got = ort_session(path, threads=threads).run(None, {"input": x.numpy()})[0]
    err = float(abs(ref - got).max())
    if not err <= ONNX_TOLERANCE:  # also catches NaN
        raise RuntimeError(f"{shown}: onnxruntime differs from PyTorch by {err:.2e} (> {ONNX_TOLERANCE}); nothing written")
    return err
