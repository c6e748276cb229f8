"""The model side of the VL feature kinds: ``pooled_pair`` (NLVR2 on ViLT), ``embeddings`` and
``class_embeddings`` (two-tower CLIP) — shapes and numbers against transformers' own calls —
and one training run through `vpeft.train.train` per VL task on procedural items."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

import vpeft  # noqa: E402
from vpeft.data.vl import (  # noqa: E402
    base_classes,
    classes_split,
    load_tokenizer,
    nlvr2_split,
    retrieval_split,
    vqa_split,
)
from vpeft.data.vl import language as L  # noqa: E402
from vpeft.errors import ConfigError  # noqa: E402
from vpeft.tasks.vl import (  # noqa: E402
    ContrastiveRetrievalTask,
    Nlvr2Task,
    RetrievalTask,
    VqaTask,
    ZeroShotClassificationTask,
)
from vpeft.train import TrainConfig, train  # noqa: E402

VOCAB = 90  # the bundled suite tokenizer's size


def tiny_vilt(seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = transformers.ViltConfig(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        image_size=64, patch_size=16, max_image_length=-1, vocab_size=VOCAB,
        max_position_embeddings=40, modality_type_vocab_size=3, **kw,
    )  # fmt: skip
    return transformers.ViltModel(cfg).eval()


def tiny_clip(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    small = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
    cfg = transformers.CLIPConfig(
        text_config=dict(small, vocab_size=VOCAB, max_position_embeddings=32, eos_token_id=3,
                         bos_token_id=2, pad_token_id=0),
        vision_config=dict(small, image_size=64, patch_size=16),
        projection_dim=8,
    )  # fmt: skip
    return transformers.CLIPModel(cfg).eval()


def _pair_batch(batch: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(batch, 7, dtype=torch.long)
    mask[1:, 5:] = 0
    return {
        "input_ids": torch.randint(5, VOCAB, (batch, 7), generator=g),
        "attention_mask": mask,
        "token_type_ids": torch.zeros(batch, 7, dtype=torch.long),
        "pixel_values": torch.randn(batch, 2, 3, 64, 64, generator=g),
        "pixel_mask": torch.ones(batch, 2, 64, 64, dtype=torch.long),
    }


def test_pooled_pair_is_two_vilt_calls_stacked():
    vilt = tiny_vilt()
    pm = vpeft.apply(vilt, "linear", tasks=[Nlvr2Task("nlvr2")]).eval()
    x = _pair_batch()
    with torch.no_grad():
        features = pm._features(x, ["nlvr2"])["pooled_pair"]
        expected = torch.stack(
            [
                vilt(
                    input_ids=x["input_ids"],
                    attention_mask=x["attention_mask"],
                    pixel_values=x["pixel_values"][:, i],
                    pixel_mask=x["pixel_mask"][:, i],
                    image_token_type_idx=i + 1,
                ).pooler_output
                for i in range(2)
            ],
            dim=1,
        )
        logits = pm(x)
    assert features.shape == (3, 2, 16)
    # ViLT permutes the patch tokens at random (attention is permutation-invariant): equal up
    # to float summation order
    torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(features[:, 0], features[:, 1])
    assert logits.shape == (3, 2)
    head = pm.heads["nlvr2"]
    torch.testing.assert_close(logits, head(expected), rtol=1e-4, atol=1e-5)


def test_pooled_pair_needs_a_third_modality_type():
    pm = vpeft.apply(_two_type_vilt(), "linear", tasks=[Nlvr2Task("nlvr2")])
    with pytest.raises(ConfigError, match="modality_type_vocab_size=3"):
        pm(_pair_batch())


def _two_type_vilt() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.ViltConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        image_size=64, patch_size=16, vocab_size=VOCAB, max_position_embeddings=40,
    )  # fmt: skip
    return transformers.ViltModel(cfg)


def _clip_batch(batch: int = 4) -> dict[str, torch.Tensor]:
    tok = load_tokenizer()
    texts = ["a red circle", "two blue squares and a star", "a photo of a green cross.", "x"]
    enc = tok(texts[:batch], padding=True, return_tensors="pt")
    g = torch.Generator().manual_seed(2)
    return {
        "input_ids": enc["input_ids"],
        "attention_mask": enc["attention_mask"],
        "pixel_values": torch.randn(batch, 3, 64, 64, generator=g),
    }


def test_embeddings_are_clips_own_features():
    clip = tiny_clip()
    task = ContrastiveRetrievalTask("ret")
    pm = vpeft.apply(clip, "linear", tasks=[task]).eval()
    assert task.embed_dim == 8  # the projection width, not the pooled [image; text] width
    x = _clip_batch()
    with torch.no_grad():
        image, text = pm._features(x, ["ret"])["embeddings"]
        ref_image = clip.get_image_features(pixel_values=x["pixel_values"]).pooler_output
        ref_text = clip.get_text_features(
            input_ids=x["input_ids"], attention_mask=x["attention_mask"]
        ).pooler_output
        out = pm(x)
    assert image.shape == text.shape == (4, 8)
    torch.testing.assert_close(image, ref_image, rtol=0, atol=0)
    torch.testing.assert_close(text, ref_text, rtol=0, atol=0)
    # the head's cosine similarity is CLIP's logits_per_image (same temperature)
    with torch.no_grad():
        theirs = clip(**x).logits_per_image
        pm.heads["ret"].logit_scale.copy_(clip.logit_scale)
        out = pm(x)
    torch.testing.assert_close(out.logit_scale * out.image @ out.text.T, theirs, rtol=1e-5,
                               atol=1e-5)  # fmt: skip


def test_class_embeddings_encode_the_tasks_prompts_once():
    clip = tiny_clip()
    names = base_classes()[:5]
    task = ZeroShotClassificationTask("zs", class_names=names)
    pm = vpeft.apply(clip, "linear", tasks=[task]).eval()
    with pytest.raises(ConfigError, match="tokenizer"):
        pm(torch.randn(2, 3, 64, 64))
    tok = load_tokenizer()
    pm.tokenizer = tok
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        image, classes = pm._features(pixels, ["zs"])[("class_embeddings", "zs")]
        enc = tok([f"a photo of a {n}." for n in names], padding=True, return_tensors="pt")
        ref = clip.get_text_features(
            input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
        ).pooler_output
        logits = pm(pixels)
    assert classes.shape == (5, 8) and image.shape == (2, 8)
    torch.testing.assert_close(classes, ref, rtol=0, atol=0)
    assert logits.shape == (2, 5)
    assert pm.summary().trainable == 0  # the temperature stays CLIP's fixed 100 (learn_scale)
    cached = pm._prompt_ids["zs"][1]["input_ids"]
    pm(pixels)
    assert pm._prompt_ids["zs"][1]["input_ids"] is cached  # tokenized once
    # another class set (base-to-new): re-tokenized, C columns
    pm.tasks["zs"] = task.with_classes(("red circle", "blue star", "green square"))
    assert pm(pixels).shape == (2, 3)


def test_tokenizer_found_beside_a_saved_backbone(tmp_path):
    clip = tiny_clip()
    clip.save_pretrained(tmp_path)
    from vpeft.data.vl import write_tokenizer

    write_tokenizer(tmp_path)
    loaded = transformers.CLIPModel.from_pretrained(tmp_path)
    task = ZeroShotClassificationTask("zs", class_names=base_classes()[:3])
    pm = vpeft.apply(loaded, "linear", tasks=[task]).eval()
    assert pm(torch.randn(1, 3, 64, 64)).shape == (1, 3)


# --------------------------------------------------------------------------- training steps


def _moves(pm, data, config) -> None:
    """Train; every trainable tensor gets a gradient and changes; frozen ones stay."""
    before = {n: p.detach().clone() for n, p in pm.named_parameters()}
    grads: dict[str, bool] = {}
    hooks = [
        p.register_hook(lambda g, n=n: grads.__setitem__(n, bool(g.abs().sum() > 0)))
        for n, p in pm.named_parameters()
        if p.requires_grad
    ]
    result = train(pm, data, None, data, config)
    for h in hooks:
        h.remove()
    trainable = {n for n, p in pm.named_parameters() if p.requires_grad}
    assert trainable and all(grads.get(n) for n in trainable), sorted(
        n for n in trainable if not grads.get(n)
    )
    for n, p in pm.named_parameters():
        changed = not torch.equal(before[n], p.detach())
        assert changed == (n in trainable), n
    return result


CONFIG = dict(epochs=2, batch_size=8, lr=3e-3, warmup_epochs=0, progress=False, eval_batch_size=16)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_vqa_trains(small_suite, method):
    data = vqa_split("train")  # 40 questions
    pm = vpeft.apply(tiny_vilt(), method, tasks=[VqaTask("vqa", num_answers=len(L.ANSWERS))])
    result = _moves(pm, data, TrainConfig(**CONFIG))
    first, last = result.history[0]["train_loss"], result.history[-1]["train_loss"]
    assert last < first
    assert 0.0 <= result.history[-1]["test/vqa/vqa_score"] <= 100.0


def test_nlvr2_trains(small_suite):
    pm = vpeft.apply(tiny_vilt(), "lora", tasks=[Nlvr2Task("nlvr2")])
    result = _moves(pm, nlvr2_split("train"), TrainConfig(**CONFIG))
    assert "test/nlvr2/top1" in result.history[-1]


def test_itm_retrieval_trains_and_scores_every_pair(small_suite):
    train_set = retrieval_split("train", mode="itm", negatives=1)
    gallery = retrieval_split("test", mode="all")
    task = RetrievalTask("itm", num_images=gallery.num_images, num_texts=gallery.num_texts)
    pm = vpeft.apply(tiny_vilt(), "lora", tasks=[task])
    before = {n: p.detach().clone() for n, p in pm.named_parameters()}
    result = train(pm, train_set, None, gallery, TrainConfig(**CONFIG))
    assert any(not torch.equal(before[n], p) for n, p in pm.named_parameters() if p.requires_grad)
    assert 0.0 <= result.history[-1]["test/itm/i2t_r1"] <= 100.0


def test_contrastive_retrieval_trains(small_suite):
    clip_norm = dict(mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258,
                     0.27577711))  # fmt: skip
    data = retrieval_split("train", mode="pairs", **clip_norm, max_length=32)
    task = ContrastiveRetrievalTask("ret", num_images=data.num_images, num_texts=data.num_texts)
    pm = vpeft.apply(tiny_clip(), "lora", tasks=[task])
    result = _moves(pm, data, TrainConfig(**CONFIG))
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert "test/ret/rsum" in result.history[-1]


def test_zero_shot_classification_trains_the_text_tower(small_suite):
    data = classes_split("train")  # 2 images per base class
    task = ZeroShotClassificationTask("zs", class_names=base_classes())
    pm = vpeft.apply(tiny_clip(), "lora", tasks=[task])
    pm.tokenizer = load_tokenizer()
    result = _moves(pm, data, TrainConfig(**CONFIG))
    assert "test/zs/top1" in result.history[-1]
    lora_text = [n for n, p in pm.named_parameters() if p.requires_grad and "text_model" in n]
    assert lora_text  # the class prompts run through the adapted text tower each step
