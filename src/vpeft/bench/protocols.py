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

* ``dense-synthetic`` / ``pascal-mt`` (dense multi-task, spec/polyhistor.md, docs/results/dense.md):
  a *task* is a set of dense tasks (``pascal-mt`` = semseg, parts, saliency, normals, or names
  joined by ``+``, e.g. ``semseg+normals``); one model with a decoder per task trains on
  ``train`` and is scored on ``test`` (PASCAL-Context: on ``val``, the test set of the
  literature). No grid selection: a run has one headline per task, not one number to pick by
  (and PASCAL-Context has no separate validation split), so give one lr and wd. Every such
  sweep also runs the **reference**, single-task full fine-tuning (``full`` with one encoder copy
  per task), on the same tasks and seeds, and the table gives Δm against it.
* ``vl-synthetic`` (vision-language, spec/apt.md, on `vpeft.data.vl`): tasks ``vqa``, ``nlvr2``,
  ``retrieval`` (bundled ViLT) and ``clip`` (bundled CLIP, base-to-new: trained on the base
  classes, scored on base and new test classes and their harmonic mean); ``train`` -> ``val``
  selects, ``train`` -> ``test`` reports.
* ``vl`` (the APT tables on the standard layouts under ``--data-root``): the same tasks and
  presets, read by the on-disk ``--data`` kinds (`VL_FOLDERS`: ``vqav2/`` → ``vqa-v2:``,
  ``nlvr2/``, ``flickr30k/``, ``clip-classes/`` → ``clip-base:``); val selects (VQA v2:
  val2014; NLVR2: dev; Flickr30k: Karpathy val), test reports (val2014, test1, Karpathy test).

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
    kind: str = "classification"  # classification | dense | vl: what the runner builds
    backbone: str = "vit-tiny-synth"  # default backbone (VL: of every task but `clip`)
    reference: str | None = None  # dense: the method every Δm is measured against

    def backbone_for(self, task: str, given: str | None) -> str:
        """The backbone of `task`: the user's, else the protocol's (VL: CLIP for ``clip``)."""
        if given:
            return given
        if self.kind == "vl" and task == "clip":
            return VL_CLIP_BACKBONE if self.name == "vl-synthetic" else "hf:CLIPModel"
        return self.backbone

    def data_spec(self, task: str, data_root: str | None) -> str:
        """The ``KIND:ROOT_OR_TASK`` string of `task` (see `vpeft train --data`)."""
        if self.data_kind == "synthetic":
            return f"synthetic:{task}"
        if self.data_kind == "vl-synthetic":
            return f"vl-synthetic:{'clip-base' if task == 'clip' else task}"
        if self.data_kind == "vl":
            if not data_root:
                raise ConfigError(
                    "protocol vl reads data from disk: give --data-root (the folder holding "
                    + ", ".join(f"{folder}/" for _, folder in VL_FOLDERS.values())
                    + ")"
                )
            kind, folder = VL_FOLDERS[task]
            return f"{kind}:{data_root.rstrip('/')}/{folder}"
        if self.data_kind == "dense-synthetic":  # the root is the generator's options
            return f"dense-synthetic:{data_root or 'default'}"
        if self.kind == "dense" and data_root:  # one folder holds every dense task
            return f"{self.data_kind}:{data_root.rstrip('/')}"
        if not data_root:
            raise ConfigError(
                f"protocol {self.name} reads data from disk: give --data-root (the folder that "
                f"holds one sub-folder per task, e.g. {', '.join(list(self.groups)[:3])})"
            )
        return f"{self.data_kind}:{data_root.rstrip('/')}/{task}"

    def group_of(self, task: str) -> str:
        if self.kind == "dense":
            return "dense"
        return self.groups.get(task, "other")

    def check_task(self, task: str) -> None:
        """`ConfigError` for a task this protocol cannot run."""
        if self.kind == "dense":
            dense_task_names(task)
        elif self.kind == "vl" and task not in VL_TASKS:
            raise ConfigError(f"{self.name} tasks are {', '.join(VL_TASKS)}; got {task!r}")
        elif self.data_kind == "synthetic" and task not in self.groups:
            known = ", ".join(self.groups)
            raise ConfigError(f"unknown synthetic task {task!r}; choose from {known}")


#: The VL tasks of `vl-synthetic` and the backbones they run on by default.
VL_TASKS: tuple[str, ...] = ("vqa", "nlvr2", "retrieval", "clip")
VL_BACKBONE = "vilt-tiny-synth"
VL_CLIP_BACKBONE = "clip-tiny-synth"
#: protocol ``vl``: the ``--data`` kind and the sub-folder of ``--data-root`` of each task
VL_FOLDERS: dict[str, tuple[str, str]] = {
    "vqa": ("vqa-v2", "vqav2"),
    "nlvr2": ("nlvr2", "nlvr2"),
    "retrieval": ("flickr30k", "flickr30k"),
    "clip": ("clip-base", "clip-classes"),
}


def dense_task_names(task: str) -> list[str]:
    """``pascal-mt`` -> the four PASCAL-Context tasks; ``semseg+normals`` -> the two."""
    from ..tasks.dense import PASCAL_MT_TASKS

    names = list(PASCAL_MT_TASKS) if task == "pascal-mt" else task.split("+")
    if not names or any(n not in PASCAL_MT_TASKS for n in names) or len(set(names)) != len(names):
        raise ConfigError(
            f"dense task {task!r}: give pascal-mt or distinct names among "
            f"{', '.join(PASCAL_MT_TASKS)} joined by '+' (e.g. semseg+normals)"
        )
    return names


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
        Protocol(
            "dense-synthetic",
            "dense-synthetic",
            "train",
            "",  # no selection: four headline metrics, no single number to pick a grid point by
            "train",
            "test",
            {},
            "dense multi-task on vpeft's procedural scenes: train -> test, one grid point "
            "(no single metric selects); Δm against single-task full FT",
            kind="dense",
            backbone="swin-tiny-synth",
            reference="full",
        ),
        Protocol(
            "pascal-mt",
            "pascal-mt",
            "train",
            "",  # no selection split: PASCAL-Context's val is the reported test set
            "train",
            "val",
            {},
            "PASCAL-Context multi-task (Polyhistor): train -> val (the test set of the "
            "literature); Δm against single-task full FT",
            kind="dense",
            backbone="swin_tiny_patch4_window7_224",
            reference="full",
        ),
        Protocol(
            "vl-synthetic",
            "vl-synthetic",
            "train",
            "val",
            "train",
            "test",
            {t: "vl" for t in VL_TASKS},
            "vision-language on vpeft's procedural suite: VQA, NLVR2, retrieval (ViLT), "
            "CLIP base-to-new",
            kind="vl",
            backbone=VL_BACKBONE,
        ),
        Protocol(
            "vl",
            "vl",
            "train",
            "val",
            "train",
            "test",
            {t: "vl" for t in VL_TASKS},
            "vision-language on the standard layouts under --data-root (vqav2/, nlvr2/, "
            "flickr30k/, clip-classes/; the on-disk --data kinds): APT's tables",
            kind="vl",
            backbone="hf:ViltModel",
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

# --- dense multi-task (spec/polyhistor.md "Training protocol") --------------------------
#: Batch 12, 60 epochs, Adam lr 1e-4, weight decay 1e-4 (the paper decays lr linearly per
#: iteration; `TrainConfig` has the cosine schedule, no warm-up, which ends at the same min_lr).
POLYHISTOR_TRAIN: dict[str, Any] = {
    "optimizer": "adam",
    "batch_size": 12,
    "epochs": 60,
    "warmup_epochs": 0.0,
    "weight_decay": 1e-4,
}
_POLY = "spec/polyhistor.md (training protocol; method defaults)"
#: The paper's per-method options (spec/polyhistor.md "Pinned definitions").
DENSE_OPTIONS: dict[str, dict[str, Any]] = {
    "polyhistor": {"reduction": 16},
    "polyhistor-lite": {"reduction": 2},
    "hyperformer": {"reduction": 16},
    "adapter-ln": {"reduction": 2},
    "shared-adapter": {"reduction": 2},
    "lora-qkv": {"rank": 4},
}
#: On the bundled tiny Swin (stage widths 24..192) λ = 16 leaves a 1-wide stage-1 bottleneck;
#: docs/results/dense.md scales the options (λ = 4 / 8) and the recipe to CPU smoke size.
DENSE_SYNTHETIC_TRAIN: dict[str, Any] = {
    "optimizer": "adamw",
    "batch_size": 16,
    "epochs": 2,
    "warmup_epochs": 0.0,
}
DENSE_SYNTHETIC_OPTIONS: dict[str, dict[str, Any]] = {
    "polyhistor": {"reduction": 4},
    "hyperformer": {"reduction": 8},
    "phm": {"reduction": 4},
}
_DENSE_SYN = "docs/results/dense.md (smoke-scale recipe on swin-tiny-synth)"

# --- vision-language (spec/apt.md) -------------------------------------------------------
#: ViLT reference: AdamW, weight decay 0.01, 10% warm-up (TrainConfig's default warm-up,
#: min(10, 10% of epochs)), 10 epochs, lr 5e-4 for APT. The paper decays linearly; TrainConfig
#: decays with a cosine.
APT_VILT_TRAIN: dict[str, Any] = {"optimizer": "adamw", "batch_size": 32, "epochs": 10}
#: CLIP with APT: SGD lr 2e-4, weight decay 0.3, 10 epochs (base-to-new), no warm-up stated.
APT_CLIP_TRAIN: dict[str, Any] = {
    "optimizer": "sgd",
    "batch_size": 32,
    "epochs": 10,
    "warmup_epochs": 0.0,
}
_APT = "spec/apt.md (reference training; APT p = 200, r = 4 on ViLT)"
VL_OPTIONS: dict[str, dict[str, Any]] = {"apt": {"num_prompts": 200, "rank": 4}}


def _dense_preset(protocol: str, method: str) -> MethodPreset:
    if protocol == "dense-synthetic":
        options = DENSE_SYNTHETIC_OPTIONS.get(method, {})
        return MethodPreset(method, options, DENSE_SYNTHETIC_TRAIN, (1e-3,), (1e-4,), _DENSE_SYN)
    return MethodPreset(
        method, DENSE_OPTIONS.get(method, {}), POLYHISTOR_TRAIN, (1e-4,), (1e-4,), _POLY
    )


def _vl_preset(method: str, task: str | None) -> MethodPreset:
    if task == "clip":
        return MethodPreset(method, {}, APT_CLIP_TRAIN, (2e-4,), (0.3,), _APT)
    lr = 5e-4 if method == "apt" else 1e-4
    return MethodPreset(method, VL_OPTIONS.get(method, {}), APT_VILT_TRAIN, (lr,), (0.01,), _APT)


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


def preset_for(protocol: str, method: str, task: str | None = None) -> MethodPreset:
    """The default config of `method` under `protocol` (for VL also per `task`); an unknown
    method gets its default options with the protocol's base training settings."""
    from ..methods import available_methods

    if method not in available_methods():
        raise ConfigError(f"unknown method {method!r}; see `vpeft methods`")
    if protocol == "demo":
        return _demo_preset(method)
    if get_protocol(protocol).kind == "dense":
        return _dense_preset(protocol, method)
    if protocol in ("vl-synthetic", "vl"):
        return _vl_preset(method, task)
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
