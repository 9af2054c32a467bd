"""Build a LUT: enumerate the space's unique block signatures, measure each piece, write after every batch.

Pieces are measured in batches whose samples are interleaved. Every batch also samples one fixed
*anchor* piece (:func:`anchor_signature`, one session for the whole build), whose latency in that batch
is stored beside each entry (``anchor_ms``): the machine's speed drifts by 10-20 % over seconds on shared
VMs (and phones throttle), and that drift hits a whole batch alike, so :class:`~latency_lut.lut.LatencyLUT`
divides it out (``experiments/results/lut_ablation.md``).

Resumable: rerunning with the same settings skips the entries already in the file; a file made
with different settings (space, image size, device, protocol, anchor) is refused rather than mixed.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from tqdm import tqdm

from latency_lut.backends import TIMING_EXPORTER, Backend, Prepared, measure_prepared
from latency_lut.export_pool import ExportPool
from latency_lut.lut import LUT_FORMAT, STATISTICS, LatencyLUT, LUTError
from latency_lut.machine import machine_summary
from latency_lut.timing import Protocol, Stats
from supernet.arch import stage_resolution
from supernet.dimensions import block_variants
from supernet.io_utils import LockBusy, check_parents, file_lock
from supernet.model import build_piece
from supernet.signatures import BlockSignature, block_signature, embedding_signatures, head_signature, stem_signature
from supernet.space import SearchSpace

# settings that must match for a LUT file to be resumed
_RESUME_KEYS = ("space_hash", "image_size", "num_classes", "distillation", "batch_size", "device", "protocol", "statistic", "interleave",
                "anchor")
ANCHOR = "__anchor__"


def space_signatures(space: SearchSpace, image_size: int, num_classes: int, distillation: bool) -> list[BlockSignature]:
    """Every unique piece any member of ``space`` can contain, at ``image_size``."""
    sigs: set[BlockSignature] = {stem_signature(w, image_size) for w in space.stages[0].widths}
    for i, st in enumerate(space.stages):
        r = stage_resolution(image_size, i)
        for kind in st.block_kinds():
            sigs.update(block_signature(i, kind, resolution=r, **v) for v in block_variants(st, kind))
        if i > 0:
            for wp in space.stages[i - 1].widths:
                for w in st.widths:
                    sigs.update(embedding_signatures(i, wp, w, stage_resolution(image_size, i - 1)))
    last = stage_resolution(image_size, 3)
    sigs.update(head_signature(w, num_classes, distillation, last) for w in space.stages[3].widths)
    return sorted(sigs)


def anchor_signature(sigs: list[BlockSignature]) -> BlockSignature:
    """The build's drift reference: the FFN block of median MACs among ``sigs`` (a mid-sized piece of the
    kind most networks are made of), or the median piece of any kind where the space has no FFN."""
    pool = [s for s in sigs if s.kind == "ffn"] or sigs
    return sorted(pool, key=lambda s: (s.macs, s.key))[len(pool) // 2]


def lut_metadata(space: SearchSpace, backend: Backend, device_name: str, image_size: int, num_classes: int,
                 distillation: bool, batch_size: int, protocol: Protocol, statistic: str,
                 interleave: int, anchor: str) -> dict[str, Any]:
    return {
        "format": LUT_FORMAT, "space_name": space.name, "space_hash": space.hash, "image_size": image_size,
        "num_classes": num_classes, "distillation": distillation, "batch_size": batch_size,
        "device_name": device_name, "device": backend.settings(), "protocol": protocol.__dict__,
        "machine": machine_summary(), "created": dt.datetime.now().isoformat(timespec="seconds"),
        "statistic": statistic, "interleave": interleave, "anchor": anchor, "complete": False, "calibration": None,
        "exporter": f"{TIMING_EXPORTER}: torchscript, dynamo where it fails (torch {torch.__version__})",
    }


def measurement_order(sigs: list[BlockSignature]) -> list[BlockSignature]:
    """A stable pseudo-random order: machine drift spreads over all kinds instead of biasing one."""
    return sorted(sigs, key=lambda s: hashlib.sha1(s.key.encode()).hexdigest())


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
    statistic: str = "q25",
    interleave: int = 16,
) -> LatencyLUT:
    """Measure every signature of ``space`` not yet in ``out`` and save after each measured batch.

    Entries are measured in batches of ``interleave`` pieces (plus the anchor) whose samples are taken
    round-robin in a shuffled order: a burst of machine noise then costs a few samples of many entries
    (discarded by the lower-quartile/median summaries) instead of biasing every sample of one entry, and a
    slow or fast spell of the whole batch is seen by the anchor and divided out.
    """
    out = Path(out)
    if statistic not in STATISTICS:
        raise LUTError(f"lut.statistic: {statistic!r} is not one of {', '.join(STATISTICS)}")
    with exclusive_writer(out):
        return _build(space, backend, out, image_size, num_classes, distillation, batch_size, protocol, device_name,
                      progress, limit, statistic, interleave)


@contextlib.contextmanager
def exclusive_writer(out: Path) -> Iterator[None]:
    """Hold ``.<out name>.lock`` beside ``out`` (an advisory lock the OS drops when the holder dies, even by SIGKILL) while building
    ``out``: a second build of the same file is refused at once instead of interleaving writes with the first."""
    lock = out.with_name(f".{out.name}.lock")
    if out.is_dir():
        raise LUTError(f"out: {out} is a directory; give a .parquet file path")
    check_parents(out, LUTError, "out")
    with contextlib.ExitStack() as stack:
        try:  # only taking the lock is translated here; errors of the build itself pass through
            lock.parent.mkdir(parents=True, exist_ok=True)
            stack.enter_context(file_lock(lock, blocking=False))
        except LockBusy:
            raise LUTError(f"{out}: another eformer-lut build is writing this file; wait for it (a rerun then "
                           "resumes where it stopped) or give another out=...") from None
        except OSError as exc:
            raise LUTError(f"out: cannot write beside {out} ({exc.strerror})") from None
        yield


def _entry(st: Stats, anchor_ms: float) -> dict[str, float]:
    """A LUT row's statistics: the piece's, and the anchor's in the same batch."""
    return {"median_ms": st.median_ms, "q25_ms": st.q25_ms, "iqr_ms": st.iqr_ms, "cv": st.cv, "min_ms": st.min_ms,
            "n": st.n, "anchor_ms": anchor_ms}


def _measure_batch(batch: list, pool: ExportPool, backend: Backend, batch_size: int, protocol: Protocol,
                   fixed: dict[str, Prepared], seed: int) -> dict[str, Stats]:
    """Export a batch of pieces (in parallel, see :mod:`latency_lut.export_pool`), then load and measure them
    interleaved with the ``fixed`` sessions (the anchor)."""
    shapes = {s.key: (batch_size, *s.input_shape) for s in batch}
    with tempfile.TemporaryDirectory(prefix="eformer-lut-") as tmp:
        files = pool.export({s.key: (build_piece, s, shapes[s.key]) for s in batch}, Path(tmp))
        prepared: dict[str, Prepared] = {}
        try:
            for key, exported in files.items():
                prepared[key] = backend.load(exported, shapes[key], protocol)
            return measure_prepared({**prepared, **fixed}, backend, protocol, seed=seed)
        finally:
            for p in prepared.values():
                p.close()


def _build(space: SearchSpace, backend: Backend, out: Path, image_size: int, num_classes: int, distillation: bool,
           batch_size: int, protocol: Protocol, device_name: str, progress: bool, limit: Optional[int], statistic: str,
           interleave: int) -> LatencyLUT:
    sigs = space_signatures(space, image_size, num_classes, distillation)
    anchor = anchor_signature(sigs)
    meta = lut_metadata(space, backend, device_name, image_size, num_classes, distillation, batch_size, protocol,
                        statistic, interleave, anchor.key)
    if out.is_file():
        lut = LatencyLUT.load(out)
        diff = [k for k in _RESUME_KEYS if lut.meta.get(k) != meta[k]]
        if diff:
            detail = "; ".join(f"{k}: file {lut.meta.get(k)!r} vs now {meta[k]!r}" for k in diff)
            raise LUTError(f"{out} was built with other settings ({detail}); use another out=... or delete it")
    else:
        lut = LatencyLUT.empty(meta)
    done = set(lut.table["key"])
    todo = [s for s in measurement_order(sigs) if s.key not in done][:limit]
    bar = tqdm(total=len(todo), desc=f"eformer-lut build ({len(done)}/{len(sigs)} done)", unit="entry",
               disable=not progress, dynamic_ncols=True)
    size = max(1, interleave)
    reference = backend.prepare(build_piece(anchor), (batch_size, *anchor.input_shape), protocol) if todo else None
    try:
        with ExportPool(backend) as pool:
            for start in range(0, len(todo), size):
                batch = todo[start : start + size]
                bar.set_postfix_str(batch[0].kind)
                assert reference is not None
                stats = _measure_batch(batch, pool, backend, batch_size, protocol, {ANCHOR: reference}, start)
                anchor_ms = stats[ANCHOR].value(statistic)
                # a batch's entries complete together and are written together
                lut.add([(sig, _entry(stats[sig.key], anchor_ms)) for sig in batch])
                lut.save(out)
                bar.update(len(batch))
    finally:
        if reference is not None:
            reference.close()
    bar.close()
    changed = bool(todo)
    if len(set(lut.table["key"])) >= len(sigs) and not lut.meta.get("complete"):
        lut.meta["complete"] = True
        changed = True
    if changed or not out.is_file() or not out.with_suffix(".csv").is_file():  # a finished LUT stays byte for byte
        lut.save(out, csv=True)
    return lut
