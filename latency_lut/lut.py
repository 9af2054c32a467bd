"""The latency lookup table: one row per block signature, plus metadata and a calibration.

Stored as parquet (metadata in the schema under ``eformer_lut``) with a CSV export beside it. Each entry's
latency is its measured statistic (``q25_ms`` or ``median_ms``) divided by the build's drift anchor as
measured in the same batch and multiplied by the anchor's median over the file (``anchor_ms``; see
:mod:`latency_lut.build`). ``predict(arch)`` applies the calibration fitted by ``eformer-lut validate``
(:mod:`latency_lut.calibration`) to the network's features (its pieces' latencies, per kind, and their
count); before that it is the plain sum.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import pandas as pd

from latency_lut.calibration import KIND_PREFIX, from_stored, weighted
from latency_lut.machine import identity_differences
from supernet.arch import ArchConfig
from supernet.errors import UserError
from supernet.io_utils import atomic_write, check_readable
from supernet.signatures import KINDS, BlockSignature, arch_signatures, interned, option_columns
from supernet.space import SearchSpace

LUT_FORMAT = "eformer-lut/2"
READABLE_FORMATS = ("eformer-lut/1", LUT_FORMAT)  # /1: no drift anchor, calibration without weights


def sig_columns() -> list[str]:
    """A signature's columns (``BlockSignature.row``): its plain fields, then a column per block option (a LUT
    written before an option existed lacks its column: every row then held the default, which reads as 0)."""
    return [f.name for f in dataclasses.fields(BlockSignature) if f.name != "options"] + list(option_columns())


STAT_COLUMNS = ["median_ms", "q25_ms", "iqr_ms", "cv", "min_ms", "n", "anchor_ms"]
LATENCY_COLUMNS = ("median_ms", "q25_ms", "min_ms", "anchor_ms")
STATISTICS = {"median": "median_ms", "q25": "q25_ms"}
INT_COLUMNS = ["n", "params", "macs"]  # counts: integers in the file and after loading


class LUTError(UserError):
    """A LUT that does not fit the request (other space, image size, missing entries)."""


FEATURES = ("sum", *(KIND_PREFIX + k for k in KINDS), "pieces")  # what a calibration may weigh
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
        def number(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        ok = isinstance(cal, dict) and number(cal.get("a")) and number(cal.get("b"))
        for key, names in (("kinds", KINDS), ("weights", FEATURES)):
            part = cal.get(key) if ok else None
            if ok and part is not None:
                ok = isinstance(part, dict) and all(k in names and number(v) for k, v in part.items())
        if not ok:
            raise LUTError(f"{path}: calibration {str(cal)[:200]!r} is not finite numbers a and b (and weights of the "
                           f"features {', '.join(FEATURES)}) (refit with eformer-lut validate)")


def check_table(df: pd.DataFrame, meta: dict[str, Any], path: Path) -> None:
    """One-line errors for missing columns, missing signature values and unusable latencies."""
    need = sig_columns() + [STATISTICS[meta.get("statistic", "median")]]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise LUTError(f"{path}: missing column(s) {', '.join(missing)}")
    for c in sig_columns():
        if df[c].isna().any():
            raise LUTError(f"{path}: column {c!r} has empty values in {int(df[c].isna().sum())} row(s)")
        if c != "kind" and not pd.api.types.is_numeric_dtype(df[c]):
            raise LUTError(f"{path}: column {c!r} holds non-numbers")
    for c in STAT_COLUMNS:
        if c in df.columns and c in LATENCY_COLUMNS:
            values = pd.to_numeric(df[c], errors="coerce")
            bad = ~(values.notna() & (values > 0) & (values < float("inf")))
            if bad.any():
                row = int(bad.idxmax())
                raise LUTError(f"{path}: column {c!r} row {row} has latency {df[c].iloc[row]}; "
                               "every latency must be a finite positive number")


_KIND_FEATURE = {k: KIND_PREFIX + k for k in KINDS}


def _features(pieces: Sequence[tuple[BlockSignature, float]]) -> dict[str, float]:
    out: dict[str, float] = {"sum": 0.0, "pieces": float(len(pieces))}
    for s, v in pieces:
        key = _KIND_FEATURE[s.kind]
        out[key] = out.get(key, 0.0) + v
        out["sum"] += v
    return out


class LatencyLUT:
    """Per-signature latencies of one device, space and image size."""

    def __init__(self, table: pd.DataFrame, meta: dict[str, Any]) -> None:
        self._table = table.reset_index(drop=True)
        self.meta = meta
        self._index()

    @property
    def table(self) -> pd.DataFrame:
        """The entries. Whoever takes the table may change it in place, so the index is rebuilt before the
        next lookup (internal code reads ``_table`` and keeps the index)."""
        self._stale = True
        return self._table

    @table.setter
    def table(self, table: pd.DataFrame) -> None:
        self._table = table.reset_index(drop=True)
        self._stale = True

    def _fresh(self) -> None:
        if self._stale:
            self._index()

    @property
    def statistic(self) -> str:
        """Which summary of each entry's samples predictions use (``median`` or ``q25``)."""
        return self.meta.get("statistic", "median")

    def _index(self) -> None:
        values = self._table[STATISTICS[self.statistic]].astype(float)
        if "anchor_ms" in self._table.columns and len(self._table) and self._table["anchor_ms"].notna().all():
            anchor = self._table["anchor_ms"].astype(float)
            values = values * (float(anchor.median()) / anchor)  # the batch's drift divided out
        self._values = values
        self._stale = False
        columns = sig_columns()
        self._ms: dict[BlockSignature, float] = {
            interned(BlockSignature.from_row(dict(zip(columns, row)))): float(v)
            for row, v in zip(self._table[columns].itertuples(index=False, name=None), values)
        }
        cal = from_stored(self.meta.get("calibration") or {"model": "sum", "a": 1.0, "b": 0.0})
        self.a, self.b = float(cal["a"]), float(cal["b"])
        self.weights: dict[str, float] = {str(k): float(v) for k, v in cal["weights"].items()}

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
        return len(self._table)

    # ------------------------------------------------------------------ prediction
    def add(self, entries: Sequence[tuple[BlockSignature, Mapping[str, float]]]) -> None:
        """Append measured entries (signature, statistics); re-indexed once, as the anchor's median moves."""
        rows = [{**sig.row(), "key": sig.key, **stats, "params": sig.params, "macs": sig.macs}
                for sig, stats in entries]
        self._table = pd.concat([self._table, pd.DataFrame(rows)], ignore_index=True)
        self._index()

    def latency(self, sig: BlockSignature) -> float:
        """One entry's latency (ms) as predictions use it (drift-anchored statistic)."""
        self._fresh()
        return self._ms[interned(sig)]

    def missing(self, arch: ArchConfig) -> list[str]:
        self._fresh()
        return [s.key for s in arch_signatures(arch) if s not in self._ms]

    def _pieces(self, arch: ArchConfig) -> list[tuple[BlockSignature, float]]:
        """``arch``'s pieces with their latencies (ms), after checking the LUT covers it."""
        if arch.image_size != self.image_size:
            raise LUTError(
                f"this LUT was built for image size {self.image_size}, not {arch.image_size} "
                f"(build one with eformer-lut build image_size={arch.image_size}, or use lut.in_context(arch))"
            )
        self._fresh()
        ms = self._ms
        try:
            return [(s, ms[s]) for s in arch_signatures(arch)]
        except KeyError:
            raise LUTError(
                f"no LUT entry for {', '.join(self.missing(arch)[:5])} (LUT space {self.meta['space_name']} "
                f"{self.meta['space_hash']}, {self.meta['num_classes']} classes, distillation {self.meta['distillation']})"
            ) from None

    def block_sum(self, arch: ArchConfig) -> float:
        """Uncalibrated sum of the pieces' latencies (ms)."""
        return sum(v for _, v in self._pieces(arch))

    def features(self, arch: ArchConfig) -> dict[str, float]:
        """What calibrations weigh (:data:`FEATURES`): the pieces' latencies in all (``sum``) and per kind
        (``sum:<kind>``), and how many pieces there are (``pieces``)."""
        return _features(self._pieces(arch))

    def predict(self, arch: ArchConfig) -> float:
        """Predicted latency (ms): the calibration's weighted features plus its offset (the plain sum before
        ``eformer-lut validate`` fitted one)."""
        pieces = self._pieces(arch)
        if self.weights.keys() == {"sum"}:  # the global and plain-sum models need only the sum, not per-kind features
            return self.weights["sum"] * sum(v for _, v in pieces) + self.b
        return weighted(self.weights, self.b, _features(pieces))

    def set_calibration(self, **calibration: Any) -> None:
        self.meta["calibration"] = calibration
        self._index()

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike, csv: bool = False) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(self._table, preserve_index=False)
        # keep pandas' own schema entry (dtypes) beside ours
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"eformer_lut": json.dumps(self.meta).encode()})

        def write(tmp: str) -> None:
            pq.write_table(table, tmp)

        out = atomic_write(path, write)
        if csv:
            self._fresh()
            table = self._table.assign(latency_ms=self._values)  # what predictions use (drift-anchored)
            atomic_write(Path(path).with_suffix(".csv"), lambda tmp: table.to_csv(tmp, index=False))
        return out

    @classmethod
    def empty(cls, meta: dict[str, Any]) -> "LatencyLUT":
        cols = sig_columns() + ["key"] + STAT_COLUMNS + ["params", "macs"]
        return cls(pd.DataFrame({c: pd.Series(dtype="object" if c in ("kind", "key") else "float") for c in cols}), meta)

    @classmethod
    def load(cls, path: str | os.PathLike, space: Optional[SearchSpace] = None,
             image_size: Optional[int] = None) -> "LatencyLUT":
        """Read a LUT; refuse one built for another space or image size when those are given."""
        import pyarrow.parquet as pq

        p = Path(path)
        if not p.exists():
            raise LUTError(f"{p}: LUT file not found (build one with eformer-lut build)")
        check_readable(p, LUTError, "LUT")
        try:
            table = pq.read_table(p)
            meta = json.loads((table.schema.metadata or {})[b"eformer_lut"])
        except Exception as exc:
            raise LUTError(f"{p}: not a latency LUT ({type(exc).__name__})") from None
        if not isinstance(meta, dict):
            raise LUTError(f"{p}: LUT metadata is a {type(meta).__name__}, expected a mapping")
        if meta.get("format") not in READABLE_FORMATS:
            raise LUTError(f"{p}: unsupported LUT format {meta.get('format')!r} (expected one of {', '.join(READABLE_FORMATS)})")
        check_meta(meta, p)
        if space is not None and meta["space_hash"] != space.hash:
            raise LUTError(
                f"{p} was built for space {meta['space_name']} ({meta['space_hash']}), not {space.name} ({space.hash}); "
                "build a LUT for this space"
            )
        if image_size is not None and meta["image_size"] != image_size:
            raise LUTError(f"{p} was built for image size {meta['image_size']}, not {image_size}")
        df = table.to_pandas()
        for column in option_columns():
            if column not in df.columns:
                df[column] = 0
        check_table(df, meta, p)
        for c in sig_columns() + INT_COLUMNS:
            if c != "kind" and c in df.columns and df[c].notna().all():
                df[c] = df[c].astype("int64")
        return cls(df, meta)

    def foreign_machine_warning(self, path: str | os.PathLike) -> Optional[str]:
        """One line when this LUT was measured on another machine or runtime than this one (else None)."""
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
        cal_s = (f"{cal.get('model', 'global')}: " + ", ".join(f"{k}={v:.4g}" for k, v in self.weights.items())
                 + f", b={self.b:.4f} ms" if cal else "none (eformer-lut validate fits one)")
        return (
            f"LUT {m['space_name']} ({m['space_hash']}), image {m['image_size']}, batch {m['batch_size']}, "
            f"{len(self)} entries, complete={m.get('complete', False)}, statistic={self.statistic}, "
            f"drift anchor {m.get('anchor') or 'none'}\n"
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
