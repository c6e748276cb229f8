"""ArrayImageDataset and the resize/normalise transforms."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vpeft.data import ArrayImageDataset, DataConfig, data_config_for, make_transform
from vpeft.data.transforms import IMAGENET_MEAN, RandomResizedCropFlip, Resize
from vpeft.errors import DatasetError


def _dataset(n: int = 6, size: int = 8) -> ArrayImageDataset:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return ArrayImageDataset(images, np.arange(n) % 3, num_classes=4, name="toy")


def test_items_are_float_chw_in_unit_range() -> None:
    ds = _dataset()
    image, label = ds[1]
    assert image.shape == (3, 8, 8) and image.dtype == torch.float32
    assert label == 1 and isinstance(label, int)
    expected = torch.from_numpy(ds.images[1]).permute(2, 0, 1).float() / 255
    assert torch.equal(image, expected)
    assert ds.num_classes == 4 and len(ds) == 6
    assert ds.class_counts().tolist() == [2, 2, 2, 0]


def test_as_tensors_matches_items_for_batched_and_plain_transforms() -> None:
    ds = _dataset(n=7)
    t = make_transform(16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    x, y = ds.as_tensors(t, batch_size=3)
    assert x.shape == (7, 3, 16, 16) and y.dtype == torch.int64
    items = torch.stack([t(ds[i][0]) for i in range(7)])
    assert torch.allclose(x, items, atol=1e-5)
    plain, _ = ds.as_tensors(lambda img: img * 2.0)  # no ``batched`` flag: applied per image
    assert torch.allclose(plain[2], ds[2][0] * 2.0)
    with_own, _ = ds.with_transform(t).as_tensors()
    assert torch.allclose(with_own, x)


def test_subset_keeps_classes() -> None:
    sub = _dataset().subset([0, 3])
    assert len(sub) == 2 and sub.num_classes == 4 and sub.labels.tolist() == [0, 0]


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (np.zeros((2, 4, 4), np.uint8), np.zeros(2, int), "shape \\(N, H, W, 3\\)"),
        (np.zeros((2, 4, 4, 3), np.float32), np.zeros(2, int), "uint8"),
        (np.zeros((2, 4, 4, 3), np.uint8), np.zeros(3, int), "labels must have shape \\(2,\\)"),
        (np.zeros((2, 4, 4, 3), np.uint8), np.array([0, 5]), "labels must lie in \\[0, 3\\)"),
    ],
)
def test_bad_arrays_raise(images: np.ndarray, labels: np.ndarray, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        ArrayImageDataset(images, labels, num_classes=3)


def test_resize_and_normalise_numerically() -> None:
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    t = make_transform(24, mean, std)
    image = torch.full((3, 8, 8), 0.6)
    out = t(image)
    assert out.shape == (3, 24, 24)
    expected = torch.tensor([(0.6 - m) / s for m, s in zip(mean, std, strict=True)])
    assert torch.allclose(out, expected.view(3, 1, 1).expand(3, 24, 24), atol=1e-5)
    batch = torch.rand(5, 3, 8, 12)
    assert t(batch).shape == (5, 3, 24, 24)
    same = make_transform(8, (0, 0, 0), (1, 1, 1))
    assert torch.equal(same(batch[:, :, :, :8]), batch[:, :, :, :8])  # no resize at input size


def test_interpolation_is_configurable_and_checked() -> None:
    checker = torch.zeros(3, 4, 4)
    checker[:, ::2, ::2] = 1.0
    unit = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    nearest = make_transform(8, *unit, interpolation="nearest")(checker)
    bicubic = make_transform(8, *unit)(checker)
    assert set(nearest.unique().tolist()) == {0.0, 1.0}
    assert len(bicubic.unique()) > 2 and bicubic.min() >= 0 and bicubic.max() <= 1
    with pytest.raises(DatasetError, match=r"unknown interpolation 'lanczos'.*bicubic"):
        make_transform(8, interpolation="lanczos")
    with pytest.raises(DatasetError, match=r"\(3, H, W\) or \(N, 3, H, W\)"):
        nearest_t = make_transform(8, *unit)
        nearest_t(torch.zeros(1, 8, 8))


def test_augmentation_crops_flips_and_keeps_size() -> None:
    image = torch.rand(3, 8, 8)
    identity = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    flip_only = RandomResizedCropFlip(
        8, *identity, scale=(1.0, 1.0), ratio=(1.0, 1.0), generator=torch.Generator().manual_seed(0)
    )
    outs = flip_only(image.expand(16, 3, 8, 8))
    flipped = image.flip(-1)
    kinds = [
        "same" if torch.allclose(o, image, atol=1e-5) else "flip"
        for o in outs
        if torch.allclose(o, image, atol=1e-5) or torch.allclose(o, flipped, atol=1e-5)
    ]
    assert len(kinds) == 16 and set(kinds) == {"same", "flip"}
    no_flip = make_transform(12, *identity, augment=True, hflip=False)
    assert isinstance(no_flip, RandomResizedCropFlip) and not no_flip.hflip
    assert no_flip(image).shape == (3, 12, 12)
    assert not isinstance(make_transform(12), RandomResizedCropFlip)


def test_data_config_reads_timm_pretrained_cfg() -> None:
    model = SimpleNamespace(
        pretrained_cfg={
            "input_size": (3, 32, 32),
            "mean": (0.5, 0.4, 0.3),
            "std": (0.2, 0.2, 0.2),
            "interpolation": "bilinear",
        }
    )
    cfg = data_config_for(model)
    assert cfg == DataConfig((32, 32), (0.5, 0.4, 0.3), (0.2, 0.2, 0.2), "bilinear")
    t = cfg.transform()
    assert isinstance(t, Resize) and t.size == (32, 32) and t.interpolation == "bilinear"


def test_data_config_defaults() -> None:
    bare = data_config_for(object())
    assert bare.input_size == (224, 224) and bare.mean == IMAGENET_MEAN
    assert bare.interpolation == "bicubic"
    sized = SimpleNamespace(patch_embed=SimpleNamespace(img_size=(64, 64)), pretrained_cfg={})
    assert data_config_for(sized).input_size == (64, 64)
    odd = SimpleNamespace(pretrained_cfg={"interpolation": "random", "input_size": (3, 16, 16)})
    assert data_config_for(odd).interpolation == "bicubic"


def test_data_config_from_a_real_timm_model() -> None:
    timm = pytest.importorskip("timm")
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=4, depth=1
    )
    cfg = data_config_for(model)
    assert cfg.interpolation == "bicubic" and len(cfg.mean) == 3
    assert cfg.input_size == (32, 32)  # what the model was built for, not pretrained_cfg's 224
