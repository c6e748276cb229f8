"""The result store: run keys, atomic records, sweep labels, markers under concurrent writers."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

from vpeft.bench.store import SCHEMA, ResultStore, run_key


def test_run_key_ignores_key_order_and_changes_with_any_field() -> None:
    spec = {"method": "lora", "train": {"lr": 1e-3, "seed": 0}, "options": {"rank": 4}}
    same = {"options": {"rank": 4}, "train": {"seed": 0, "lr": 1e-3}, "method": "lora"}
    assert run_key(spec) == run_key(same)
    assert run_key(spec) != run_key({**spec, "train": {"lr": 1e-3, "seed": 1}})


def test_records_round_trip_and_filter_by_sweep(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    store.put({"key": "a", "labels": {"sweeps": ["s1"], "stage": "final"}, "metrics": {"x": 1}})
    store.put({"key": "b", "labels": {"sweeps": ["s2"], "stage": "select"}})
    assert store.get("a")["schema"] == SCHEMA and store.has("a") and not store.has("c")
    assert [r["key"] for r in store.records(sweep="s1")] == ["a"]
    assert [r["key"] for r in store.records(stage="select")] == ["b"]
    store.add_sweep_label("a", "s2")
    assert sorted(r["key"] for r in store.records(sweep="s2")) == ["a", "b"]
    # plain JSON, readable without vpeft; no temporaries left behind
    assert json.loads((tmp_path / "runs" / "a.json").read_text())["metrics"] == {"x": 1}
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["a.json", "b.json"]


def _writer(root: str, worker: int, n: int, queue: mp.Queue) -> None:
    store = ResultStore(root)
    won = []
    for i in range(n):
        store.put({"key": f"w{worker}-{i}", "labels": {"sweeps": ["s"]}, "payload": "x" * 2000})
        store.put({"key": f"shared-{i}", "labels": {"sweeps": ["s"]}, "by": worker})
        if store.mark_once(f"marker-{i}"):
            won.append(i)
    queue.put(won)


def test_two_processes_write_concurrently_without_corruption(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    n = 40
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, n, queue)) for w in range(2)]
    for p in procs:
        p.start()
    won = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    records = list(ResultStore(tmp_path).records(sweep="s"))
    assert len(records) == 3 * n  # every file whole and valid JSON
    assert {r["by"] for r in records if r["key"].startswith("shared")} <= {0, 1}
    assert sorted(won[0] + won[1]) == list(range(n))  # each marker won by exactly one process
    assert not [p for p in (tmp_path / "runs").iterdir() if p.suffix != ".json"]
