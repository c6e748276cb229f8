"""`vpeft train`: adapt a backbone with a method on a dataset; write metrics, summary, adapter.

Multi-process / multi-node: launch the same command under ``torchrun`` (``torchrun --no-python
--nproc_per_node 4 vpeft train …``); `vpeft.train.distributed` does the rest.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from ..core.train_config import TrainConfig
from ..errors import ConfigError
from .common import (
    BackboneOpt,
    JsonOpt,
    MethodOpt,
    OptsOpt,
    RandomInitOpt,
    WeightsOpt,
    build_backbone,
    console,
    emit_json,
    handles_errors,
    parse_opts,
)
from .data_option import (
    AUTO_SPLIT,
    DataOpt,
    DataSpec,
    backbone_data_config,
    class_names_of,
    flip_keeps_labels,
    load_split,
    num_classes_of,
    resolve_split,
    training_input,
)
from .dense import (
    DEFAULT_TASKS,
    DENSE_KINDS,
    BaselineOpt,
    DenseTasksOpt,
    SharedOpt,
    delta_m_against,
    dense_split,
    headlines,
    task_results,
    tasks_for,
)
from .outputs import check_out_dir
from .vl_data import KINDS as VL_KINDS

if TYPE_CHECKING:
    from torch import nn

_HELP = TrainConfig.field_help()
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def _cfg_help(name: str) -> str:
    return f"{_HELP[name]} (default {_DEFAULTS[name]})."


OutOpt = Annotated[
    Path, typer.Option("--out", help="output folder (metrics, checkpoint, adapter).")
]
ImgSizeOpt = Annotated[
    int | None,
    typer.Option("--img-size", min=1, help="input side for the backbone (default: its native)."),
]
SplitOpt = Annotated[
    str,
    typer.Option(
        help="split name; 'none' skips it; 'auto': train/val/test for folder: data with a train/ "
        "folder, else VTAB-1k's train800/val200/test."
    ),
]
TrainOptOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--train-opt",
        help="any other training setting KEY=VALUE (e.g. min_lr=1e-5, schedule_unit=epoch, "
        "amp=off), repeatable; keys: " + ", ".join(_HELP),
    ),
]


def _opt(name: str, flag: str, kind: Any) -> Any:
    return Annotated[kind | None, typer.Option(flag, help=_cfg_help(name), show_default=False)]


EpochsOpt = _opt("epochs", "--epochs", int)
BatchOpt = _opt("batch_size", "--batch-size", int)
LrOpt = _opt("lr", "--lr", float)
WdOpt = _opt("weight_decay", "--wd", float)
OptimOpt = _opt("optimizer", "--optimizer", str)
WarmupOpt = _opt("warmup_epochs", "--warmup-epochs", float)
SeedOpt = _opt("seed", "--seed", int)
AccumOpt = _opt("grad_accum_steps", "--grad-accum", int)
DeviceOpt = _opt("device", "--device", str)
AmpOpt = _opt("amp", "--amp", str)
WorkersOpt = _opt("num_workers", "--num-workers", int)


def create_backbone_for_cli(
    name: str, weights: Path | None, img_size: int | None, random_init: bool = False
) -> nn.Module:
    """The backbone for train/eval/sensitivity (seeded, so `eval` rebuilds what `train` used)."""
    return build_backbone(name, weights, img_size, random_init)


def train_config_from_cli(given: dict[str, Any], extra: list[str] | None) -> TrainConfig:
    """Merge explicit flags and ``--train-opt`` pairs into a validated `TrainConfig`."""
    options = parse_opts(extra)
    clash = sorted(set(options) & {k for k, v in given.items() if v is not None})
    if clash:
        raise ConfigError(f"{clash} given both as a flag and as --train-opt; give it once")
    options.update({k: v for k, v in given.items() if v is not None})
    return TrainConfig.from_options(options)


@handles_errors
def train_command(
    backbone: BackboneOpt,
    method: MethodOpt,
    data: DataOpt,
    out: OutOpt,
    opt: OptsOpt = None,
    weights: WeightsOpt = None,
    random_init: RandomInitOpt = False,
    img_size: ImgSizeOpt = None,
    epochs: EpochsOpt = None,
    batch_size: BatchOpt = None,
    lr: LrOpt = None,
    wd: WdOpt = None,
    optimizer: OptimOpt = None,
    warmup_epochs: WarmupOpt = None,
    seed: SeedOpt = None,
    grad_accum: AccumOpt = None,
    device: DeviceOpt = None,
    amp: AmpOpt = None,
    num_workers: WorkersOpt = None,
    train_opt: TrainOptOpt = None,
    train_split: SplitOpt = AUTO_SPLIT,
    val_split: SplitOpt = AUTO_SPLIT,
    test_split: SplitOpt = AUTO_SPLIT,
    resume: Annotated[
        bool, typer.Option(help="continue from <out>/checkpoint.safetensors.")
    ] = False,
    report_best_test: Annotated[
        bool, typer.Option(help="also report the best test top-1 over epochs (labelled).")
    ] = False,
    augment: Annotated[
        bool,
        typer.Option(
            help="light training augmentation, redrawn every epoch: random resized crop (60-100%% "
            "of the area) + horizontal flip. Off by default, as in the VTAB-1k protocol."
        ),
    ] = False,
    hflip: Annotated[
        bool | None,
        typer.Option(
            help="with --augment: mirror images (default: yes, except synthetic tasks whose "
            "labels a mirror changes).",
            show_default=False,
        ),
    ] = None,
    progress: Annotated[bool, typer.Option(help="progress bar on stderr.")] = True,
    tasks: DenseTasksOpt = None,
    shared: SharedOpt = False,
    baseline: BaselineOpt = None,
    log: Annotated[
        str | None,
        typer.Option(
            "--log",
            help="offline experiment log: tensorboard[:DIR] (default DIR: OUT/tensorboard) or "
            "mlflow[:URI] (default: a file store in OUT/mlruns).",
            show_default=False,
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Train METHOD on BACKBONE with the data of --data; the result is the last-epoch test top-1.

    Final VTAB-1k runs use --train-split train800val200 --val-split none; hyper-parameter
    searches train on train800 and compare val200 accuracy. The adapter is written to
    OUT/adapter.safetensors (load it with `vpeft eval` or `vpeft.load`).
    """
    from ..methods import get_method
    from ..train.lock import output_lock

    flags = {
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": wd,
        "optimizer": optimizer, "warmup_epochs": warmup_epochs, "seed": seed,
        "grad_accum_steps": grad_accum, "device": device, "amp": amp, "num_workers": num_workers,
    }  # fmt: skip
    config = train_config_from_cli(flags, train_opt)
    config = dataclasses.replace(
        config, out_dir=str(out), report_best_test=report_best_test, progress=progress
    )
    options = parse_opts(opt)
    get_method(method).config.from_options(options)  # fail fast, before any heavy work
    from ..bench.tracking import check_log

    check_log(log)
    if hflip is not None and not augment:
        raise ConfigError("--hflip/--no-hflip only applies with --augment")
    spec = DataSpec.parse(data)
    check_out_dir(out)
    dense = tasks is not None or spec.kind in DENSE_KINDS
    if dense:
        if spec.kind not in DENSE_KINDS:
            raise ConfigError(f"--tasks needs dense data ({', '.join(DENSE_KINDS)}), got {data}")
        if hflip is not None:
            raise ConfigError("--hflip applies to classification data; dense --augment flips")
        with output_lock(out, int(os.environ.get("RANK", "0")) == 0):
            summary = run_dense(
                backbone + ("+random-init" if random_init else ""),
                method, spec, data, out, options, weights, img_size, config, augment,
                (train_split, val_split, test_split), resume,
                tasks or DEFAULT_TASKS.get(spec.kind, "pascal-mt"), shared,
                baseline, log,
            )  # fmt: skip
        if summary is not None:
            if json_out:
                emit_json(summary)
            else:
                console.print(dense_table(summary, f"{method} on {backbone}, {data}"))
        return
    if shared or baseline is not None:
        raise ConfigError("--shared and --baseline apply to dense multi-task training (--tasks)")
    with output_lock(out, int(os.environ.get("RANK", "0")) == 0):
        summary = _run(
            backbone + ("+random-init" if random_init else ""),  # also the name recorded
            method, spec, data, out, options, weights, img_size, config, augment, hflip,
            (train_split, val_split, test_split), resume, log,
        )  # fmt: skip
    if summary is None:
        return
    if json_out:
        emit_json(summary)
        return
    console.print(_table(summary, f"{method} on {backbone}, {data}"))


@contextmanager
def epoch_logger(
    log: str | None, out: Path, method: str, options: dict[str, str], config: TrainConfig
) -> Iterator[Callable[..., None] | None]:
    """The `--log` tracker's per-epoch callback (rank 0 only; None without `--log`), closed
    when the run ends or fails."""
    from ..bench.tracking import epoch_callback

    rank0 = int(os.environ.get("RANK", "0")) == 0
    params = {"method": method, "options": options, "train": config.to_dict()}
    with epoch_callback(log if rank0 else None, out, f"{method}-{out.name}", params) as callback:
        yield callback


def _run(
    backbone: str, method: str, spec: DataSpec, data: str, out: Path, options: dict[str, str],
    weights: Path | None, img_size: int | None, config: TrainConfig, augment: bool,
    hflip: bool | None, split_names: tuple[str, str, str], resume: bool, log: str | None = None,
) -> dict[str, Any] | None:  # fmt: skip
    """Build, train and save; the summary on rank 0 (None elsewhere)."""
    from .. import adapter_info
    from ..model import apply
    from ..train import train
    from ..train.rng import seed_everything

    train_split, val_split, test_split = split_names
    name, _, random = backbone.partition("+")
    if spec.kind in VL_KINDS:
        return _run_vl(name, random == "random-init", method, spec, data, out, options, weights,
                       img_size, config, split_names, resume, log)  # fmt: skip
    model = create_backbone_for_cli(name, weights, img_size, random == "random-init")
    dcfg = backbone_data_config(model)
    mirror = flip_keeps_labels(spec) if hflip is None else hflip
    named = {"train": train_split, "val": val_split, "test": test_split}
    splits = {k: resolve_split(spec, k, v) for k, v in named.items()}
    if splits["train"] is None:
        raise ConfigError("--train-split cannot be 'none'")
    augmented = {"train"} if augment else set()
    datasets: dict[str, Any] = {}
    classes: list[str] | None = None
    for k, s in splits.items():  # train first: the other splits are mapped onto its classes
        if s is not None:
            transform = dcfg.transform(augment=k in augmented, hflip=mirror)
            datasets[k] = load_split(spec, s, transform, classes)
            classes = classes or class_names_of(datasets[k])
    seed_everything(config.seed)  # the method's initial values
    pm = apply(model, method, num_classes=num_classes_of(datasets["train"], spec), **options)
    preprocessing = {"input_size": list(dcfg.input_size), "mean": list(dcfg.mean),
                     "std": list(dcfg.std), "interpolation": dcfg.interpolation}  # fmt: skip
    adapter_info.attach(pm, classes, preprocessing, backbone)
    # an augmented split stays a dataset (transformed per item: new crops every epoch)
    inputs = {
        k: ds if k in augmented else training_input(ds, dcfg.input_size)
        for k, ds in datasets.items()
    }
    augmentation = {"augment": augment, "hflip": augment and mirror}
    extra = {"out": str(out), "data": data, "splits": splits, "augmentation": augmentation,
             "classes": classes, "preprocessing": preprocessing}  # fmt: skip
    with epoch_logger(log, out, method, options, config) as on_epoch_end:
        result = train(
            pm,
            inputs["train"],
            inputs.get("val"),
            inputs.get("test"),
            config,
            resume=resume,
            summary_extra=extra,
            on_epoch_end=on_epoch_end,
        )
    if int(os.environ.get("RANK", "0")) != 0:
        return None
    return result.summary(config, extra)  # what train() wrote to summary.json


#: split names per dense data kind for ``auto`` (PASCAL-Context has train / val only; its val
#: split is the test set of the multi-task literature)
_DENSE_SPLITS = {
    "dense-synthetic": {"train": "train", "val": "val", "test": "test"},
    "pascal-mt": {"train": "train", "val": None, "test": "val"},
    "ade20k": {"train": "training", "val": None, "test": "validation"},
}


def run_dense(
    backbone: str, method: str, spec: DataSpec, data: str, out: Path, options: dict[str, str],
    weights: Path | None, img_size: int | None, config: TrainConfig, augment: bool,
    split_names: tuple[str, str, str], resume: bool, tasks_text: str, shared: bool,
    baseline: Path | None, log: str | None = None,
) -> dict[str, Any] | None:  # fmt: skip
    """Build the dense multi-task model, train it, write summary.json with per-task results
    (test split, last epoch), headline metrics and Δm against ``baseline``."""
    from .. import adapter_info
    from ..model import apply
    from ..train import train
    from ..train.records import SUMMARY_NAME, write_summary
    from ..train.rng import seed_everything

    name, _, random = backbone.partition("+")
    model = create_backbone_for_cli(name, weights, img_size, random == "random-init")
    dcfg = backbone_data_config(model)
    task_list = tasks_for(tasks_text, spec.kind)
    names = [t.name for t in task_list]
    splits: dict[str, str | None] = {}
    for role, given in zip(("train", "val", "test"), split_names, strict=True):
        auto = _DENSE_SPLITS[spec.kind][role]
        splits[role] = auto if given == AUTO_SPLIT else (None if given.lower() == "none" else given)
    if splits["train"] is None:
        raise ConfigError("--train-split cannot be 'none'")
    datasets = {
        role: dense_split(
            spec.kind, spec.root, split, dcfg.input_size, dcfg.mean, dcfg.std, names,
            augment=augment and role == "train",
        )
        for role, split in splits.items()
        if split is not None
    }  # fmt: skip
    seed_everything(config.seed)  # the method's initial values
    pm = apply(model, method, tasks=task_list, shared=True if shared else None, **options)
    preprocessing = {"input_size": list(dcfg.input_size), "mean": list(dcfg.mean),
                     "std": list(dcfg.std), "interpolation": dcfg.interpolation}  # fmt: skip
    adapter_info.attach(pm, None, preprocessing, backbone)
    extra = {"out": str(out), "data": data, "splits": splits, "tasks": names,
             "shared": pm.methods[-1].shared, "augmentation": {"augment": augment},
             "preprocessing": preprocessing}  # fmt: skip
    with epoch_logger(log, out, method, options, config) as on_epoch_end:
        result = train(
            pm, datasets["train"], datasets.get("val"), datasets.get("test"), config,
            resume=resume, summary_extra=extra, on_epoch_end=on_epoch_end,
        )  # fmt: skip
    if int(os.environ.get("RANK", "0")) != 0:
        return None
    summary = result.summary(config, extra)
    last = result.history[-1] if result.history else {}
    scored = "test" if splits["test"] is not None else "val"
    per_task = task_results(last, pm.tasks, scored)
    headline = headlines(per_task, pm.tasks)
    summary.update(
        result={"metric": f"{scored} per-task headline (last epoch)", "value": headline},
        task_results=per_task,
        headline=headline,
        headline_split=scored,
    )
    if baseline is not None:
        summary["delta_m"] = delta_m_against(headline, pm.tasks, baseline)
    write_summary(out / SUMMARY_NAME, summary)
    return summary


def _run_vl(
    name: str, random_init: bool, method: str, spec: DataSpec, data: str, out: Path,
    options: dict[str, str], weights: Path | None, img_size: int | None, config: TrainConfig,
    split_names: tuple[str, str, str], resume: bool, log: str | None = None,
) -> dict[str, Any] | None:  # fmt: skip
    """VL data (``vl-synthetic:PART`` or an on-disk kind such as ``vqa-v2:DIR``): its VL task on
    a transformers VL backbone. For base-to-new (``clip-new``) the test split (new classes) is
    scored after training with the new names."""
    from .. import adapter_info
    from ..model import apply
    from ..train import train
    from ..train.device import autocast_dtype, resolve_device
    from ..train.evaluate import evaluate_tasks
    from ..train.records import SUMMARY_NAME, write_summary
    from ..train.rng import seed_everything
    from .vl_data import evaluation_task, load_vl, results

    for role, given in zip(("train", "val", "test"), split_names, strict=True):
        if given.lower() not in (AUTO_SPLIT, "none") or (role == "train" and given == "none"):
            raise ConfigError(
                f"--{role}-split {given!r}: the splits of {spec.kind} data are fixed by the part "
                "(or layout); use auto (or none to skip val / test)"
            )
    roles = tuple(r for r, g in zip(("train", "val", "test"), split_names, strict=True)
                  if g.lower() != "none")  # fmt: skip
    model = create_backbone_for_cli(name, weights, img_size, random_init)
    vl = load_vl(spec.kind, spec.root, model, roles)
    seed_everything(config.seed)  # the method's initial values
    pm = apply(model, method, tasks=[vl.task], **options)
    backbone = name + ("+random-init" if random_init else "")
    adapter_info.attach(pm, None, None, backbone)
    test_after = vl.new_classes is not None and "test" in vl.splits
    extra = {"out": str(out), "data": data, "splits": {r: vl.names[r] for r in roles}}
    with epoch_logger(log, out, method, options, config) as on_epoch_end:
        result = train(
            pm,
            vl.splits["train"],
            vl.splits.get("val"),
            None if test_after else vl.splits.get("test"),
            config,
            resume=resume,
            summary_extra=extra,
            on_epoch_end=on_epoch_end,
        )
    if int(os.environ.get("RANK", "0")) != 0:
        return None
    last = result.history[-1]
    metrics = {split: results(last, split) for split in ("val", "test") if split in vl.splits}
    if test_after:
        pm.tasks[vl.task.name] = evaluation_task(vl, vl.task)
        device = resolve_device(config.device)
        scores = evaluate_tasks(pm, vl.splits["test"], config.eval_batch_size, device,
                                autocast_dtype(config.amp, device))  # fmt: skip
        metrics["test"] = {f"{t}/{k}": v for t, s in scores.items() for k, v in s.values.items()}
    summary = result.summary(config, {**extra, "metrics": metrics})
    write_summary(out / SUMMARY_NAME, summary)
    return summary


def dense_table(summary: dict[str, Any], title: str) -> Table:
    table = Table(title=title)
    table.add_column("result")
    table.add_column("value", justify="right")
    for task, value in summary["headline"].items():
        table.add_row(f"{task} ({summary['headline_split']}, last epoch)", f"{value:.2f}")
    if "delta_m" in summary:
        table.add_row("Δm vs baseline (%)", f"{summary['delta_m']['value']:+.2f}")
    counts = summary["trainable"]
    table.add_row(
        "trainable encoder / all", f"{counts['trainable_encoder']:,} / {counts['trainable']:,}"
    )
    table.add_row("wall time (s)", f"{summary['wall_s']:.1f}")
    table.add_row("output", summary["out"])
    return table


def _table(summary: dict[str, Any], title: str) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [("test top-1 (last epoch)", summary["test_top1"]), ("val top-1", summary["val_top1"])]
    best = summary.get("best_test_top1_over_epochs")
    if best is not None:
        rows.append(
            (f"best test top-1 over epochs (test-selected, epoch {best['epoch']})", best["value"])
        )
    for split, values in (summary.get("metrics") or {}).items():  # VL tasks
        rows += [(f"{split} {key}", value) for key, value in values.items()]
    for name, value in rows:
        table.add_row(name, "-" if value is None else f"{value:.2f}")
    table.add_row("trainable parameters", f"{summary['trainable']['trainable']:,}")
    table.add_row("wall time (s)", f"{summary['wall_s']:.1f}")
    table.add_row("output", summary["out"])
    return table


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
