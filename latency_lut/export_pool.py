"""Export many pieces or networks at once, one worker process per CPU, before any of them is timed.

Exporting to ONNX (tracing, graph passes, serialising) is single-threaded Python and took most of a LUT
validation's time; timing needs a quiet machine. So a batch's exports run in a pool of forked workers (one
torch thread each) and all finish before its measurement starts: the pool's workers sit blocked while
samples are taken. Each worker builds its module itself from a picklable spec (a signature, an
ArchConfig), so no module crosses a process boundary; what comes back is the export (a file path).

Backends whose export is not a file (``torch``: the module itself), platforms without ``fork``, one CPU or
one job export in this process, in order, as before.
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
from torch import nn
from tqdm import tqdm

from latency_lut.backends import Backend

Job = tuple[Callable[[Any], nn.Module], Any, Sequence[int]]  # (build, spec, input shape): build(spec) is the module


def _export(backend: Backend, job: Job, directory: Path) -> Any:
    build, spec, shape = job
    return backend.export(build(spec).eval(), shape, directory)


def _worker_init() -> None:
    torch.set_num_threads(1)


def pool_workers() -> int:
    """The CPUs this process may run on (the pool's size)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class ExportPool:
    """``with ExportPool(backend) as pool: exports = pool.export(jobs, directory)``; workers start on first use."""

    def __init__(self, backend: Backend, workers: Optional[int] = None) -> None:
        self.backend = backend
        forkable = sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()
        self.workers = (workers or pool_workers()) if backend.exports_files and forkable else 1
        self._pool: Optional[concurrent.futures.ProcessPoolExecutor] = None

    def __enter__(self) -> "ExportPool":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def export(self, jobs: Mapping[str, Job], directory: Path, desc: Optional[str] = None,
               progress: bool = False) -> dict[str, Any]:
        """Each job's export under ``directory``, by key (in ``jobs``' order)."""
        bar = tqdm(total=len(jobs), desc=desc, unit="net", disable=not progress or desc is None, dynamic_ncols=True)
        try:
            if self.workers <= 1 or len(jobs) <= 1:
                out = {}
                for key, job in jobs.items():
                    out[key] = _export(self.backend, job, directory)
                    bar.update(1)
                return out
            if self._pool is None:
                self._pool = concurrent.futures.ProcessPoolExecutor(
                    self.workers, mp_context=multiprocessing.get_context("fork"), initializer=_worker_init)
            futures = {self._pool.submit(_export, self.backend, job, directory): key for key, job in jobs.items()}
            for future in concurrent.futures.as_completed(futures):
                future.result()  # the first failure is raised here
                bar.update(1)
            return {futures_key: f.result() for f, futures_key in futures.items()}
        finally:
            bar.close()
