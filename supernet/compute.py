"""The compute device a network runs on: ``compute_device=auto|cpu|cuda|cuda:N`` in every app that runs
networks (training, the search's proxy, validate-proxy, the pipeline). The name ``device`` is the latency
target's config group (the device a LUT is measured on); this is where the supernet computes.

``auto`` is the first CUDA GPU when torch sees one, else the CPU. Under torchrun, ``auto`` and ``cuda``
mean each rank's own GPU (``cuda:LOCAL_RANK``).
"""
from __future__ import annotations

import re
from typing import Optional

import torch

from supernet.errors import UserError

CHOICES = "auto, cpu, cuda or cuda:N"
_SPEC = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")


def resolve_device(spec: str, key: str = "compute_device", local_rank: Optional[int] = None) -> torch.device:
    """The torch device ``spec`` names, checked against this machine (a one-line error naming ``key``)."""
    m = _SPEC.match(str(spec).strip())
    if m is None or (m.group(2) is not None and m.group(1) != "cuda"):
        raise UserError(f"{key}: {spec!r} is not one of {CHOICES}")
    kind, index = m.group(1), m.group(2)
    if kind == "cpu" or (kind == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError(f"{key}: {spec!r} needs a CUDA GPU, and this machine has none visible to torch "
                        f"{torch.__version__}; use {key}=cpu or {key}=auto")
    n = torch.cuda.device_count()
    i = int(index) if index is not None else (local_rank or 0)
    if index is not None and local_rank is not None:
        raise UserError(f"{key}: {spec!r} names one GPU, but torchrun gives each rank its own; use {key}=cuda")
    if i >= n:
        raise UserError(f"{key}: {spec!r}: this machine has {n} CUDA device(s) (cuda:0..cuda:{n - 1})")
    return torch.device("cuda", i)
