"""Accuracy against cost (trainable parameters, training memory, FLOPs) with the Pareto front.

One marker per method (mean of group means over the sweep's tasks, x = the method's mean cost,
log scale); the Pareto front joins the methods no other method beats on both axes (higher
accuracy at lower or equal cost). Written as PNG and SVG with matplotlib's Agg canvas.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from ..atomic import atomic_write_bytes
from .table import MethodRow

AXES = {
    "params": ("trainable_encoder", "trainable parameters (encoder, head excluded)"),
    "memory": ("memory_bytes", "training memory of one step (bytes, one image)"),
    "flops": ("train_flops_per_image", "training FLOPs per image (forward + backward)"),
}


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points on the front (minimise x, maximise y), sorted by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def figure_bytes(rows: Sequence[MethodRow], axis: str, fmt: str, title: str = "") -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    attr, label = AXES[axis]
    pts = [(r, float(getattr(r, attr)), r.mean_of_groups) for r in rows]
    pts = [(r, x, y) for r, x, y in pts if y is not None and x > 0]
    fig = Figure(figsize=(6.4, 4.4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    markers = "osD^vP*Xh<>p"
    for i, (r, x, y) in enumerate(pts):
        ax.scatter(x, y, s=60, marker=markers[i % len(markers)], label=r.method)
        ax.annotate(r.method, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    front = pareto_front([(x, y) for _, x, y in pts])
    if len(front) > 1:
        ax.plot(
            [pts[i][1] for i in front],
            [pts[i][2] for i in front],
            "k--",
            lw=1,
            label="Pareto front",
        )
    ax.set_xscale("log")
    ax.set_xlabel(f"{label}, log scale")
    ax.set_ylabel("accuracy (%), mean of group means")
    ax.set_title(title or f"accuracy vs {axis}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if pts:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt)
    return buffer.getvalue()


def write_plots(
    rows: Sequence[MethodRow], out_dir: Path, axes: Sequence[str] = tuple(AXES), title: str = ""
) -> list[Path]:
    """``accuracy_vs_<axis>.png`` and ``.svg`` for every axis; the written paths."""
    paths = []
    for axis in axes:
        for fmt in ("png", "svg"):
            path = Path(out_dir) / f"accuracy_vs_{axis}.{fmt}"
            atomic_write_bytes(path, figure_bytes(rows, axis, fmt, title))
            paths.append(path)
    return paths
