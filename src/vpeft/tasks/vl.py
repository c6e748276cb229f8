"""Vision-language tasks (spec/apt.md): VQA, NLVR2, image-text retrieval and CLIP zero-shot /
base-to-new classification.

Each task names the **feature kind** its head reads (``Task.features``); the model side (the
backbone call of a VL family) must hand the head exactly this:

========================  ======================================================================
kind                      what the model feeds the head
========================  ======================================================================
``"pooled"``              ``(B, D)``: the pooled multimodal feature of one (image, text) pair
                          (ViLT / BridgeTower ``pooler_output``)
``"pooled_pair"``         ``(B, 2, D)``: NLVR2's "pair" setting (ViLT §4.3,
                          ``ViltForImagesAndTextClassification``): the backbone runs once per
                          image with the same text, ``pixel_values[:, i]`` / ``pixel_mask[:, i]``
                          and ``image_token_type_idx = i + 1`` (so a ViLT needs
                          ``modality_type_vocab_size = 3``); the two pooled features are stacked
                          in image order
``"embeddings"``          ``(image_emb (B, D), text_emb (B, D))``: a two-tower model's projected
                          embeddings of each pair (CLIP ``get_image_features`` /
                          ``get_text_features``), not normalised
``"class_embeddings"``    ``(image_emb (B, D), class_emb (C, D))``: the image embeddings and the
                          text embeddings of ``task.prompts()`` (one per class, in class order;
                          a method that learns prompts, CoOp/APT, runs the text tower each step)
========================  ======================================================================

Batch fields: inputs ``input_ids``, ``attention_mask``, ``token_type_ids``, ``pixel_values``,
``pixel_mask`` (NLVR2: ``pixel_values`` ``(B, 2, 3, H, W)``, ``pixel_mask`` ``(B, 2, H, W)``);
targets as each task says. Losses follow the task contract: (sum over samples, sample count).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .base import FeatureInfo, Metric, Task, register_task
from .classification import TopKAccuracy
from .metrics import RetrievalRecall, VQAScore, _state_of, recall_at_k

#: Inputs of a single-stream VL model (ViLT, BridgeTower) in transformers' names.
VL_INPUTS: tuple[str, ...] = (
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "pixel_values",
    "pixel_mask",
)
#: Inputs of a two-tower model (CLIP): no token types, no pixel mask.
DUAL_INPUTS: tuple[str, ...] = ("input_ids", "attention_mask", "pixel_values")


def init_vilt_linear_(module: nn.Module, std: float = 0.02) -> nn.Module:
    """ViLT's ``_init_weights`` for heads: linear weights ~ N(0, std²) (``initializer_range``),
    biases 0, LayerNorm weight 1 / bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module


def vl_classifier(in_dim: int, num_outputs: int) -> nn.Sequential:
    """The VQA / NLVR2 classifier of ViLT and METER:
    ``Linear(d, 2d) → LayerNorm(2d) → GELU → Linear(2d, K)`` with ``d = in_dim``
    (transformers ``ViltForQuestionAnswering.classifier``; NLVR2 uses ``d = 2D``, the pair)."""
    head = nn.Sequential(
        nn.Linear(in_dim, 2 * in_dim),
        nn.LayerNorm(2 * in_dim),
        nn.GELU(),
        nn.Linear(2 * in_dim, num_outputs),
    )
    return init_vilt_linear_(head)


def _positive(name: str, what: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"task {name}: {what} must be an integer >= 1, got {value!r}")


# --------------------------------------------------------------------------- VQA


@register_task
@dataclass
class VqaTask(Task):
    """Visual question answering as multi-label classification over a fixed answer vocabulary.

    Head: `vl_classifier` ``(D → 2D → num_answers)`` on the pooled feature. Loss (ViLT's
    convention, ``ViltForQuestionAnswering``): binary cross-entropy with logits against the
    soft-score targets, averaged over all ``B·K`` entries and multiplied by ``K`` — i.e. per
    sample ``Σ_a BCE(z_a, s_a)``, which is what this task sums. Metric: `VQAScore` (the soft
    score of the arg-max answer, %). Target field ``vqa_targets``: float ``(B, num_answers)``.
    """

    num_answers: int = 0
    input_fields: tuple[str, ...] = field(default=VL_INPUTS, kw_only=True)
    target_field: str = field(default="vqa_targets", kw_only=True)

    kind: ClassVar[str] = "vqa"
    features: ClassVar[str] = "pooled"

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self.name, "num_answers", self.num_answers)

    def build_head(self, info: FeatureInfo) -> nn.Module:
        return vl_classifier(info.pooled_dim, self.num_answers)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, int]:
        if output.shape != target.shape:
            raise ConfigError(
                f"task {self.name}: logits {tuple(output.shape)} and soft targets "
                f"{tuple(target.shape)} must both be (B, num_answers={self.num_answers})"
            )
        loss = F.binary_cross_entropy_with_logits(output.float(), target.float(), reduction="sum")
        return loss, len(target)

    def metrics(self) -> list[Metric]:
        return [VQAScore()]

    def options(self) -> dict[str, Any]:
        return {**super().options(), "num_answers": self.num_answers}


# --------------------------------------------------------------------------- NLVR2


class PairClassifier(nn.Module):
    """NLVR2 "pair" head (transformers ``ViltForImagesAndTextClassification`` with
    ``num_images=2``): concatenate the pooled features ``(B, 2, D) → (B, 2D)``, image 0 first,
    then ``Linear(2D, 2D) → LayerNorm(2D) → GELU → Linear(2D, 2)``."""

    def __init__(self, dim: int, num_images: int = 2, num_outputs: int = 2) -> None:
        super().__init__()
        width = dim * num_images
        self.num_images = num_images
        self.classifier = init_vilt_linear_(
            nn.Sequential(
                nn.Linear(width, width),
                nn.LayerNorm(width),
                nn.GELU(),
                nn.Linear(width, num_outputs),
            )
        )

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        if pooled.dim() != 3 or pooled.shape[1] != self.num_images:
            raise ConfigError(
                f"the NLVR2 head reads pooled features (B, {self.num_images}, D), got "
                f"{tuple(pooled.shape)}; run the backbone once per image and stack the results"
            )
        return self.classifier(pooled.flatten(1))


@register_task
@dataclass
class Nlvr2Task(Task):
    """NLVR2: is a statement true of a pair of images? Two classes (0 = false, 1 = true).

    Features ``"pooled_pair"`` (see the module docstring for what the model must run). Head:
    `PairClassifier` (ViLT's ``ViltForImagesAndTextClassification`` with ``num_images=2``).
    Loss: cross-entropy; metric: accuracy (%). Target field ``labels``: int64 ``(B,)``."""

    input_fields: tuple[str, ...] = field(default=VL_INPUTS, kw_only=True)

    kind: ClassVar[str] = "nlvr2"
    features: ClassVar[str] = "pooled_pair"

    def build_head(self, info: FeatureInfo) -> nn.Module:
        return PairClassifier(info.pooled_dim)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, int]:
        return F.cross_entropy(output.float(), target.long(), reduction="sum"), len(target)

    def metrics(self) -> list[Metric]:
        return [TopKAccuracy(1)]


# --------------------------------------------------------------------------- retrieval


class PairScoreRecall(Metric):
    """Image↔text Recall@K from **pair scores** (single-stream models: one forward per (image,
    text) pair, as ViLT evaluates retrieval).

    ``update(scores (B,), target)`` with ``target = {"image_id", "text_id", "label"}`` (global
    ids; ``label`` 1 for a matching pair). The state is a fixed ``num_images × num_texts`` grid
    indexed by global ids — ``[Σ score, count, Σ label]`` per cell — so shards sum to the
    whole. ``compute`` needs every cell scored (evaluate on all pairs,
    `vpeft.data.vl.RetrievalPairs` with ``all_pairs=True``); a text matches the images whose
    cell carries label 1. Values: ``rsum``, ``i2t_r1/5/10``, ``t2i_r1/5/10`` (%)."""

    higher_is_better: ClassVar[tuple[bool, ...]] = (True,) * 7

    def __init__(self, num_images: int, num_texts: int, ks: tuple[int, ...] = (1, 5, 10)):
        self.num_images, self.num_texts, self.ks = num_images, num_texts, tuple(ks)
        self.names = ("rsum", *[f"i2t_r{k}" for k in ks], *[f"t2i_r{k}" for k in ks])  # type: ignore[misc]
        self._cells = num_images * num_texts
        self._state = torch.zeros(3 * self._cells, dtype=torch.float64)

    def update(self, output: torch.Tensor, target: Any) -> None:
        cell = target["image_id"].long().cpu() * self.num_texts + target["text_id"].long().cpu()
        values = [output.detach().double().cpu().reshape(-1), torch.ones(len(cell)),
                  target["label"].double().cpu()]  # fmt: skip
        for block, v in enumerate(values):
            self._state.index_add_(0, cell + block * self._cells, v.double())

    def state(self) -> torch.Tensor:
        return self._state.clone()

    def compute(self, state: torch.Tensor | None = None) -> dict[str, float]:
        s = _state_of(self, state, 3 * self._cells).view(3, self.num_images, self.num_texts)
        total, count, label = s
        if (count == 0).any():
            raise ConfigError(
                f"PairScoreRecall: {int((count == 0).sum())} (image, text) pairs were never "
                "scored; evaluate on every pair of the gallery (all_pairs=True)"
            )
        sim, positives = total / count, (label / count) > 0.5
        i2t = recall_at_k(sim, positives, self.ks)
        t2i = recall_at_k(sim.T, positives.T, self.ks)
        out = {f"i2t_r{k}": v for k, v in i2t.items()} | {f"t2i_r{k}": v for k, v in t2i.items()}
        return {"rsum": sum(out.values()), **out}


class MatchAccuracy(Metric):
    """Binary accuracy (%) of pair scores thresholded at 0 (logit), and the mean BCE.
    ``target``: ``{"label": (B,)}`` or the labels themselves. State: ``[loss sum, correct, n]``."""

    names: ClassVar[tuple[str, ...]] = ("match_acc", "loss")
    higher_is_better: ClassVar[tuple[bool, ...]] = (True, False)

    def __init__(self) -> None:
        self._state = torch.zeros(3, dtype=torch.float64)

    def update(self, output: torch.Tensor, target: Any) -> None:
        label = (target["label"] if isinstance(target, dict) else target).double().cpu()
        score = output.detach().double().cpu().reshape(-1)
        loss = F.binary_cross_entropy_with_logits(score, label, reduction="sum")
        correct = ((score > 0).double() == label).sum()
        self._state += torch.stack([loss, correct, torch.tensor(float(len(label)))]).double()

    def state(self) -> torch.Tensor:
        return self._state.clone()

    def compute(self, state: torch.Tensor | None = None) -> dict[str, float]:
        loss, correct, n = _state_of(self, state, 3).tolist()
        n = max(n, 1.0)
        return {"match_acc": 100.0 * correct / n, "loss": loss / n}


class MatchHead(nn.Module):
    """ViLT's image-text matching score: ``Linear(D, 1)`` on the pooled feature → ``(B,)``
    (transformers ``ViltForImageAndTextRetrieval.rank_output``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.rank_output = init_vilt_linear_(nn.Linear(dim, 1))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.rank_output(pooled).squeeze(-1)


@dataclass
class _RetrievalOptions(Task):
    """Gallery sizes of the evaluation set (needed by the fixed-size, shard-summable recall
    state); 0 and 0 leave recall out (training-only use)."""

    num_images: int = 0
    num_texts: int = 0
    target_field: str = field(default="match", kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.num_images < 0 or self.num_texts < 0) or (
            (self.num_images == 0) != (self.num_texts == 0)
        ):
            raise ConfigError(
                f"task {self.name}: num_images and num_texts (the evaluation gallery) must be "
                f"both positive or both 0, got {self.num_images} and {self.num_texts}"
            )

    def options(self) -> dict[str, Any]:
        return {**super().options(), "num_images": self.num_images, "num_texts": self.num_texts}


@register_task
@dataclass
class RetrievalTask(_RetrievalOptions):
    """Image-text retrieval with a single-stream model: an image-text matching (ITM) score.

    Head: `MatchHead` (``Linear(D, 1)``, ViLT's ``rank_output``) on the pooled feature of a
    pair. Loss: binary cross-entropy with logits on matched (1) / mismatched (0) pairs, summed.
    (ViLT's own fine-tuning instead soft-maxes one positive against 15 negative texts; the
    binary form is the ITM objective of its pre-training, with one logit.) Metrics:
    `PairScoreRecall` (image→text and text→image R@1/5/10 over the score matrix of all pairs)
    when the gallery sizes are set, and `MatchAccuracy`. Target field ``match``:
    ``{"label", "image_id", "text_id"}`` (int64 ``(B,)`` each)."""

    input_fields: tuple[str, ...] = field(default=VL_INPUTS, kw_only=True)

    kind: ClassVar[str] = "retrieval_itm"
    features: ClassVar[str] = "pooled"

    def build_head(self, info: FeatureInfo) -> nn.Module:
        return MatchHead(info.pooled_dim)

    def loss(self, output: torch.Tensor, target: Any) -> tuple[torch.Tensor, int]:
        label = (target["label"] if isinstance(target, dict) else target).float()
        score = output.float().reshape(-1)
        return F.binary_cross_entropy_with_logits(score, label, reduction="sum"), len(label)

    def metrics(self) -> list[Metric]:
        if self.num_images:
            return [PairScoreRecall(self.num_images, self.num_texts), MatchAccuracy()]
        return [MatchAccuracy()]


class PairEmbeddings(NamedTuple):
    """Output of `ContrastiveHead`: L2-normalised embeddings and the logit scale ``exp(t)``."""

    image: torch.Tensor
    text: torch.Tensor
    logit_scale: torch.Tensor


class ContrastiveHead(nn.Module):
    """CLIP's similarity: cosine of the two towers' embeddings times a learned temperature
    ``exp(t)``, ``t`` initialised to ``log(1/0.07)`` and the scale clamped at 100 (Radford et
    al. 2021, §2.5). Returns `PairEmbeddings`; logits are ``scale · image @ text.T``."""

    def __init__(self, init_scale: float = 1 / 0.07, learn_scale: bool = True,
                 max_scale: float = 100.0) -> None:  # fmt: skip
        super().__init__()
        self.logit_scale = nn.Parameter(
            torch.tensor(math.log(init_scale)), requires_grad=learn_scale
        )
        self.max_scale = max_scale

    def forward(self, embeddings: tuple[torch.Tensor, torch.Tensor]) -> PairEmbeddings:
        image, text = embeddings
        scale = self.logit_scale.exp().clamp(max=self.max_scale)
        return PairEmbeddings(F.normalize(image, dim=-1), F.normalize(text, dim=-1), scale)


def info_nce(out: PairEmbeddings, image_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP): per pair ``i``, ``(CE_row(L)[i] + CE_col(L)[i]) / 2`` with
    ``L = scale · image @ text.T`` and the matching text of image ``i`` at column ``i``; returns
    the per-pair losses ``(B,)``. With ``image_ids``, every column whose pair shows the same
    image counts as a positive (uniform soft target over them), so several captions of one
    image in a batch are not pushed apart; with distinct ids this is exactly CLIP's loss."""
    logits = out.logit_scale * out.image.float() @ out.text.float().T
    n = logits.shape[0]
    if image_ids is None:
        positives = torch.eye(n, dtype=torch.bool, device=logits.device)
    else:
        ids = image_ids.to(logits.device).reshape(-1)
        positives = ids[:, None] == ids[None, :]
    soft = positives.float() / positives.float().sum(1, keepdim=True)
    i2t = -(soft * logits.log_softmax(1)).sum(1)
    t2i = -(soft * logits.T.log_softmax(1)).sum(1)
    return (i2t + t2i) / 2


class EmbeddingRecall(RetrievalRecall):
    """`RetrievalRecall` fed by `PairEmbeddings` and a ``{"image_id", "text_id"}`` target."""

    def update(self, output: Any, target: Any) -> None:
        super().update((output[0], output[1]), (target["image_id"], target["text_id"]))


@register_task
@dataclass
class ContrastiveRetrievalTask(_RetrievalOptions):
    """Image-text retrieval with a two-tower model (CLIP): `ContrastiveHead` on the
    ``"embeddings"`` features, symmetric InfoNCE loss (`info_nce`, positives by ``image_id``),
    recall from cosine similarity (`EmbeddingRecall`) when the gallery sizes are set.
    ``embed_dim`` is the embedding width (default: the backbone's `FeatureInfo.embed_dim`).
    Target field ``match``: ``{"image_id", "text_id"}`` (a ``label`` field, if present, is
    ignored)."""

    embed_dim: int = 0
    init_scale: float = 1 / 0.07
    learn_scale: bool = True
    input_fields: tuple[str, ...] = field(default=DUAL_INPUTS, kw_only=True)

    kind: ClassVar[str] = "retrieval_contrastive"
    features: ClassVar[str] = "embeddings"

    def build_head(self, info: FeatureInfo) -> nn.Module:
        if not self.embed_dim:
            self.embed_dim = info.embed_dim or info.pooled_dim
        return ContrastiveHead(self.init_scale, self.learn_scale)

    def loss(self, output: PairEmbeddings, target: Any) -> tuple[torch.Tensor, int]:
        ids = target.get("image_id") if isinstance(target, dict) else None
        per_pair = info_nce(output, ids)
        return per_pair.sum(), len(per_pair)

    def metrics(self) -> list[Metric]:
        if not self.num_images:
            return []
        if not self.embed_dim:
            raise ConfigError(f"task {self.name}: build the head (or set embed_dim) first")
        return [EmbeddingRecall(self.num_images, self.num_texts, self.embed_dim)]

    def options(self) -> dict[str, Any]:
        return {**super().options(), "embed_dim": self.embed_dim,
                "init_scale": self.init_scale, "learn_scale": self.learn_scale}  # fmt: skip


# --------------------------------------------------------------------------- CLIP zero-shot


class CosineClassifierHead(nn.Module):
    """Zero-shot CLIP logits: ``scale · cos(image_emb, class_emb)`` → ``(B, C)``. ``scale`` is
    ``exp(logit_scale)``; CLIP's trained value is 100 (its clamp), frozen by default."""

    def __init__(self, scale: float = 100.0, learn_scale: bool = False) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(scale)), requires_grad=learn_scale)

    def forward(self, features: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        image, classes = features
        if image.shape[-1] != classes.shape[-1]:
            raise ConfigError(
                f"image embeddings {tuple(image.shape)} and class-text embeddings "
                f"{tuple(classes.shape)} must have the same width"
            )
        return self.logit_scale.exp() * F.normalize(image, dim=-1) @ F.normalize(classes, dim=-1).T


@register_task
@dataclass
class ZeroShotClassificationTask(Task):
    """CLIP classification by class-name prompts (zero-shot, CoOp, CoCoOp, APT on CLIP).

    ``prompts()`` are ``template.format(name)`` per class ("a photo of a {}.", the hand-crafted
    prompt of CoOp's base-to-new protocol); the model encodes them (feature kind
    ``"class_embeddings"``). Logits = `CosineClassifierHead`; loss cross-entropy; metric top-1
    (%). Base-to-new: evaluate ``task`` on the base classes and ``task.with_classes(new)`` on the
    new ones (the head has no per-class parameters), then `base_to_new`."""

    class_names: tuple[str, ...] = ()
    template: str = "a photo of a {}."
    scale: float = 100.0
    learn_scale: bool = False
    input_fields: tuple[str, ...] = field(default=("pixel_values",), kw_only=True)

    kind: ClassVar[str] = "zero_shot"
    features: ClassVar[str] = "class_embeddings"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.class_names = tuple(str(c) for c in self.class_names)
        if len(self.class_names) < 2 or len(set(self.class_names)) != len(self.class_names):
            raise ConfigError(
                f"task {self.name}: class_names must hold at least two distinct names, got "
                f"{list(self.class_names)[:5]}"
            )
        if self.template.count("{}") != 1:
            raise ConfigError(
                f"task {self.name}: template must contain exactly one '{{}}', got {self.template!r}"
            )
        if not self.scale > 0:
            raise ConfigError(f"task {self.name}: scale must be > 0, got {self.scale}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def prompts(self) -> list[str]:
        """One text prompt per class, in class order."""
        return [self.template.format(name) for name in self.class_names]

    def with_classes(self, class_names: tuple[str, ...] | list[str]) -> ZeroShotClassificationTask:
        """The same task on another class set (e.g. the new classes of base-to-new)."""
        return replace(self, class_names=tuple(class_names))

    def build_head(self, info: FeatureInfo) -> nn.Module:
        return CosineClassifierHead(self.scale, self.learn_scale)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, int]:
        return F.cross_entropy(output.float(), target.long(), reduction="sum"), len(target)

    def metrics(self) -> list[Metric]:
        return [TopKAccuracy(1)]

    def options(self) -> dict[str, Any]:
        return {**super().options(), "class_names": list(self.class_names),
                "template": self.template, "scale": self.scale,
                "learn_scale": self.learn_scale}  # fmt: skip


def _accuracy(result: float | dict[str, float]) -> float:
    if isinstance(result, dict):
        for key in ("top1", "accuracy", "acc"):
            if key in result:
                return float(result[key])
        raise ConfigError(f"no accuracy ('top1') among the result's keys {sorted(result)}")
    return float(result)


def base_to_new(
    results_base: float | dict[str, float], results_new: float | dict[str, float]
) -> dict[str, float]:
    """CoCoOp's base-to-new summary: base accuracy, new accuracy and their harmonic mean
    ``HM = 2·base·new / (base + new)`` (Zhou et al. 2022, §4.1). Accepts numbers or metric
    dicts holding ``top1``."""
    base, new = _accuracy(results_base), _accuracy(results_new)
    hm = 2 * base * new / (base + new) if base + new > 0 else 0.0
    return {"base": base, "new": new, "hm": hm}
