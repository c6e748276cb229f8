"""Dense prediction tasks on multi-scale maps (spec/polyhistor.md): semantic / part
segmentation, saliency and surface normals, the four PASCAL-Context tasks, and Δm.

Every task's head is a `DenseHead`: per-task `StageNorms`, an `AllMLPDecoder`, and bilinear
upsampling (``align_corners=False``) of the logits to the requested output size. Losses follow
the task contract (sum over samples of the per-sample loss, number of samples); each per-sample
loss is a mean over that sample's valid pixels (a sample without valid pixels contributes 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones.calls import pixel_values
from ..errors import ConfigError
from .base import FeatureInfo, Metric, Task, register_task
from .decoders import AllMLPDecoder, SetrPupDecoder, StageNorms
from .metrics import BinaryMIoU, ConfusionMIoU, MaxFMeasure, NormalsError


class DenseHead(nn.Module):
    """``head(maps, out_size) = Upsample_{out_size}(Decoder(StageNorms(maps)))`` → (B, K, H, W)."""

    def __init__(
        self, map_dims: Sequence[int], num_outputs: int, embed_dim: int = 256, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.norms = StageNorms(map_dims)
        self.decoder = AllMLPDecoder(map_dims, num_outputs, embed_dim, dropout)

    def forward(self, maps: Sequence[torch.Tensor], out_size: tuple[int, int]) -> torch.Tensor:
        logits = self.decoder(self.norms(maps))
        if tuple(logits.shape[-2:]) != tuple(out_size):
            logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
        return logits


class SetrPupHead(nn.Module):
    """``head(maps, out_size) = Upsample_{out_size}(SetrPupDecoder(maps[-1]))``: SETR-PUP on
    the last ViT tap (B, D, H/p, W/p), with ``log2(p)`` 2× stages (4 for 16-pixel patches)."""

    def __init__(self, in_dim: int, stride: int, num_outputs: int, embed_dim: int = 256) -> None:
        super().__init__()
        stages = max(round(math.log2(max(stride, 2))), 1)
        self.decoder = SetrPupDecoder(in_dim, num_outputs, embed_dim, num_stages=stages)

    def forward(self, maps: Sequence[torch.Tensor], out_size: tuple[int, int]) -> torch.Tensor:
        logits = self.decoder(maps)
        if tuple(logits.shape[-2:]) != tuple(out_size):
            logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
        return logits


#: decoders a `SegmentationTask` can use
SEG_DECODERS: tuple[str, ...] = ("all-mlp", "setr-pup")


def share_stage_norms(heads: Iterable[nn.Module]) -> StageNorms | None:
    """Make every `DenseHead` among `heads` read one set of stage-output norms (the first
    head's); returns that set, which the caller registers once (heads keep a plain reference,
    so its parameters have one name). ``None`` when fewer than two dense heads share maps of
    the same widths."""
    dense = [h for h in heads if isinstance(h, DenseHead)]
    if len(dense) < 2 or len({h.norms.dims for h in dense}) != 1:
        return None
    shared = dense[0].norms
    for head in dense:
        head._modules.pop("norms", None)
        object.__setattr__(head, "norms", shared)
    return shared


def _masked_sample_means(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-sample mean of ``values`` (B, H, W) over ``valid`` pixels; 0 where none is valid."""
    valid = valid.to(values.dtype)
    return (values * valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp_min(1)


@dataclass
class _DenseTask(Task):
    """Shared options of dense tasks: decoder width and dropout."""

    embed_dim: int = 256
    dropout: float = 0.0

    features: ClassVar[str] = "maps"
    num_outputs: ClassVar[int] = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.embed_dim < 1 or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(
                f"task {self.name}: embed_dim must be >= 1 and dropout in [0, 1), got "
                f"{self.embed_dim} and {self.dropout}"
            )

    def _outputs(self) -> int:
        return self.num_outputs

    def run_head(self, head: nn.Module, features: Any, inputs: Any) -> torch.Tensor:
        """The decoder's output at the input image's resolution."""
        size = pixel_values(inputs).shape[-2:]
        return head(features, (int(size[0]), int(size[1])))

    def build_head(self, info: FeatureInfo) -> nn.Module:
        if not info.map_dims:
            raise ConfigError(
                f"task {self.name} needs multi-scale feature maps, but the backbone offers none "
                "(FeatureInfo.map_dims is empty); use a hierarchical backbone with feature taps"
            )
        return DenseHead(info.map_dims, self._outputs(), self.embed_dim, self.dropout)

    def options(self) -> dict[str, Any]:
        return {**super().options(), "embed_dim": self.embed_dim, "dropout": self.dropout}


@register_task
@dataclass
class SegmentationTask(_DenseTask):
    """Per-pixel ``num_classes``-way classification (semantic segmentation, human parts).

    Loss per sample: ``(1/|V|) Σ_{p∈V} −log softmax(z_p)[y_p]`` over the valid pixels
    ``V = {p : y_p ≠ ignore_index}``. Metric: `ConfusionMIoU` (mIoU %, pixel accuracy %).

    ``decoder``: ``all-mlp`` (default; `DenseHead` over every tap) or ``setr-pup``
    (`SetrPupHead` on the last tap — SPT's ADE20K setting on a plain ViT)."""

    num_classes: int = 0
    ignore_index: int = 255
    decoder: str = "all-mlp"

    kind: ClassVar[str] = "segmentation"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_classes < 2:
            raise ConfigError(f"task {self.name}: num_classes must be >= 2, got {self.num_classes}")
        if self.decoder not in SEG_DECODERS:
            raise ConfigError(
                f"task {self.name}: decoder must be one of {list(SEG_DECODERS)}, got "
                f"{self.decoder!r}"
            )

    def build_head(self, info: FeatureInfo) -> nn.Module:
        if self.decoder == "all-mlp":
            return super().build_head(info)
        if not info.map_dims:
            raise ConfigError(
                f"task {self.name}: the setr-pup decoder needs ViT block taps, but the backbone "
                "offers no feature maps"
            )
        stride = info.map_strides[-1] if info.map_strides else 16
        return SetrPupHead(info.map_dims[-1], stride, self.num_classes, self.embed_dim)

    def _outputs(self) -> int:
        return self.num_classes

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, int]:
        target = target.long()
        ce = F.cross_entropy(
            output.float(), target, ignore_index=self.ignore_index, reduction="none"
        )
        return _masked_sample_means(ce, target != self.ignore_index).sum(), len(target)

    def metrics(self) -> list[Metric]:
        return [ConfusionMIoU(self.num_classes, self.ignore_index)]

    def options(self) -> dict[str, Any]:
        return {
            **super().options(),
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "decoder": self.decoder,
        }


@register_task
@dataclass
class SaliencyTask(_DenseTask):
    """Binary saliency with one logit channel.

    Loss: balanced binary cross-entropy as in the multi-task literature (ASTMT / MTI-Net),
    computed per sample over its valid pixels V (target ≠ ``ignore_index``; target > 0.5 is
    salient): with ``w = |V⁻| / |V|`` (the share of negatives),
    ``L = −(1/|V|) Σ_p [w·y_p·log σ(z_p) + (1−w)·(1−y_p)·log(1−σ(z_p))]``.
    Metrics: `MaxFMeasure` with the max-over-thresholds mean IoU as headline (the paper's
    saliency "mIoU"), plus max-F (β² = 0.3); and `BinaryMIoU` at threshold 0.5."""

    ignore_index: int = 255

    kind: ClassVar[str] = "saliency"
    num_outputs: ClassVar[int] = 1

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, int]:
        logits = output.float()[:, 0]
        valid = target != self.ignore_index
        y = ((target.float() > 0.5) & valid).float()
        n_valid = valid.flatten(1).sum(1).clamp_min(1).float()
        w = ((valid & (y == 0)).flatten(1).sum(1).float() / n_valid).view(-1, 1, 1)
        pos = w * y * F.logsigmoid(logits)
        neg = (1 - w) * (1 - y) * F.logsigmoid(-logits)
        return _masked_sample_means(-(pos + neg), valid).sum(), len(target)

    def metrics(self) -> list[Metric]:
        return [
            MaxFMeasure(from_logits=True, ignore_index=self.ignore_index, headline="miou"),
            BinaryMIoU(0.5, from_logits=True, ignore_index=self.ignore_index),
        ]

    def options(self) -> dict[str, Any]:
        return {**super().options(), "ignore_index": self.ignore_index}


@register_task
@dataclass
class NormalsTask(_DenseTask):
    """Surface normals, three output channels.

    Loss per sample: ``(1/|V|) Σ_{p∈V} ‖n̂_p − t_p‖₁`` with ``n̂ = z/‖z‖`` the unit-normalised
    prediction and V the pixels whose target has non-zero norm (invalid pixels hold zero
    vectors). Metric: `NormalsError` (mean angular error ° headline, RMSE °, …)."""

    kind: ClassVar[str] = "normals"
    num_outputs: ClassVar[int] = 3

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, int]:
        target = target.float()
        valid = target.norm(dim=1) > 0
        l1 = (F.normalize(output.float(), dim=1) - target).abs().sum(1)
        return _masked_sample_means(l1, valid).sum(), len(target)

    def metrics(self) -> list[Metric]:
        return [NormalsError()]


#: Names of the PASCAL-Context multi-task benchmark's tasks, in the paper's column order.
PASCAL_MT_TASKS: tuple[str, ...] = ("semseg", "parts", "saliency", "normals")


def pascal_mt_tasks(embed_dim: int = 256, dropout: float = 0.0) -> list[Task]:
    """The four PASCAL-Context tasks of the Polyhistor benchmark: semantic segmentation (21
    classes), human parts (7), saliency and surface normals; each reads the batch field of its
    own name (`vpeft.data.pascal_context` and `vpeft.data.dense_synthetic` provide them)."""
    kw = {"embed_dim": embed_dim, "dropout": dropout}
    return [
        SegmentationTask("semseg", num_classes=21, target_field="semseg", **kw),
        SegmentationTask("parts", num_classes=7, target_field="parts", **kw),
        SaliencyTask("saliency", target_field="saliency", **kw),
        NormalsTask("normals", target_field="normals", **kw),
    ]


def delta_m(
    results: Mapping[str, float],
    single_task_results: Mapping[str, float],
    lower_is_better: Mapping[str, bool] | Sequence[str],
) -> float:
    """Multi-task gain Δm (%) over single-task baselines (Maninis et al., 2019; Polyhistor):
    ``Δm = (100/T) Σ_t (−1)^{l_t} (M_t − M_single,t) / M_single,t`` with ``l_t = 1`` where lower
    is better. ``lower_is_better``: a name → bool mapping, or the names where lower is better."""
    if set(results) != set(single_task_results) or not results:
        raise ConfigError(
            f"delta_m needs the same, non-empty task names in both results, got "
            f"{sorted(results)} and {sorted(single_task_results)}"
        )
    lower = (
        {k for k, v in lower_is_better.items() if v}
        if isinstance(lower_is_better, Mapping)
        else set(lower_is_better)
    )
    if lower - set(results):
        raise ConfigError(f"lower_is_better names unknown tasks: {sorted(lower - set(results))}")
    total = 0.0
    for name, value in results.items():
        base = single_task_results[name]
        if base == 0:
            raise ConfigError(f"delta_m: single-task result of {name!r} is 0; Δm is undefined")
        sign = -1.0 if name in lower else 1.0
        total += sign * (value - base) / base
    return 100.0 * total / len(results)


#: Class counts of the segmentation tasks per dense dataset (background included).
DENSE_CLASSES: dict[str, dict[str, int]] = {
    "pascal-mt": {"semseg": 21, "parts": 7},
    "dense-synthetic": {"semseg": 4, "parts": 7},
    "ade20k": {"semseg": 150},
}
#: the segmentation decoder per dense dataset (default ``all-mlp``): SPT's ADE20K setting
#: uses SETR-PUP on the ViT
DENSE_DECODERS: dict[str, str] = {"ade20k": "setr-pup"}


def dense_tasks(
    names: Sequence[str],
    dataset: str = "pascal-mt",
    embed_dim: int = 256,
    decoder: str | None = None,
) -> list[Task]:
    """The named tasks among ``semseg``, ``parts``, ``saliency``, ``normals`` (or
    ``pascal-mt`` for all four), with the class counts of `dataset` (`DENSE_CLASSES`)."""
    names = list(PASCAL_MT_TASKS) if list(names) == ["pascal-mt"] else list(names)
    unknown = [n for n in names if n not in PASCAL_MT_TASKS]
    if unknown or not names or len(set(names)) != len(names):
        raise ConfigError(
            f"dense tasks must be distinct names among {list(PASCAL_MT_TASKS)} (or pascal-mt "
            f"for all four), got {list(names)}"
        )
    if dataset not in DENSE_CLASSES:
        raise ConfigError(f"unknown dense dataset {dataset!r}; known: {sorted(DENSE_CLASSES)}")
    classes = DENSE_CLASSES[dataset]
    absent = [n for n in names if n not in classes and n in ("semseg", "parts")]
    if (dataset == "ade20k" and names != ["semseg"]) or absent:
        raise ConfigError(f"dataset {dataset} has the tasks {sorted(classes)}, got {list(names)}")
    seg_decoder = decoder or DENSE_DECODERS.get(dataset, "all-mlp")
    build = {
        "semseg": lambda: SegmentationTask(
            "semseg",
            num_classes=classes["semseg"],
            target_field="semseg",
            embed_dim=embed_dim,
            decoder=seg_decoder,
        ),
        "parts": lambda: SegmentationTask(
            "parts", num_classes=classes["parts"], target_field="parts", embed_dim=embed_dim
        ),
        "saliency": lambda: SaliencyTask("saliency", target_field="saliency", embed_dim=embed_dim),
        "normals": lambda: NormalsTask("normals", target_field="normals", embed_dim=embed_dim),
    }
    return [build[n]() for n in names]


#: mmseg's multi-scale test ratios for ADE20K (``aug_test``)
MS_SCALES: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def sliding_logits(
    forward: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    crop: tuple[int, int],
    stride: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Logits (B, K, H, W) of ``images`` (B, 3, H, W) of any size from a model taking ``crop``
    inputs: images smaller than the crop are zero-padded, larger ones covered by windows
    (stride default 2/3 of the crop, as mmseg's 512/341) whose logits are averaged."""
    ch, cw = crop
    sh, sw = stride or (max(ch * 2 // 3, 1), max(cw * 2 // 3, 1))
    h, w = images.shape[-2:]
    padded = F.pad(images, (0, max(cw - w, 0), 0, max(ch - h, 0)))
    ph, pw = padded.shape[-2:]
    tops = list(range(0, ph - ch + 1, sh))
    lefts = list(range(0, pw - cw + 1, sw))
    if tops[-1] != ph - ch:
        tops.append(ph - ch)
    if lefts[-1] != pw - cw:
        lefts.append(pw - cw)
    total: torch.Tensor | None = None
    count = torch.zeros(1, 1, ph, pw, device=images.device)
    for top in tops:
        for left in lefts:
            out = forward(padded[..., top : top + ch, left : left + cw]).float()
            if total is None:
                total = out.new_zeros(out.shape[0], out.shape[1], ph, pw)
            total[..., top : top + ch, left : left + cw] += out
            count[..., top : top + ch, left : left + cw] += 1
    assert total is not None
    return (total / count)[..., :h, :w]


def multi_scale_probs(
    forward: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    crop: tuple[int, int],
    scales: Sequence[float] = MS_SCALES,
    flip: bool = True,
) -> torch.Tensor:
    """Multi-scale (+ horizontal flip) test: for every scale s the image is resized (bilinear)
    by s, scored with `sliding_logits`, its logits resized back to (H, W) and softmaxed; the
    probabilities are averaged over scales (and flips). Returns (B, K, H, W) probabilities —
    their argmax is the prediction (mmseg ``aug_test``)."""
    if not scales or any(s <= 0 for s in scales):
        raise ConfigError(f"multi-scale test needs positive scales, got {list(scales)}")
    h, w = images.shape[-2:]
    total: torch.Tensor | None = None
    n = 0
    for s in scales:
        size = (max(round(h * s), 1), max(round(w * s), 1))
        scaled = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        for mirrored in (False, True) if flip else (False,):
            x = scaled.flip(-1) if mirrored else scaled
            logits = sliding_logits(forward, x, crop)
            if mirrored:
                logits = logits.flip(-1)
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
            probs = logits.softmax(1)
            total = probs if total is None else total + probs
            n += 1
    assert total is not None
    return total / n


#: The headline metric of every dense task kind, and whether lower is better (for Δm).
HEADLINES: dict[str, tuple[str, bool]] = {
    "segmentation": ("miou", False),
    "saliency": ("miou", False),
    "normals": ("mean", True),
}
