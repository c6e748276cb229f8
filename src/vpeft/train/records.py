"""Run records on disk: per-epoch ``metrics.jsonl`` lines and the final ``summary.json``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..jsonsafe import dumps_strict

METRICS_NAME = "metrics.jsonl"
SUMMARY_NAME = "summary.json"


def rewrite_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    """Replace ``metrics.jsonl`` by exactly `history` (one line per completed epoch).

    Called on resume with the history stored in the checkpoint, so lines of epochs the
    checkpoint does not cover are dropped and none is ever lost or duplicated.
    """
    atomic_write_text(path, "".join(dumps_strict(r) + "\n" for r in history))


def append_metrics(path: Path, record: dict[str, Any]) -> None:
    """Append one epoch's record as a JSON line (flushed and fsynced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(dumps_strict(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` (empty when the file does not exist)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """Atomically write ``summary.json``."""
    atomic_write_text(path, dumps_strict(summary, indent=2) + "\n")
