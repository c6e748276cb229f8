"""VQT evidence on the bundled backbone and the synthetic suite (issue "VQT", evidence part).

On `vit-tiny-synth` (4 blocks × 64 wide, 32² input) and synthetic target tasks of every group,
trains and tests:

- linear probe, Head2Toe (± group lasso), VQT with T = 1 and T = 4 (± group lasso, keep 0.7),
  full fine-tuning;
- AdaptFormer(b), VQT (T = 1) on top of AdaptFormer(b), and AdaptFormer(b') whose bottleneck b'
  is enlarged to VQT+AdaptFormer(b)'s total trainable count (closed form, `matched_bottleneck`).

Protocol (VTAB-1k style, scaled down for a shared CPU): every method is trained with Adam
(coupled L2 weight decay, the VQT reference optimiser), batch `--batch`, `--epochs` epochs,
one warm-up epoch then cosine per step, seed `--seed`. One learning rate per method is picked
from that method's grid (`LR_GRIDS`) by the mean val200 top-1 after the last epoch, training on
train800, over the `--grid-tasks`; a grid whose best rate is its largest (smallest) value is
extended one step of the 1-3-10 ladder up (down), at most `--extend` times. Then every task is
trained on train800val200 with the chosen rate and the test top-1 after the last epoch is
reported (the test set selects nothing). Group lasso
(stages B/C, `vpeft.methods.vqt.group_lasso_select`) runs on the stage-A model of the final run with
stage A's rate, λ = `--lam`, keep `--keep-frac`.

Frozen-backbone methods (linear, Head2Toe, VQT) train on cached backbone outputs: the backbone
has no dropout and no augmentation is used, so its final feature, Head2Toe's pooled taps and
every block's K_m, V_m are the same at every epoch; they are computed once per image and the
trainable part (head, or queries + head through `QueryTuning.summaries`) is trained on them
with the same `vpeft.train.train` loop. After training, the cached model's logits are checked
against the real `PeftModel` on test images (`--check` images; the run stops if they differ).

Costs come from `vpeft.analysis.profile_model` at the benchmark's batch (10 classes):
activation bytes saved for backward, parameter / gradient / Adam-state bytes, FLOPs of a step;
ratios are against full fine-tuning measured in the same run.

CPU runs are deterministic (fixed seeds, one thread per process), so `--reuse FILE` takes the
back-propagating runs (full, AdaptFormer variants: the expensive ones) already present in the
`--json` of an earlier run with the same settings instead of recomputing them.

    .venv/bin/python benchmarks/vqt_synthetic.py --jobs 2 --out vqt.md --json vqt.json
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from _synthetic_common import (
    BACKBONE,
    add_task_arguments,
    backbone,
    backbone_transform,
    chosen_lr_lines,
    default_grid_tasks,
    group_means,
    machine_line,
    prepare_tasks,
    present_groups,
    top1_table_head,
    train_config,
)
from torch import nn

import vpeft
from vpeft.analysis import profile_model
from vpeft.data import synthetic
from vpeft.methods.vqt import HeadTraining, QueryTuning, group_lasso_select, normalize_groups
from vpeft.train import evaluate, train

MIB = 2**20

#: Learning-rate grid of each trained configuration (Adam). Head-only methods read
#: L2-normalised feature groups (VQT, Head2Toe) and need large rates, as in the VQT reference.
LR_GRIDS: dict[str, tuple[float, ...]] = {
    "linear": (1e-1, 3e-2, 1e-2, 3e-3),
    "head2toe": (3e-1, 1e-1, 3e-2, 1e-2),
    "vqt1": (3e-1, 1e-1, 3e-2, 1e-2),
    "vqt4": (3e-1, 1e-1, 3e-2, 1e-2),
    "full": (1e-3, 3e-4),
    "adaptformer": (3e-2, 1e-2),
    "vqt+adaptformer": (3e-2, 1e-2),
    "adaptformer-matched": (3e-2, 1e-2),
}

#: Rows of the result tables, in order: key, label, the trained configuration it comes from.
ROWS: tuple[tuple[str, str, str], ...] = (
    ("linear", "linear probe", "linear"),
    ("head2toe", "Head2Toe", "head2toe"),
    ("head2toe+gl", "Head2Toe + group lasso", "head2toe"),
    ("vqt1", "VQT (T=1)", "vqt1"),
    ("vqt1+gl", "VQT (T=1) + group lasso", "vqt1"),
    ("vqt4", "VQT (T=4)", "vqt4"),
    ("vqt4+gl", "VQT (T=4) + group lasso", "vqt4"),
    ("full", "full fine-tuning", "full"),
    ("adaptformer", "AdaptFormer (b)", "adaptformer"),
    ("vqt+adaptformer", "VQT (T=1) + AdaptFormer (b)", "vqt+adaptformer"),
    ("adaptformer-matched", "AdaptFormer (b', matched)", "adaptformer-matched"),
)

#: Configurations trained on cached frozen-backbone outputs (one unit of work per task).
CACHED = ("linear", "head2toe", "vqt1", "vqt4")
#: Configurations that back-propagate into the backbone (one unit of work per task and method).
BACKPROP = ("full", "adaptformer", "vqt+adaptformer", "adaptformer-matched")


# ------------------------------------------------------------------ parameter counts


def adaptformer_params(depth: int, dim: int, bottleneck: int) -> int:
    """Trainable encoder parameters of AdaptFormer: M · (2·D·b + b + D)."""
    return depth * (2 * dim * bottleneck + bottleneck + dim)


def vqt_params(depth: int, dim: int, queries: int, classes: int) -> tuple[int, int]:
    """(query values M·T·D, head (D + M·T·D)·C + C) of VQT with `concat` summaries."""
    features = dim + depth * queries * dim
    return depth * queries * dim, features * classes + classes


def matched_bottleneck(
    depth: int, dim: int, bottleneck: int, queries: int, classes: int
) -> tuple[int, float]:
    """b' with AdaptFormer(b') + linear head ≈ VQT(T) + AdaptFormer(b), all trainables counted.

    M(2D+1)·b' + M·D + D·C + C = M(2D+1)·b + M·D + M·T·D + (D + M·T·D)·C + C, hence
    b' = b + T·D·(C + 1) / (2D + 1). Returns (rounded b', exact b').
    """
    exact = bottleneck + queries * dim * (classes + 1) / (2 * dim + 1)
    return round(exact), exact


# ------------------------------------------------------------------ settings and data


@dataclass(frozen=True)
class Settings:
    """Everything a worker needs (picklable)."""

    epochs: int
    batch: int
    weight_decay: float
    bottleneck: int
    lam: float
    keep_frac: float
    seed: int
    device: str
    check: int
    threads: int


@dataclass
class Split:
    """Normalised images and labels of train800val200 followed by test; index ranges into them."""

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    ranges: dict[str, tuple[int, int]]

    def index(self, name: str) -> torch.Tensor:
        start, stop = self.ranges[name]
        return torch.arange(start, stop)

    def labels_of(self, name: str) -> torch.Tensor:
        start, stop = self.ranges[name]
        return self.labels[start:stop]


def load_task(task: str, with_test: bool) -> Split:
    """train800val200 (+ test) of `task`, resized/normalised for the bundled backbone."""
    transform = backbone_transform()
    trainval = synthetic.load_split(task, "train800val200")
    parts = [trainval.as_tensors(transform)]
    ranges = {"train800": (0, 800), "val200": (800, 1000), "train800val200": (0, 1000)}
    if with_test:
        test = synthetic.load_split(task, "test").as_tensors(transform)
        ranges["test"] = (1000, 1000 + len(test[1]))
        parts.append(test)
    images = torch.cat([p[0] for p in parts])
    labels = torch.cat([p[1] for p in parts])
    return Split(images, labels, trainval.num_classes, ranges)


# ------------------------------------------------------------------ models


def build(config: str, classes: int, settings: Settings) -> vpeft.PeftModel:
    """The `PeftModel` of one trained configuration (seeded init)."""
    torch.manual_seed(settings.seed)
    b = settings.bottleneck
    if config == "linear":
        return vpeft.apply(backbone(), "linear", num_classes=classes)
    if config == "head2toe":
        return vpeft.apply(backbone(), "head2toe", num_classes=classes)
    if config in ("vqt1", "vqt4"):
        return vpeft.apply(backbone(), "vqt", num_classes=classes, num_queries=int(config[3:]))
    if config == "full":
        return vpeft.apply(backbone(), "full", num_classes=classes)
    if config == "adaptformer":
        return vpeft.apply(backbone(), "adaptformer", num_classes=classes, bottleneck=b)
    if config == "vqt+adaptformer":
        pm = vpeft.apply(backbone(), "adaptformer", num_classes=classes, bottleneck=b)
        return vpeft.apply(pm, "vqt", num_queries=1)
    if config == "adaptformer-matched":
        spec = vpeft.apply(backbone(), "linear", num_classes=classes).spec
        wide, _ = matched_bottleneck(spec.depth, spec.embed_dim, b, 1, classes)
        return vpeft.apply(backbone(), "adaptformer", num_classes=classes, bottleneck=wide)
    raise ValueError(f"unknown configuration {config!r}")


class CachedHead(nn.Module):
    """A head over precomputed feature rows; the input is a tensor of row indices."""

    def __init__(self, table: torch.Tensor, head: nn.Module) -> None:
        super().__init__()
        self.table = table  # plain attribute: cached data, not model state
        self.head = head

    def features(self, rows: torch.Tensor) -> torch.Tensor:
        return self.table[rows]

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(rows))


class CachedQueryTuning(nn.Module):
    """`QueryTuning.features` with the frozen backbone pass replaced by its cached outputs.

    `final` (N, D) and each block's (K_m, V_m) (N, H, tokens, d_h) come from
    `QueryTuning.backbone_pass`; only the query path and the head run per step.
    """

    def __init__(
        self,
        module: QueryTuning,
        final: torch.Tensor,
        keys_values: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> None:
        super().__init__()
        self.vqt = module
        self.final = final
        self.keys_values = keys_values

    def features(self, rows: torch.Tensor) -> torch.Tensor:
        kv = [(k[rows], v[rows]) for k, v in self.keys_values]
        summaries = self.vqt.summaries(kv, len(rows))
        groups = [self.vqt.reduce_layer(m, z) for m, z in enumerate(summaries)]
        return normalize_groups([self.final[rows], *groups])

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.vqt.head(self.features(rows))


@dataclass
class FrozenCache:
    """Outputs of the frozen backbone for every image of a task, computed once."""

    final: torch.Tensor  # (N, D): what the backbone feeds its classifier (pre-logits)
    keys_values: list[tuple[torch.Tensor, torch.Tensor]]  # per block (N, H, tokens, d_h) each
    head2toe: torch.Tensor  # (N, F): Head2Toe's pooled, per-tap normalised features


@torch.no_grad()
def frozen_cache(data: Split, settings: Settings, chunk: int = 250) -> FrozenCache:
    """One VQT backbone pass (final feature, K_m, V_m) and one Head2Toe pass over all images."""
    images = data.images.to(settings.device)
    vqt = build("vqt1", data.num_classes, settings).to(settings.device).eval()
    h2t = build("head2toe", data.num_classes, settings).to(settings.device).eval()
    module = vqt.forward_override
    assert isinstance(module, QueryTuning)
    finals, kvs, taps = [], [], []
    for x in images.split(chunk):
        final, kv = module.backbone_pass(x)
        finals.append(final)
        kvs.append(kv)
        taps.append(h2t.forward_override.features(x))
    keys_values = [
        (torch.cat([kv[m][0] for kv in kvs]), torch.cat([kv[m][1] for kv in kvs]))
        for m in range(len(kvs[0]))
    ]
    return FrozenCache(torch.cat(finals), keys_values, torch.cat(taps))


def cached_model(
    config: str, cache: FrozenCache, classes: int, settings: Settings
) -> tuple[vpeft.PeftModel, nn.Module]:
    """A freshly initialised frozen-backbone configuration and its stand-in on `cache`."""
    pm = build(config, classes, settings).to(settings.device)
    if config == "linear":
        return pm, CachedHead(cache.final, pm.head)
    if config == "head2toe":
        return pm, CachedHead(cache.head2toe, pm.head)
    module = pm.forward_override
    assert isinstance(module, QueryTuning)
    return pm, CachedQueryTuning(module, cache.final, cache.keys_values)


def check_cached(pm: vpeft.PeftModel, cached: nn.Module, data: Split, n: int) -> float:
    """Max |logit difference| between the real model and its cached stand-in on test images."""
    if n <= 0:
        return 0.0
    start, _ = data.ranges["test"]
    rows = torch.arange(start, start + n)
    device = next(pm.parameters()).device
    pm.eval()
    cached.eval()
    with torch.no_grad():
        real = pm(data.images[rows].to(device))
        fast = cached(rows.to(device))
    diff = float((real - fast).abs().max())
    if not diff <= 1e-4:
        raise RuntimeError(f"cached model differs from the real one by {diff:.3g} in logits")
    return diff


# ------------------------------------------------------------------ training


def fit(
    model: nn.Module,
    inputs: torch.Tensor,
    data: Split,
    splits: tuple[str, str],
    lr: float,
    settings: Settings,
) -> float:
    """Train on split[0], return the last-epoch top-1 on split[1] (`inputs`: images or rows)."""
    fit_split, eval_split = splits

    def pair(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        start, stop = data.ranges[name]
        return inputs[start:stop], data.labels[start:stop]

    result = train(
        model, pair(fit_split), None, pair(eval_split), train_config(settings, lr, "adam")
    )
    assert result.test_top1 is not None
    return result.test_top1


def lasso_top1(
    pm: vpeft.PeftModel, cached: nn.Module, data: Split, lr: float, s: Settings
) -> float:
    """Group-lasso stages B/C on the stage-A model's cached features; test top-1 after C."""
    rows = data.index("train800val200")
    cached.eval()
    with torch.no_grad():
        features = cached.features(rows.to(s.device))
    schedule = HeadTraining(
        lr=lr, epochs=s.epochs, weight_decay=s.weight_decay, batch_size=s.batch,
        warmup_epochs=1, seed=s.seed,
    )  # fmt: skip
    group_lasso_select(
        pm, features, data.labels[rows].to(s.device), schedule, lam=s.lam, keep_frac=s.keep_frac
    )  # installs the selection and the stage-C head into `pm` (shared with `cached`)
    check_cached(pm, cached, data, s.check)
    return evaluate(cached, (data.index("test"), data.labels_of("test")), 500).top1


@dataclass(frozen=True)
class Unit:
    """One piece of work: the grid or the final run of some configurations on one task."""

    task: str
    configs: tuple[str, ...]
    final: bool
    lrs: dict[str, tuple[float, ...]] = field(default_factory=dict)


def run_unit(unit: Unit, settings: Settings) -> list[dict[str, Any]]:
    """Train every (configuration, lr) of `unit`; one record per result."""
    torch.set_num_threads(settings.threads)
    data = load_task(unit.task, with_test=unit.final)
    splits = ("train800val200", "test") if unit.final else ("train800", "val200")
    device = torch.device(settings.device)
    records = []
    cache = frozen_cache(data, settings) if unit.configs[0] in CACHED else None
    for config in unit.configs:
        for lr in unit.lrs[config]:
            start = time.perf_counter()
            if cache is not None:
                pm, model = cached_model(config, cache, data.num_classes, settings)
                top1 = fit(model, torch.arange(len(data.labels)), data, splits, lr, settings)
            else:
                model = pm = build(config, data.num_classes, settings).to(device)
                top1 = fit(pm, data.images, data, splits, lr, settings)
            record = {
                "task": unit.task, "group": synthetic.TARGET_TASKS[unit.task], "config": config,
                "row": config, "lr": lr, "split": splits[1], "top1": top1,
                "trainable": pm.summary().as_dict(), "classes": data.num_classes,
                "wall_s": time.perf_counter() - start,
            }  # fmt: skip
            if config in CACHED and unit.final:
                record["cache_check"] = check_cached(pm, model, data, settings.check)
            records.append(record)
            if config in ("head2toe", "vqt1", "vqt4") and unit.final:
                start = time.perf_counter()
                top1 = lasso_top1(pm, model, data, lr, settings)
                records.append(
                    {**record, "row": f"{config}+gl", "top1": top1,
                     "trainable": pm.summary().as_dict(),
                     "wall_s": time.perf_counter() - start + record["wall_s"]}
                )  # fmt: skip
            print(
                f"  {unit.task:<18} {config:<20} lr {lr:<7g} {splits[1]} top-1 "
                f"{record['top1']:6.2f}  ({record['wall_s']:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    return records


# ------------------------------------------------------------------ orchestration


def units(tasks: list[str], final: bool, lrs: dict[str, tuple[float, ...]]) -> list[Unit]:
    """Backprop configurations first (the long units), one per task and configuration; the
    frozen-backbone ones share one unit per task (one cache)."""
    out = [Unit(t, (c,), final, {c: lrs[c]}) for c in BACKPROP if lrs.get(c) for t in tasks]
    cached = tuple(c for c in CACHED if lrs.get(c))
    if cached:
        out += [Unit(t, cached, final, {c: lrs[c] for c in cached}) for t in tasks]
    return out


Key = tuple[str, str, float, str]


def record_key(r: dict[str, Any]) -> Key:
    return (r["task"], r["config"], r["lr"], r["split"])


def run_units(
    work: list[Unit], settings: Settings, jobs: int, reuse: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Run `work`; (task, configuration, lr, split) found in `reuse` are taken from it."""
    done: dict[Key, list[dict[str, Any]]] = {}
    for r in reuse or []:
        done.setdefault(record_key(r), []).append(r)
    kept: list[dict[str, Any]] = []
    todo: list[Unit] = []
    split = "test" if work and work[0].final else "val200"
    for u in work:
        left = {}
        for c, grid in u.lrs.items():
            for lr in grid:
                found = done.get((u.task, c, lr, split))
                kept += found or []
                if not found:
                    left.setdefault(c, []).append(lr)
        if left:
            todo.append(Unit(u.task, tuple(left), u.final, {c: tuple(v) for c, v in left.items()}))
    if jobs <= 1 or len(todo) <= 1:
        return kept + [r for u in todo for r in run_unit(u, settings)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context) as pool:
        futures = [pool.submit(run_unit, u, settings) for u in todo]
        return kept + [r for f in futures for r in f.result()]


def ladder_step(lr: float, up: bool) -> float:
    """The next rate on the 1-3-10 ladder above (or below) `lr`."""
    exponent = math.floor(math.log10(lr) + 1e-9)
    mantissa = lr / 10**exponent
    steps = (1.0, 3.0, 10.0) if up else (0.3, 1.0, 3.0)
    nearest = min((1.0, 3.0), key=lambda m: abs(m - mantissa))
    value = steps[1 if nearest == 1.0 else 2] if up else steps[0 if nearest == 1.0 else 1]
    return float(f"{value * 10**exponent:.3g}")


def check_counts(records: list[dict[str, Any]], settings: Settings) -> None:
    """The measured trainable counts equal the closed forms used to match the bottleneck."""
    spec = build("linear", 10, settings).spec
    m, d, b = spec.depth, spec.embed_dim, settings.bottleneck
    for r in records:
        c = r["classes"]
        wide, _ = matched_bottleneck(m, d, b, 1, c)
        expected = {
            "vqt1": sum(vqt_params(m, d, 1, c)),
            "vqt4": sum(vqt_params(m, d, 4, c)),
            "adaptformer": adaptformer_params(m, d, b) + d * c + c,
            "vqt+adaptformer": adaptformer_params(m, d, b) + sum(vqt_params(m, d, 1, c)),
            "adaptformer-matched": adaptformer_params(m, d, wide) + d * c + c,
        }.get(r["row"])
        if expected is not None and r["trainable"]["trainable"] != expected:
            raise RuntimeError(f"{r['row']}: {r['trainable']} trainable, closed form {expected}")


def select_lrs(
    records: list[dict[str, Any]], grids: dict[str, list[float]]
) -> dict[str, dict[str, Any]]:
    """Per configuration: the lr with the best mean val200 top-1 (ties: the larger lr)."""
    chosen: dict[str, dict[str, Any]] = {}
    for config, grid in grids.items():
        means = {
            lr: statistics.mean(
                r["top1"] for r in records if r["config"] == config and r["lr"] == lr
            )
            for lr in sorted(grid, reverse=True)
        }
        best = max(means, key=lambda lr: (means[lr], lr))
        chosen[config] = {"lr": best, "val_mean": means}
    return chosen


def search_lrs(
    args: argparse.Namespace, settings: Settings, reuse: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Grid on train800 -> val200 over the grid tasks; a grid whose best rate is its largest
    (smallest) is extended one ladder step up (down), at most `--extend` times."""
    grids = {c: list(LR_GRIDS[c]) for c in args.configs}
    records = run_units(units(args.grid_tasks, False, grids), settings, args.jobs, reuse)
    for _ in range(args.extend):
        chosen = select_lrs(records, grids)
        extra = {}
        for config, grid in grids.items():
            best = chosen[config]["lr"]
            if best in (max(grid), min(grid)):
                extra[config] = (ladder_step(best, up=best == max(grid)),)
        if not extra:
            break
        print(f"grid edge reached, extending: {extra}", file=sys.stderr)
        records += run_units(units(args.grid_tasks, False, extra), settings, args.jobs, reuse)
        for config, (lr,) in extra.items():
            grids[config].append(lr)
    return records, select_lrs(records, grids)


def profile_costs(
    settings: Settings, configs: list[str], classes: int = 10
) -> dict[str, dict[str, Any]]:
    """`profile_model` of every trained configuration at the benchmark batch."""
    costs = {}
    for config in dict.fromkeys(["full", *configs]):
        pm = build(config, classes, settings).to(settings.device)
        report = profile_model(pm, batch=settings.batch, steps=1, warmup=0, seed=settings.seed)
        costs[config] = {**report.as_dict(), "summary": pm.summary().as_dict()}
    return costs


def markdown(
    args: argparse.Namespace,
    settings: Settings,
    tasks: list[str],
    finals: list[dict[str, Any]],
    chosen: dict[str, dict[str, Any]],
    costs: dict[str, dict[str, Any]],
    wall_s: float,
) -> str:
    spec = build("linear", 10, settings).spec
    depth, dim = spec.depth, spec.embed_dim
    present = present_groups(tasks)
    lines = [
        f"{BACKBONE} (M={depth}, D={dim}); tasks: {', '.join(tasks)}; grid tasks: "
        f"{', '.join(args.grid_tasks)}; {settings.epochs} epochs, batch {settings.batch}, Adam "
        f"(coupled L2 {settings.weight_decay:g}), warm-up 1 epoch + cosine; seed {settings.seed}; "
        f"b = {settings.bottleneck}; group lasso λ = {settings.lam:g}, keep {settings.keep_frac:g}",
        machine_line(settings.device, settings.threads, args.jobs, wall_s)
        + (f" (back-propagating runs found in {args.reuse} reused)" if args.reuse else ""),
        "",
        *top1_table_head(tasks, ["method", "lr"]),
    ]  # fmt: skip
    for row, label, config in ROWS:
        got = {r["task"]: r["top1"] for r in finals if r["row"] == row}
        if not got:
            continue
        means = group_means(finals, "row", row)
        cells = [f"{got[t]:.1f}" for t in tasks] + [f"{means[g]:.1f}" for g in present]
        lines.append(
            f"| {label} | {chosen[config]['lr']:g} | " + " | ".join(cells)
            + f" | **{means['mean']:.1f}** |"
        )  # fmt: skip
    full = costs["full"]
    lines += [
        "",
        f"Trainable parameters and training memory at batch {settings.batch}, 10 classes "
        "(`vpeft.analysis.profile_model`; act = activations saved for backward, mem = params + "
        "grads + Adam states + act; ratios against full fine-tuning in this run):",
        "",
        "| method | trainable encoder | trainable all | act KiB | mem KiB | act × full | "
        "mem × full | step GFLOPs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row, label, config in ROWS:
        if row != config or config not in costs:
            continue
        c = costs[config]
        lines.append(
            f"| {label} | {c['summary']['trainable_encoder']:,} | {c['summary']['trainable']:,} "
            f"| {c['saved_activation_bytes'] / 1024:,.0f} "
            f"| {c['training_memory_bytes'] / 1024:,.0f} "
            f"| {c['saved_activation_bytes'] / full['saved_activation_bytes']:.3f} "
            f"| {c['training_memory_bytes'] / full['training_memory_bytes']:.3f} "
            f"| {c['train_step_flops'] / 1e9:.3f} |"
        )
    lines += [
        "",
        "Matched bottleneck b' = b + T·D·(C+1)/(2D+1) (T = 1), all trainable parameters counted:",
        "",
        "| classes C | b' exact | b' | VQT + AdaptFormer (b) | AdaptFormer (b') | encoder only: "
        "VQT+AF / AF(b') |",
        "|---|---|---|---|---|---|",
    ]
    for classes in sorted({r["classes"] for r in finals}):
        wide, exact = matched_bottleneck(depth, dim, settings.bottleneck, 1, classes)
        queries, head = vqt_params(depth, dim, 1, classes)
        combo_enc = adaptformer_params(depth, dim, settings.bottleneck) + queries
        combo = combo_enc + head
        wide_enc = adaptformer_params(depth, dim, wide)
        wide_all = wide_enc + dim * classes + classes
        lines.append(
            f"| {classes} | {exact:.2f} | {wide} | {combo:,} | {wide_all:,} "
            f"| {combo_enc:,} / {wide_enc:,} |"
        )
    lines += chosen_lr_lines(chosen)
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_task_arguments(parser)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--bottleneck", type=int, default=8, help="AdaptFormer bottleneck b")
    parser.add_argument("--lam", type=float, default=1e-4, help="group-lasso λ")
    parser.add_argument("--keep-frac", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--check", type=int, default=16, help="test images for the cache check")
    parser.add_argument(
        "--configs", nargs="+", default=list(LR_GRIDS), choices=list(LR_GRIDS),
        help="trained configurations (default: all)",
    )  # fmt: skip
    parser.add_argument(
        "--extend", type=int, default=2, help="max grid extensions when the best lr is at an edge"
    )
    parser.add_argument(
        "--reuse", default="", help="take back-propagating runs from this --json of a former run"
    )
    parser.add_argument("--out", default="", help="write the markdown tables here")
    parser.add_argument("--json", default="", help="write every record here")
    args = parser.parse_args()
    if args.grid_tasks is None:
        args.grid_tasks = default_grid_tasks(args.tasks)
    return args


def load_reuse(path: str, settings: Settings) -> list[dict[str, Any]]:
    """Backprop records of an earlier run with the same settings (threads / device aside)."""
    if not path:
        return []
    with open(path) as fh:
        previous = json.load(fh)
    mine = {k: v for k, v in asdict(settings).items() if k not in ("threads", "device")}
    theirs = {k: v for k, v in previous["settings"].items() if k not in ("threads", "device")}
    if mine != theirs:
        raise SystemExit(f"--reuse {path}: settings {theirs} differ from this run's {mine}")
    return [r for r in previous["grid"] + previous["final"] if r["config"] in BACKPROP]


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    settings = Settings(
        args.epochs, args.batch, args.weight_decay, args.bottleneck, args.lam, args.keep_frac,
        args.seed, args.device, args.check, args.threads,
    )  # fmt: skip
    reuse = load_reuse(args.reuse, settings)
    prepare_tasks(args.tasks, args.grid_tasks)  # caches made before the workers start
    start = time.perf_counter()
    print(f"lr grid on {args.grid_tasks} (train800 -> val200)", file=sys.stderr)
    grid, chosen = search_lrs(args, settings, reuse)
    best = {c: (pick["lr"],) for c, pick in chosen.items()}
    print(f"chosen: { {c: b[0] for c, b in best.items()} }", file=sys.stderr)
    grid_s = time.perf_counter() - start
    finals = run_units(units(args.tasks, True, best), settings, args.jobs, reuse)
    check_counts(finals, settings)
    print(
        f"grid {grid_s:.0f} s, finals {time.perf_counter() - start - grid_s:.0f} s", file=sys.stderr
    )
    costs = profile_costs(settings, args.configs)
    wall = time.perf_counter() - start
    text = markdown(args, settings, args.tasks, finals, chosen, costs, wall)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {"settings": asdict(settings), "grid": grid, "final": finals, "chosen": chosen,
                 "costs": costs, "wall_s": wall, "reused": len(reuse) > 0},
                fh, indent=1, default=str,
            )  # fmt: skip


if __name__ == "__main__":
    main()
