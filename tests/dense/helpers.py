"""Tiny two-task dense models (tiny Swin, segmentation + normals) for the baseline checks."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

import vpeft
from tests.helpers import IMG, images, tiny_swin
from vpeft.tasks.dense import NormalsTask, SegmentationTask

EMBED = 8  # decoder width E of the tiny models


def dense_tasks() -> list[Any]:
    return [
        SegmentationTask("seg", num_classes=3, target_field="seg", embed_dim=EMBED),
        NormalsTask("normals", target_field="normals", embed_dim=EMBED),
    ]


def build_dense(method: str, seed: int = 0, **options: Any) -> vpeft.PeftModel:
    """`method` on a seeded tiny Swin with two dense tasks (heads seeded the same way)."""
    torch.manual_seed(seed + 100)
    return vpeft.apply(tiny_swin(seed), method, tasks=dense_tasks(), **options)


def dense_batch(batch: int = 2, seed: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    normals = F.normalize(torch.randn(batch, 3, IMG, IMG, generator=g), dim=1)
    return {
        "pixel_values": images(batch, seed),
        "seg": torch.randint(0, 3, (batch, IMG, IMG), generator=g),
        "normals": normals,
    }


def total_loss(pm: vpeft.PeftModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    outputs = pm.forward_tasks(batch)
    loss = torch.zeros(())
    for name, task in pm.tasks.items():
        value, n = task.loss(outputs[name], batch[task.target_field])
        loss = loss + value / n
    return loss


def check_training_moves_only_trainables(pm: vpeft.PeftModel, steps: int) -> list[str]:
    """Train `pm` for `steps` Adam steps on one dense batch: every trainable tensor gets a
    non-zero gradient and changes, every frozen parameter stays bit-equal (buffers such as the
    decoders' BatchNorm statistics may move). The trainable names, for further checks."""
    pm.train()
    trainable = pm.trainable_parameters()
    frozen = {n: p.detach().clone() for n, p in pm.named_parameters() if n not in trainable}
    start = {n: p.detach().clone() for n, p in trainable.items()}
    got_grad = dict.fromkeys(trainable, False)
    opt = torch.optim.Adam(trainable.values(), lr=1e-2)
    batch = dense_batch(batch=2)
    for step in range(steps):
        torch.manual_seed(step)
        opt.zero_grad()
        total_loss(pm, batch).backward()
        for n, p in trainable.items():
            got_grad[n] |= bool(p.grad is not None and p.grad.abs().sum() > 0)
        opt.step()
    assert not [n for n, ok in got_grad.items() if not ok], "tensors without gradient"
    assert not [n for n, p in trainable.items() if torch.equal(p.detach(), start[n])]
    for n, p in pm.named_parameters():
        if n in frozen:
            assert torch.equal(p.detach(), frozen[n]), f"frozen tensor {n} changed"
    return list(trainable)
