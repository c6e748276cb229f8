"""The evaluation protocols of the papers, and the per-method default configs recorded from them.

A protocol says which splits select hyper-parameters and which give the reported number:

* ``vtab-1k`` (VTAB-1k, spec/vqt.md and spec/spt.md): every grid point (lr × weight decay) trains
  on ``train800`` and is scored on ``val200`` at the last epoch (first seed only); the best grid
  point (highest val200 top-1; ties go to the earlier grid point) is re-trained on
  ``train800val200`` for every seed and the *last-epoch* ``test`` top-1 is the result.
* ``fgvc`` (FGVC, VPT-style json splits): the same on ``train`` → ``val``, final ``trainval`` →
  ``test``.
* ``synthetic``: the VTAB-1k protocol on vpeft's procedural suite (`vpeft.data.synthetic`).
* ``demo`` (`vpeft demo`): the procedural suite with the demo's fixed recipes (`RECIPES`, chosen
  on val200 by benchmarks/demo_hparams.py): one run per (method, task, seed) on ``train800``,
  scored on ``val200`` and ``test`` after the last epoch; no selection at run time.

A grid of one point skips selection: the final runs start at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..data import synthetic
from ..data.readers import FGVC_IMAGE_DIRS
from ..errors import ConfigError

#: The 19 VTAB-1k tasks (folder names of the common VTAB-1k release) and their groups.
VTAB_GROUPS: dict[str, str] = {
    **{
        t: "natural"
        for t in (
            "cifar",
            "caltech101",
            "dtd",
            "oxford_flowers102",
            "oxford_iiit_pet",
            "svhn",
            "sun397",
        )
    },
    **{t: "specialized" for t in ("patch_camelyon", "eurosat", "resisc45", "diabetic_retinopathy")},
    **{
        t: "structured"
        for t in (
            "clevr_count",
            "clevr_dist",
            "dmlab",
            "kitti",
            "dsprites_loc",
            "dsprites_ori",
            "smallnorb_azi",
            "smallnorb_ele",
        )
    },
}
FGVC_GROUPS: dict[str, str] = {t: "fgvc" for t in FGVC_IMAGE_DIRS}


@dataclass(frozen=True)
class Protocol:
    """Where a protocol's data lives and which splits select and report."""

    name: str
    data_kind: str  # --data kind of vpeft train: synthetic | vtab | fgvc
    select_train: str
    select_eval: str
    final_train: str
    final_test: str
    groups: dict[str, str]  # known task -> group
    description: str
    final_val: str | None = None  # also scored by the final runs (the demo reports val200)

    def data_spec(self, task: str, data_root: str | None) -> str:
        """The ``KIND:ROOT_OR_TASK`` string of `task` (see `vpeft train --data`)."""
        if self.data_kind == "synthetic":
            return f"synthetic:{task}"
        if not data_root:
            raise ConfigError(
                f"protocol {self.name} reads data from disk: give --data-root (the folder that "
                f"holds one sub-folder per task, e.g. {', '.join(list(self.groups)[:3])})"
            )
        return f"{self.data_kind}:{data_root.rstrip('/')}/{task}"

    def group_of(self, task: str) -> str:
        return self.groups.get(task, "other")


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            "vtab-1k",
            "vtab",
            "train800",
            "val200",
            "train800val200",
            "test",
            VTAB_GROUPS,
            "VTAB-1k: grid on train800 -> val200, final train800val200 -> test",
        ),
        Protocol(
            "fgvc",
            "fgvc",
            "train",
            "val",
            "trainval",
            "test",
            FGVC_GROUPS,
            "FGVC: grid on train -> val, final trainval -> test",
        ),
        Protocol(
            "synthetic",
            "synthetic",
            "train800",
            "val200",
            "train800val200",
            "test",
            dict(synthetic.TARGET_TASKS),
            "vpeft's synthetic VTAB-like suite with the VTAB-1k protocol",
        ),
        Protocol(
            "demo",
            "synthetic",
            "train800",
            "val200",
            "train800",
            "test",
            dict(synthetic.TARGET_TASKS),
            "vpeft demo: fixed recipes, train800 -> val200 and test after the last epoch",
            final_val="val200",
        ),
    )
}


def get_protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ConfigError(
            f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}"
        ) from None


@dataclass(frozen=True)
class MethodPreset:
    """A method's default config under a protocol family, and where it comes from."""

    method: str
    options: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)  # `TrainConfig` fields
    lr_grid: tuple[float, ...] = (1e-3,)
    wd_grid: tuple[float, ...] = (1e-4,)
    source: str = ""


# --- papers (ViT-B/16, VTAB-1k and FGVC) ---------------------------------------------------
#: spec/spt.md "Training protocol used by the paper": AdamW, batch 64, 100 epochs, cosine with
#: 10 warm-up epochs (warm-up lr 1e-6, min lr 1e-5), lr 1e-3, weight decay 1e-4.
SPT_TRAIN: dict[str, Any] = {
    "optimizer": "adamw",
    "batch_size": 64,
    "epochs": 100,
    "warmup_epochs": 10.0,
    "warmup_lr": 1e-6,
    "min_lr": 1e-5,
}
#: spec/vqt.md "Training protocol of the reference": Adam (coupled L2), batch 128, 100 epochs,
#: cosine with 10 warm-up epochs stepped per epoch; lr {1, .5, .25, .1, .05} × batch/256,
#: wd {0.01, 0.001, 1e-4, 0}.
VQT_TRAIN: dict[str, Any] = {
    "optimizer": "adam",
    "batch_size": 128,
    "epochs": 100,
    "warmup_epochs": 10.0,
    "schedule_unit": "epoch",
}
VQT_LR_GRID = tuple(v * 128 / 256 for v in (1.0, 0.5, 0.25, 0.1, 0.05))
VQT_WD_GRID = (0.01, 0.001, 1e-4, 0.0)
_SPT = "spec/spt.md (SPT protocol; baselines.md definitions)"
_VQT = "spec/vqt.md (VQT reference protocol)"

PAPER_PRESETS: dict[str, MethodPreset] = {
    p.method: p
    for p in (
        MethodPreset("linear", {}, SPT_TRAIN, source=_SPT),
        MethodPreset("full", {}, SPT_TRAIN, source=_SPT),
        MethodPreset("bitfit", {}, SPT_TRAIN, source=_SPT),
        MethodPreset("norm", {}, SPT_TRAIN, source=_SPT),
        MethodPreset("lora", {"rank": 8, "targets": "q,v"}, SPT_TRAIN, source=_SPT),
        MethodPreset("adapter", {"bottleneck": 8}, SPT_TRAIN, source=_SPT),
        MethodPreset("adaptformer", {"bottleneck": 64, "scale": 0.1}, SPT_TRAIN, source=_SPT),
        MethodPreset("vpt-shallow", {"num_tokens": 10}, SPT_TRAIN, source=_SPT),
        MethodPreset("vpt-deep", {"num_tokens": 10}, SPT_TRAIN, source=_SPT),
        MethodPreset("spt-lora", {"budget": "0.4M", "rank": 8}, SPT_TRAIN, source=_SPT),
        MethodPreset("spt-adapter", {"budget": "0.4M", "rank": 8}, SPT_TRAIN, source=_SPT),
        MethodPreset("vqt", {"num_queries": 1}, VQT_TRAIN, VQT_LR_GRID, VQT_WD_GRID, _VQT),
        MethodPreset("head2toe", {}, VQT_TRAIN, VQT_LR_GRID, VQT_WD_GRID, _VQT),
    )
}

# --- the synthetic suite on the bundled tiny ViT ---------------------------------------------
#: `vpeft.bench.demo.RECIPES` (chosen on val200 by benchmarks/demo_hparams.py) and its lr grids.
SYNTHETIC_TRAIN: dict[str, Any] = {"optimizer": "adamw", "batch_size": 32, "warmup_epochs": 1.0}
_SYN = "vpeft.bench.demo.RECIPES (val200-selected, benchmarks/demo_hparams.py)"
_PEFT_GRID = (3e-3, 1e-2, 3e-2)
_SYNTHETIC_GRIDS: dict[str, tuple[float, ...]] = {
    "linear": (1e-2, 3e-2, 1e-1),
    "full": (3e-4, 1e-3, 3e-3),
    "vpt-deep": (3e-3, 1e-2, 3e-2, 1e-1),
}


def _synthetic_presets() -> dict[str, MethodPreset]:
    from .demo import RECIPES

    out = {}
    for name, r in RECIPES.items():
        train = {**SYNTHETIC_TRAIN, "epochs": r.epochs}
        grid = _SYNTHETIC_GRIDS.get(name, _PEFT_GRID)
        out[name] = MethodPreset(name, dict(r.options), train, grid, (r.weight_decay,), _SYN)
    out["vqt"] = MethodPreset(
        "vqt",
        {"num_queries": 1},
        {**SYNTHETIC_TRAIN, "epochs": 5},
        _PEFT_GRID,
        (1e-4,),
        "VQT T=1 (spec/vqt.md), demo lr grid",
    )
    return out


def demo_train(epochs: int, batch_size: int = 32) -> dict[str, Any]:
    """The demo's training settings for `epochs`: AdamW, one warm-up epoch when there are
    several, val and test scored once, after the last epoch."""
    return {
        **SYNTHETIC_TRAIN,
        "batch_size": batch_size,
        "epochs": epochs,
        "warmup_epochs": 1.0 if epochs > 1 else 0.0,
        "eval_every": epochs,
    }


def _demo_preset(method: str) -> MethodPreset:
    from .demo import RECIPES, UNTUNED_EPOCHS, UNTUNED_LR

    r = RECIPES.get(method)
    if r is None:
        return MethodPreset(
            method,
            {},
            demo_train(UNTUNED_EPOCHS),
            (UNTUNED_LR,),
            (1e-4,),
            "untuned: demo defaults",
        )
    return MethodPreset(
        method, dict(r.options), demo_train(r.epochs), (r.lr,), (r.weight_decay,), _SYN
    )


def preset_for(protocol: str, method: str) -> MethodPreset:
    """The default config of `method` under `protocol`; an unknown method gets its default
    options with the protocol's base training settings (lr 1e-3 / 1e-2 on synthetic)."""
    from ..methods import available_methods

    if method not in available_methods():
        raise ConfigError(f"unknown method {method!r}; see `vpeft methods`")
    if protocol == "demo":
        return _demo_preset(method)
    if protocol == "synthetic":
        presets = _synthetic_presets()
        fallback = MethodPreset(
            method,
            {},
            {**SYNTHETIC_TRAIN, "epochs": 5},
            (1e-2,),
            (1e-4,),
            "untuned: synthetic defaults",
        )
    else:
        presets = PAPER_PRESETS
        fallback = MethodPreset(method, {}, SPT_TRAIN, source="untuned: SPT protocol defaults")
    return presets.get(method, fallback)


def with_overrides(
    preset: MethodPreset,
    options: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
    lr_grid: tuple[float, ...] | None = None,
    wd_grid: tuple[float, ...] | None = None,
) -> MethodPreset:
    """`preset` with user overrides (options and train settings merged, grids replaced)."""
    return replace(
        preset,
        options={**preset.options, **(options or {})},
        train={**preset.train, **(train or {})},
        lr_grid=tuple(lr_grid) if lr_grid else preset.lr_grid,
        wd_grid=tuple(wd_grid) if wd_grid else preset.wd_grid,
    )
