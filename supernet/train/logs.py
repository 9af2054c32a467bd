"""Append-only JSONL logs that survive resumption without duplicated rows, plus CSV export."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional

from supernet.io_utils import atomic_write_text


class JsonlLog:
    """A JSONL file of rows with a ``step`` field; on resume, rows past the checkpoint are dropped."""

    def __init__(self, path: Path, keep_steps_upto: Optional[int] = None) -> None:
        self.path = path
        if keep_steps_upto is not None and path.is_file():
            rows = [r for r in self.read() if r["step"] <= keep_steps_upto]
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
        elif keep_steps_upto is None and path.is_file():
            path.unlink()

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        rows = []
        for line in self.path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a torn last line from a killed writer
        return rows

    def write(self, row: Mapping[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")

    def to_csv(self, path: Path) -> None:
        import pandas as pd

        rows = self.read()
        if rows:
            atomic_write_text(path, pd.DataFrame(rows).to_csv(index=False))
