"""`vpeft bench reproduce spt|vqt|polyhistor|apt`: what each paper's main table needs, what is
present, and the sweep that produces the table when everything is there.

Data lives under ``--data-root`` in the standard layouts (one folder per dataset), pretrained
weights under ``--weights-dir`` as local files (no download at run time)::

    <data-root>/vtab-1k/<task>/{train800,val200,train800val200,test}.txt + images
    <data-root>/fgvc/<cub|nabirds|flowers|dogs|cars>/{train,val,test}.json + images
    <data-root>/pascal_context/ImageSets/Context/{train,val}.txt, JPEGImages/, semseg/, ...
    <data-root>/vqav2/v2_OpenEnded_mscoco_{train,val}2014_questions.json,
        v2_mscoco_{train,val}2014_annotations.json, {train,val}2014/COCO_*.jpg
    <data-root>/nlvr2/{train,dev,test1}.json, images/train/<dir>/*.png, dev/, test1/
    <data-root>/flickr30k/dataset_flickr30k.json, flickr30k-images/
    <weights-dir>/<file named in WEIGHTS> (ViLT: a transformers folder with tokenizer.json)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .protocols import FGVC_GROUPS, VTAB_GROUPS
from .sweep import SweepConfig


@dataclass(frozen=True)
class Requirement:
    """One piece of data or weights a paper's table needs."""

    kind: str  # "data" | "weights"
    name: str
    path: str  # relative to --data-root / --weights-dir
    what: str  # how to get it
    check: Callable[[Path], str | None]  # None if fine, else what is wrong

    def status(self, root: Path) -> dict[str, Any]:
        path = root / self.path
        problem = self.check(path)
        return {
            "kind": self.kind,
            "name": self.name,
            "path": str(path),
            "present": problem is None,
            "problem": problem,
            "how": self.what,
        }


def _vtab_task(path: Path) -> str | None:
    if not path.is_dir():
        return f"folder {path} is missing"
    for split in ("train800", "val200", "train800val200", "test"):
        lst = path / f"{split}.txt"
        if not lst.is_file():
            return f"list file {lst} is missing"
    first = (path / "train800.txt").read_text().split()
    if not first or not (path / first[0]).is_file():
        return f"the first image of {path / 'train800.txt'} is missing"
    return None


def _fgvc(path: Path) -> str | None:
    if not path.is_dir():
        return f"folder {path} is missing"
    for split in ("train", "val", "test"):
        if not (path / f"{split}.json").is_file():
            return f"split file {path / (split + '.json')} is missing"
    return None


def _pascal(path: Path) -> str | None:
    need = [
        "ImageSets/Context/train.txt",
        "ImageSets/Context/val.txt",
        "JPEGImages",
        "semseg",
        "human_parts",
        "sal_distill",
        "normals_distill",
    ]
    missing = [n for n in need if not (path / n).exists()]
    return f"{path} lacks {', '.join(missing)}" if missing else None


def _file(path: Path) -> str | None:
    return None if path.is_file() else f"file {path} is missing"


def _needs(*names: str) -> Callable[[Path], str | None]:
    """A check that `names` (files, or folders ending in ``/``) exist under the path."""

    def check(path: Path) -> str | None:
        if not path.is_dir():
            return f"folder {path} is missing"
        missing = [n for n in names if not (path / n).exists()]
        return f"{path} lacks {', '.join(missing)}" if missing else None

    return check


_VQA_FILES = [
    *(f"v2_OpenEnded_mscoco_{s}_questions.json" for s in ("train2014", "val2014")),
    *(f"v2_mscoco_{s}_annotations.json" for s in ("train2014", "val2014")),
    "train2014/",
    "val2014/",
]


VTAB_HOW = "VTAB-1k list-file release (e.g. the one distributed with NOAH/SPT), one folder per task"
FGVC_HOW = "the dataset's images + VPT's train/val/test json splits"


def _vtab() -> list[Requirement]:
    return [
        Requirement("data", f"VTAB-1k {t}", f"vtab-1k/{t}", VTAB_HOW, _vtab_task)
        for t in VTAB_GROUPS
    ]


def _fgvc_reqs() -> list[Requirement]:
    return [Requirement("data", f"FGVC {t}", f"fgvc/{t}", FGVC_HOW, _fgvc) for t in FGVC_GROUPS]


def _weights(file: str, what: str) -> Requirement:
    return Requirement(
        "weights",
        what,
        file,
        f"save {what} as {file} (safetensors or .pth state dict loadable by timm)",
        _file,
    )


@dataclass(frozen=True)
class Paper:
    name: str
    table: str
    requirements: list[Requirement]
    backbone: str
    weights_file: str | None
    methods: list[str]
    protocol: str | None  # None: not runnable by `bench` yet
    not_runnable: str = ""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    #: (protocol, data sub-folder, tasks; None: every task of the protocol's group table)
    runs: list[tuple[str, str, list[str] | None]] = field(default_factory=list)


VIT_IN21K = "vit_base_patch16_224.augreg_in21k.safetensors"
VIT_IN1K = "vit_base_patch16_224.augreg_in1k.safetensors"
SWIN_T = "swin_tiny_patch4_window7_224.ms_in1k.safetensors"
VILT = "vilt-b32-mlm"

PAPERS: dict[str, Paper] = {
    "spt": Paper(
        "spt",
        "SPT Table 1/2: VTAB-1k and FGVC, ViT-B/16 ImageNet-21k (spec/spt.md)",
        [*_vtab(), *_fgvc_reqs(), _weights(VIT_IN21K, "ViT-B/16 ImageNet-21k")],
        "vit_base_patch16_224",
        VIT_IN21K,
        [
            "linear",
            "full",
            "bitfit",
            "vpt-deep",
            "lora",
            "adapter",
            "adaptformer",
            "spt-lora",
            "spt-adapter",
        ],
        "vtab-1k",
        runs=[("vtab-1k", "vtab-1k", None), ("fgvc", "fgvc", None)],
    ),
    "vqt": Paper(
        "vqt",
        "VQT Table 1: VTAB-1k 19 tasks, ViT-B/16 ImageNet-1k (spec/vqt.md)",
        [*_vtab(), _weights(VIT_IN1K, "ViT-B/16 ImageNet-1k")],
        "vit_base_patch16_224",
        VIT_IN1K,
        ["linear", "head2toe", "full", "vqt"],
        "vtab-1k",
        seeds=[0, 1, 2, 3, 4],
        runs=[("vtab-1k", "vtab-1k", None)],
    ),
    "polyhistor": Paper(
        "polyhistor",
        "Polyhistor Table 1: PASCAL-Context 4 dense tasks, Swin-T ImageNet-1k",
        [
            Requirement(
                "data",
                "PASCAL-Context multi-task (PASCAL_MT)",
                "pascal_context",
                "the multi-task community's PASCAL_MT folder",
                _pascal,
            ),
            _weights(SWIN_T, "Swin-T ImageNet-1k"),
        ],
        "swin_tiny_patch4_window7_224",
        SWIN_T,
        # the reference (single-task full FT) is added by the protocol; the dense variants of
        # LoRA and Adapter that the paper compares (docs/results/dense.md)
        ["bitfit", "lora-qkv", "adapter-ln", "hyperformer", "polyhistor", "polyhistor-lite"],
        "pascal-mt",
        runs=[("pascal-mt", "pascal_context", ["pascal-mt"])],
    ),
    "apt": Paper(
        "apt",
        "APT Table 1: ViLT on VQA v2 / NLVR2 / Flickr30k",
        [
            Requirement(
                "data",
                "VQA v2",
                "vqav2",
                "VQA v2 questions + annotations json (visualqa.org) and the COCO 2014 images",
                _needs(*_VQA_FILES),
            ),
            Requirement(
                "data",
                "NLVR2",
                "nlvr2",
                "NLVR2 train/dev/test1 json (github.com/lil-lab/nlvr) + images",
                _needs("train.json", "dev.json", "test1.json"),
            ),
            Requirement(
                "data",
                "Flickr30k",
                "flickr30k",
                "Flickr30k images + Karpathy's dataset_flickr30k.json",
                _needs("dataset_flickr30k.json", "flickr30k-images/"),
            ),
            Requirement(
                "weights",
                "ViLT-B/32 (transformers folder)",
                VILT,
                "a local folder holding config.json, model.safetensors and tokenizer.json "
                "(e.g. dandelin/vilt-b32-mlm saved with save_pretrained)",
                _needs("config.json", "model.safetensors", "tokenizer.json"),
            ),
        ],
        "hf:ViltModel",
        VILT,
        ["full", "linear", "vpt-deep", "lora", "adapter", "scaled-pa", "apt"],
        "vl",
        runs=[("vl", "", ["vqa", "nlvr2", "retrieval"])],
    ),
}


def get_paper(name: str) -> Paper:
    try:
        return PAPERS[name]
    except KeyError:
        raise ConfigError(f"unknown paper {name!r}; choose one of {', '.join(PAPERS)}") from None


def check(paper: Paper, data_root: Path, weights_dir: Path) -> list[dict[str, Any]]:
    """The status of every requirement (present or not, and why)."""
    return [r.status(data_root if r.kind == "data" else weights_dir) for r in paper.requirements]


def sweep_configs(
    paper: Paper, data_root: Path, weights_dir: Path, **over: Any
) -> list[SweepConfig]:
    """The sweeps that produce the paper's table (one per protocol)."""
    if paper.protocol is None:
        raise ConfigError(
            f"{paper.name}: all data and weights are present, but {paper.not_runnable}"
        )
    weights = str(weights_dir / paper.weights_file) if paper.weights_file else None
    out = []
    for protocol, folder, listed in paper.runs:
        tasks = listed or list(VTAB_GROUPS if protocol == "vtab-1k" else FGVC_GROUPS)
        fields = {
            "name": f"reproduce-{paper.name}-{protocol}",
            "protocol": protocol,
            "methods": paper.methods,
            "tasks": tasks,
            "seeds": paper.seeds,
            "backbone": paper.backbone,
            "weights": weights,
            "data_root": str(data_root / folder),
        }
        fields.update({k: v for k, v in over.items() if v is not None})
        if over.get("tasks"):  # a subset: keep the tasks this protocol has
            fields["tasks"] = [t for t in over["tasks"] if t in tasks]
            if not fields["tasks"]:
                continue
        out.append(SweepConfig(**fields))
    return out
