"""Device backends behind one interface (conf/device/*.yaml).

A backend prepares a network or piece once (export, session) and then yields latency samples:

* ``ort``: onnxruntime with chosen execution providers, intra/inter-op threads and graph
  optimisation level (default ``all``, what deployment uses); the ONNX is the portable deploy form.
* ``torch``: eager PyTorch (the deploy form by default) with a thread count.
* ``command``: a real target device. For each exported ONNX file a shell command template runs
  (e.g. ``adb push`` + a benchmark binary on the phone) and a regex reads the latency (ms) from
  its output; each sample is one command run. Placeholders: {onnx} {batch} {channels} {height}
  {width} {input_shape} {warmup} {repeats} {threads}.
"""
from __future__ import annotations

import abc
import dataclasses
import math
import os
import re
import shlex
import statistics
import string
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from conf.registry import Registry
from conf.schemas import DEFAULT_OPSET
from latency_lut.timing import Protocol, Stats, flusher, measure_samplers, time_once, time_touched
from supernet.errors import UserError
from supernet.io_utils import read_user_text

# pieces and validation networks: TorchScript first (5-10x faster to export, the same graph after onnxruntime's
# optimisations as the dynamo exporter's, experiments/results/bench_exporters.md), the dynamo exporter where it fails
TIMING_EXPORTER = "fast"


class DeviceError(UserError):
    """A device configuration that cannot work, or a device command that failed."""


@dataclasses.dataclass
class Prepared:
    """A network ready to time: ``warmup()`` once, then ``sample()`` -> milliseconds, repeatedly."""

    warmup: Callable[[], None]
    sample: Callable[[], float]
    close: Callable[[], None] = lambda: None


def sampler(run: Callable[[], object], touch: Callable[[], object], protocol: Protocol) -> Callable[[], float]:
    """One latency sample of ``run`` under ``protocol`` (cold: its input re-read first; the round's flush
    comes from :meth:`Backend.before_round`)."""
    if protocol.cache == "cold":
        return lambda: time_touched(run, touch, protocol.number)
    return lambda: time_once(run, protocol.number)


def onnx_path(directory: Path) -> Path:
    """A new, unique ``.onnx`` file name under ``directory``."""
    fd, name = tempfile.mkstemp(suffix=".onnx", dir=directory)
    os.close(fd)
    return Path(name)


HOST_KEYS = ("cpu", "logical_cpus", "llc_bytes")  # latency_lut.machine.machine_summary() keys naming this host's CPU


class Backend(abc.ABC):
    """Strategy interface (one subclass per ``device.backend``): ``settings()``, ``export(module, input_shape,
    directory)`` (once per network: an ONNX file, a compiled module) and ``load(exported, input_shape, protocol)
    -> Prepared`` (a session yielding samples; may run several times on one export). A new device is a new
    subclass registered in :data:`BACKEND_CLASSES`."""

    name = "base"
    self_timed = False  # True: one prepared sample already is a median over the protocol's repeats
    exports_files = False  # True: export() writes a file and returns its path (latency_lut.export_pool runs such in parallel)
    identity_keys: tuple[str, ...] = HOST_KEYS  # machine_summary() keys that must match for this backend's LUT to hold here

    def samples_per_measurement(self, protocol: Protocol) -> int:
        return 1 if self.self_timed else protocol.repeats

    def before_round(self, protocol: Protocol) -> Optional[Callable[[], object]]:
        """What runs before every round of interleaved samples: for this host's backends under the cold
        protocol, the cache flush (:class:`latency_lut.timing.CacheFlusher`); nothing otherwise."""
        return flusher(protocol.flush_mb) if protocol.cache == "cold" and not self.self_timed else None

    @abc.abstractmethod
    def settings(self) -> dict[str, Any]:
        """Everything that affects the measured latency (recorded in the LUT)."""

    @abc.abstractmethod
    def export(self, module: nn.Module, input_shape: Sequence[int], directory: Path) -> Any:
        """``module`` in this device's form (files go under ``directory``, which the caller removes)."""

    @abc.abstractmethod
    def load(self, exported: Any, input_shape: Sequence[int], protocol: Protocol) -> Prepared:
        """A fresh session of an export, ready to yield latency samples."""

    def prepare(self, module: nn.Module, input_shape: Sequence[int], protocol: Protocol) -> Prepared:
        """Export and load in one step; closing the result removes the export's files."""
        tmp = tempfile.TemporaryDirectory(prefix="eformer-lut-")
        try:
            loaded = self.load(self.export(module, input_shape, Path(tmp.name)), input_shape, protocol)
        except BaseException:
            tmp.cleanup()
            raise

        def close() -> None:
            loaded.close()
            tmp.cleanup()

        return Prepared(loaded.warmup, loaded.sample, close)


def measure_prepared(prepared: Mapping[str, Prepared], backend: Backend, protocol: Protocol, seed: int = 0) -> dict[str, Stats]:
    """One interleaved measurement of prepared sessions under ``protocol``: each warmed up, then the samples
    ``backend`` needs per measurement taken round-robin, each round after the backend's :meth:`Backend.before_round`."""
    rounds = dataclasses.replace(protocol, repeats=backend.samples_per_measurement(protocol))
    return measure_samplers({k: p.sample for k, p in prepared.items()}, {k: p.warmup for k, p in prepared.items()},
                            rounds, seed, before_round=backend.before_round(protocol))


class OrtBackend(Backend):
    name = "ort"
    exports_files = True
    identity_keys = (*HOST_KEYS, "onnxruntime")

    def __init__(self, providers: Sequence[str] = ("CPUExecutionProvider",), threads: int = 2,
                 inter_op_threads: int = 1, graph_optimization: str = "all", allow_spinning: bool = False,
                 opset: int = DEFAULT_OPSET) -> None:
        import onnxruntime as ort

        missing = [p for p in providers if p not in ort.get_available_providers()]
        if missing:
            raise DeviceError(
                f"device.providers: {', '.join(missing)} not available in this onnxruntime "
                f"(available: {', '.join(ort.get_available_providers())})"
            )
        self.providers, self.threads, self.inter_op = list(providers), threads, inter_op_threads
        self.graph_optimization, self.allow_spinning, self.opset = graph_optimization, allow_spinning, opset

    def settings(self) -> dict[str, Any]:
        return {"backend": "ort", "providers": self.providers, "threads": self.threads,
                "inter_op_threads": self.inter_op, "graph_optimization": self.graph_optimization,
                "allow_spinning": self.allow_spinning, "opset": self.opset}

    def export(self, module: nn.Module, input_shape: Sequence[int], directory: Path) -> Path:
        from supernet.onnx_export import onnx_bytes

        path = onnx_path(directory)
        path.write_bytes(onnx_bytes(module, input_shape, self.opset, dynamic_batch=False, exporter=TIMING_EXPORTER))
        return path

    def load(self, exported: Path, input_shape: Sequence[int], protocol: Protocol) -> Prepared:
        from supernet.onnx_export import ort_session

        sess = ort_session(exported, self.threads, self.inter_op, self.providers, self.graph_optimization,
                           self.allow_spinning)
        x = np.random.default_rng(0).standard_normal(tuple(input_shape), dtype=np.float32)
        feed = {sess.get_inputs()[0].name: x}
        run = lambda: sess.run(None, feed)  # noqa: E731
        return Prepared(lambda: [run() for _ in range(protocol.warmup)], sampler(run, x.sum, protocol))


class TorchBackend(Backend):
    name = "torch"
    identity_keys = (*HOST_KEYS, "torch")

    def __init__(self, threads: int = 2, deploy: bool = True) -> None:
        self.threads, self.deploy = threads, deploy

    def settings(self) -> dict[str, Any]:
        return {"backend": "torch", "threads": self.threads, "deploy": self.deploy}

    def export(self, module: nn.Module, input_shape: Sequence[int], directory: Path) -> nn.Module:
        from supernet.deploy import fuse

        return fuse(module) if self.deploy else module.eval()

    def load(self, exported: nn.Module, input_shape: Sequence[int], protocol: Protocol) -> Prepared:
        torch.set_num_threads(self.threads)
        net = exported
        x = torch.randn(*input_shape)

        def run() -> None:
            with torch.inference_mode():
                net(x)

        return Prepared(lambda: [run() for _ in range(protocol.warmup)], sampler(run, x.sum, protocol))


PLACEHOLDERS = ("onnx", "batch", "channels", "height", "width", "input_shape", "warmup", "repeats", "threads")
MAX_COMMAND_FILE = 64 * 1024


def command_template(command: Optional[str], command_file: Optional[str]) -> str:
    """The device command template: ``device.command_file`` (a file holding it: no shell or Hydra quoting
    needed) if given, else ``device.command``; checked for ``{onnx}`` and known placeholders only."""
    if not command and not command_file:
        raise DeviceError("device.command: give the template that runs {onnx} on the device (or device.command_file)")
    where = "device.command"
    if command_file:
        where = f"device.command_file {command_file}"
        command = read_user_text(command_file, DeviceError, "device.command_file (command template)", MAX_COMMAND_FILE).strip()
    assert command is not None
    try:
        names = [field for _, field, _, _ in string.Formatter().parse(command) if field is not None]
    except ValueError as exc:
        raise DeviceError(f"{where}: {exc} (write a literal brace as {{{{ or }}}})") from None
    unknown = [n for n in names if n not in PLACEHOLDERS]
    if unknown:
        raise DeviceError(f"{where}: unknown placeholder {{{unknown[0]}}}; known: "
                          f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)} (a literal brace is {{{{ or }}}})")
    if "onnx" not in names:
        raise DeviceError(f"{where}: the template must contain {{onnx}} (the exported model's path)")
    return command


class CommandBackend(Backend):
    name = "command"
    self_timed = True  # the device's benchmark binary does the warm-up and repeats itself
    exports_files = True
    identity_keys = ()  # the device the command reaches, not this host

    def __init__(self, command: Optional[str] = None, regex: str = r"median_ms=([0-9.]+)", timeout_s: float = 300.0,
                 threads: int = 1, opset: int = DEFAULT_OPSET, workdir: Optional[str] = None, label: str = "",
                 command_file: Optional[str] = None) -> None:
        command = command_template(command, command_file)
        try:
            self.pattern = re.compile(regex)
        except re.error as exc:
            raise DeviceError(f"device.regex: {regex!r} is not a valid regular expression ({exc})") from None
        if self.pattern.groups < 1:
            raise DeviceError(f"device.regex: {regex!r} needs one capture group for the latency in ms")
        self.command, self.regex, self.timeout, self.threads, self.opset = command, regex, timeout_s, threads, opset
        self.workdir, self.label = workdir, label

    def settings(self) -> dict[str, Any]:
        return {"backend": "command", "command": self.command, "regex": self.regex, "threads": self.threads,
                "opset": self.opset, "label": self.label}

    def _run(self, path: Path, input_shape: Sequence[int], protocol: Protocol) -> float:
        b, c, h, w = input_shape
        cmd = self.command.format(onnx=shlex.quote(str(path)), batch=b, channels=c, height=h, width=w,
                                  input_shape=f"{b},{c},{h},{w}", warmup=protocol.warmup,
                                  repeats=protocol.repeats, threads=self.threads)
        try:
            res = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=self.timeout, cwd=self.workdir)
        except subprocess.TimeoutExpired:
            raise DeviceError(f"device.command timed out after {self.timeout:.0f} s: {cmd}") from None
        out = res.stdout + res.stderr
        if res.returncode != 0:
            tail = out.strip().splitlines()[-1] if out.strip() else ""
            raise DeviceError(f"device.command exited with {res.returncode}: {cmd} ({tail})")
        try:
            values = [float(m[0] if isinstance(m, tuple) else m) for m in self.pattern.findall(out)]
        except ValueError:
            raise DeviceError(f"device.regex {self.regex!r}: its first group did not capture a number in the output of: {cmd}") from None
        if not values or not all(math.isfinite(v) and v > 0 for v in values):
            raise DeviceError(f"device.regex {self.regex!r} found no latency in the output of: {cmd}")
        return statistics.median(values)

    def export(self, module: nn.Module, input_shape: Sequence[int], directory: Path) -> Path:
        from supernet.onnx_export import export_onnx

        path = onnx_path(directory)
        return export_onnx(module, path, input_shape, self.opset, dynamic_batch=False, exporter=TIMING_EXPORTER)

    def load(self, exported: Path, input_shape: Sequence[int], protocol: Protocol) -> Prepared:
        return Prepared(lambda: None, lambda: self._run(exported, input_shape, protocol))


BACKEND_CLASSES: Registry[type[Backend]] = Registry("device.backend", "device backend", DeviceError)  # conf/device/<name>.yaml
for _cls in (OrtBackend, TorchBackend, CommandBackend):
    BACKEND_CLASSES.register(_cls.name, _cls)


def make_backend(cfg: Mapping[str, Any]) -> Backend:
    """A backend from a ``device`` config group (keys: backend, name, and the backend's options)."""
    cfg = dict(cfg)
    kind = cfg.pop("backend", None)
    cfg.pop("name", None)
    cls = BACKEND_CLASSES.get_or_fail(kind)
    try:
        return cls(**cfg)
    except TypeError as exc:
        raise DeviceError(f"device: bad options for the {kind} backend ({exc})") from None
