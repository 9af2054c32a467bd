"""What the supernet proxy keeps on disk: whole-split scores in a JSONL file shared by processes, and screenings
(a racing search's partial per-image scores, :class:`Screening`) in a sidecar file beside it, never among the
scores. Lines are appended whole; a killed writer leaves at most a torn last line, which readers skip."""
from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path
from typing import Iterator, Optional

import torch


def screenings_path(cache_path: Path) -> Path:
    """The sidecar file beside the score cache ``cache_path`` that keeps screenings: ``<stem>.screenings<suffix>``."""
    return cache_path.with_name(f"{cache_path.stem}.screenings{cache_path.suffix}")


def append_line(path: Path, row: dict) -> None:
    """Append ``row`` as one JSON line in one short append (atomic on POSIX; a killed writer leaves at most a torn
    last line, which readers skip)."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


def jsonl_rows(path: Optional[Path], key: str) -> Iterator[dict]:
    """The rows of the JSONL file ``path`` whose ``key`` is ``key`` (none when there is no such file)."""
    if path is None or not path.is_file():
        return
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn line from a killed writer
        if isinstance(row, dict) and row.get("key") == key:
            yield row


@dataclasses.dataclass(frozen=True)
class Screening:
    """A candidate's per-image losses and correctness (0/100) on the first batches of the scored split: a
    class-balanced part, for racing candidates against each other on the same images. Never a cached score.
    ``bn`` holds the recalibrated BN statistics, so a whole-split evaluation of the candidate continues from
    the screened batches instead of starting over (with exactly the scores it would have had)."""

    losses: torch.Tensor
    correct: torch.Tensor
    batches: int = 0
    bn: Optional[dict[str, torch.Tensor]] = None

    def to_row(self, key: str, h: str) -> dict:
        """The sidecar line of this screening of architecture ``h``: the losses as float32 bytes, correctness as
        bits (base64), so a loaded screening equals the computed one value for value; BN statistics are not kept."""
        losses = self.losses.to(torch.float32).contiguous().numpy().astype("<f4").tobytes()
        correct = (self.correct > 0).to(torch.uint8).numpy().tobytes()
        return {"key": key, "arch_hash": h, "batches": self.batches, "images": len(self.losses),
                "losses": base64.b64encode(losses).decode(), "correct": base64.b64encode(correct).decode()}

    @classmethod
    def from_row(cls, row: dict) -> Optional["Screening"]:
        """The screening a sidecar line holds, or None when it is torn or of another format."""
        try:
            losses = torch.frombuffer(bytearray(base64.b64decode(row["losses"], validate=True)), dtype=torch.float32)
            correct = torch.frombuffer(bytearray(base64.b64decode(row["correct"], validate=True)), dtype=torch.uint8)
            batches, images = int(row["batches"]), int(row["images"])
        except (KeyError, TypeError, ValueError):
            return None
        if not images == len(losses) == len(correct):
            return None
        return cls(losses.clone(), correct.double() * 100.0, batches)
