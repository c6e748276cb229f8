"""Demo outputs: the `vpeft bench` table and plots of the demo's runs, and ``results.json`` /
``results.md`` (the same table plus every run and per-method means), each written atomically
(`vpeft.atomic`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from statistics import fmean
from typing import Any

from ..atomic import atomic_write_bytes
from ..jsonsafe import dumps_strict
from .demo import DemoRow

JSON_NAME = "results.json"
MARKDOWN_NAME = "results.md"
PLOT_NAME = "accuracy_vs_params.png"


def method_means(rows: Sequence[DemoRow]) -> list[dict[str, Any]]:
    """One record per method (first-seen order): means over its tasks of top-1, trainable
    counts, FLOPs and wall time, and the wall time summed over its tasks."""
    by_method: dict[str, list[DemoRow]] = {}
    for row in rows:
        by_method.setdefault(row.method, []).append(row)
    means = []
    for method, group in by_method.items():
        vals = [r.val_top1 for r in group if r.val_top1 is not None]
        means.append(
            {
                "method": method,
                "tasks": len(group),
                "test_top1": fmean(r.test_top1 for r in group),
                "val_top1": fmean(vals) if vals else None,
                "trainable_encoder": fmean(r.trainable_encoder for r in group),
                "trainable": fmean(r.trainable for r in group),
                "train_step_flops_per_image": fmean(r.train_step_flops_per_image for r in group),
                "train_flops": fmean(r.train_flops for r in group),
                "wall_s": fmean(r.wall_s for r in group),
                "wall_s_total": sum(r.wall_s for r in group),
            }
        )
    return means


def group_means(rows: Sequence[DemoRow]) -> dict[str, dict[str, float]]:
    """method -> group -> mean test top-1 over that group's tasks."""
    acc: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        acc.setdefault(row.method, {}).setdefault(row.group, []).append(row.test_top1)
    return {m: {g: fmean(v) for g, v in groups.items()} for m, groups in acc.items()}


def results_json(rows: Sequence[DemoRow], meta: dict[str, Any]) -> dict[str, Any]:
    """The content of ``results.json``."""
    return {
        "meta": meta,
        "rows": [r.as_dict() for r in rows],
        "means": method_means(rows),
        "group_means": group_means(rows),
        "notes": {
            "test_top1": "test top-1 (%) after the last epoch; no selection on the test set",
            "train_step_flops_per_image": "forward + backward FLOPs of one training image "
            "(PyTorch FLOP counter, 2 per multiply-accumulate)",
            "train_flops": "train_step_flops_per_image × train images × epochs",
            "wall_s": "seconds to build, train and evaluate (per row; means: mean over tasks)",
            "wall_s_total": "means only: wall seconds summed over the method's tasks",
        },
    }


def _gflops(flops: float) -> str:
    return f"{flops / 1e9:.4f}"


def _tflops(flops: float) -> str:
    return f"{flops / 1e12:.2f}"


def markdown(rows: Sequence[DemoRow], meta: dict[str, Any], heading: str = "# vpeft demo") -> str:
    """The runs' part of ``results.md``: every run, the per-method means and the group means."""
    lines = [heading, ""] if heading else []
    if meta.get("command"):
        lines += [f"Command: `{meta['command']}`", ""]
    lines += [
        f"Backbone `{meta.get('backbone')}`; train on `{meta.get('train_split')}`, report test "
        f"top-1 after the last epoch on `{meta.get('test_split')}` (val top-1 on "
        f"`{meta.get('val_split')}` alongside). Threads: {meta.get('threads')}, "
        f"torch {meta.get('torch')}, total wall time {meta.get('wall_s', float('nan')):.0f} s.",
        "",
        "| method | task | group | test top-1 | val top-1 | trainable encoder | trainable all "
        "| train GFLOPs / image | train TFLOPs (all epochs) | epochs | wall s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        val = "-" if r.val_top1 is None else f"{r.val_top1:.1f}"
        lines.append(
            f"| {r.method} | {r.task} | {r.group} | {r.test_top1:.1f} | {val} | "
            f"{r.trainable_encoder:,} | {r.trainable:,} | {_gflops(r.train_step_flops_per_image)} "
            f"| {_tflops(r.train_flops)} | {r.epochs} | {r.wall_s:.1f} |"
        )
    lines += [
        "",
        "Per-method means over tasks:",
        "",
        "| method | tasks | mean test top-1 | trainable encoder | trainable all "
        "| train GFLOPs / image | mean wall s | total wall s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in method_means(rows):
        lines.append(
            f"| {m['method']} | {m['tasks']} | {m['test_top1']:.1f} | "
            f"{m['trainable_encoder']:,.0f} | {m['trainable']:,.0f} | "
            f"{_gflops(m['train_step_flops_per_image'])} | {m['wall_s']:.1f} | "
            f"{m['wall_s_total']:.1f} |"
        )
    groups = sorted({r.group for r in rows}, key=[r.group for r in rows].index)
    gm = group_means(rows)
    lines += [
        "",
        "Mean test top-1 per group:",
        "",
        "| method | " + " | ".join(groups) + " |",
        "|---|" + "---:|" * len(groups),
    ]
    for method, by_group in gm.items():
        cells = " | ".join(f"{by_group[g]:.1f}" if g in by_group else "-" for g in groups)
        lines.append(f"| {method} | {cells} |")
    return "\n".join(lines) + "\n"


def bench_outputs(
    records: Sequence[dict[str, Any]], out: Path, title: str
) -> tuple[list[list[str]], dict[str, Path]]:
    """`vpeft bench table` and `vpeft bench plot` of `records`: the table's lines and the files
    (``table.md``, ``table.csv``, ``accuracy_vs_<axis>.png`` / ``.svg``)."""
    from .plot import write_plots
    from .table import build_rows, long_rows, table_rows, to_csv
    from .table import markdown as table_markdown

    rows = build_rows(records)
    lines = table_rows(rows)
    files = {"table_markdown": out / "table.md", "table_csv": out / "table.csv"}
    atomic_write_bytes(files["table_markdown"], table_markdown(lines, title).encode())
    atomic_write_bytes(files["table_csv"], to_csv(long_rows(rows)).encode())
    for path in write_plots(rows, out, title=title):
        files[path.stem + "_" + path.suffix.lstrip(".")] = path
    return lines, files


def write_outputs(
    rows: Sequence[DemoRow],
    records: Sequence[dict[str, Any]],
    meta: dict[str, Any],
    out_dir: str | os.PathLike[str],
) -> dict[str, Path]:
    """The bench table and plots of `records` (`bench_outputs`), then ``results.json`` (meta,
    the table, every run, means) and ``results.md`` (the table, then every run) into `out_dir`."""
    from .table import markdown as table_markdown

    out = Path(out_dir)
    title = f"vpeft demo on {meta.get('backbone')}"
    lines, paths = bench_outputs(records, out, title)
    paths = {"json": out / JSON_NAME, "markdown": out / MARKDOWN_NAME, **paths}
    text = table_markdown(lines, title) + "\n" + markdown(rows, meta, "## Every run")
    atomic_write_bytes(paths["markdown"], text.encode())
    record = results_json(rows, meta)
    record["table"] = {"header": lines[0], "rows": lines[1:]}
    record["files"] = {k: str(v) for k, v in paths.items()}
    atomic_write_bytes(paths["json"], (dumps_strict(record, indent=2) + "\n").encode())
    return paths
