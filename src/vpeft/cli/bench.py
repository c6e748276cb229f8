"""`vpeft bench`: sweeps of methods × tasks × seeds under the papers' protocols (Optuna workers
sharing one storage), a result store, tables and plots, and `reproduce` for the papers' tables.

    vpeft bench run --name s1 --protocol synthetic --methods linear,lora --tasks synth-digits \\
        --seeds 0,1 --workers 2                       # local, serverless (SQLite in the store)
    vpeft bench worker --study s1 --storage sqlite:///vpeft-bench/sweep.db   # more workers
    vpeft bench table --sweep s1 --out report/        # Markdown + CSV
    vpeft bench plot --sweep s1 --out report/         # PNG + SVG with the Pareto front
    vpeft bench reproduce vqt --data-root /data --weights-dir /weights
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ..atomic import atomic_write_text
from ..errors import ConfigError, DatasetError
from .common import JsonOpt, console, emit_json, handles_errors, parse_opts

app = typer.Typer(
    help="Sweeps under the papers' protocols, a result store, tables and plots.",
    no_args_is_help=True,
)
_err = Console(stderr=True)
DEFAULT_STORE = Path("vpeft-bench")

StoreOpt = Annotated[
    Path,
    typer.Option("--store", help="result store folder (see vpeft.bench.store for its format)."),
]
ListOpt = Annotated[str | None, typer.Option(show_default=False)]
LogOpt = Annotated[
    str | None,
    typer.Option("--log", help="offline logging per run: tensorboard[:DIR] or mlflow[:URI]."),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1, ...")]
HeartbeatOpt = Annotated[
    int, typer.Option("--heartbeat", min=1, help="seconds between a running trial's heartbeats.")
]
GraceOpt = Annotated[
    int,
    typer.Option(
        "--grace",
        min=1,
        help="seconds without a heartbeat after which a run counts as lost and is re-queued.",
    ),
]


def _split(text: str | None, kind: type = str) -> list[Any] | None:
    if text is None:
        return None
    try:
        return [kind(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(
            f"cannot read {text!r} as a comma-separated list of {kind.__name__}"
        ) from None


def _sizes(text: str | None) -> dict[str, int] | None:
    """``train=1000,eval=500`` -> {"train": 1000, "eval": 500} (`SweepConfig.sample`)."""
    if text is None:
        return None
    out: dict[str, int] = {}
    for item in (i.strip() for i in text.split(",") if i.strip()):
        key, _, value = item.partition("=")
        try:  # a missing "=N" leaves "" here
            out[key.strip()] = int(value)
        except ValueError:
            raise ConfigError(
                f"--sample expects KEY=N pairs (e.g. train=1000,eval=500), got {item!r}"
            ) from None
    return out


def _method_opts(pairs: list[str] | None) -> dict[str, dict[str, Any]]:
    """``lora.rank=8`` -> {"lora": {"options": {"rank": "8"}}}."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in parse_opts(pairs).items():
        method, dot, name = key.partition(".")
        if not dot or not name:
            raise ConfigError(f"--opt expects METHOD.KEY=VALUE (e.g. lora.rank=8), got {key!r}")
        out.setdefault(method, {}).setdefault("options", {})[name] = value
    return out


def _variants(pairs: list[str] | None) -> dict[str, str]:
    """``polyhistor-r4=polyhistor`` -> {"polyhistor-r4": "polyhistor"}."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, method = (p.strip() for p in pair.partition("="))
        if not sep or not name or not method:
            raise ConfigError(f"--variant expects NAME=METHOD (e.g. lora-r8=lora), got {pair!r}")
        if name in out:
            raise ConfigError(f"--variant {name} given twice")
        out[name] = method
    return out


def _print_report(report: Any, title: str) -> None:
    _err.print(
        f"{title}: trained {len(report.trained)}, reused {len(report.reused)}, "
        f"failed {len(report.failed)}; complete: {report.complete}",
        highlight=False,
    )


@app.command("run")
@handles_errors
def run_command(
    name: Annotated[
        str | None,
        typer.Option(help="sweep name (default: the config file's stem).", show_default=False),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="sweep file (.toml, .json or .yaml; keys: vpeft.bench.sweep.SweepConfig).",
            show_default=False,
        ),
    ] = None,
    protocol: Annotated[
        str | None,
        typer.Option(
            help="vtab-1k, fgvc, synthetic (default), demo, dense-synthetic, pascal-mt, "
            "vl-synthetic or vl (VL layouts under --data-root; see docs/bench.md).",
            show_default=False,
        ),
    ] = None,
    methods: ListOpt = None,
    tasks: ListOpt = None,
    seeds: ListOpt = None,
    backbone: Annotated[str | None, typer.Option(show_default=False)] = None,
    weights: Annotated[str | None, typer.Option(show_default=False)] = None,
    data_root: Annotated[
        str | None,
        typer.Option(
            help="folder of one sub-folder per task (vtab-1k, fgvc); the PASCAL_MT folder "
            "(pascal-mt); generator options such as limit=128 (dense-synthetic).",
            show_default=False,
        ),
    ] = None,
    lr: Annotated[
        str | None,
        typer.Option(
            help="lr grid for every method, e.g. 1e-3,3e-3 (default: each method's preset).",
            show_default=False,
        ),
    ] = None,
    wd: Annotated[
        str | None, typer.Option(help="weight-decay grid for every method.", show_default=False)
    ] = None,
    epochs: Annotated[int | None, typer.Option(min=1, show_default=False)] = None,
    train_opt: Annotated[
        list[str] | None,
        typer.Option("--train-opt", help="TrainConfig KEY=VALUE for every method, repeatable."),
    ] = None,
    opt: Annotated[
        list[str] | None,
        typer.Option(
            "--opt", help="METHOD.KEY=VALUE method option, repeatable (e.g. lora.rank=8)."
        ),
    ] = None,
    variant: Annotated[
        list[str] | None,
        typer.Option(
            "--variant",
            help="NAME=METHOD: a named variant of METHOD, a row of its own (added to --methods "
            "when missing); its options with --opt NAME.KEY=VALUE, repeatable.",
        ),
    ] = None,
    limit_train: Annotated[
        int | None,
        typer.Option(
            min=1, help="use only the first N training images (smoke tests).", show_default=False
        ),
    ] = None,
    limit_eval: Annotated[
        int | None,
        typer.Option(
            min=1, help="use only the first N val/test images (smoke tests).", show_default=False
        ),
    ] = None,
    sample: Annotated[
        str | None,
        typer.Option(
            "--sample",
            help="VL protocols: random subsets, e.g. train=1000,eval=500,gallery=20 (train drawn "
            "with each run's seed, eval with seed 0; gallery cuts ViLT retrieval galleries).",
            show_default=False,
        ),
    ] = None,
    measure_batch: Annotated[
        int | None,
        typer.Option(
            "--measure-batch",
            min=1,
            help="VL protocols: FLOPs and training memory on the first N training samples.",
            show_default=False,
        ),
    ] = None,
    store: StoreOpt = DEFAULT_STORE,
    storage: Annotated[
        str | None,
        typer.Option(
            help="Optuna RDB URL shared by the workers (default: sqlite:///<store>/sweep.db).",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="local worker processes (this one included).")
    ] = 1,
    device: DeviceOpt = "auto",
    log: LogOpt = None,
    heartbeat: HeartbeatOpt = 30,
    grace: GraceOpt = 120,
    json_out: JsonOpt = False,
) -> None:
    """Run (or resume) a sweep: grid on the selection split, final runs on every seed.

    Finished runs are never repeated (the store is keyed by a hash of the run config); run the
    same command again to continue a killed sweep, or add workers with `vpeft bench worker`.
    """
    from ..bench.store import ResultStore
    from ..bench.sweep import SweepConfig, create_sweep, load_config, spawn_workers, work
    from ..bench.tracking import check_log

    check_log(log)
    train = dict(parse_opts(train_opt))
    if epochs is not None:
        train["epochs"] = epochs
        train.setdefault("warmup_epochs", 0.0 if epochs <= 1 else min(1.0, epochs - 1))
    limit = {k: v for k, v in (("train", limit_train), ("eval", limit_eval)) if v} or None
    cli = {
        "name": name,
        "protocol": protocol,
        "methods": _split(methods),
        "tasks": _split(tasks),
        "seeds": _split(seeds, int),
        "backbone": backbone,
        "weights": weights,
        "data_root": data_root,
        "lr": _split(lr, float),
        "wd": _split(wd, float),
        "limit": limit,
        "sample": _sizes(sample),
        "measure_batch": measure_batch,
    }
    if config is not None:
        cfg = load_config(config, **cli)
    else:
        if name is None:
            raise ConfigError("give --name (or --config FILE)")
        cfg = SweepConfig(**{k: v for k, v in cli.items() if v is not None})
    cfg.train = {**cfg.train, **train}
    for label, method in _variants(variant).items():
        cfg.variants[label] = {**cfg.variants.get(label, {}), "method": method}
        if label not in cfg.methods:
            cfg.methods = [*cfg.methods, label]
    for method, extra in _method_opts(opt).items():
        merged = cfg.method_overrides.setdefault(method, {})
        merged["options"] = {**merged.get("options", {}), **extra["options"]}
    result_store = ResultStore(store)
    info = create_sweep(cfg, result_store, storage, heartbeat, grace)
    if not json_out:
        runs = sum(len(u["select"]) + len(cfg.seeds) for u in info["plan"]["units"])
        _err.print(
            f"sweep {cfg.name}: {len(info['plan']['units'])} (method, task) units, "
            f"{runs} runs; storage {info['storage']}",
            highlight=False,
        )
    extra = ["--device", device, "--heartbeat", str(heartbeat), "--grace", str(grace)]
    if log:
        extra += ["--log", log]
    procs = spawn_workers(workers - 1, cfg.name, info["storage"], str(result_store.root), extra)

    def progress(key: str, labels: dict[str, Any], state: str) -> None:
        if not json_out:
            _err.print(
                f"[{state}] {labels['unit']} {labels['stage']} {key}", highlight=False, markup=False
            )

    report = work(
        cfg.name,
        info["storage"],
        str(result_store.root),
        device=device,
        log=log,
        heartbeat_s=heartbeat,
        grace_s=grace,
        on_run=progress,
    )
    codes = [p.wait() for p in procs]
    from ..bench.sweep import is_complete

    complete = is_complete(info["plan"], result_store)
    summary = {
        "sweep": cfg.name,
        "store": str(store),
        "storage": info["storage"],
        "complete": complete,
        "trained_here": report.trained,
        "reused": report.reused,
        "failed": report.failed,
        "worker_exit_codes": codes,
    }
    if json_out:
        emit_json(summary)
        return
    _print_report(report, "this process")
    if complete:
        _show_table(result_store, cfg.name, None, None)
    else:
        console.print(f"sweep {cfg.name} is not complete; run the same command again to resume")


@app.command("worker")
@handles_errors
def worker_command(
    study: Annotated[str, typer.Option("--study", help="sweep name.")],
    storage: Annotated[str, typer.Option("--storage", help="the sweep's Optuna RDB URL.")],
    store: Annotated[
        Path | None,
        typer.Option(
            "--store",
            help="result store (default: the one the sweep was created with).",
            show_default=False,
        ),
    ] = None,
    device: DeviceOpt = "auto",
    log: LogOpt = None,
    heartbeat: HeartbeatOpt = 30,
    grace: GraceOpt = 120,
    max_runs: Annotated[int | None, typer.Option(min=1, show_default=False)] = None,
    json_out: JsonOpt = False,
) -> None:
    """Work on an existing sweep until it is complete (start as many as you like, anywhere the
    storage and the store are reachable)."""
    from ..bench.sweep import work
    from ..bench.tracking import check_log

    check_log(log)
    report = work(
        study,
        storage,
        str(store) if store else None,
        device=device,
        log=log,
        heartbeat_s=heartbeat,
        grace_s=grace,
        max_runs=max_runs,
    )
    if json_out:
        emit_json(
            {
                "trained": report.trained,
                "reused": report.reused,
                "failed": report.failed,
                "complete": report.complete,
            }
        )
        return
    _print_report(report, f"worker on {study}")


def _rows(store: Path, sweep: str | None) -> list[Any]:
    from ..bench.store import ResultStore
    from ..bench.table import build_rows

    if not (store / "runs").is_dir():
        raise ConfigError(f"{store} is not a result store (no runs/ folder)")
    rows = build_rows(ResultStore(store).records(sweep=sweep))
    if not rows:
        raise ConfigError(
            f"no finished final runs in {store}"
            + (f" for sweep {sweep!r}" if sweep else "")
            + "; run `vpeft bench run` first"
        )
    return rows


def _show_table(
    store: Any, sweep: str | None, reference: str | None, out: Path | None, show: bool = True
) -> dict:
    from ..bench.store import ResultStore
    from ..bench.table import long_rows, markdown, table_rows, to_csv, variant_notes

    rows = _rows(store.root if isinstance(store, ResultStore) else Path(store), sweep)
    lines = table_rows(rows, reference)
    title = f"vpeft bench: {sweep or 'all sweeps'}"
    notes = variant_notes(rows)
    files = {}
    if out is not None:
        files = {"markdown": out / "table.md", "csv": out / "table.csv"}
        atomic_write_text(files["markdown"], markdown(lines, title, notes))
        atomic_write_text(files["csv"], to_csv(long_rows(rows)))
    result = {
        "header": lines[0],
        "rows": lines[1:],
        "variants": {r.method: r.variant for r in rows if r.variant},
        "files": {k: str(v) for k, v in files.items()},
    }
    if show:
        print_table(lines, title)
        for note in notes:
            console.print(note, highlight=False, markup=False)
    return result


def print_table(lines: list[list[str]], title: str) -> None:
    """Show a bench table (`vpeft.bench.table.table_rows`) on stdout, never truncated."""
    table = Table(title=title)
    for i, head in enumerate(lines[0]):
        table.add_column(head, justify="left" if i == 0 else "right")
    for line in lines[1:]:
        table.add_row(*line)
    needed = sum(max(len(line[i]) for line in lines) + 3 for i in range(len(lines[0]))) + 1
    Console(width=max(console.width, needed)).print(table)


@app.command("table")
@handles_errors
def table_command(
    store: StoreOpt = DEFAULT_STORE,
    sweep: Annotated[
        str | None, typer.Option(help="only this sweep's runs.", show_default=False)
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(
            help="method that Δm (dense multi-task) is measured against.", show_default=False
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="write table.md and table.csv here.", show_default=False)
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Per-task mean ± sd over seeds, group means, both VTAB-1k averages, parameters, PPT."""
    if json_out:
        emit_json(_show_table(store, sweep, reference, out, show=False))
        return
    _show_table(store, sweep, reference, out)


@app.command("plot")
@handles_errors
def plot_command(
    out: Annotated[Path, typer.Option("--out", help="folder for the PNG and SVG files.")],
    store: StoreOpt = DEFAULT_STORE,
    sweep: Annotated[str | None, typer.Option(show_default=False)] = None,
    axes: Annotated[
        str, typer.Option(help="any of params, memory, flops.")
    ] = "params,memory,flops",
    json_out: JsonOpt = False,
) -> None:
    """Accuracy against trainable parameters / training memory / FLOPs, with the Pareto front."""
    from ..bench.plot import AXES, write_plots

    chosen = _split(axes) or []
    bad = [a for a in chosen if a not in AXES]
    if bad:
        raise ConfigError(f"unknown plot axes {bad}; choose from {', '.join(AXES)}")
    paths = write_plots(_rows(store, sweep), out, chosen, title=f"vpeft bench: {sweep or 'all'}")
    if json_out:
        emit_json({"files": [str(p) for p in paths]})
        return
    console.print("wrote " + ", ".join(str(p) for p in paths), highlight=False)


@app.command("reproduce")
@handles_errors
def reproduce_command(
    paper: Annotated[str, typer.Argument(help="spt, vqt, polyhistor or apt.")],
    data_root: Annotated[
        Path,
        typer.Option(help="folder holding the datasets (see --help of vpeft.bench.reproduce)."),
    ] = Path("data"),
    weights_dir: Annotated[
        Path, typer.Option(help="folder holding the pretrained weights.")
    ] = Path("weights"),
    check_only: Annotated[bool, typer.Option(help="only list what is present / missing.")] = False,
    store: StoreOpt = DEFAULT_STORE,
    workers: Annotated[int, typer.Option(min=1)] = 1,
    epochs: Annotated[int | None, typer.Option(min=1, show_default=False)] = None,
    limit_train: Annotated[int | None, typer.Option(min=1, show_default=False)] = None,
    limit_eval: Annotated[int | None, typer.Option(min=1, show_default=False)] = None,
    device: DeviceOpt = "auto",
    backbone: Annotated[
        str | None,
        typer.Option(
            help="override the paper's backbone (with its weights file), e.g. for a miniature run.",
            show_default=False,
        ),
    ] = None,
    methods: ListOpt = None,
    tasks: ListOpt = None,
    seeds: ListOpt = None,
    lr: ListOpt = None,
    wd: ListOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List the data and weights a paper's table needs, check them, and run the table.

    --backbone / --methods / --tasks / --seeds / --lr / --wd replace the paper's choices (a
    smaller run on the same data and layout); by default the paper's table is run in full.
    """
    from ..bench.reproduce import check, get_paper, sweep_configs
    from ..bench.store import ResultStore
    from ..bench.sweep import create_sweep, is_complete, spawn_workers, work

    p = get_paper(paper)
    status = check(p, data_root, weights_dir)
    missing = [s for s in status if not s["present"]]
    if not json_out:
        table = Table(title=p.table)
        for col in ("kind", "name", "present", "problem / how to get it"):
            table.add_column(col)
        for s in status:
            table.add_row(
                s["kind"],
                s["name"],
                "yes" if s["present"] else "[red]no[/red]",
                "" if s["present"] else f"{s['problem']}; {s['how']}",
            )
        Console(stderr=True, width=160).print(table)
    if missing:
        raise DatasetError(
            f"{p.name}: {len(missing)} of {len(status)} pieces are missing: "
            + "; ".join(f"{s['name']}: {s['problem']}" for s in missing)
        )
    if check_only:
        if json_out:
            emit_json({"paper": p.name, "requirements": status, "ready": True})
        else:
            console.print(f"{p.name}: everything is present", highlight=False)
        return
    train = {"epochs": epochs, "warmup_epochs": 0.0} if epochs else {}
    limit = {k: v for k, v in (("train", limit_train), ("eval", limit_eval)) if v} or None
    result_store = ResultStore(store)
    done = {}
    over = {
        "limit": limit,
        "backbone": backbone,
        "methods": _split(methods),
        "tasks": _split(tasks),
        "seeds": _split(seeds, int),
        "lr": _split(lr, float),
        "wd": _split(wd, float),
    }
    for cfg in sweep_configs(p, data_root, weights_dir, **over):
        cfg.train = {**cfg.train, **train}
        info = create_sweep(cfg, result_store)
        procs = spawn_workers(
            workers - 1, cfg.name, info["storage"], str(result_store.root), ["--device", device]
        )
        work(cfg.name, info["storage"], str(result_store.root), device=device)
        for proc in procs:
            proc.wait()
        done[cfg.name] = is_complete(info["plan"], result_store)
        if not json_out:
            _show_table(result_store, cfg.name, None, None)
    if json_out:
        emit_json({"paper": p.name, "requirements": status, "sweeps": done})


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="bench")
