"""The training loop: `train(pm, train, val, test, config) -> TrainResult`.

Protocol (design.md, spec/spt.md): the reported result is the test top-1 after the *last* epoch;
validation accuracy is recorded for model selection by the user (e.g. a learning-rate grid on
train800 → val200); the test set never selects anything. With ``report_best_test`` the best test
top-1 over epochs — the SPT reference's protocol — is reported in addition, labelled as such.

Files under ``config.out_dir`` (rank 0 only): ``metrics.jsonl`` (one JSON line per completed
epoch), ``checkpoint.safetensors`` (after every epoch, see `checkpoint`), ``summary.json`` and
``adapter.safetensors`` (`PeftModel.save`). ``train(..., resume=True)`` continues from the
checkpoint and ends with the same metrics and tensors as an uninterrupted run (bitwise on CPU).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import __version__
from ..errors import ConfigError
from ..tasks import ClassificationTask
from . import distributed
from .batches import as_fields, model_inputs, model_tasks, run_model, targets, to_device
from .checkpoint import (
    CHECKPOINT_NAME,
    TrainState,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
    trained_buffers,
)
from .config import TRAJECTORY_FIELDS, TrainConfig
from .device import autocast, autocast_dtype, resolve_device
from .evaluate import evaluate_tasks
from .guards import check_finite_loss
from .inputs import Data, Source, as_source, check_labels
from .lock import output_lock
from .optim import build_optimizer, param_groups
from .records import METRICS_NAME, SUMMARY_NAME, append_metrics, rewrite_metrics, write_summary
from .rng import seed_everything
from .run_identity import IDENTITY_KEY, check_identity, run_identity
from .sampling import epoch_order, plan_epoch, steps_per_epoch
from .schedule import schedule_for

ADAPTER_NAME = "adapter.safetensors"
LAST_EPOCH_NOTE = "test top-1 after the last epoch (no model selection on the test set)"
BEST_TEST_NOTE = (
    "best test top-1 over epochs: test-set model selection as in the SPT reference code; "
    "optimistic, not a held-out estimate"
)


@dataclass
class TrainResult:
    """Outcome of a run. ``test_top1`` (last epoch) is THE result; accuracies in percent."""

    test_top1: float | None
    test_loss: float | None
    val_top1: float | None
    val_loss: float | None
    best_val_top1: float | None
    best_val_epoch: int | None
    best_test_top1: float | None  # only with report_best_test
    best_test_epoch: int | None
    trainable: dict[str, int]
    wall_s: float
    epochs: int
    history: list[dict[str, Any]] = field(default_factory=list)
    world_size: int = 1
    train_samples: int = 0

    def summary(self, config: TrainConfig, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The content of ``summary.json``."""
        out: dict[str, Any] = {
            "result": {"metric": "test_top1", "value": self.test_top1, "note": LAST_EPOCH_NOTE},
            "test_top1": self.test_top1,
            "test_loss": self.test_loss,
            "val_top1": self.val_top1,
            "val_loss": self.val_loss,
            "best_val_top1": self.best_val_top1,
            "best_val_epoch": self.best_val_epoch,
            "trainable": self.trainable,
            "epochs": self.epochs,
            "train_samples": self.train_samples,
            "world_size": self.world_size,
            "wall_s": self.wall_s,
        }
        if config.report_best_test:
            out["best_test_top1_over_epochs"] = {
                "value": self.best_test_top1,
                "epoch": self.best_test_epoch,
                "note": BEST_TEST_NOTE,
            }
        out.update(extra or {})
        out["config"] = config.to_dict()
        out["vpeft_version"] = __version__
        return out


def _best(history: list[dict[str, Any]], key: str) -> tuple[float | None, int | None]:
    scored = [(r[key], r["epoch"]) for r in history if r.get(key) is not None]
    if not scored:
        return None, None
    value = max(v for v, _ in scored)
    return value, min(e for v, e in scored if v == value)  # earliest epoch on ties


def result_from_history(
    history: list[dict[str, Any]], trainable: dict[str, int], wall_s: float
) -> TrainResult:
    """Build the `TrainResult` from per-epoch records (the last record holds the result)."""
    last = history[-1] if history else {}
    best_val, best_val_epoch = _best(history, "val_top1")
    best_test, best_test_epoch = _best(history, "test_top1")
    return TrainResult(
        test_top1=last.get("test_top1"),
        test_loss=last.get("test_loss"),
        val_top1=last.get("val_top1"),
        val_loss=last.get("val_loss"),
        best_val_top1=best_val,
        best_val_epoch=best_val_epoch,
        best_test_top1=best_test,
        best_test_epoch=best_test_epoch,
        trainable=trainable,
        wall_s=wall_s,
        epochs=len(history),
        history=list(history),
    )


def _trainable_counts(model: nn.Module) -> dict[str, int]:
    summary = getattr(model, "summary", None)
    if callable(summary):
        return summary().as_dict()
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": n, "total": sum(p.numel() for p in model.parameters())}


def train(
    pm: nn.Module,
    train_data: Data,
    val_data: Data | None = None,
    test_data: Data | None = None,
    config: TrainConfig | None = None,
    *,
    resume: bool = False,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    summary_extra: dict[str, Any] | None = None,
) -> TrainResult:
    """Train the trainable tensors of `pm` (usually a `PeftModel`) with cross-entropy.

    `train_data` / `val_data` / `test_data`: a map-style `Dataset` of ``(image, label)`` or an
    ``(images, labels)`` tensor pair, already transformed for the backbone. Under ``torchrun``
    the run is data-parallel over all processes (see `distributed`). `on_epoch_end` receives each
    epoch's metrics record after its checkpoint is written. `summary_extra` (e.g. the data and
    splits used) is recorded in ``summary.json`` beside the results.
    """
    config = config or TrainConfig()
    info = distributed.setup(config.device)
    try:
        with output_lock(config.out_dir, info.is_main):  # hardening: one job per output folder
            run = _Run(pm, train_data, val_data, test_data, config, info, summary_extra)
            return run.run(resume, on_epoch_end)
    finally:
        distributed.teardown(info)


class _Run:
    """State of one training run (kept together so each step of `run` stays short)."""

    def __init__(
        self,
        pm: nn.Module,
        train_data: Data,
        val_data: Data | None,
        test_data: Data | None,
        config: TrainConfig,
        info: distributed.DistInfo,
        summary_extra: dict[str, Any] | None = None,
    ) -> None:
        self.pm, self.config, self.info = pm, config, info
        self.summary_extra = summary_extra
        self.device = resolve_device(config.device, info.local_rank)
        self.amp_dtype = autocast_dtype(config.amp, self.device)
        num_classes = int(getattr(pm, "num_classes", 0)) or None
        self.tasks = model_tasks(pm, config.label_smoothing)
        self.train_src = as_source(train_data)
        self.eval_srcs: dict[str, Source] = {}
        for name, data in (("val", val_data), ("test", test_data)):
            if data is not None:
                self.eval_srcs[name] = as_source(data)
        for name, src in (("train", self.train_src), *self.eval_srcs.items()):
            if num_classes is not None:
                check_labels(src, num_classes, name)
        self.out = Path(config.out_dir) if config.out_dir else None
        sources = {"train": self.train_src, **self.eval_srcs}  # hardening: resume identity
        self.identity = {IDENTITY_KEY: run_identity(pm, sources, summary_extra)}

    # -- setup --------------------------------------------------------------------------
    def _prepare(self, resume: bool) -> TrainState:
        cfg, info = self.config, self.info
        seed_everything(cfg.seed + info.rank)
        self.pm.to(self.device)
        self.params = [p for p in self.pm.parameters() if p.requires_grad]
        distributed.broadcast_parameters(
            self.params + list(trained_buffers(self.pm).values()), info
        )
        self.steps_per_epoch = steps_per_epoch(len(self.train_src), cfg.batch_size)
        self.schedule, self.steps_per_unit = schedule_for(
            cfg.schedule_unit,
            cfg.epochs,
            self.steps_per_epoch,
            cfg.lr,
            cfg.warmup_epochs,
            cfg.warmup_lr,
            cfg.min_lr,
        )
        groups = param_groups(self.pm, cfg.weight_decay)
        self.optimizer = build_optimizer(cfg.optimizer, groups, cfg.lr, cfg.momentum, cfg.betas)
        self.data_rng = torch.Generator().manual_seed(cfg.seed)
        if self.out is None:
            if resume:
                raise ConfigError("resume=True needs config.out_dir (where the checkpoint is)")
            return TrainState()
        ckpt = self.out / CHECKPOINT_NAME
        state = TrainState()
        if ckpt.is_file():
            if not resume:
                raise ConfigError(
                    f"{self.out} already holds a training checkpoint; pass resume=True "
                    "(--resume) to continue it, or choose another output folder"
                )
            state = self._resume_from(ckpt)
        if info.is_main:  # under the output lock: temporaries of a killed job's atomic writes
            for written in (ckpt, self.out / ADAPTER_NAME, self.out / SUMMARY_NAME):
                remove_stale_temporaries(written)
            rewrite_metrics(self.out / METRICS_NAME, state.history)
        return state

    def _resume_from(self, ckpt: Path) -> TrainState:
        main = self.info.is_main
        state, saved = load_checkpoint(
            ckpt, self.pm, self.optimizer, self.data_rng, restore_rng=main
        )
        check_identity(ckpt, saved, self.identity[IDENTITY_KEY])
        mine = self.config.to_dict()
        differ = [k for k in TRAJECTORY_FIELDS if saved.get(k) != mine.get(k)]
        if differ:
            raise ConfigError(
                f"cannot resume {ckpt}: settings {differ} differ from the checkpoint's "
                f"({ {k: saved.get(k) for k in differ} }); resume with the same settings"
            )
        if not main:  # only rank 0's RNG state is stored; other ranks re-seed deterministically
            seed_everything(self.config.seed + self.info.rank + 1_000_003 * state.epoch)
        return state

    # -- loop ---------------------------------------------------------------------------
    def run(
        self, resume: bool, on_epoch_end: Callable[[dict[str, Any]], None] | None
    ) -> TrainResult:
        state = self._prepare(resume)
        cfg = self.config
        for epoch in range(state.epoch, cfg.epochs):
            start = time.perf_counter()
            record = self._train_epoch(epoch, state)
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                for name, src in self.eval_srcs.items():
                    record.update(self._evaluate(name, src))
            record["time_s"] = time.perf_counter() - start
            state.epoch = epoch + 1
            state.history.append(record)
            state.elapsed_s += record["time_s"]
            self._write_epoch(record, state)
            self._log(record)
            if on_epoch_end is not None:
                on_epoch_end(record)
        result = result_from_history(state.history, _trainable_counts(self.pm), state.elapsed_s)
        result.world_size, result.train_samples = self.info.world, len(self.train_src)
        self._finish(result)
        return result

    def _train_epoch(self, epoch: int, state: TrainState) -> dict[str, Any]:
        cfg, info = self.config, self.info
        plans = plan_epoch(
            epoch_order(len(self.train_src), self.data_rng),
            cfg.batch_size,
            info.rank,
            info.world,
            cfg.grad_accum_steps,
        )
        micro = [idx for plan in plans for idx in plan.micro_batches]
        batches = iter(
            self.train_src.batches(
                micro, num_workers=cfg.num_workers, seed=cfg.seed * 1_000_003 + epoch
            )
        )
        self.pm.train()
        # total weighted loss, samples, then per task: loss, correct (classification tasks)
        sums = torch.zeros(2 + 2 * len(self.tasks), dtype=torch.float64, device=self.device)
        lr = float("nan")
        bar = tqdm(
            plans,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            leave=False,
            file=sys.stderr,
            disable=not (cfg.progress and info.is_main),
            dynamic_ncols=True,
        )
        for plan in bar:
            for _ in plan.micro_batches:
                batch = next(batches)
                if batch is not None:
                    sums += self._forward_backward(batch, plan.global_count)
            distributed.sync_gradients(self.params, info)
            lr = self.schedule.apply(self.optimizer, state.global_step // self.steps_per_unit)
            check_finite_loss(sums[0], epoch + 1, state.global_step + 1, lr, info)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            state.global_step += 1
            bar.set_postfix(loss=f"{sums[0].item() / max(sums[1].item(), 1):.4f}", lr=f"{lr:.2e}")
        distributed.all_reduce_sum(sums, info)
        return {"epoch": epoch + 1, "step": state.global_step, "lr": lr, **self._train_record(sums)}

    def _train_record(self, sums: torch.Tensor) -> dict[str, float]:
        """Mean training loss (and top-1 of classification tasks), per task when several."""
        values = sums.tolist()
        count = max(values[1], 1.0)
        record = {"train_loss": values[0] / count}
        single = len(self.tasks) == 1
        for i, (name, task) in enumerate(self.tasks.items()):
            suffix = "" if single else f"/{name}"
            if not single:
                record[f"train_loss{suffix}"] = values[2 + 2 * i] / count
            if isinstance(task, ClassificationTask):
                record[f"train_top1{suffix}"] = 100.0 * values[3 + 2 * i] / count
        return record

    def _forward_backward(self, batch: Any, global_count: int) -> torch.Tensor:
        """Backpropagate this micro-batch's share of the global batch's mean loss
        (Σ_tasks weight · loss summed over samples, divided by the global sample count)."""
        fields = to_device(as_fields(batch), self.device)
        with autocast(self.device, self.amp_dtype):
            outputs = run_model(self.pm, model_inputs(fields, self.tasks), self.tasks)
        wanted = targets(fields, self.tasks)
        stats: list[torch.Tensor] = []
        total: torch.Tensor | None = None
        count = 0
        for name, task in self.tasks.items():
            output = outputs[name]
            output = output.float() if torch.is_tensor(output) else output
            loss_sum, count = task.loss(output, wanted[name])
            weighted = loss_sum if task.loss_weight == 1.0 else loss_sum * task.loss_weight
            total = weighted if total is None else total + weighted
            correct = (
                (output.detach().argmax(dim=-1) == wanted[name]).sum().double()
                if isinstance(task, ClassificationTask)
                else torch.zeros((), dtype=torch.float64, device=self.device)
            )
            stats += [loss_sum.detach().double(), correct]
        assert total is not None
        (total / global_count).backward()
        head = torch.tensor(float(count), dtype=torch.float64, device=self.device)
        return torch.stack([total.detach().double(), head, *stats])

    def _evaluate(self, split: str, src: Source) -> dict[str, float]:
        """``<split>_top1`` / ``<split>_loss`` for a single classification task (the record
        keys of every earlier version); ``<split>/<task>/<metric>`` for every task otherwise."""
        scores = evaluate_tasks(
            self.pm,
            src,
            self.config.eval_batch_size,
            self.device,
            self.amp_dtype,
            self.info,
            self.config.num_workers,
            self.tasks,
        )
        only = next(iter(self.tasks.values()))
        if len(self.tasks) == 1 and isinstance(only, ClassificationTask):
            values = next(iter(scores.values())).values
            return {f"{split}_top1": values["top1"], f"{split}_loss": values["loss"]}
        return {
            f"{split}/{task}/{metric}": value
            for task, result in scores.items()
            for metric, value in result.values.items()
        }

    # -- output -------------------------------------------------------------------------
    def _write_epoch(self, record: dict[str, Any], state: TrainState) -> None:
        if self.out is None or not self.info.is_main:
            return
        append_metrics(self.out / METRICS_NAME, record)
        save_checkpoint(
            self.out / CHECKPOINT_NAME,
            self.pm,
            self.optimizer,
            self.data_rng,
            state,
            {**self.config.to_dict(), **self.identity},
        )

    def _log(self, record: dict[str, Any]) -> None:
        if not (self.config.progress and self.info.is_main):
            return
        parts = [f"epoch {record['epoch']}/{self.config.epochs}"]
        parts.append(f"loss {record['train_loss']:.4f}")
        parts += [
            f"{k} {record[k]:.2f}" for k in ("train_top1", "val_top1", "test_top1") if k in record
        ]
        tqdm.write("  ".join(parts), file=sys.stderr)

    def _finish(self, result: TrainResult) -> None:
        if self.out is None or not self.info.is_main:
            return
        save = getattr(self.pm, "save", None)
        if self.config.save_adapter and callable(save):
            save(self.out / ADAPTER_NAME)
        write_summary(self.out / SUMMARY_NAME, result.summary(self.config, self.summary_extra))
