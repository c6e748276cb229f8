"""Tiny timm backbones shared by the method tests (random weights, seeded, CPU-fast)."""

from __future__ import annotations

from collections.abc import Callable

import timm
import torch
from torch import nn

IMG = 32


def tiny_vit(seed: int = 0, **kw: object) -> nn.Module:
    torch.manual_seed(seed)
    args = dict(img_size=IMG, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=0)
    args.update(kw)
    return timm.create_model("vit_tiny_patch16_224", **args)


def tiny_swin(seed: int = 0, **kw: object) -> nn.Module:
    torch.manual_seed(seed)
    args = dict(
        img_size=IMG,
        patch_size=2,
        window_size=4,
        embed_dim=16,
        depths=(2, 2),
        num_heads=(2, 4),
        num_classes=0,
    )
    args.update(kw)
    return timm.create_model("swin_tiny_patch4_window7_224", **args)


def tiny_convnext(seed: int = 0, **kw: object) -> nn.Module:
    torch.manual_seed(seed)
    args = dict(dims=(8, 16, 16, 32), depths=(1, 1, 1, 1), num_classes=0)
    args.update(kw)
    return timm.create_model("convnext_tiny", **args)


def tiny_pvt(seed: int = 0, **kw: object) -> nn.Module:
    torch.manual_seed(seed)
    args = dict(
        embed_dims=(16, 32),
        depths=(1, 2),
        num_heads=(1, 2),
        mlp_ratios=(2, 2),
        sr_ratios=(2, 1),
        num_classes=0,
    )
    args.update(kw)
    return timm.create_model("pvt_v2_b0", **args)


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "vit": tiny_vit,
    "swin": tiny_swin,
    "convnext": tiny_convnext,
    "pvt_v2": tiny_pvt,
}


def images(batch: int = 2, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, IMG, IMG, generator=g)
