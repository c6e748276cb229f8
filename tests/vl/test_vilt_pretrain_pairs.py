"""`scripts/pretrain_tiny_vilt.py`'s pieces: ITM negatives are never the caption's own image nor
a pixel-identical copy of it, the held-out score gives positives and negatives the same text,
grounded masking hides exactly the attribute words, and the contrastive warm start's pass keeps
text and image apart."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _helpers():
    sys.path.insert(0, str(SCRIPTS))
    try:
        import _vl_pretrain
    finally:
        sys.path.remove(str(SCRIPTS))
    return _vl_pretrain


def test_negatives_never_share_the_image():
    h = _helpers()
    from vpeft.data.vl.datasets import VILT_MEAN, VILT_STD

    images, captions, owner = h.captioned_scenes((103,), "val", VILT_MEAN, VILT_STD)
    assert len(captions) == len(owner) and int(owner.max()) < len(images)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        other = h.negative_images(owner, len(images), gen)
        assert bool((other != owner).all()) and int(other.max()) < len(images)
        same = (images[other] == images[owner]).flatten(1).all(1)
        assert not bool(same.any())


def test_masked_words_never_leak_into_the_matching_score():
    """The held-out matching accuracy scores the positive and the negative of a caption on
    the same (unmasked) text: scoring only the positives on masked text made [MASK] a cue."""
    source = (SCRIPTS / "pretrain_tiny_vilt.py").read_text()
    assert "pos, _ = model(t, images[own])" in source
    assert "neg, _ = model(t, images[other])" in source


def _script():
    sys.path.insert(0, str(SCRIPTS))
    try:
        import pretrain_tiny_vilt
    finally:
        sys.path.remove(str(SCRIPTS))
    return pretrain_tiny_vilt


def test_grounded_words_are_exactly_the_attribute_words():
    """6 colours + 6 shapes + 6 plurals + 2 sizes + 11 numbers + 5 position words (top, left,
    right, bottom, center) = 36 ids; masking only them at rate 1 hides every one and nothing
    else."""
    from vpeft.data.vl import load_tokenizer

    s = _script()
    ids = s.grounded_ids()
    assert len(ids) == 36 == len(set(ids.tolist()))
    tok = load_tokenizer()
    text = tok(["a small red circle at the top left and nothing else."], return_tensors="pt")
    masked, labels = s.mask_words(text["input_ids"], 0.0, torch.Generator(), ids, 1.0)
    words = tok.convert_ids_to_tokens(text["input_ids"][0])
    hidden = [w for w, m in zip(words, masked[0].tolist(), strict=True) if m == s.MASK_ID]
    assert hidden == ["small", "red", "circle", "top", "left"]
    assert torch.equal(labels != -100, masked == s.MASK_ID)


def test_contrastive_pass_keeps_text_and_image_apart():
    """The warm start's dual-encoder pass: the text [CLS] does not move when the image changes,
    nor the image [CLS] when the text changes; the joint pass does see both."""
    from transformers import ViltConfig

    s = _script()
    torch.manual_seed(0)
    model = s.Pretrainer(ViltConfig(**s.ARCH)).eval()
    text = {"input_ids": torch.randint(5, 90, (2, 7)), "attention_mask": torch.ones(2, 7).long()}
    other = {**text, "input_ids": text["input_ids"].flip(0)}
    a, b = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        t_a, i_a = model.unimodal(text, a)
        t_b, _ = model.unimodal(text, b)
        _, i_other = model.unimodal(other, a)
        joint_a, joint_b = model(text, a)[0], model(text, b)[0]
    torch.testing.assert_close(t_a, t_b)
    torch.testing.assert_close(i_a, i_other, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(t_a, i_a)
    assert (joint_a - joint_b).abs().max() > 1e-4
