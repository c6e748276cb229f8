"""Dense tasks: heads, loss definitions, registry round trip, Δm with the paper's numbers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vpeft.tasks import (
    FeatureInfo,
    NormalsTask,
    SaliencyTask,
    SegmentationTask,
    delta_m,
    pascal_mt_tasks,
    task_from_json,
)

INFO = FeatureInfo(pooled_dim=16, map_dims=(4, 8, 12, 16), map_strides=(4, 8, 16, 32))


def _maps(batch: int = 2) -> list[torch.Tensor]:
    return [
        torch.randn(batch, c, 64 // s, 64 // s)
        for c, s in zip(INFO.map_dims, (4, 8, 16, 32), strict=True)
    ]


def test_pascal_tasks_heads_shapes_and_names():
    tasks = pascal_mt_tasks(embed_dim=8)
    assert [t.name for t in tasks] == ["semseg", "parts", "saliency", "normals"]
    assert [t.target_field for t in tasks] == ["semseg", "parts", "saliency", "normals"]
    maps = _maps()
    for task, k in zip(tasks, (21, 7, 1, 3), strict=True):
        assert task.features == "maps"
        out = task.build_head(INFO)(maps, (64, 64))
        assert out.shape == (2, k, 64, 64)
        assert task_from_json(task.to_json()) == task


def test_build_head_without_maps_is_a_clear_error():
    with pytest.raises(ValueError, match="multi-scale"):
        SegmentationTask("seg", num_classes=3).build_head(FeatureInfo(pooled_dim=8))


def test_segmentation_loss_is_sum_of_per_sample_means():
    task = SegmentationTask("seg", num_classes=3)
    logits = torch.randn(2, 3, 2, 2)
    target = torch.tensor([[[0, 1], [2, 255]], [[255, 255], [255, 1]]])
    loss, n = task.loss(logits, target)
    ce = F.cross_entropy(logits, target, ignore_index=255, reduction="none")
    expected = ce[0].sum() / 3 + ce[1].sum() / 1
    assert n == 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_saliency_balanced_bce_hand_example():
    task = SaliencyTask("sal")
    logits = torch.tensor([[[[0.0, 1.0], [-1.0, 2.0]]]])
    target = torch.tensor([[[1, 0], [0, 0]]])
    loss, n = task.loss(logits, target)
    w = 3 / 4  # share of negatives weights the positives
    s = torch.sigmoid(logits[0, 0])
    expected = (
        -(w * math.log(s[0, 0]) + (1 - w) * sum(math.log(1 - s.flatten()[i]) for i in (1, 2, 3)))
        / 4
    )
    assert n == 1
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_normals_loss_l1_on_unit_predictions_over_valid_pixels():
    task = NormalsTask("normals")
    out = torch.zeros(1, 3, 1, 2)
    out[0, :, 0, 0] = torch.tensor([0.0, 3.0, 4.0])  # -> (0, .6, .8)
    out[0, :, 0, 1] = torch.tensor([1.0, 0.0, 0.0])
    target = torch.zeros(1, 3, 1, 2)
    target[0, :, 0, 0] = torch.tensor([0.0, 0.0, 1.0])  # pixel 1 invalid (zero)
    loss, n = task.loss(out, target)
    assert n == 1
    assert loss.item() == pytest.approx(0.6 + 0.2)


def test_metrics_headlines():
    semseg, parts, sal, normals = pascal_mt_tasks()
    assert parts.metrics()[0].num_classes == 7
    assert semseg.metrics()[0].names[0] == "miou"
    assert sal.metrics()[0].names[0] == "miou"
    assert normals.metrics()[0].names[0] == "mean"


def test_delta_m_with_paper_single_task_numbers():
    single = {"semseg": 67.21, "parts": 61.93, "saliency": 62.35, "normals": 17.97}
    multi = {"semseg": 68.00, "parts": 60.00, "saliency": 63.00, "normals": 17.50}
    # by hand: (+0.79/67.21 - 1.93/61.93 + 0.65/62.35 + 0.47/17.97) / 4 * 100
    hand = (0.011754 - 0.031164 + 0.010425 + 0.026155) / 4 * 100
    assert delta_m(multi, single, ["normals"]) == pytest.approx(hand, abs=1e-3)
    assert delta_m(multi, single, {"normals": True, "semseg": False}) == pytest.approx(
        hand, abs=1e-3
    )
    assert delta_m(single, single, ["normals"]) == 0.0
    with pytest.raises(ValueError, match="same"):
        delta_m({"semseg": 1.0}, single, [])
