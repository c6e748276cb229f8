"""Dense multi-task pieces of the commands: ``--tasks`` parsing, the dense datasets of
``--data`` (``dense-synthetic:…``, ``pascal-mt:ROOT``), per-task headline results and Δm
against a stored single-task baseline (``--baseline FILE``).

``--tasks`` takes dense task names (``semseg,parts,saliency,normals``, or ``pascal-mt`` for all
four); `vpeft params` also keeps ``--tasks N`` (N independent classification copies).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import ConfigError, DatasetError

if TYPE_CHECKING:  # task and data code (torch) loads when a command runs, not for --help
    from torch.utils.data import Dataset

    from ..tasks import Task

DENSE_KINDS: tuple[str, ...] = ("dense-synthetic", "pascal-mt", "ade20k")
#: the tasks of each dense data kind when ``--tasks`` is not given
DEFAULT_TASKS: dict[str, str] = {"ade20k": "semseg"}

DenseTasksOpt = Annotated[
    str | None,
    typer.Option(
        "--tasks",
        help="dense tasks: names among semseg,parts,saliency,normals, or pascal-mt for all four "
        "(one decoder each on one backbone).",
    ),
]
SharedOpt = Annotated[
    bool,
    typer.Option(
        "--shared",
        help="install the method once for all tasks (and one set of stage-output norms), "
        "instead of one copy per task.",
    ),
]
BaselineOpt = Annotated[
    Path | None,
    typer.Option(
        "--baseline",
        help="summary.json of a single-task baseline run (e.g. per-task full fine-tuning) on "
        "the same tasks: the summary then holds Δm against it.",
    ),
]


def task_names(text: str) -> list[str]:
    """``"pascal-mt"`` → the four tasks; ``"a,b"`` → ``["a", "b"]``."""
    from ..tasks.dense import PASCAL_MT_TASKS

    names = [t.strip() for t in text.split(",") if t.strip()]
    return list(PASCAL_MT_TASKS) if names == ["pascal-mt"] else names


def tasks_for(text: str, dataset: str = "pascal-mt", embed_dim: int = 256) -> list[Task]:
    from ..tasks.dense import dense_tasks

    return dense_tasks(task_names(text), dataset, embed_dim)


def build_dense_model(
    backbone: str,
    method: str,
    opts: list[str] | None,
    tasks: str,
    shared: bool,
    weights: Path | None = None,
    img_size: int | None = None,
) -> Any:
    """The dense multi-task `PeftModel` (PASCAL-Context class counts) of `params` / `profile`."""
    from ..factory import create_backbone
    from ..methods import get_method
    from ..model import apply
    from .common import parse_opts

    options = parse_opts(opts)
    get_method(method).config.from_options(options)  # fail fast, before building anything
    task_list = tasks_for(tasks)
    model = create_backbone(backbone, weights, img_size)
    return apply(model, method, tasks=task_list, shared=True if shared else None, **options)


def parse_synthetic_root(root: str) -> dict[str, int]:
    """``default`` or ``seed=0,limit=64`` → keyword options of `DenseSyntheticDataset`."""
    if root in ("", "default"):
        return {}
    out: dict[str, int] = {}
    for pair in root.split(","):
        key, sep, value = pair.partition("=")
        if not sep or key not in ("seed", "limit") or not value.strip().isdigit():
            raise ConfigError(
                f"--data dense-synthetic:{root}: expected 'default' or seed=N,limit=N pairs"
            )
        out[key] = int(value)
    return out


def dense_split(
    kind: str,
    root: str,
    split: str,
    input_size: tuple[int, int],
    mean: Any,
    std: Any,
    tasks: list[str],
    augment: bool = False,
) -> Dataset:
    """One split of a dense dataset, normalised, at the backbone's input size."""
    from ..data.dense_augment import DenseAugment
    from ..data.normalised_dense import NormalisedDense

    if kind == "dense-synthetic":
        from ..data.dense_synthetic import DenseSyntheticDataset

        if input_size[0] != input_size[1]:
            raise ConfigError(f"dense-synthetic renders square images; input is {input_size}")
        base = DenseSyntheticDataset(split, size=input_size[0], **parse_synthetic_root(root))
        aug = DenseAugment(size=input_size, train=True) if augment else None
        return NormalisedDense(base, mean, std, aug)
    if kind == "pascal-mt":
        from ..data.pascal_context import PascalContextMT

        aug = DenseAugment(size=input_size, train=augment)
        base = PascalContextMT(root, split, tasks=tasks, transform=aug)
        return NormalisedDense(base, mean, std)
    if kind == "ade20k":
        from ..data.ade20k import Ade20kDataset

        if tasks != ["semseg"]:
            raise ConfigError(f"ade20k data has the single task semseg, got {tasks}")
        base = Ade20kDataset(root, split, size=input_size, train=augment)
        return NormalisedDense(base, mean, std)
    raise ConfigError(f"unknown dense data kind {kind!r}; choose one of {list(DENSE_KINDS)}")


def task_results(record: dict[str, Any], tasks: dict[str, Task], split: str) -> dict[str, Any]:
    """``{task: {metric: value}}`` of ``split`` from a metrics record (``split/task/metric``)."""
    out: dict[str, dict[str, float]] = {t: {} for t in tasks}
    for key, value in record.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == split and parts[1] in out:
            out[parts[1]][parts[2]] = value
    return out


def headlines(results: dict[str, dict[str, float]], tasks: dict[str, Task]) -> dict[str, float]:
    """Each task's headline metric (mIoU; mean angular error for normals)."""
    from ..tasks.dense import HEADLINES

    out = {}
    for name, task in tasks.items():
        metric, _ = HEADLINES[task.kind]
        if metric in results.get(name, {}):
            out[name] = results[name][metric]
    return out


def delta_m_against(
    headline: dict[str, float], tasks: dict[str, Task], baseline: Path
) -> dict[str, Any]:
    """Δm (%) of `headline` against the ``headline`` of a baseline run's summary.json."""
    from ..tasks.dense import HEADLINES, delta_m

    try:
        stored = json.loads(Path(baseline).read_text())
    except (OSError, ValueError) as err:
        raise DatasetError(f"--baseline {baseline}: cannot read it as JSON ({err})") from None
    base = stored.get("headline") if isinstance(stored, dict) else None
    if not isinstance(base, dict):
        raise DatasetError(
            f"--baseline {baseline} has no 'headline' per-task results; pass the summary.json "
            "of a dense `vpeft train` run"
        )
    missing = sorted(set(headline) - set(base))
    if missing:
        raise DatasetError(f"--baseline {baseline} lacks results for tasks {missing}")
    lower = {n: HEADLINES[tasks[n].kind][1] for n in headline}
    value = delta_m(headline, {n: float(base[n]) for n in headline}, lower)
    return {"value": value, "baseline": str(baseline), "baseline_headline": base}
