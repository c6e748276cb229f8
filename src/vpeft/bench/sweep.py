"""Sweeps: methods × tasks × seeds under a protocol, run by Optuna workers sharing one storage.

Engine: an Optuna study per sweep in an RDB storage (default: SQLite in the result store,
``sqlite:///<store>/sweep.db``; give a PostgreSQL/MySQL URL with ``--storage`` to spread workers
over machines). Each run of the plan is one *enqueued* trial carrying its spec in
``user_attrs``; any number of workers (``vpeft bench worker``, or ``bench run --workers N``)
pop trials from the shared queue, which Optuna hands to exactly one of them. A worker records a
heartbeat while it trains; when a worker dies, its running trial's heartbeat stops, another
worker fails it after the grace period and Optuna's ``RetryHeartbeatStaleTrialCallback``
re-enqueues it (the new attempt resumes the run's checkpoint). Selection feeds the final runs:
once every grid run of a (method, task) is in the store, the first worker to notice picks the
best grid point and enqueues the final runs (an exclusive marker file makes that happen once).

Guarantees: a finished run (its record in the store) is never trained again — not by a later
sweep, not by a duplicate trial; a run is trained by one worker at a time (its work folder is
locked, `vpeft.train.lock`); a re-invoked ``bench run`` enqueues only what is neither finished
nor queued nor running.
"""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, OutputError, VpeftError
from .protocols import dense_task_names, get_protocol, preset_for, with_overrides
from .store import ResultStore, canonical_json, run_key

#: Seconds between heartbeats of a running trial, and after which a silent one is stale.
HEARTBEAT_S = 30
GRACE_S = 120
MAX_RETRY = 3


def require_optuna() -> Any:
    try:
        import optuna
    except ImportError as err:
        raise ConfigError("vpeft bench needs Optuna: pip install 'vpeft[bench]'") from err
    return optuna


# ------------------------------------------------------------------------------ the plan


@dataclass
class SweepConfig:
    """What to run (from the command line or a config file; see `load_config`)."""

    name: str
    protocol: str = "synthetic"
    methods: list[str] = field(default_factory=lambda: ["linear", "lora"])
    tasks: list[str] = field(default_factory=lambda: ["synth-digits"])
    seeds: list[int] = field(default_factory=lambda: [0])
    backbone: str | None = None  # default: the protocol's (`Protocol.backbone_for`)
    weights: str | None = None
    img_size: int | None = None
    data_root: str | None = None
    #: per-method overrides: {"lora": {"options": {...}, "train": {...}, "lr": [...], "wd": [...]}};
    #: dense protocols also take "shared": true (one copy of the method for all tasks)
    method_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: named variants: one method with its own overrides, a row of its own in the sweep and its
    #: table, e.g. {"polyhistor-r4": {"method": "polyhistor", "options": {"reduction": 4}}}; list
    #: the name in `methods`. Keys as in `method_overrides`, plus "method" (the method it runs).
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: overrides for every method: train settings, lr / wd grids
    train: dict[str, Any] = field(default_factory=dict)
    lr: list[float] | None = None
    wd: list[float] | None = None
    limit: dict[str, int] | None = None
    #: random subsets (VL protocols): {"train": N} drawn with each run's seed, {"eval": N} of every
    #: evaluation split but a retrieval gallery, drawn with seed 0 (the same for every run), and
    #: {"gallery": N}: a retrieval gallery's first N images and their captions
    sample: dict[str, int] | None = None
    #: VL protocols: FLOPs and training memory measured on the first N training samples (default
    #: one; CLIP's per-sample costs depend on the batch, it encodes every class prompt per batch)
    measure_batch: int | None = None

    def validate(self) -> None:
        protocol = get_protocol(self.protocol)
        if not self.methods or not self.tasks or not self.seeds:
            raise ConfigError("a sweep needs at least one method, one task and one seed")
        for task in self.tasks:
            protocol.check_task(task)
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds repeat: {self.seeds}")
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"methods repeat: {self.methods}")
        check_variants(self.variants)
        if self.sample is not None:
            unknown = set(self.sample) - set(SAMPLE_KEYS)
            if unknown or any(not isinstance(v, int) or v < 1 for v in self.sample.values()):
                raise ConfigError(
                    f"sample {self.sample}: give positive sizes for {', '.join(SAMPLE_KEYS)}"
                )
            if protocol.kind != "vl":
                raise ConfigError(f"'sample' applies to vl protocols, not {self.protocol}")
        if self.measure_batch is not None and (protocol.kind != "vl" or self.measure_batch < 1):
            raise ConfigError(
                f"measure_batch {self.measure_batch}: a positive size, for vl protocols only"
            )


#: keys of `SweepConfig.sample`
SAMPLE_KEYS = ("train", "eval", "gallery")


#: keys of a method override (`SweepConfig.method_overrides`, and of a variant besides "method")
#: ("evaluate_only": true scores the model as installed, without training, e.g. zero-shot CLIP)
OVERRIDE_KEYS = ("options", "train", "lr", "wd", "shared", "evaluate_only")


def check_variants(variants: dict[str, dict[str, Any]]) -> None:
    """Every variant names a registered method and only override keys; its name is not itself
    a method's (a row label must say which it is)."""
    from ..methods import available_methods

    known = set(available_methods())
    for name, variant in variants.items():
        if not name or name in known:
            raise ConfigError(
                f"variant name {name!r}: give a name that is not a method's (e.g. {name}-v1)"
            )
        if not isinstance(variant, dict) or variant.get("method") not in known:
            raise ConfigError(
                f"variant {name!r} needs 'method', one of the registered methods (`vpeft methods`)"
            )
        unknown = set(variant) - {"method", *OVERRIDE_KEYS}
        if unknown:
            raise ConfigError(
                f"variant {name!r}: unknown keys {sorted(unknown)}; use method, "
                + ", ".join(OVERRIDE_KEYS)
            )


def _merged(*overrides: dict[str, Any]) -> dict[str, Any]:
    """Overrides applied in order: options and train merge, lr / wd / shared are replaced."""
    out: dict[str, Any] = {}
    for extra in overrides:
        for key, value in extra.items():
            if key in ("options", "train"):
                out[key] = {**out.get(key, {}), **value}
            elif key != "method":  # lr, wd, shared, evaluate_only
                out[key] = value
    return out


def resolve_method(cfg: SweepConfig, name: str) -> tuple[str, dict[str, Any]]:
    """The method `name` runs (itself, or a variant's method) and its overrides: the method's
    `method_overrides`, then the variant's own, then `method_overrides` under the variant name."""
    for key, extra in cfg.method_overrides.items():
        unknown = set(extra) - set(OVERRIDE_KEYS)
        if unknown:
            raise ConfigError(
                f"method override keys {sorted(unknown)} for {key}: use options, train, lr, wd, "
                "evaluate_only (and shared for dense protocols)"
            )
    variant = cfg.variants.get(name)
    if variant is None:
        return name, _merged(cfg.method_overrides.get(name, {}))
    method = variant["method"]
    return method, _merged(
        cfg.method_overrides.get(method, {}), variant, cfg.method_overrides.get(name, {})
    )


def base_spec(
    cfg: SweepConfig, method: str, task: str, reference: bool = False
) -> tuple[dict[str, Any], Any]:
    """The run spec shared by every run of (method, task), and the method's preset; `method` may
    be a variant's name (the spec names the method it runs). The dense `reference` unit is never
    shared (one copy of the method per task)."""
    protocol = get_protocol(cfg.protocol)
    method, extra = resolve_method(cfg, method)
    preset = with_overrides(
        preset_for(cfg.protocol, method, task),
        extra.get("options"),
        {**cfg.train, **extra.get("train", {})},
        extra.get("lr") or cfg.lr,
        extra.get("wd") or cfg.wd,
    )
    spec = {
        "backbone": protocol.backbone_for(task, cfg.backbone),
        "weights": cfg.weights,
        "img_size": cfg.img_size,
        "method": method,
        "options": dict(sorted(preset.options.items())),
        "data": protocol.data_spec(task, cfg.data_root),
        "train": dict(sorted(preset.train.items())),
        "limit": cfg.limit,
    }
    if protocol.kind == "dense":  # which decoders, and one method copy per task or shared
        spec["tasks"] = ",".join(dense_task_names(task))
        spec["shared"] = bool(extra.get("shared", False)) and not reference
    elif "shared" in extra:
        raise ConfigError(f"'shared' applies to dense protocols, not {cfg.protocol}")
    # keys only present when set, so the run keys of sweeps without them stay the same
    if cfg.sample:
        spec["sample"] = dict(sorted(cfg.sample.items()))
    if extra.get("evaluate_only"):
        spec["evaluate_only"] = True
    if cfg.measure_batch and cfg.measure_batch > 1:
        spec["measure_batch"] = cfg.measure_batch
    return spec, preset


def with_run(
    spec: dict[str, Any],
    lr: float,
    wd: float,
    seed: int,
    train_split: str,
    eval_splits: dict[str, str],
) -> dict[str, Any]:
    train = {**spec["train"], "lr": float(lr), "weight_decay": float(wd), "seed": int(seed)}
    return {
        **spec,
        "train": dict(sorted(train.items())),
        "train_split": train_split,
        "eval_splits": eval_splits,
    }


def build_plan(cfg: SweepConfig) -> dict[str, Any]:
    """Every (method, task) unit: its grid runs (selection) and how to make its final runs."""
    cfg.validate()
    protocol = get_protocol(cfg.protocol)
    reference = protocol.reference
    entries = [(m, False) for m in cfg.methods]
    shared_ref = cfg.method_overrides.get(reference or "", {}).get("shared", False)
    if reference and (reference not in cfg.methods or shared_ref):
        entries.append((reference, True))  # Δm needs the reference inside the sweep
    units = []
    for (method, is_ref), task in itertools.product(entries, cfg.tasks):
        spec, preset = base_spec(cfg, method, task, is_ref)
        grid = [list(p) for p in itertools.product(preset.lr_grid, preset.wd_grid)]
        if len(grid) > 1 and not protocol.select_eval:
            raise ConfigError(
                f"protocol {protocol.name} has no selection split ({protocol.description}); "
                f"give {method} one lr and one weight decay"
            )
        shared = spec.get("shared", False)
        variant = method in cfg.variants
        name = f"{method}+shared" if shared and not variant else method
        select = (
            [
                with_run(
                    spec, lr, wd, cfg.seeds[0], protocol.select_train, {"val": protocol.select_eval}
                )
                for lr, wd in grid
            ]
            if len(grid) > 1
            else []
        )
        unit = {
            "unit": f"{name}/{task}",
            "method": name,
            "reference": method == reference and not shared,
            "task": task,
            "group": protocol.group_of(task),
            "grid": grid,
            "select": select,
            "base": spec,
            "source": preset.source,
        }
        if variant:  # the row is the variant; spec["method"] is the method it runs
            unit["variant"] = method
        units.append(unit)
    return {"name": cfg.name, "protocol": cfg.protocol, "seeds": list(cfg.seeds), "units": units}


def final_specs(plan: dict[str, Any], unit: dict[str, Any], lr: float, wd: float) -> list[dict]:
    protocol = get_protocol(plan["protocol"])
    scored = {"test": protocol.final_test}
    if protocol.final_val is not None:
        scored = {"val": protocol.final_val, **scored}
    return [
        with_run(unit["base"], lr, wd, seed, protocol.final_train, scored) for seed in plan["seeds"]
    ]


def choose(unit: dict[str, Any], store: ResultStore) -> tuple[float, float] | None:
    """The grid point of `unit` with the best val top-1 (ties: the earlier point); None while a
    grid run is unfinished. A single-point grid is chosen at once."""
    if not unit["select"]:
        lr, wd = unit["grid"][0]
        return lr, wd
    best: tuple[float, int] | None = None
    for i, spec in enumerate(unit["select"]):
        record = store.get(run_key(spec))
        if record is None:
            return None
        value = run_value(record, "select")
        value = -math.inf if value is None else value
        if best is None or value > best[0]:
            best = (value, i)
    assert best is not None
    lr, wd = unit["grid"][best[1]]
    return lr, wd


def labels_of(plan: dict[str, Any], unit: dict[str, Any], stage: str) -> dict[str, Any]:
    return {
        "sweeps": [plan["name"]],
        "protocol": plan["protocol"],
        "stage": stage,
        "method": unit["method"],
        "task": unit["task"],
        "group": unit["group"],
        "unit": unit["unit"],
        "reference": unit.get("reference", False),
        "variant": unit.get("variant"),
    }


def planned_runs(plan: dict[str, Any], store: ResultStore) -> list[tuple[dict, dict]]:
    """(spec, labels) of every run that can be known now: all grid runs, and the final runs of
    units whose selection is complete."""
    out = []
    for unit in plan["units"]:
        out += [(s, labels_of(plan, unit, "select")) for s in unit["select"]]
        chosen = choose(unit, store)
        if chosen is not None:
            out += [(s, labels_of(plan, unit, "final")) for s in final_specs(plan, unit, *chosen)]
    return out


def is_complete(plan: dict[str, Any], store: ResultStore) -> bool:
    for unit in plan["units"]:
        chosen = choose(unit, store)
        if chosen is None:
            return False
        if not all(store.has(run_key(s)) for s in final_specs(plan, unit, *chosen)):
            return False
    return True


# ------------------------------------------------------------------------------ the engine


def open_storage(url: str, heartbeat_s: int = HEARTBEAT_S, grace_s: int = GRACE_S) -> Any:
    """An Optuna RDB storage with heartbeats and retry of trials whose worker died."""
    optuna = require_optuna()
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):  # several local processes: wait for the lock, don't fail
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    return optuna.storages.RDBStorage(
        url,
        heartbeat_interval=heartbeat_s,
        grace_period=grace_s,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
            max_retry=MAX_RETRY
        ),
        **kwargs,
    )


def _quiet_optuna() -> None:
    import warnings

    optuna = require_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # heartbeats and fail_stale_trials are marked experimental, but stable since Optuna 2.9
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def create_sweep(
    cfg: SweepConfig,
    store: ResultStore,
    storage_url: str | None = None,
    heartbeat_s: int = HEARTBEAT_S,
    grace_s: int = GRACE_S,
) -> dict[str, Any]:
    """Create (or re-open, for resuming) the study of `cfg` and enqueue what is missing."""
    optuna = require_optuna()
    _quiet_optuna()
    plan = build_plan(cfg)
    url = storage_url or store.default_storage_url
    storage = open_storage(url, heartbeat_s, grace_s)
    study = optuna.create_study(
        study_name=cfg.name, storage=storage, direction="maximize", load_if_exists=True
    )
    saved = study.user_attrs.get("plan")
    if saved is not None and canonical_json(saved) != canonical_json(plan):
        raise ConfigError(
            f"sweep {cfg.name!r} already exists in {url} with another plan; resume it with the "
            "same settings or choose another --name"
        )
    if saved is None:
        study.set_user_attr("plan", plan)
        study.set_user_attr("store", str(store.root.resolve()))
    enqueue_missing(study, plan, store)
    return {"plan": plan, "storage": url, "study": cfg.name}


def _active_keys(study: Any) -> set[str]:
    from optuna.trial import TrialState

    live = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE)
    return {t.user_attrs.get("run") for t in study.get_trials(deepcopy=False, states=live)}


def enqueue_missing(study: Any, plan: dict[str, Any], store: ResultStore) -> int:
    """Enqueue every known run that is neither stored nor queued/running/complete."""
    active = _active_keys(study)
    added = 0
    for spec, labels in planned_runs(plan, store):
        key = run_key(spec)
        if key in active or store.has(key):
            continue
        study.enqueue_trial({}, user_attrs={"run": key, "spec": spec, "labels": labels})
        active.add(key)
        added += 1
    return added


def enqueue_ready_finals(study: Any, plan: dict[str, Any], store: ResultStore) -> int:
    """Enqueue the final runs of units whose selection just completed (once, over all workers)."""
    added = 0
    active: set[str] | None = None
    for unit in plan["units"]:
        chosen = choose(unit, store)
        if chosen is None or not store.mark_once(f"final:{plan['name']}:{unit['unit']}"):
            continue
        active = _active_keys(study) if active is None else active
        for spec in final_specs(plan, unit, *chosen):
            key = run_key(spec)
            if not store.has(key) and key not in active:  # e.g. enqueued by `bench run`
                labels = labels_of(plan, unit, "final")
                study.enqueue_trial({}, user_attrs={"run": key, "spec": spec, "labels": labels})
                added += 1
    return added


@dataclass
class WorkerReport:
    trained: list[str] = field(default_factory=list)  # run keys this worker trained
    reused: list[str] = field(default_factory=list)  # already in the store: not trained
    failed: list[str] = field(default_factory=list)
    raced: int = 0  # trials another worker was handed too and finished first
    complete: bool = False


def run_value(record: dict[str, Any], stage: str) -> float | None:
    """What a run scored: val (selection) or test (final) top-1, else its headline ``score``
    (VL tasks); None for dense runs, which have one headline per task."""
    metrics = record.get("metrics", {})  # none in a skipped run's record
    value = metrics.get("val_top1" if stage == "select" else "test_top1")
    return metrics.get("score") if value is None else value


def _metric(record: dict[str, Any], labels: dict[str, Any]) -> float:
    """The Optuna trial's value (informational: the plan, not the sampler, decides)."""
    value = run_value(record, labels.get("stage", "final"))
    return 0.0 if value is None else float(value)


def run_and_store(
    spec: dict[str, Any],
    labels: dict[str, Any],
    store: ResultStore,
    *,
    device: str = "auto",
    log: str | None = None,
    trial: dict[str, Any] | None = None,
    on_run: Callable[[str, dict[str, Any], str], None] | None = None,
) -> dict[str, Any]:
    """Train one run of a plan in its work folder (`runner.execute`) and put its record."""
    from .runner import NotApplicable, execute, skipped_record

    key = run_key(spec)
    if on_run:
        on_run(key, labels, "start")
    try:
        record = execute(
            spec,
            store.work_dir(key),
            device=device,
            log=log,
            run_name=f"{labels['unit']}/{labels['stage']}/{key}",
        )
    except NotApplicable as err:  # kept, so it is not tried again; tables leave it out
        record = skipped_record(spec, err)
    status = record.get("status", "done")
    record.update({"key": key, "labels": labels, "status": status, "trial": trial})
    store.put(record)
    if on_run:
        on_run(key, labels, status)
    return record


def run_serial(
    plan: dict[str, Any],
    store: ResultStore,
    *,
    device: str = "auto",
    log: str | None = None,
    on_run: Callable[[str, dict[str, Any], str], None] | None = None,
) -> WorkerReport:
    """Run a plan in this process, one run after the other, in plan order, without an engine
    (no Optuna, no storage): the dependency-free path that `vpeft demo` takes. Runs already in
    the store are reused (labelled with this plan's name), never trained again; the final runs
    follow once their unit's selection is complete, as with the workers."""
    report = WorkerReport()
    while True:
        pending = []
        for spec, labels in planned_runs(plan, store):
            key = run_key(spec)
            if store.has(key):
                if key not in report.reused and key not in report.trained:
                    store.add_sweep_label(key, plan["name"])
                    report.reused.append(key)
            else:
                pending.append((spec, labels))
        if not pending:
            break
        for spec, labels in pending:
            run_and_store(spec, labels, store, device=device, log=log, on_run=on_run)
            report.trained.append(run_key(spec))
    report.complete = is_complete(plan, store)
    return report


def work(
    study_name: str,
    storage_url: str,
    store_root: str | None = None,
    *,
    device: str = "auto",
    log: str | None = None,
    poll_s: float = 1.0,
    heartbeat_s: int = HEARTBEAT_S,
    grace_s: int = GRACE_S,
    max_runs: int | None = None,
    on_run: Callable[[str, dict[str, Any], str], None] | None = None,
) -> WorkerReport:
    """One worker: pop runs of the sweep's queue and run them until the sweep is complete (or
    nothing is left that it could wait for, or `max_runs` runs were taken)."""
    optuna = require_optuna()
    from optuna.trial import TrialState

    _quiet_optuna()
    storage = open_storage(storage_url, heartbeat_s, grace_s)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        raise ConfigError(
            f"no sweep {study_name!r} in {storage_url}; start it with `vpeft bench run`"
        ) from None
    plan = study.user_attrs["plan"]
    store = ResultStore(store_root or study.user_attrs["store"])
    report = WorkerReport()

    def objective(trial: Any) -> float:
        key = trial.user_attrs.get("run")
        if key is None:  # a trial the sampler made when the queue emptied under us
            raise optuna.TrialPruned("not a planned run")
        spec, labels = trial.user_attrs["spec"], trial.user_attrs["labels"]
        done = store.get(key)
        if done is not None:
            store.add_sweep_label(key, plan["name"])
            report.reused.append(key)
            return _metric(done, labels)
        try:
            record = run_and_store(
                spec,
                labels,
                store,
                device=device,
                log=log,
                trial={"study": study_name, "number": trial.number},
                on_run=on_run,
            )
        except OutputError as err:  # another worker holds this run's folder
            raise optuna.TrialPruned(str(err)) from None
        except VpeftError:
            report.failed.append(key)
            raise
        report.trained.append(key)
        return _metric(record, labels)

    taken = 0
    while max_runs is None or taken < max_runs:
        optuna.storages.fail_stale_trials(study)
        enqueue_ready_finals(study, plan, store)
        states = [t.state for t in study.get_trials(deepcopy=False)]
        if TrialState.WAITING in states:
            try:
                study.optimize(objective, n_trials=1, catch=(VpeftError,))
            except ValueError as err:
                # SQLite can hand one queued trial to two workers at once; the run itself is
                # guarded by its output-folder lock and keyed in the store, so the worker that
                # finishes second only fails to report a trial the other already finished
                if "Cannot tell a" not in str(err):
                    raise
                report.raced += 1
            taken += 1
            continue
        if is_complete(plan, store):
            report.complete = True
            break
        if TrialState.RUNNING not in states:
            break  # nothing queued, nothing to wait for: failed runs are left (see report)
        time.sleep(poll_s)
    report.complete = report.complete or is_complete(plan, store)
    return report


def spawn_workers(n: int, study: str, storage: str, store: str, extra: list[str]) -> list:
    """Start `n` ``vpeft bench worker`` processes (same Python, same environment)."""
    cmd = [
        sys.executable,
        "-m",
        "vpeft.cli.main",
        "bench",
        "worker",
        "--study",
        study,
        "--storage",
        storage,
        "--store",
        store,
        *extra,
    ]
    return [subprocess.Popen(cmd, env=dict(os.environ)) for _ in range(n)]


# ------------------------------------------------------------------------------ config files


def load_config(path: str | Path, **cli: Any) -> SweepConfig:
    """A `SweepConfig` from a TOML, JSON or YAML file; non-None `cli` values override it.

    TOML is the documented format (no extra dependency; ``tomllib``); JSON works as well, and
    YAML when PyYAML is installed. Keys are the `SweepConfig` fields, e.g.::

        name = "vtab-peft"
        protocol = "vtab-1k"
        data_root = "/data/vtab-1k"
        methods = ["linear", "lora", "vqt"]
        tasks = ["cifar", "dtd"]
        seeds = [0, 1, 2]
        [method_overrides.lora]
        options = { rank = 8 }
        lr = [1e-3, 3e-3]
    """
    import json
    import tomllib

    path = Path(path)
    text = path.read_text()
    if path.suffix == ".toml":
        data = tomllib.loads(text)
    elif path.suffix == ".json":
        data = json.loads(text)
    elif path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as err:
            raise ConfigError("YAML sweep files need PyYAML; use TOML or JSON") from err
        data = yaml.safe_load(text)
    else:
        raise ConfigError(f"sweep file {path}: use .toml, .json or .yaml")
    data.update({k: v for k, v in cli.items() if v is not None})
    known = set(SweepConfig.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"sweep file {path}: unknown keys {unknown}; known: {sorted(known)}")
    if "name" not in data:
        data["name"] = path.stem
    return SweepConfig(**data)
