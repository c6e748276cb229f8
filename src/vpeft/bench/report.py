"""Demo outputs: per-method means, ``results.json``, ``results.md`` and the accuracy-vs-parameters
plot, each written atomically (`vpeft.atomic`)."""

from __future__ import annotations

import io
import math
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


def markdown(rows: Sequence[DemoRow], meta: dict[str, Any]) -> str:
    """``results.md``: the full table, the per-method means and the group means."""
    lines = ["# vpeft demo results", ""]
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


def plot_png(rows: Sequence[DemoRow], title: str = "") -> bytes:
    """PNG bytes: mean test top-1 over tasks against trainable parameters (log x, head
    included), one marker per method."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    means = method_means(rows)
    fig = Figure(figsize=(6.4, 4.4), dpi=120)
    FigureCanvasAgg(fig)  # Agg canvas, no pyplot / GUI backend involved
    ax = fig.add_subplot()
    markers = "osD^vP*Xh<>p"
    for i, m in enumerate(means):
        ax.scatter(
            m["trainable"],
            m["test_top1"],
            s=60,
            marker=markers[i % len(markers)],
            label=m["method"],
        )
        ax.annotate(
            m["method"],
            (m["trainable"], m["test_top1"]),
            textcoords="offset points",
            xytext=(5, 4),
            fontsize=8,
        )
    ax.set_xscale("log")
    lo = min(m["trainable"] for m in means)
    hi = max(m["trainable"] for m in means)
    ax.set_xlim(10 ** (math.log10(lo) - 0.3), 10 ** (math.log10(hi) + 0.5))
    ax.set_xlabel("trainable parameters (encoder + head, mean over tasks, log scale)")
    ax.set_ylabel(f"mean test top-1 over {len({r.task for r in rows})} tasks (%)")
    ax.set_title(title or "vpeft demo: accuracy vs trainable parameters", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def write_outputs(
    rows: Sequence[DemoRow], meta: dict[str, Any], out_dir: str | os.PathLike[str]
) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` and ``accuracy_vs_params.png`` into `out_dir`."""
    out = Path(out_dir)
    paths = {"json": out / JSON_NAME, "markdown": out / MARKDOWN_NAME, "plot": out / PLOT_NAME}
    atomic_write_bytes(paths["plot"], plot_png(rows))
    atomic_write_bytes(paths["markdown"], markdown(rows, meta).encode())
    record = results_json(rows, meta)
    record["files"] = {k: str(v) for k, v in paths.items()}
    atomic_write_bytes(paths["json"], (dumps_strict(record, indent=2) + "\n").encode())
    return paths
