"""`vpeft eval`: load a saved adapter onto its backbone and report top-1 on a dataset split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import AdapterFileError, ConfigError
from .common import (
    BackboneOpt,
    JsonOpt,
    RandomInitOpt,
    WeightsOpt,
    console,
    emit_json,
    handles_errors,
)
from .data_option import (
    DataOpt,
    DataSpec,
    backbone_data_config,
    check_classes_match,
    load_split,
    training_input,
)
from .dense import DENSE_KINDS, dense_split, headlines
from .train import ImgSizeOpt, create_backbone_for_cli
from .vl_data import KINDS as VL_KINDS

AdapterOpt = Annotated[
    Path, typer.Option("--adapter", help="adapter file written by `vpeft train` / PeftModel.save.")
]


@handles_errors
def eval_command(
    backbone: BackboneOpt,
    adapter: AdapterOpt,
    data: DataOpt,
    weights: WeightsOpt = None,
    random_init: RandomInitOpt = False,
    img_size: ImgSizeOpt = None,
    split: Annotated[str, typer.Option(help="split to evaluate.")] = "test",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="images per batch.")] = 256,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N.")] = "auto",
    amp: Annotated[
        str, typer.Option(help="auto (bf16 autocast on CUDA, as `vpeft train`), bf16 or off.")
    ] = "auto",
    json_out: JsonOpt = False,
    multi_scale: Annotated[
        bool,
        typer.Option(
            "--multi-scale",
            help="segmentation tasks: multi-scale + flip test (scales 0.5-1.75, softmax "
            "averaged, sliding windows of the input size) instead of single scale.",
        ),
    ] = False,
) -> None:
    """Evaluate ADAPTER (on the same pretrained BACKBONE it was trained on) on --data's split.

    Dense multi-task adapters (--data dense-synthetic:… / pascal-mt:ROOT) report every task's
    metrics and headline (mIoU; mean angular error for normals)."""
    from ..adapter_info import read_info
    from ..train.device import autocast_dtype, resolve_device
    from ..train.evaluate import evaluate

    spec = DataSpec.parse(data)
    info = read_info(adapter)
    model = create_backbone_for_cli(backbone, weights, img_size, random_init)
    if spec.kind in VL_KINDS:
        record = _eval_vl(spec, model, adapter, info, split, batch_size, device, amp)
        record.update(split=split, data=data, adapter=str(adapter))
        if json_out:
            emit_json(record)
            return
        shown = ", ".join(f"{k} {v:.2f}" for k, v in record["metrics"].items())
        console.print(f"{adapter} on {data} [{split}]: {shown}")
        return
    check_input_size(adapter, info, backbone_data_config(model).input_size)
    pm = load_for_cli(adapter, model, info)
    if spec.kind in DENSE_KINDS:
        record = _eval_dense(pm, spec, split, batch_size, device, amp, multi_scale)
        record.update(split=split, data=data, adapter=str(adapter))
        if json_out:
            emit_json(record)
            return
        shown = ", ".join(f"{t} {v:.2f}" for t, v in record["headline"].items())
        console.print(f"{adapter} on {data} [{split}]: {shown}")
        return
    dcfg = backbone_data_config(pm.model)
    trained = info.get("classes")
    dataset = load_split(spec, split, dcfg.transform(), trained)
    check_classes_match(dataset, trained, f"--data {data} [{split}]")
    target = resolve_device(device)
    pm.to(target)
    dtype = autocast_dtype(amp, target)
    res = evaluate(pm, training_input(dataset, dcfg.input_size), batch_size, target, dtype)
    record = {"top1": res.top1, "loss": res.loss, "correct": res.correct, "count": res.count,
              "split": split, "data": data, "adapter": str(adapter)}  # fmt: skip
    if json_out:
        emit_json(record)
        return
    console.print(
        f"{adapter} on {data} [{split}]: top-1 {res.top1:.2f}% ({res.correct}/{res.count}), "
        f"loss {res.loss:.4f}"
    )


def _eval_dense(
    pm: Any,
    spec: DataSpec,
    split: str,
    batch_size: int,
    device: str,
    amp: str,
    multi_scale: bool = False,
) -> dict[str, Any]:
    """Per-task metrics and headlines of a dense multi-task adapter on a dense split."""
    from ..train.device import autocast_dtype, resolve_device
    from ..train.evaluate import evaluate_tasks

    dcfg = backbone_data_config(pm.model)
    names = list(pm.tasks)
    dataset = dense_split(spec.kind, spec.root, split, dcfg.input_size, dcfg.mean, dcfg.std, names)
    target = resolve_device(device)
    pm.to(target)
    if multi_scale:
        results = _multi_scale_results(pm, dataset, batch_size, target, dcfg.input_size, amp)
        return {"task_results": results, "headline": headlines(results, pm.tasks),
                "test_mode": "multi-scale+flip"}  # fmt: skip
    scores = evaluate_tasks(pm, dataset, batch_size, target, autocast_dtype(amp, target))
    results = {name: s.values for name, s in scores.items()}
    return {"task_results": results, "headline": headlines(results, pm.tasks)}


def _multi_scale_results(
    pm: Any, dataset: Any, batch_size: int, device: Any, crop: Any, amp: str
) -> dict[str, dict[str, float]]:
    """`multi_scale_probs` (MS_SCALES, flip) of every segmentation task, scored by its metrics."""
    import torch
    from torch.utils.data import DataLoader

    from ..tasks.dense import SegmentationTask, multi_scale_probs
    from ..train.device import autocast, autocast_dtype

    others = [n for n, t in pm.tasks.items() if not isinstance(t, SegmentationTask)]
    if others:
        raise ConfigError(f"--multi-scale scores segmentation tasks only; {others} are not")
    metrics = {name: task.metrics() for name, task in pm.tasks.items()}
    dtype = autocast_dtype(amp, device)
    pm.eval()
    with torch.no_grad():
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            x = batch["pixel_values"].to(device)
            for name, task in pm.tasks.items():

                def forward(z: Any, name: str = name) -> Any:
                    with autocast(device, dtype):
                        return pm(z, task=name)

                probs = multi_scale_probs(forward, x, (int(crop[0]), int(crop[1])))
                for metric in metrics[name]:
                    metric.update(probs, batch[task.target_field].to(device))
    out: dict[str, dict[str, float]] = {}
    for name, ms in metrics.items():
        out[name] = {}
        for metric in ms:
            out[name].update(metric.compute())
    return out


def _eval_vl(spec: DataSpec, model: Any, adapter: Path, info: dict[str, Any], split: str,
             batch_size: int, device: str, amp: str) -> dict[str, Any]:  # fmt: skip
    """Every metric of the adapter's VL task on a split (role train / val / test) of VL data
    (``vl-synthetic:PART`` or an on-disk kind)."""
    from ..train.device import autocast_dtype, resolve_device
    from ..train.evaluate import evaluate_tasks
    from .vl_data import evaluation_task, load_vl

    if split not in ("train", "val", "test"):
        raise ConfigError(f"--split {split!r}: {spec.kind} data has train, val and test")
    pm = load_for_cli(adapter, model, info)
    vl = load_vl(spec.kind, spec.root, pm.spec.backbone, (split,))
    if list(pm.tasks) != [vl.task.name]:
        raise ConfigError(
            f"{adapter} holds the task(s) {list(pm.tasks)}; --data {spec.kind}:{spec.root} "
            f"evaluates {vl.task.name!r}"
        )
    if split == "test":
        name = vl.task.name
        pm.tasks[name] = evaluation_task(vl, pm.tasks[name])
    target = resolve_device(device)
    pm.to(target)
    scores = evaluate_tasks(pm, vl.splits[split], batch_size, target, autocast_dtype(amp, target))
    metrics = {f"{t}/{k}": v for t, s in scores.items() for k, v in s.values.items()}
    return {"metrics": metrics, "count": len(vl.splits[split])}


def check_input_size(adapter: Path, info: dict[str, Any], size: tuple[int, int]) -> None:
    """`ConfigError` when the adapter records another input size than the built backbone's."""
    trained = (info.get("preprocessing") or {}).get("input_size")
    if trained and tuple(trained) != tuple(size):
        raise ConfigError(
            f"{adapter} was trained at input size {trained[0]}x{trained[1]}, the backbone is "
            f"built for {size[0]}x{size[1]}; pass --img-size {trained[0]} (as at training)"
        )


def load_for_cli(adapter: Path, model: Any, info: dict[str, Any]) -> Any:
    """`vpeft.load`, with a fingerprint mismatch worded in terms of CLI flags."""
    from ..model import load

    try:
        return load(adapter, base=model)
    except AdapterFileError as err:
        if "strict_fingerprint" not in str(err):
            raise
        name = info.get("backbone_name")
        trained = f" (trained with --backbone {name})" if name else ""
        raise AdapterFileError(
            f"{adapter} was trained on a backbone with other frozen weights{trained}; pass the "
            "same --backbone, --weights and --img-size as at training"
        ) from None


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
