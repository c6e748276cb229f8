"""`vpeft demo`: the default job — several methods × one synthetic task per group on the bundled
tiny ViT, run as a small preset of `vpeft bench` (protocol ``demo``, result store in
``--out/store``); the bench table on stdout, and the bench table / plots plus results.json /
results.md in --out."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from .common import JsonOpt, console, emit_json, handles_errors
from .outputs import check_out_dir

if TYPE_CHECKING:
    from ..bench.demo import DemoRow

DEFAULT_OUT = Path("vpeft-demo")
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
    train800 and reports the test top-1 after its last epoch. This is a small preset of
    `vpeft bench` (protocol demo): the runs are stored in --out/store (a re-run reuses them),
    the table printed is `vpeft bench table`'s (top-1 mean ± sd, group means, both averages,
    trainable parameters, PPT) and the plots are `vpeft bench plot`'s (accuracy against
    parameters / memory / FLOPs with the Pareto front, PNG + SVG). Also writes results.json and
    results.md (the same table, then every run with its FLOPs and wall time) into --out.
    """
    from ..bench.demo import DEFAULT_METHODS, DEFAULT_TASKS, run_demo
    from ..bench.report import JSON_NAME, MARKDOWN_NAME
    from .bench import print_table

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

    run_demo(
        task_list,
        method_list,
        epochs,
        out,
        seed=seed,
        threads=threads,
        on_row=report,
        meta={"command": command},
    )
    record = json.loads((out / JSON_NAME).read_text())
    if json_out:  # exactly what was written to results.json
        emit_json(record)
        return
    table = record["table"]
    print_table([table["header"], *table["rows"]], f"vpeft demo on {record['meta']['backbone']}")
    console.print(
        f"wrote {out / JSON_NAME}, {out / MARKDOWN_NAME}, the bench table (table.md, table.csv) "
        f"and plots (accuracy_vs_*.png / .svg) in {out}; runs in {out / 'store'} "
        f"(`vpeft bench table --store {out / 'store'}`)",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
