"""The ITM pairs of `scripts/pretrain_tiny_vilt.py` (suspects for its matching staying at chance):
a negative is never the caption's own image nor a pixel-identical copy of it, and the held-out
score gives positives and negatives the same text."""

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
