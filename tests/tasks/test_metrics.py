"""Dense / VQA / retrieval metrics: hand-computed examples, references, shard additivity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix, jaccard_score, precision_recall_curve

from vpeft.tasks.metrics import (
    BinaryMIoU,
    ConfusionMIoU,
    MaxFMeasure,
    NormalsError,
    RetrievalRecall,
    VQAScore,
    angular_error,
    recall_at_k,
)


def _shards_sum(make, batches):
    """State of the whole set vs the sum of two shards' states."""
    whole, a, b = make(), make(), make()
    for i, (out, tgt) in enumerate(batches):
        whole.update(out, tgt)
        (a if i % 2 == 0 else b).update(out, tgt)
    assert torch.allclose(whole.state(), a.state() + b.state(), rtol=0, atol=1e-9)
    return whole


def test_confusion_miou_hand_example():
    # target [0,0,1,1,2(ignored=255)], pred [0,1,1,1,0]; class 2 absent from both -> excluded
    target = torch.tensor([[[0, 0, 1, 1, 255]]])
    pred = torch.tensor([[[0, 1, 1, 1, 0]]])
    m = ConfusionMIoU(3)
    m.update(pred, target)
    # IoU0 = 1/(1+0+1) = 0.5 ; IoU1 = 2/(2+1+0) = 2/3 ; mean over present classes
    out = m.compute()
    assert out["miou"] == pytest.approx(100 * (0.5 + 2 / 3) / 2)
    assert out["pixel_acc"] == pytest.approx(75.0)


def test_confusion_miou_matches_sklearn_and_shards():
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(4):
        logits = torch.randn(2, 5, 6, 7, generator=g)
        target = torch.randint(0, 5, (2, 6, 7), generator=g)
        target[0, 0, :3] = 255
        batches.append((logits, target))
    m = _shards_sum(lambda: ConfusionMIoU(5), batches)
    y = torch.cat([t.flatten() for _, t in batches]).numpy()
    p = torch.cat([o.argmax(1).flatten() for o, _ in batches]).numpy()
    keep = y != 255
    ref = confusion_matrix(y[keep], p[keep], labels=list(range(5)))
    assert np.array_equal(m.confusion().numpy(), ref)
    jac = jaccard_score(y[keep], p[keep], average="macro", labels=list(range(5)))
    assert m.compute()["miou"] == pytest.approx(100 * jac)


def test_confusion_miou_matches_torchmetrics():
    tm = pytest.importorskip("torchmetrics.classification")
    g = torch.Generator().manual_seed(1)
    logits, target = (
        torch.randn(3, 4, 5, 5, generator=g),
        torch.randint(0, 4, (3, 5, 5), generator=g),
    )
    m = ConfusionMIoU(4)
    m.update(logits, target)
    ref = tm.MulticlassJaccardIndex(num_classes=4, average="macro")(logits.argmax(1), target)
    assert m.compute()["miou"] == pytest.approx(100 * ref.item(), abs=1e-4)


def test_confusion_miou_rejects_bad_labels():
    m = ConfusionMIoU(3)
    with pytest.raises(ValueError, match="outside"):
        m.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 7))


def test_binary_miou_hand_example():
    prob = torch.tensor([[[0.9, 0.6, 0.4, 0.1]]])
    target = torch.tensor([[[1, 0, 1, 0]]])
    m = BinaryMIoU()
    m.update(prob, target)
    # pred [1,1,0,0]: fg IoU = 1/3, bg IoU = 1/3
    assert m.compute()["miou"] == pytest.approx(100 / 3)


def test_max_f_hand_example():
    # one image, thresholds 0.5 only: pred [1,1,0,0], gt [1,0,1,0] -> P = R = 0.5
    m = MaxFMeasure(thresholds=(0.5,), beta2=0.3)
    m.update(torch.tensor([[[0.9, 0.6, 0.4, 0.1]]]), torch.tensor([[[1, 0, 1, 0]]]))
    out = m.compute()
    assert out["max_f"] == pytest.approx(50.0)
    assert out["miou"] == pytest.approx(100 / 3)
    # second image: all predicted, gt all salient -> P = R = IoU = 1; per-image means 0.75
    m.update(torch.full((1, 1, 4), 0.8), torch.ones(1, 1, 4))
    out = m.compute()
    assert out["max_f"] == pytest.approx(75.0)
    assert out["miou"] == pytest.approx(100 * (1 / 3 + 1) / 2)
    # dataset level: TP 5, FP 1, FN 1 -> P = R = 5/6
    assert out["max_f_dataset"] == pytest.approx(100 * 5 / 6)


def test_max_f_dataset_matches_sklearn_curve_and_shards():
    thresholds = (0.2, 0.4, 0.6, 0.8)
    levels = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9])  # strictly between thresholds
    g = torch.Generator().manual_seed(2)
    batches = []
    for _ in range(3):
        prob = levels[torch.randint(0, 5, (2, 1, 4, 4), generator=g)]
        target = (torch.rand(2, 4, 4, generator=g) < prob[:, 0]).long()
        batches.append((prob, target))
    m = _shards_sum(lambda: MaxFMeasure(thresholds), batches)
    scores = torch.cat([p.flatten() for p, _ in batches]).numpy()
    labels = torch.cat([t.flatten() for _, t in batches]).numpy()
    prec, rec, thr = precision_recall_curve(labels, scores)
    # sklearn's points at score >= 0.3/0.5/0.7/0.9 equal ours at > 0.2/0.4/0.6/0.8
    keep = np.isclose(thr.astype(np.float64)[:, None], [0.3, 0.5, 0.7, 0.9], atol=1e-6).any(1)
    assert keep.sum() == 4
    p, r = prec[:-1][keep], rec[:-1][keep]
    f = 1.3 * p * r / (0.3 * p + r)
    assert m.compute()["max_f_dataset"] == pytest.approx(100 * f.max())


def test_normals_error_hand_example_and_shards():
    pred = torch.zeros(1, 3, 1, 3)
    target = torch.zeros(1, 3, 1, 3)
    pred[0, :, 0, 0] = torch.tensor([0.0, 0.0, 2.0])  # scale ignored: 0 deg
    target[0, :, 0, 0] = torch.tensor([0.0, 0.0, 1.0])
    pred[0, :, 0, 1] = torch.tensor([1.0, 0.0, 1.0])  # 45 deg
    target[0, :, 0, 1] = torch.tensor([0.0, 0.0, 1.0])
    pred[0, :, 0, 2] = torch.tensor([1.0, 0.0, 0.0])  # target zero -> invalid
    m = NormalsError()
    m.update(pred, target)
    out = m.compute()
    assert out["mean"] == pytest.approx(22.5)
    assert out["rmse"] == pytest.approx(math.sqrt(45.0**2 / 2))
    assert out["within_11.25"] == pytest.approx(50.0)
    assert out["within_30"] == pytest.approx(50.0)

    g = torch.Generator().manual_seed(3)
    batches = [(torch.randn(2, 3, 5, 5, generator=g), torch.randn(2, 3, 5, 5, generator=g))]
    batches += [(torch.randn(1, 3, 5, 5, generator=g), torch.randn(1, 3, 5, 5, generator=g))]
    whole = _shards_sum(NormalsError, batches)
    angles = torch.cat([angular_error(p, t) for p, t in batches]).numpy()
    res = whole.compute()
    assert res["mean"] == pytest.approx(angles.mean())
    assert res["median_approx"] == pytest.approx(np.median(angles), abs=0.1)


def test_normals_error_mask():
    pred = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).repeat(1, 1, 1, 2)
    target = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1).repeat(1, 1, 1, 2)
    m = NormalsError()
    m.update(pred, (target, torch.tensor([[[True, False]]])))
    assert m.compute()["mean"] == pytest.approx(90.0)
    assert m.state()[0] == 1


def test_vqa_score_hand_example_and_shards():
    logits = torch.tensor([[0.1, 2.0, 0.3], [3.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    target = torch.tensor([[0.0, 1 / 3, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 2 / 3]])
    whole = _shards_sum(VQAScore, [(logits[:2], target[:2]), (logits[2:], target[2:])])
    assert whole.compute()["vqa_score"] == pytest.approx(100 * (1 / 3 + 1 + 2 / 3) / 3)


def test_recall_at_k_hand_example():
    sim = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.3, 0.95]])
    pos = torch.tensor([[False, True, False], [True, False, False]])
    r = recall_at_k(sim, pos, ks=(1, 2, 3))
    assert r == {1: 0.0, 2: 50.0, 3: 100.0}


def test_recall_at_k_matches_torchmetrics():
    rm = pytest.importorskip("torchmetrics.retrieval")
    g = torch.Generator().manual_seed(4)
    sim = torch.randn(6, 10, generator=g)
    pos = torch.rand(6, 10, generator=g) < 0.2
    pos[:, 0] |= ~pos.any(1)
    ours = recall_at_k(sim, pos, ks=(1, 3))
    for k in (1, 3):
        hit = rm.RetrievalHitRate(top_k=k)
        idx = torch.arange(6)[:, None].expand(6, 10)
        assert ours[k] == pytest.approx(
            100 * hit(sim.flatten(), pos.flatten(), idx.flatten()).item()
        )


def test_retrieval_recall_accumulator_and_shards():
    g = torch.Generator().manual_seed(5)
    images = torch.randn(3, 4, generator=g)
    texts = torch.randn(6, 4, generator=g)
    owner = torch.tensor([0, 0, 1, 1, 2, 2])  # two captions per image
    batches = [
        ((images[owner[i : i + 2]], texts[i : i + 2]), (owner[i : i + 2], torch.arange(i, i + 2)))
        for i in (0, 2, 4)
    ]
    whole = _shards_sum(lambda: RetrievalRecall(3, 6, 4, ks=(1, 2)), batches)
    sim = (
        torch.nn.functional.normalize(images, dim=1) @ torch.nn.functional.normalize(texts, dim=1).T
    )
    pos = owner[None, :] == torch.arange(3)[:, None]
    out = whole.compute()
    assert out["i2t_r1"] == pytest.approx(recall_at_k(sim, pos, (1,))[1])
    assert out["t2i_r2"] == pytest.approx(recall_at_k(sim.T, pos.T, (2,))[2])
    assert out["rsum"] == pytest.approx(sum(v for k, v in out.items() if k != "rsum"))
