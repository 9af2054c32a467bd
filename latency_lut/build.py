"""Build a LUT: enumerate the space's unique block signatures, measure each piece, write after every entry.

Resumable: rerunning with the same settings skips the entries already in the file; a file made
with different settings (space, image size, device, protocol) is refused rather than mixed.
"""
from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any, Optional

from tqdm import tqdm

from latency_lut.backends import Backend
from latency_lut.lut import LUT_FORMAT, LatencyLUT, LUTError
from latency_lut.machine import machine_summary
from latency_lut.timing import Protocol, Stats
from supernet.arch import stage_resolution
from supernet.model import build_piece
from supernet.signatures import BlockSignature, block_signature, embedding_signatures, head_signature, stem_signature
from supernet.space import SearchSpace

# settings that must match for a LUT file to be resumed
_RESUME_KEYS = ("space_hash", "image_size", "num_classes", "distillation", "batch_size", "device", "protocol")


def space_signatures(space: SearchSpace, image_size: int, num_classes: int, distillation: bool) -> list[BlockSignature]:
    """Every unique piece any member of ``space`` can contain, at ``image_size``."""
    sigs: set[BlockSignature] = {stem_signature(w, image_size) for w in space.stages[0].widths}
    for i, st in enumerate(space.stages):
        r = stage_resolution(image_size, i)
        kinds = (["ffn"] if st.max_ffn > 0 else []) + (["attn"] if st.max_attn > 0 else [])
        for w in st.widths:
            for e in st.expansions:
                sigs.update(block_signature(i, k, w, e, r) for k in kinds)
        if i > 0:
            for wp in space.stages[i - 1].widths:
                for w in st.widths:
                    sigs.update(embedding_signatures(i, wp, w, stage_resolution(image_size, i - 1)))
    last = stage_resolution(image_size, 3)
    sigs.update(head_signature(w, num_classes, distillation, last) for w in space.stages[3].widths)
    return sorted(sigs)


def lut_metadata(space: SearchSpace, backend: Backend, device_name: str, image_size: int, num_classes: int,
                 distillation: bool, batch_size: int, protocol: Protocol) -> dict[str, Any]:
    return {
        "format": LUT_FORMAT, "space_name": space.name, "space_hash": space.hash, "image_size": image_size,
        "num_classes": num_classes, "distillation": distillation, "batch_size": batch_size,
        "device_name": device_name, "device": backend.settings(), "protocol": protocol.__dict__,
        "machine": machine_summary(), "created": dt.datetime.now().isoformat(timespec="seconds"),
        "complete": False, "calibration": None,
    }


def build_lut(
    space: SearchSpace,
    backend: Backend,
    out: str | os.PathLike,
    image_size: int = 224,
    num_classes: int = 1000,
    distillation: bool = True,
    batch_size: int = 1,
    protocol: Protocol = Protocol(),
    device_name: str = "",
    progress: bool = True,
    limit: Optional[int] = None,
) -> LatencyLUT:
    """Measure every signature of ``space`` not yet in ``out``; write ``out`` after each entry."""
    out = Path(out)
    meta = lut_metadata(space, backend, device_name, image_size, num_classes, distillation, batch_size, protocol)
    if out.is_file():
        lut = LatencyLUT.load(out)
        diff = [k for k in _RESUME_KEYS if lut.meta.get(k) != meta[k]]
        if diff:
            detail = "; ".join(f"{k}: file {lut.meta.get(k)!r} vs now {meta[k]!r}" for k in diff)
            raise LUTError(f"{out} was built with other settings ({detail}); use another out=... or delete it")
    else:
        lut = LatencyLUT.empty(meta)
    sigs = space_signatures(space, image_size, num_classes, distillation)
    done = set(lut.table["key"])
    todo = [s for s in sigs if s.key not in done][:limit]
    bar = tqdm(todo, desc=f"eformer-lut build ({len(done)}/{len(sigs)} done)", unit="entry", disable=not progress,
               dynamic_ncols=True)
    for sig in bar:
        bar.set_postfix_str(sig.key)
        prepared = backend.prepare(build_piece(sig), (batch_size, *sig.input_shape), protocol)
        try:
            prepared.warmup()
            stats = Stats.of([prepared.sample() for _ in range(backend.samples_per_measurement(protocol))])
        finally:
            prepared.close()
        lut.add(sig, {"median_ms": stats.median_ms, "iqr_ms": stats.iqr_ms, "cv": stats.cv,
                      "min_ms": stats.min_ms, "n": stats.n})
        lut.save(out)
    if len(set(lut.table["key"])) >= len(sigs) and not lut.meta.get("complete"):
        lut.meta["complete"] = True
    lut.save(out, csv=True)
    return lut
