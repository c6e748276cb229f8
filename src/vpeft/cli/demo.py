"""`vpeft demo`: the default job — several methods × one synthetic task per group on the bundled
tiny ViT; a table on stdout, and results.json / results.md / accuracy_vs_params.png in --out."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from .common import JsonOpt, console, emit_json, handles_errors
from .outputs import check_out_dir

if TYPE_CHECKING:
    from ..bench.demo import DemoRow

DEFAULT_OUT = Path("vpeft-demo")
TABLE_WIDTH = 132  # the full table without truncated cells, also when stdout is not a terminal
_err = Console(stderr=True)
#: The lists shown in ``--help``, written out so that ``--help`` imports no torch (the demo's
#: own `vpeft.bench.demo.DEFAULT_*` and `vpeft.data.synthetic.TARGET_TASKS` are the truth;
#: tests/cli/test_lazy_imports.py checks that these equal them).
HELP_DEFAULT_TASKS: tuple[str, ...] = ("synth-objects", "synth-thermal", "synth-orientation")
HELP_TARGET_TASKS: tuple[str, ...] = (
    "synth-objects", "synth-textures", "synth-digits", "synth-xray", "synth-thermal",
    "synth-count", "synth-position", "synth-orientation", "synth-distance", "synth-azimuth",
)  # fmt: skip
HELP_DEFAULT_METHODS: tuple[str, ...] = (
    "linear", "full", "bitfit", "lora", "adapter", "adaptformer", "vpt-deep",
)  # fmt: skip

TasksOpt = Annotated[
    list[str] | None,
    typer.Option(
        help="synthetic target tasks, comma-separated and/or repeated (default: "
        f"{', '.join(HELP_DEFAULT_TASKS)}; all: {', '.join(HELP_TARGET_TASKS)}).",
        show_default=False,
    ),
]
MethodsOpt = Annotated[
    list[str] | None,
    typer.Option(
        help="methods, comma-separated and/or repeated (default: "
        f"{', '.join(HELP_DEFAULT_METHODS)}); "
        "other registered methods run with lr 1e-2 for 5 epochs and default options.",
        show_default=False,
    ),
]


def _names(values: list[str] | None, default: tuple[str, ...]) -> list[str]:
    if not values:
        return list(default)
    return [name.strip() for v in values for name in v.split(",") if name.strip()]


def _command(out: Path, tasks: list[str] | None, methods: list[str] | None, **flags: Any) -> str:
    parts = ["vpeft", "demo"]
    if out != DEFAULT_OUT:
        parts += ["--out", str(out)]
    for flag, values in (("--tasks", tasks), ("--methods", methods)):
        if values:
            parts += [flag, ",".join(values)]
    for name, value in flags.items():
        if value is not None:
            parts += [f"--{name}", str(value)]
    return shlex.join(parts)


@handles_errors
def demo(
    out: Annotated[Path, typer.Option("--out", help="folder for the result files.")] = DEFAULT_OUT,
    tasks: TasksOpt = None,
    methods: MethodsOpt = None,
    epochs: Annotated[
        int | None,
        typer.Option(min=1, help="epochs for every method (default: each method's own)."),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="torch threads (default: the usable CPU cores).")
    ] = None,
    seed: Annotated[int, typer.Option(min=0, help="seed of initialisation and data order.")] = 0,
    progress: Annotated[bool, typer.Option(help="one line per finished run on stderr.")] = True,
    json_out: JsonOpt = False,
) -> None:
    """Adapt the bundled `vit-tiny-synth` with several methods to one synthetic task per group.

    Default: linear, full, bitfit, lora, adapter, adaptformer and vpt-deep on synth-objects
    (natural), synth-thermal (specialized) and synth-orientation (structured); each trains on
    train800 and reports the test top-1 after its last epoch. Prints a table (top-1, trainable
    parameters, training FLOPs, wall time) and writes results.json, results.md and
    accuracy_vs_params.png into --out.
    """
    from ..bench.demo import DEFAULT_METHODS, DEFAULT_TASKS, run_demo
    from ..bench.report import JSON_NAME, MARKDOWN_NAME, PLOT_NAME

    check_out_dir(out)  # before the runs, not when the results are written
    task_list = _names(tasks, DEFAULT_TASKS)
    method_list = _names(methods, DEFAULT_METHODS)
    command = _command(out, tasks and task_list, methods and method_list, epochs=epochs,
                       threads=threads, seed=seed or None)  # fmt: skip

    def report(row: DemoRow, done: int, total: int) -> None:
        if progress:
            _err.print(
                f"[{done}/{total}] {row.method} on {row.task}: test top-1 {row.test_top1:.1f}% "
                f"({row.wall_s:.0f} s)",
                highlight=False,
            )

    rows = run_demo(
        task_list,
        method_list,
        epochs,
        out,
        seed=seed,
        threads=threads,
        on_row=report,
        meta={"command": command},
    )
    if json_out:  # exactly what was written to results.json
        emit_json(json.loads((out / JSON_NAME).read_text()))
        return
    # piped or captured output is not truncated to the 80-column default; terminals fit as usual
    wide = console if console.is_terminal else Console(width=max(console.width, TABLE_WIDTH))
    wide.print(_table(rows))
    console.print(
        f"wrote {out / JSON_NAME}, {out / MARKDOWN_NAME} and {out / PLOT_NAME}", highlight=False
    )


def _table(rows: list[DemoRow]) -> Table:
    from ..bench.report import method_means

    table = Table(
        title="vpeft demo on vit-tiny-synth: test top-1 after the last epoch (train800)",
        caption="GFLOPs/img: forward + backward of one training image; TFLOPs: all epochs; "
        "wall s: build + train + evaluate (mean rows: mean over tasks)",
    )
    for name in ("method", "task", "group"):
        table.add_column(name)
    for name in ("top-1 %", "trainable enc", "trainable all", "GFLOPs/img", "TFLOPs", "wall s"):
        table.add_column(name, justify="right")
    for r in rows:
        table.add_row(
            r.method, r.task, r.group, f"{r.test_top1:.1f}", f"{r.trainable_encoder:,}",
            f"{r.trainable:,}", f"{r.train_step_flops_per_image / 1e9:.4f}",
            f"{r.train_flops / 1e12:.2f}", f"{r.wall_s:.1f}",
        )  # fmt: skip
    table.add_section()
    for m in method_means(rows):
        table.add_row(
            m["method"], f"mean of {m['tasks']}", "", f"{m['test_top1']:.1f}",
            f"{m['trainable_encoder']:,.0f}", f"{m['trainable']:,.0f}",
            f"{m['train_step_flops_per_image'] / 1e9:.4f}", f"{m['train_flops'] / 1e12:.2f}",
            f"{m['wall_s']:.1f}",
        )  # fmt: skip
    return table


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
