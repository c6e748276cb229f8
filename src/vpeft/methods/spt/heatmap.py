"""Heat map of an SPT plan: sensitive-parameter share per block × matrix type (paper §4.4).

A cell's value is the share (%) of all selected matrix entries (top-τ, plus the fill entries of
a `fill` allocation) that fall in that block's q, k, v, proj, fc1 or fc2 weight; cells whose
matrix got the structured module carry its mark (L / A). Plan with `fill=False` for plain top-τ.
"""

from __future__ import annotations

from pathlib import Path

from .plan import MARKS, SptPlan


def plot_heatmap(plan: SptPlan, path: str | Path, title: str | None = None) -> Path:
    """Write the heat map of `plan` to `path` (PNG, matplotlib's Agg canvas); return the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    blocks, roles, grid = plan.shares()
    structured = {(e.unit.block, e.unit.role) for e in plan.entries if e.decision == "structured"}
    mark = MARKS[plan.structured]
    fig = Figure(figsize=(1.1 * max(len(roles), 1) + 2.2, 0.38 * max(len(blocks), 1) + 1.6))
    FigureCanvasAgg(fig)  # the Agg canvas: no pyplot, no global backend change
    ax = fig.subplots()
    image = ax.imshow(grid or [[0.0]], cmap="viridis", aspect="auto", vmin=0.0)
    ax.set_xticks(range(len(roles)), roles)
    ax.set_yticks(range(len(blocks)), [str(b) for b in blocks])
    ax.set_xlabel("matrix")
    ax.set_ylabel("block")
    peak = max((v for row in grid for v in row), default=0.0)
    for i, block in enumerate(blocks):
        for j, role in enumerate(roles):
            text = f"{grid[i][j]:.1f}" + (f" {mark}" if (block, role) in structured else "")
            colour = "black" if grid[i][j] > 0.6 * peak else "white"
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color=colour)
    fig.colorbar(image, ax=ax, label="% of sensitive matrix entries")
    ax.set_title(
        title
        or f"SPT-{plan.structured}: budget {plan.budget or plan.total:,}, τ {plan.tau:,} "
        f"({mark} = {plan.structured})",
        fontsize=9,
    )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
