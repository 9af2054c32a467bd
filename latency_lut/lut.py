"""The latency lookup table: one row per block signature, plus metadata and a calibration.

Stored as parquet (metadata in the schema under ``eformer_lut``) with a CSV export beside it.
``predict(arch) = a * sum(block latencies) + b`` where (a, b) is the correction fitted by
``eformer-lut validate`` (1, 0 before that).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from supernet.arch import ArchConfig
from supernet.errors import UserError
from supernet.io_utils import atomic_write
from supernet.signatures import BlockSignature, arch_signatures, interned
from supernet.space import SearchSpace

LUT_FORMAT = "eformer-lut/1"
SIG_COLUMNS = [f.name for f in dataclasses.fields(BlockSignature)]
STAT_COLUMNS = ["median_ms", "q25_ms", "iqr_ms", "cv", "min_ms", "n"]
STATISTICS = {"median": "median_ms", "q25": "q25_ms"}
INT_COLUMNS = ["n", "params", "macs"]  # counts: integers in the file and after loading


class LUTError(UserError):
    """A LUT that does not fit the request (other space, image size, missing entries)."""


_META_TYPES = {"space_name": str, "space_hash": str, "image_size": int, "num_classes": int, "distillation": bool,
               "batch_size": int, "device_name": str, "device": dict}


def check_meta(meta: dict[str, Any], path: Path) -> None:
    """One-line errors for LUT metadata that is missing a field, of the wrong type or not usable."""
    for key, kind in _META_TYPES.items():
        value = meta.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise LUTError(f"{path}: metadata field {key!r} is {value!r}; expected a {kind.__name__}")
    statistic = meta.get("statistic", "median")
    if statistic not in STATISTICS:
        raise LUTError(f"{path}: metadata field 'statistic' is {statistic!r}; expected one of {', '.join(STATISTICS)}")
    cal = meta.get("calibration")
    if cal is not None:
        ok = isinstance(cal, dict) and all(
            isinstance(cal.get(k), (int, float)) and not isinstance(cal.get(k), bool) and math.isfinite(cal[k]) for k in ("a", "b"))
        kinds = cal.get("kinds") if isinstance(cal, dict) else None
        if ok and kinds is not None:
            ok = isinstance(kinds, dict) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in kinds.values())
        if not ok:
            raise LUTError(f"{path}: calibration {cal!r} is not finite numbers a and b (and per-kind factors) "
                           "(refit with eformer-lut validate)")


def check_table(df: pd.DataFrame, meta: dict[str, Any], path: Path) -> None:
    """One-line errors for missing columns, missing signature values and unusable latencies."""
    need = SIG_COLUMNS + [STATISTICS[meta.get("statistic", "median")]]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise LUTError(f"{path}: missing column(s) {', '.join(missing)}")
    for c in SIG_COLUMNS:
        if df[c].isna().any():
            raise LUTError(f"{path}: column {c!r} has empty values in {int(df[c].isna().sum())} row(s)")
        if c != "kind" and not pd.api.types.is_numeric_dtype(df[c]):
            raise LUTError(f"{path}: column {c!r} holds non-numbers")
    for c in STAT_COLUMNS:
        if c in df.columns and c in ("median_ms", "q25_ms", "min_ms"):
            values = pd.to_numeric(df[c], errors="coerce")
            bad = ~(values.notna() & (values > 0) & (values < float("inf")))
            if bad.any():
                row = int(bad.idxmax())
                raise LUTError(f"{path}: column {c!r} row {row} has latency {df[c].iloc[row]}; "
                               "every latency must be a finite positive number")


class LatencyLUT:
    """Per-signature latencies of one device, space and image size."""

    def __init__(self, table: pd.DataFrame, meta: dict[str, Any]) -> None:
        self.table = table.reset_index(drop=True)
        self.meta = meta
        self._index()

    @property
    def statistic(self) -> str:
        """Which summary of each entry's samples predictions use (``median`` or ``q25``)."""
        return self.meta.get("statistic", "median")

    def _index(self) -> None:
        column = STATISTICS[self.statistic]
        self._ms: dict[BlockSignature, float] = {
            interned(BlockSignature(*row[:-1])): row[-1]
            for row in self.table[SIG_COLUMNS + [column]].itertuples(index=False, name=None)
        }
        cal = self.meta.get("calibration") or {}
        self.a, self.b = float(cal.get("a", 1.0)), float(cal.get("b", 0.0))
        self.kind_factors: Optional[dict[str, float]] = (
            {str(k): float(v) for k, v in cal["kinds"].items()} if cal.get("kinds") else None)

    # ------------------------------------------------------------------ identity
    @property
    def image_size(self) -> int:
        return int(self.meta["image_size"])

    @property
    def context(self) -> dict[str, Any]:
        """The deployment context the pieces were measured in."""
        return {k: self.meta[k] for k in ("image_size", "num_classes", "distillation")}

    def in_context(self, arch: ArchConfig) -> ArchConfig:
        """``arch`` as deployed in this LUT's context (image size, classes, heads)."""
        return arch.replace(**self.context)

    def __len__(self) -> int:
        return len(self.table)

    # ------------------------------------------------------------------ prediction
    def add(self, sig: BlockSignature, stats: dict[str, float]) -> None:
        row = {**dataclasses.asdict(sig), "key": sig.key, **stats, "params": sig.params, "macs": sig.macs}
        self.table = pd.concat([self.table, pd.DataFrame([row])], ignore_index=True)
        self._ms[interned(sig)] = float(stats[STATISTICS[self.statistic]])

    def missing(self, arch: ArchConfig) -> list[str]:
        return [s.key for s in arch_signatures(arch) if s not in self._ms]

    def block_sum(self, arch: ArchConfig) -> float:
        """Uncalibrated sum of the pieces' latencies (ms)."""
        if arch.image_size != self.image_size:
            raise LUTError(
                f"this LUT was built for image size {self.image_size}, not {arch.image_size} "
                f"(build one with eformer-lut build image_size={arch.image_size}, or use lut.in_context(arch))"
            )
        ms = self._ms
        try:
            return sum(ms[s] for s in arch_signatures(arch))
        except KeyError:
            raise LUTError(
                f"no LUT entry for {', '.join(self.missing(arch)[:5])} (LUT space {self.meta['space_name']} "
                f"{self.meta['space_hash']}, {self.meta['num_classes']} classes, distillation {self.meta['distillation']})"
            ) from None

    def kind_sums(self, arch: ArchConfig) -> dict[str, float]:
        """The uncalibrated piece latencies of ``arch`` summed per piece kind (stem, ffn, attn, embed, ...)."""
        self.block_sum(arch)  # the same checks (image size, missing entries)
        out: dict[str, float] = {}
        for s in arch_signatures(arch):
            out[s.kind] = out.get(s.kind, 0.0) + self._ms[s]
        return out

    def predict(self, arch: ArchConfig) -> float:
        """Predicted latency (ms): ``sum_k a_k * kind_sum_k + b`` with a per-kind calibration,
        ``a * block_sum(arch) + b`` with a global one (``eformer-lut validate`` fits and picks)."""
        if self.kind_factors is None:
            return self.a * self.block_sum(arch) + self.b
        return sum(self.kind_factors.get(k, self.a) * v for k, v in self.kind_sums(arch).items()) + self.b

    def set_calibration(self, **calibration: Any) -> None:
        self.meta["calibration"] = calibration
        self._index()

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike, csv: bool = False) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(self.table, preserve_index=False)
        # keep pandas' own schema entry (dtypes) beside ours
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"eformer_lut": json.dumps(self.meta).encode()})

        def write(tmp: str) -> None:
            pq.write_table(table, tmp)

        out = atomic_write(path, write)
        if csv:
            atomic_write(Path(path).with_suffix(".csv"), lambda tmp: self.table.to_csv(tmp, index=False))
        return out

    @classmethod
    def empty(cls, meta: dict[str, Any]) -> "LatencyLUT":
        cols = SIG_COLUMNS + ["key"] + STAT_COLUMNS + ["params", "macs"]
        return cls(pd.DataFrame({c: pd.Series(dtype="object" if c in ("kind", "key") else "float") for c in cols}), meta)

    @classmethod
    def load(cls, path: str | os.PathLike, space: Optional[SearchSpace] = None,
             image_size: Optional[int] = None) -> "LatencyLUT":
        """Read a LUT; refuse one built for another space or image size when those are given."""
        import pyarrow.parquet as pq

        p = Path(path)
        if not p.is_file():
            raise LUTError(f"{p}: LUT file not found (build one with eformer-lut build)")
        try:
            table = pq.read_table(p)
            meta = json.loads((table.schema.metadata or {})[b"eformer_lut"])
        except Exception as exc:
            raise LUTError(f"{p}: not a latency LUT ({type(exc).__name__})") from None
        if not isinstance(meta, dict):
            raise LUTError(f"{p}: LUT metadata is a {type(meta).__name__}, expected a mapping")
        if meta.get("format") != LUT_FORMAT:
            raise LUTError(f"{p}: unsupported LUT format {meta.get('format')!r} (expected {LUT_FORMAT})")
        check_meta(meta, p)
        if space is not None and meta["space_hash"] != space.hash:
            raise LUTError(
                f"{p} was built for space {meta['space_name']} ({meta['space_hash']}), not {space.name} ({space.hash}); "
                "build a LUT for this space"
            )
        if image_size is not None and meta["image_size"] != image_size:
            raise LUTError(f"{p} was built for image size {meta['image_size']}, not {image_size}")
        df = table.to_pandas()
        check_table(df, meta, p)
        for c in SIG_COLUMNS + INT_COLUMNS:
            if c != "kind" and c in df.columns and df[c].notna().all():
                df[c] = df[c].astype("int64")
        return cls(df, meta)

    def foreign_machine_warning(self, path: str | os.PathLike) -> Optional[str]:
        """One line when this LUT was measured on another machine or runtime than this one (else None)."""
        from latency_lut.machine import identity_differences

        m = self.meta
        diff = identity_differences(m.get("machine", {}), m.get("device", {}).get("backend", "ort"))
        if not diff:
            return None
        built = m.get("machine", {})
        return (f"warning: {path} was measured on {built.get('cpu')} ({built.get('logical_cpus')} CPUs, onnxruntime "
                f"{built.get('onnxruntime')}) and differs here in {'; '.join(diff)}: a LUT is per device, so its "
                "latencies may not hold on this machine; rebuild it here with eformer-lut build")

    def describe(self) -> str:
        m = self.meta
        cal = m.get("calibration")
        cal_s = f"a={cal['a']:.4f} b={cal['b']:.4f} ms" if cal else "none (eformer-lut validate fits one)"
        return (
            f"LUT {m['space_name']} ({m['space_hash']}), image {m['image_size']}, batch {m['batch_size']}, "
            f"{len(self)} entries, complete={m.get('complete', False)}, statistic={self.statistic}\n"
            f"device {m['device_name']}: {json.dumps(m['device'])}\n"
            f"protocol {json.dumps(m['protocol'])}; machine {m['machine']['cpu']}; created {m['created']}\n"
            f"calibration: {cal_s}"
        )



def warn_if_foreign(lut: LatencyLUT, path: str | os.PathLike, prog: str) -> None:
    """Print one warning line on stderr when ``lut`` was measured on another machine or runtime."""
    import sys

    msg = lut.foreign_machine_warning(path)
    if msg:
        print(f"{prog}: {msg}", file=sys.stderr)
