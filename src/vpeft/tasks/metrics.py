"""Streaming metrics for dense, VQA and retrieval tasks (design.md, layer 3).

Every metric implements `Metric`: ``update`` per batch, ``state()`` a 1-D float64 tensor whose
element-wise sum over data shards equals the state of the whole dataset (so an all-reduce SUM
under DDP gives the exact single-process result), ``compute(state)`` the named values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .base import Metric


def _state_of(metric: Any, state: torch.Tensor | None, size: int) -> torch.Tensor:
    s = metric._state if state is None else state.to(torch.float64).flatten()
    if s.numel() != size:
        raise ConfigError(
            f"{type(metric).__name__}: state has {s.numel()} values, expected {size}; pass the "
            "state of a metric built with the same options"
        )
    return s


def miou_from_confusion(confusion: torch.Tensor) -> tuple[float, float, torch.Tensor]:
    """(mIoU %, pixel accuracy %, per-class IoU % with NaN for absent classes) of a K×K
    confusion matrix (rows = target, columns = prediction).

    ``IoU_c = TP_c / (TP_c + FP_c + FN_c)``. A class with ``TP + FP + FN = 0`` (absent from both
    the targets and the predictions of the whole evaluated set) has no defined IoU and is left
    out of the mean; every other class counts, including those only predicted (IoU 0)."""
    confusion = confusion.to(torch.float64)
    tp = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
    present = union > 0
    miou = 100.0 * iou[present].mean().item() if present.any() else float("nan")
    total = confusion.sum().item()
    acc = 100.0 * tp.sum().item() / total if total > 0 else float("nan")
    return miou, acc, 100.0 * iou


class ConfusionMIoU(Metric):
    """Mean intersection-over-union (%) and pixel accuracy (%) from a streamed confusion matrix.

    ``update(output, target)``: ``output`` logits ``(B, K, H, W)`` (prediction = argmax over K)
    or integer predictions ``(B, H, W)``; ``target`` ``(B, H, W)`` with ``ignore_index`` for
    unlabelled pixels. State: the K×K confusion matrix (row = target class, column =
    prediction), flattened. See `miou_from_confusion` for the absent-class rule."""

    names: ClassVar[tuple[str, ...]] = ("miou", "pixel_acc")
    higher_is_better: ClassVar[tuple[bool, ...]] = (True, True)

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._state = torch.zeros(num_classes * num_classes, dtype=torch.float64)

    def _predictions(self, output: torch.Tensor) -> torch.Tensor:
        return output.argmax(1) if output.dim() == 4 else output

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        pred = self._predictions(output.detach()).reshape(-1).long().cpu()
        target = target.detach().reshape(-1).long().cpu()
        if pred.shape != target.shape:
            raise ConfigError(
                f"{type(self).__name__}: {pred.numel()} predicted pixels but {target.numel()} "
                "target pixels; upsample the output to the target size first"
            )
        keep = target != self.ignore_index
        pred, target = pred[keep], target[keep]
        bad = (target < 0) | (target >= self.num_classes)
        if bad.any():
            raise ConfigError(
                f"{type(self).__name__}: target holds label {int(target[bad][0])} outside "
                f"[0, {self.num_classes}) that is not ignore_index={self.ignore_index}"
            )
        k = self.num_classes
        counts = torch.bincount(target * k + pred.clamp(0, k - 1), minlength=k * k)
        self._state += counts.to(torch.float64)

    def state(self) -> torch.Tensor:
        return self._state.clone()

    def confusion(self, state: torch.Tensor | None = None) -> torch.Tensor:
        """The K×K confusion matrix (rows = target, columns = prediction)."""
        k = self.num_classes
        return _state_of(self, state, k * k).reshape(k, k)

    def compute(self, state: torch.Tensor | None = None) -> dict[str, float]:
        miou, acc, _ = miou_from_confusion(self.confusion(state))
        return {"miou": miou, "pixel_acc": acc}


class BinaryMIoU(ConfusionMIoU):
    """Two-class (background / foreground) mIoU (%) of probabilities thresholded at
    ``threshold`` (``p > threshold`` is foreground), over the dataset-level confusion matrix:
    ``mIoU = (IoU_bg + IoU_fg) / 2``. ``output``: probabilities ``(B, 1, H, W)`` or
    ``(B, H, W)`` in [0, 1] (or logits with ``from_logits=True``); ``target``: binary maps
    (values > 0.5 are foreground) with ``ignore_index`` for unlabelled pixels."""

    names: ClassVar[tuple[str, ...]] = ("miou", "pixel_acc")

    def __init__(
        self, threshold: float = 0.5, from_logits: bool = False, ignore_index: int = 255
    ) -> None:
        super().__init__(2, ignore_index)
        self.threshold = threshold
        self.from_logits = from_logits

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        prob = _probabilities(output, self.from_logits)
        ignore = target == self.ignore_index
        binary = (target.float() > 0.5).long()
        binary[ignore] = self.ignore_index
        super().update((prob > self.threshold).long(), binary)


def _probabilities(output: torch.Tensor, from_logits: bool) -> torch.Tensor:
    output = output.detach().float()
    if output.dim() == 4:
        if output.shape[1] != 1:
            raise ConfigError(f"expected one output channel, got shape {tuple(output.shape)}")
        output = output[:, 0]
    return torch.sigmoid(output) if from_logits else output


#: Thresholds of the multi-task saliency evaluation (ASTMT / MTI-Net / ATRC): 0.2, 0.25, …, 0.9.
SALIENCY_THRESHOLDS: tuple[float, ...] = tuple(0.2 + 0.05 * i for i in range(15))


class MaxFMeasure(Metric):
    """Saliency: maximum F-measure over thresholds, and the max-over-thresholds mean IoU.

    For each threshold ``t`` a pixel is predicted salient when ``p > t``. Per image ``i``:
    ``P_i(t) = TP/(TP+FP)``, ``R_i(t) = TP/(TP+FN)``, ``IoU_i(t) = TP/(TP+FP+FN)``; an empty
    denominator gives 1 (nothing predicted / nothing salient / both empty count as correct).

    - ``max_f`` (default headline, see ``headline``) follows the multi-task convention (ASTMT,
      MTI-Net, ATRC): precision and recall are **averaged over images** per threshold, then
      ``F_β(t) = (1+β²) P̄(t) R̄(t) / (β² P̄(t) + R̄(t))`` with ``β² = beta2`` (0.3, the saliency
      convention), and ``max_f = max_t F_β(t)``.
    - ``miou``: ``max_t mean_i IoU_i(t)`` (how those codebases report saliency "mIoU").
    - ``max_f_dataset``: ``F_β`` from the **dataset-level** TP/FP/FN counts, max over ``t``.

    All values in percent. State (all sums, so shard-summable): ``[n_images, ΣP_i(t), ΣR_i(t),
    ΣIoU_i(t), TP(t), FP(t), FN(t)]`` with one entry per threshold in each block. ``target``
    pixels equal to ``ignore_index`` are left out; other values > 0.5 are salient.
    """

    names: ClassVar[tuple[str, ...]] = ("max_f", "miou", "max_f_dataset")
    higher_is_better: ClassVar[tuple[bool, ...]] = (True, True, True)

    def __init__(
        self,
        thresholds: Sequence[float] = SALIENCY_THRESHOLDS,
        beta2: float = 0.3,
        from_logits: bool = False,
        ignore_index: int = 255,
        headline: str = "max_f",
    ) -> None:
        if len(thresholds) < 1 or beta2 <= 0:
            raise ConfigError("MaxFMeasure needs at least one threshold and beta2 > 0")
        if headline not in type(self).names:
            raise ConfigError(f"headline must be one of {type(self).names}, got {headline!r}")
        self.names = (headline, *[n for n in type(self).names if n != headline])  # type: ignore[misc]
        self.thresholds = torch.tensor(list(thresholds), dtype=torch.float64)
        self.beta2 = beta2
        self.from_logits = from_logits
        self.ignore_index = ignore_index
        self._state = torch.zeros(1 + 6 * len(thresholds), dtype=torch.float64)

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        prob = _probabilities(output, self.from_logits).double().cpu().flatten(1)  # (B, N)
        target = target.detach().cpu().reshape(prob.shape[0], -1)
        valid = (target != self.ignore_index).unsqueeze(1)  # (B, 1, N)
        gt = ((target.double() > 0.5).unsqueeze(1)) & valid
        pred = (prob.unsqueeze(1) > self.thresholds.view(1, -1, 1)) & valid  # (B, T, N)
        tp = (pred & gt).sum(-1).double()
        fp = (pred & ~gt).sum(-1).double()
        fn = (~pred & gt).sum(-1).double()

        def ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
            return torch.where(den > 0, num / den.clamp_min(1), torch.ones_like(num))

        per_image = [ratio(tp, tp + fp), ratio(tp, tp + fn), ratio(tp, tp + fp + fn)]
        counts = [tp, fp, fn]
        blocks = [torch.tensor([float(prob.shape[0])], dtype=torch.float64)]
        blocks += [b.sum(0) for b in per_image + counts]
        self._state += torch.cat(blocks)

    def state(self) -> torch.Tensor:
        return self._state.clone()

    def _f(self, p: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        den = self.beta2 * p + r
        return torch.where(den > 0, (1 + self.beta2) * p * r / den.clamp_min(1e-300), 0 * p)

    def compute(self, state: torch.Tensor | None = None) -> dict[str, float]:
        t = len(self.thresholds)
        s = _state_of(self, state, 1 + 6 * t)
        n = max(s[0].item(), 1.0)
        psum, rsum, isum, tp, fp, fn = s[1:].reshape(6, t)
        f_image = self._f(psum / n, rsum / n)
        p_data = torch.where(tp + fp > 0, tp / (tp + fp).clamp_min(1), torch.ones_like(tp))
        r_data = torch.where(tp + fn > 0, tp / (tp + fn).clamp_min(1), torch.ones_like(tp))
        return {
            "max_f": 100.0 * f_image.max().item(),
            "miou": 100.0 * (isum / n).max().item(),
            "max_f_dataset": 100.0 * self._f(p_data, r_data).max().item(),
        }


#: Angle thresholds (degrees) of the usual "% of pixels within t°" normals metrics.
ANGLE_THRESHOLDS: tuple[float, ...] = (11.25, 22.5, 30.0)


class NormalsError(Metric):
    """Surface normals: angular error ``θ = acos(clamp(<p̂, t̂>, -1, 1))`` in degrees between the
    unit-normalised prediction ``p̂`` and target ``t̂`` over **valid pixels** (target norm > 0),
    pooled over all valid pixels of the dataset.

    Values: ``mean`` (headline, mean θ, the PASCAL-Context "mErr"), ``rmse`` = ``sqrt(mean θ²)``,
    ``within_11.25`` / ``within_22.5`` / ``within_30`` (% of pixels with θ < t) and
    ``median_approx``: the median is not streamable exactly, so it is read from a histogram of θ
    with ``bin_degrees``-wide bins (linear interpolation inside the bin; error below one bin).

    ``output``: ``(B, 3, H, W)``; ``target``: ``(B, 3, H, W)`` (zero vectors = invalid) or a
    tuple ``(normals, mask)`` with a boolean ``(B, H, W)`` mask of pixels to score. State:
    ``[count, Σθ, Σθ², count θ<t for each threshold, histogram]``.
    """

    names: ClassVar[tuple[str, ...]] = (
        "mean",
        "rmse",
        "median_approx",
        "within_11.25",
        "within_22.5",
        "within_30",
    )
    higher_is_better: ClassVar[tuple[bool, ...]] = (False, False, False, True, True, True)

    def __init__(self, bin_degrees: float = 0.1) -> None:
        if not 0 < bin_degrees <= 180:
            raise ConfigError(f"bin_degrees must be in (0, 180], got {bin_degrees}")
        self.bin_degrees = bin_degrees
        self.num_bins = math.ceil(180.0 / bin_degrees)
        self._size = 3 + len(ANGLE_THRESHOLDS) + self.num_bins
        self._state = torch.zeros(self._size, dtype=torch.float64)

    def update(self, output: torch.Tensor, target: Any) -> None:
        mask = None
        if isinstance(target, tuple | list):
            target, mask = target
        angle = angular_error(output.detach(), target.detach(), mask)
        hist = torch.bincount(
            (angle / self.bin_degrees).long().clamp(0, self.num_bins - 1), minlength=self.num_bins
        )
        within = [(angle < t).sum() for t in ANGLE_THRESHOLDS]
        head = torch.stack([torch.tensor(angle.numel()), angle.sum(), (angle**2).sum(), *within])
        self._state += torch.cat([head.double(), hist.double()])

    def state(self) -> torch.Tensor:
        return self._state.clone()

    def compute(self, state: torch.Tensor | None = None) -> dict[str, float]:
        s = _state_of(self, state, self._size)
        n = s[0].item()
        if n == 0:
            return {name: float("nan") for name in self.names}
        within = s[3 : 3 + len(ANGLE_THRESHOLDS)]
        hist = s[3 + len(ANGLE_THRESHOLDS) :]
        cum = hist.cumsum(0)
        b = int(torch.searchsorted(cum, torch.tensor(n / 2, dtype=torch.float64)).item())
        before = cum[b - 1].item() if b > 0 else 0.0
        median = (b + (n / 2 - before) / max(hist[b].item(), 1.0)) * self.bin_degrees
        out = {
            "mean": s[1].item() / n,
            "rmse": math.sqrt(s[2].item() / n),
            "median_approx": median,
        }
        for t, c in zip(ANGLE_THRESHOLDS, within.tolist(), strict=True):
            out[f"within_{t:g}"] = 100.0 * c / n
        return out


def angular_error(
    prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Angles (degrees, float64, 1-D) between unit-normalised ``prediction`` and ``target``
    ``(B, 3, H, W)`` at valid pixels: target norm > 0 and ``mask`` (if given) true."""
    if prediction.shape != target.shape or prediction.dim() != 4 or prediction.shape[1] != 3:
        raise ConfigError(
            f"normals must be (B, 3, H, W) of equal shape, got {tuple(prediction.shape)} and "
            f"{tuple(target.shape)}"
        )
    p = prediction.double().cpu()
    t = target.double().cpu()
    valid = t.norm(dim=1) > 0
    if mask is not None:
        valid &= mask.bool().cpu().reshape(valid.shape)
    cos = (F.normalize(p, dim=1) * F.normalize(t, dim=1)).sum(1)
    return torch.rad2deg(torch.acos(cos[valid].clamp(-1.0, 1.0)))


class VQAScore(Metric):
    """VQA soft accuracy (%): per question ``acc = s[argmax logits]`` where the target vector
    holds each candidate answer's soft score ``s_a = min(#annotators who gave a / 3, 1)``;
    averaged over questions. (The official evaluator averages min(#matches/3, 1) over the 10
    leave-one-annotator-out subsets, which is what soft scores precomputed that way encode; this
    metric scores whatever soft targets the dataset provides.) State: ``[Σ acc, count]``."""

    names: ClassVar[tuple[str, ...]] = ("vqa_score",)
    higher_is_better: ClassVar[tuple[bool, ...]] = (True,)

    def __init__(self) -> None:
        self._state = torch.zeros(2, dtype=torch.float64)

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        if output.shape != target.shape or output.dim() != 2:
            raise ConfigError(
                "VQAScore expects logits and soft-score targets of shape (B, num_answers), got "
                f"{tuple(output.shape)} and {tuple(target.shape)}"
            )
        pred = output.detach().argmax(-1, keepdim=True)
        score = target.detach().double().gather(-1, pred.to(target.device)).sum().cpu()
        self._state += torch.stack([score, torch.tensor(float(len(target)))]).double()

    def state(self) -> torch.Tensor:
        return self._state.clone()

    def compute(self, state: torch.Tensor | None = None) -> dict[str, float]:
        total, count = _state_of(self, state, 2).tolist()
        return {"vqa_score": 100.0 * total / count if count else float("nan")}


def recall_at_k(
    similarity: torch.Tensor, positives: torch.Tensor, ks: Sequence[int] = (1, 5, 10)
) -> dict[int, float]:
    """Recall@K (%) of a ``(Q, G)`` query-by-gallery similarity matrix: the share of queries
    with at least one positive (``positives[q, g]`` true) among their K most similar gallery
    items. Ties are broken by the gallery order (``torch.topk``). Image→text retrieval with
    several captions per image: ``recall_at_k(S, P)``; text→image: ``recall_at_k(S.T, P.T)``."""
    if similarity.shape != positives.shape or similarity.dim() != 2:
        raise ConfigError(
            f"similarity and positives must both be (Q, G), got {tuple(similarity.shape)} and "
            f"{tuple(positives.shape)}"
        )
    if not positives.bool().any(1).all():
        raise ConfigError("every query needs at least one positive gallery item")
    order = similarity.topk(min(max(ks), similarity.shape[1]), dim=1).indices
    hits = positives.bool().gather(1, order)
    return {k: 100.0 * hits[:, :k].any(1).double().mean().item() for k in ks}


class RetrievalRecall(Metric):
    """Image↔text Recall@K from embeddings gathered over the evaluation set.

    Summable by construction: the state is a fixed-size buffer indexed by **global** sample
    ids (every process adds its rows into zeros elsewhere), so summing shards gives the whole:
    ``[Σ image embeddings (num_images×dim), image counts, Σ text embeddings (num_texts×dim),
    text counts, Σ image id of each text]``. Rows seen several times (an image repeated with
    each of its captions, possibly on several processes) are averaged, which returns the same
    embedding. ``update(output=(image_emb, text_emb), target=(image_ids, text_ids))`` for
    batches of matching pairs. Similarity = cosine. Size grows with the dataset
    ((num_images + num_texts)·dim floats), fine for Flickr30k/COCO test sets.

    Values: ``i2t_r1/5/10``, ``t2i_r1/5/10`` and ``rsum`` (their sum, the usual headline)."""

    higher_is_better: ClassVar[tuple[bool, ...]] = (True,) * 7

    def __init__(self, num_images: int, num_texts: int, dim: int, ks: Sequence[int] = (1, 5, 10)):
        self.num_images, self.num_texts, self.dim, self.ks = num_images, num_texts, dim, tuple(ks)
        self.names = (  # type: ignore[misc]
            "rsum",
            *[f"i2t_r{k}" for k in self.ks],
            *[f"t2i_r{k}" for k in self.ks],
        )
        self._size = num_images * (dim + 1) + num_texts * (dim + 2)
        self._state = torch.zeros(self._size, dtype=torch.float64)

    def _split(self, s: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ni, nt, d = self.num_images, self.num_texts, self.dim
        img, icount, txt, tcount, tid = torch.split(s, [ni * d, ni, nt * d, nt, nt])
        return img.view(ni, d), icount, txt.view(nt, d), tcount, tid

    def update(self, output: Any, target: Any) -> None:
        image_emb, text_emb = (o.detach().double().cpu() for o in output)
        image_ids, text_ids = (t.detach().long().cpu() for t in target)
        img, icount, txt, tcount, tid = self._split(self._state)
        img.index_add_(0, image_ids, image_emb)
        icount.index_add_(0, image_ids, torch.ones(len(image_ids), dtype=torch.float64))
        txt.index_add_(0, text_ids, text_emb)
        tcount.index_add_(0, text_ids, torch.ones(len(text_ids), dtype=torch.float64))
        tid.index_add_(0, text_ids, image_ids.double())

    def state(self) -> torch.Tensor:
        return self._state.clone()

    def compute(self, state: torch.Tensor | None = None) -> dict[str, float]:
        img, icount, txt, tcount, tid = self._split(_state_of(self, state, self._size))
        if (icount == 0).any() or (tcount == 0).any():
            raise ConfigError(
                "RetrievalRecall: some images or texts were never seen; evaluate the whole set "
                "(num_images / num_texts must match the data)"
            )
        img = F.normalize(img / icount[:, None], dim=1)
        txt = F.normalize(txt / tcount[:, None], dim=1)
        owner = torch.round(tid / tcount).long()
        positives = owner[None, :] == torch.arange(self.num_images)[:, None]  # (images, texts)
        sim = img @ txt.T
        i2t = recall_at_k(sim, positives, self.ks)
        t2i = recall_at_k(sim.T, positives.T, self.ks)
        out = {f"i2t_r{k}": v for k, v in i2t.items()} | {f"t2i_r{k}": v for k, v in t2i.items()}
        return {"rsum": sum(out.values()), **out}
