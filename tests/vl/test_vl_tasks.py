"""Vision-language tasks: heads faithful to transformers' ViLT heads, losses and metrics against
hand-computed numbers, JSON round trips."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vpeft.errors import ConfigError
from vpeft.tasks import FeatureInfo, task_from_json
from vpeft.tasks.vl import (
    ContrastiveRetrievalTask,
    Nlvr2Task,
    PairEmbeddings,
    PairScoreRecall,
    RetrievalTask,
    VqaTask,
    ZeroShotClassificationTask,
    base_to_new,
    info_nce,
)

INFO = FeatureInfo(pooled_dim=8)


def _tiny_vilt_config(**kw):
    from transformers import ViltConfig

    return ViltConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=16, image_size=32, patch_size=16, max_image_length=4,
                      vocab_size=30, **kw)  # fmt: skip


def _copy_and_compare(ours: torch.nn.Module, theirs: torch.nn.Module, x: torch.Tensor) -> None:
    ours_shapes = [tuple(p.shape) for p in ours.state_dict().values()]
    theirs_shapes = [tuple(p.shape) for p in theirs.state_dict().values()]
    assert ours_shapes == theirs_shapes
    ours.load_state_dict(dict(zip(ours.state_dict(), theirs.state_dict().values(), strict=True)))
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)


def test_vqa_head_is_vilts_classifier():
    from transformers import ViltForQuestionAnswering

    torch.manual_seed(0)
    theirs = ViltForQuestionAnswering(_tiny_vilt_config(num_labels=5)).classifier.eval()
    ours = VqaTask("vqa", num_answers=5).build_head(INFO).eval()
    _copy_and_compare(ours, theirs, torch.randn(3, 8))


def test_nlvr2_head_is_vilts_pair_classifier():
    from transformers import ViltForImagesAndTextClassification

    torch.manual_seed(0)
    config = _tiny_vilt_config(num_labels=2, num_images=2, modality_type_vocab_size=3)
    theirs = ViltForImagesAndTextClassification(config).classifier.eval()
    ours = Nlvr2Task("nlvr2").build_head(INFO).eval()
    pooled = torch.randn(3, 2, 8)
    assert [tuple(p.shape) for p in ours.state_dict().values()] == [
        tuple(p.shape) for p in theirs.state_dict().values()
    ]
    ours.classifier.load_state_dict(theirs.state_dict())
    # ViLT concatenates pooler outputs image by image: cat([p0, p1], -1)
    expected = theirs(torch.cat([pooled[:, 0], pooled[:, 1]], dim=-1))
    torch.testing.assert_close(ours(pooled), expected, rtol=0, atol=0)
    with pytest.raises(ConfigError, match="once per image"):
        ours(torch.randn(3, 8))


def test_itm_head_is_vilts_rank_output():
    from transformers import ViltForImageAndTextRetrieval

    theirs = ViltForImageAndTextRetrieval(_tiny_vilt_config()).rank_output
    ours = RetrievalTask("itm").build_head(INFO)
    ours.rank_output.load_state_dict(theirs.state_dict())
    x = torch.randn(4, 8)
    torch.testing.assert_close(ours(x), theirs(x)[:, 0], rtol=0, atol=0)


def test_vqa_loss_and_score_by_hand():
    task = VqaTask("vqa", num_answers=2)
    logits = torch.tensor([[0.0, math.log(3.0)], [2.0, 1.0]])
    target = torch.tensor([[1.0, 0.3], [0.0, 1.0]])
    loss, n = task.loss(logits, target)
    # per sample: Σ_a −[s log σ(z) + (1−s) log(1−σ(z))]; σ(0)=1/2, σ(ln 3)=3/4
    first = math.log(2) - 0.3 * math.log(0.75) - 0.7 * math.log(0.25)
    second = -math.log(1 - 1 / (1 + math.exp(-2))) - math.log(1 / (1 + math.exp(-1)))
    assert n == 2
    assert loss.item() == pytest.approx(first + second, rel=1e-6)
    # ViLT: bce_with_logits(mean) * num_answers, then the batch mean; we sum over the batch
    vilt = F.binary_cross_entropy_with_logits(logits, target) * target.shape[1]
    assert (loss / n).item() == pytest.approx(vilt.item(), rel=1e-6)
    (metric,) = task.metrics()
    metric.update(logits, target)  # argmax: answer 1 (score 0.3), answer 0 (score 0.0)
    assert metric.compute()["vqa_score"] == pytest.approx(15.0)


def test_nlvr2_loss_and_accuracy_by_hand():
    task = Nlvr2Task("nlvr2")
    logits = torch.tensor([[0.0, math.log(3.0)], [1.0, 0.0]])
    labels = torch.tensor([1, 1])
    loss, n = task.loss(logits, labels)
    assert n == 2
    assert loss.item() == pytest.approx(-math.log(0.75) - math.log(1 / (1 + math.e)), rel=1e-6)
    (metric,) = task.metrics()
    metric.update(logits, labels)
    assert metric.compute()["top1"] == pytest.approx(50.0)


def test_itm_loss_and_pair_recall_by_hand():
    task = RetrievalTask("itm", num_images=2, num_texts=3)
    scores = torch.tensor([0.0, math.log(3.0)])
    loss, n = task.loss(scores, {"label": torch.tensor([1, 0])})
    assert n == 2
    assert loss.item() == pytest.approx(math.log(2) - math.log(0.25), rel=1e-6)
    # texts 0, 1 describe image 0, text 2 describes image 1
    sim = torch.tensor([[0.9, 0.1, 0.5], [0.8, 0.3, 0.2]])
    label = torch.tensor([[1, 1, 0], [0, 0, 1]])
    recall, accuracy = task.metrics()
    ii, tt = torch.meshgrid(torch.arange(2), torch.arange(3), indexing="ij")
    target = {"image_id": ii.flatten(), "text_id": tt.flatten(), "label": label.flatten()}
    # two shards, as under DDP: the sum of states is the whole
    other = PairScoreRecall(2, 3)
    recall.update(sim.flatten()[:4], {k: v[:4] for k, v in target.items()})
    other.update(sim.flatten()[4:], {k: v[4:] for k, v in target.items()})
    out = recall.compute(recall.state() + other.state())
    # i2t R@1: image 0 → text 0 (hit), image 1 → text 0 (miss) = 50%; R@5 = 100%
    # t2i R@1: text 0 → image 0 (hit), text 1 → image 1 (miss), text 2 → image 0 (miss)
    assert out["i2t_r1"] == pytest.approx(50.0)
    assert out["i2t_r5"] == pytest.approx(100.0)
    assert out["t2i_r1"] == pytest.approx(100.0 / 3)
    assert out["rsum"] == pytest.approx(50 + 100 + 100 + 100 / 3 + 100 + 100)
    with pytest.raises(ConfigError, match="never"):
        recall.compute()  # one shard alone has unscored pairs
    accuracy.update(sim.flatten() - 0.45, target)  # > 0.45 counts as a match
    # predicted [1, 0, 1, 1, 0, 0] vs labels [1, 1, 0, 0, 0, 1]: cells 0 and 4 agree
    assert accuracy.compute()["match_acc"] == pytest.approx(100.0 * 2 / 6)


def test_info_nce_by_hand():
    eye = torch.eye(2)
    out = PairEmbeddings(eye, eye, torch.tensor(1.0))
    # logits = I: each row/column CE = −log(e / (e + 1)) = log(1 + 1/e)
    torch.testing.assert_close(info_nce(out), torch.full((2,), math.log(1 + 1 / math.e)))
    # both pairs show one image: uniform target over the two columns
    same = info_nce(out, torch.tensor([7, 7]))
    torch.testing.assert_close(same, torch.full((2,), math.log(math.e + 1) - 0.5))
    # matches open_clip-style CLIP loss for distinct ids
    torch.manual_seed(0)
    img, txt = F.normalize(torch.randn(4, 5), dim=1), F.normalize(torch.randn(4, 5), dim=1)
    logits = 3.0 * img @ txt.T
    clip = F.cross_entropy(logits, torch.arange(4)) + F.cross_entropy(logits.T, torch.arange(4))
    ours = info_nce(PairEmbeddings(img, txt, torch.tensor(3.0))).mean()
    torch.testing.assert_close(ours, clip / 2)


def test_contrastive_task_head_loss_and_recall():
    task = ContrastiveRetrievalTask("clip_ir", num_images=2, num_texts=2)
    head = task.build_head(FeatureInfo(pooled_dim=2))
    assert head.logit_scale.requires_grad
    assert head.logit_scale.exp().item() == pytest.approx(1 / 0.07)
    out = head((torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 3.0], [1.0, 2.0]])))
    torch.testing.assert_close(out.image, torch.eye(2))
    loss, n = task.loss(out, {"image_id": torch.tensor([0, 1]), "text_id": torch.tensor([0, 1])})
    assert n == 2 and loss.item() > 0
    (recall,) = task.metrics()
    recall.update(out, {"image_id": torch.tensor([0, 1]), "text_id": torch.tensor([0, 1])})
    res = recall.compute()
    # cosines (rows images, columns texts) [[0, 0.447], [1, 0.894]]: both images rank text 0
    # first (image 0 wrongly); text 0 → image 1 (wrong), text 1 → image 1 (right)
    assert res["i2t_r1"] == pytest.approx(0.0)
    assert res["t2i_r1"] == pytest.approx(50.0)
    assert res["i2t_r5"] == pytest.approx(100.0)
    loss.backward()
    assert head.logit_scale.grad is not None


def test_zero_shot_logits_loss_and_base_to_new():
    task = ZeroShotClassificationTask("zs", class_names=("red circle", "blue square"))
    assert task.prompts() == ["a photo of a red circle.", "a photo of a blue square."]
    head = task.build_head(INFO)
    assert not head.logit_scale.requires_grad
    logits = head((torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([[2.0, 0.0], [0.0, 3.0]])))
    torch.testing.assert_close(
        logits, torch.tensor([[100.0, 0.0], [100 / math.sqrt(2), 100 / math.sqrt(2)]])
    )
    loss, n = task.loss(logits, torch.tensor([0, 1]))
    assert n == 2
    expected = -F.log_softmax(torch.tensor([100.0, 0.0]), 0)[0] + math.log(2)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    new = task.with_classes(["green star", "red star", "blue circle"])
    assert new.num_classes == 3 and new.template == task.template
    hm = base_to_new({"top1": 80.0, "loss": 1.0}, 60.0)
    assert hm == pytest.approx({"base": 80.0, "new": 60.0, "hm": 2 * 80 * 60 / 140})
    with pytest.raises(ConfigError, match="template"):
        ZeroShotClassificationTask("zs", class_names=("a", "b"), template="a photo")


@pytest.mark.parametrize(
    "task",
    [
        VqaTask("vqa", num_answers=7),
        Nlvr2Task("nlvr2", loss_weight=0.5),
        RetrievalTask("itm", num_images=3, num_texts=15),
        ContrastiveRetrievalTask("clip_ir", num_images=3, num_texts=15, embed_dim=4),
        ZeroShotClassificationTask("zs", class_names=("a", "b", "c"), template="an {} here."),
    ],
)
def test_json_round_trip(task):
    again = task_from_json(task.to_json())
    assert again == task and type(again) is type(task)


def test_invalid_options_name_the_problem():
    with pytest.raises(ConfigError, match="num_answers"):
        VqaTask("vqa")
    with pytest.raises(ConfigError, match="both positive or both 0"):
        RetrievalTask("itm", num_images=3)
    with pytest.raises(ConfigError, match="distinct"):
        ZeroShotClassificationTask("zs", class_names=("a", "a"))
