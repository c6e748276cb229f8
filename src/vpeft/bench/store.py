"""The result store of `vpeft bench`: one JSON file per run, readable without vpeft.

Layout of a store folder (format ``vpeft.bench.run/1``)::

    <store>/runs/<key>.json     one finished run (the record below), written atomically
    <store>/work/<key>/         the run's training folder while it runs (checkpoint, metrics,
                                adapter.safetensors, TensorBoard events); kept for inspection
    <store>/markers/<name>      empty files created exclusively (O_CREAT | O_EXCL): "this was
                                done once" flags that several workers may race for
    <store>/sweep.db            the default Optuna storage of the sweeps run on this store

``<key>`` is the run's identity: the first 20 hex digits of the SHA-256 of its canonical spec
(`run_key`); the same run asked for by two sweeps is trained once. A record holds::

    schema   "vpeft.bench.run/1"
    key      the run key
    spec     what was run: backbone, weights, method, options, data, splits, train config, seed
    labels   how sweeps used it: sweeps (list of sweep names), protocol, stage ("select" |
             "final"), method, task, group, unit, reference (the dense Δm reference run)
    hashes   sha256 of the data actually fed (inputs + labels), backbone weights and adapter file
    metrics  last-epoch val/test top-1 and losses, the per-epoch history, scored_split; dense:
             headline (task -> mIoU / mean angular error), lower_is_better; VL: results (the
             split's metrics), score (the headline), base_to_new (CLIP); columns (extra table
             columns)
    params   trainable (encoder + head), trainable_encoder, head, total
    flops    train_step_per_image (forward + backward), forward_per_image, train_total
    memory   param/grad/optimizer/saved-activation bytes of one step, their total;
             cuda_max_allocated on a GPU
    time     wall_s (whole run), train_s, started / finished (UTC ISO 8601)
    versions python, torch, timm, vpeft; host

Why files rather than one database: workers on several machines only need a shared folder (no
server, and SQLite's locking is unreliable on network file systems); every writer writes a
different file (different keys) and `os.replace` makes each write atomic, so concurrent writers
cannot corrupt each other. Query examples without vpeft::

    jq -s 'map({method: .spec.method, task: .labels.task, top1: .metrics.test_top1})' \\
        store/runs/*.json
    import glob, json, pandas
    df = pandas.json_normalize([json.load(open(f)) for f in glob.glob("store/runs/*.json")])
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..errors import OutputError
from ..jsonsafe import dumps_strict

SCHEMA = "vpeft.bench.run/1"
KEY_DIGITS = 20


def canonical_json(obj: Any) -> str:
    """Sorted keys, no spaces: the byte string a run key is the hash of."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def run_key(spec: dict[str, Any]) -> str:
    """The identity of a run: a hash of its full spec (never of labels such as the sweep)."""
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()[:KEY_DIGITS]


def _matches(labels: dict[str, Any], name: str, value: Any) -> bool:
    if name == "sweep":
        return value in labels.get("sweeps", [])
    return labels.get(name) == value


class ResultStore:
    """A store folder (see the module docstring for the format)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise OutputError(f"result store {self.root} is a file; give a folder")
        for sub in ("runs", "work", "markers"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # -- paths -----------------------------------------------------------------------------
    def record_path(self, key: str) -> Path:
        return self.root / "runs" / f"{key}.json"

    def work_dir(self, key: str) -> Path:
        return self.root / "work" / key

    @property
    def default_storage_url(self) -> str:
        return f"sqlite:///{(self.root / 'sweep.db').resolve()}"

    # -- records ---------------------------------------------------------------------------
    def has(self, key: str) -> bool:
        return self.record_path(key).is_file()

    def get(self, key: str) -> dict[str, Any] | None:
        path = self.record_path(key)
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None

    def put(self, record: dict[str, Any]) -> Path:
        """Write one record atomically (a reader sees the old file or the new one, never half)."""
        key = record.get("key")
        if not key:
            raise OutputError("a run record needs its 'key'")
        record = {"schema": SCHEMA, **record}
        path = self.record_path(key)
        atomic_write_text(path, dumps_strict(record, indent=1, sort_keys=True) + "\n")
        return path

    def records(self, **labels: Any) -> Iterator[dict[str, Any]]:
        """Every record (sorted by key) whose labels match `labels` (e.g. ``sweep="s1"``)."""
        for path in sorted((self.root / "runs").glob("*.json")):
            try:
                record = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue  # a foreign or unreadable file is not a run
            got = record.get("labels", {})
            if all(_matches(got, k, v) for k, v in labels.items() if v is not None):
                yield record

    def add_sweep_label(self, key: str, sweep: str) -> None:
        """Record that `sweep` also uses the finished run `key` (a run shared by sweeps is
        trained once). Read-modify-replace: two sweeps labelling one run at the same instant
        may lose one label, never the record."""
        record = self.get(key)
        if record is None:
            return
        sweeps = record.setdefault("labels", {}).setdefault("sweeps", [])
        if sweep not in sweeps:
            sweeps.append(sweep)
            self.put(record)

    # -- markers ---------------------------------------------------------------------------
    def mark_once(self, name: str) -> bool:
        """Create marker `name`; True for exactly one caller over all processes and hosts."""
        safe = hashlib.sha256(name.encode()).hexdigest()[:KEY_DIGITS]
        try:
            fd = os.open(self.root / "markers" / safe, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(name + "\n")
        return True
