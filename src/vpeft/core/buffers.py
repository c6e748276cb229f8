"""Buffers that belong to what a model trains (e.g. a trained BatchNorm's running statistics)."""

from __future__ import annotations

import torch
from torch import nn


def trained_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """Persistent buffers of modules that own at least one trainable parameter."""
    out: dict[str, torch.Tensor] = {}
    for module_name, module in model.named_modules():
        if not any(p.requires_grad for p in module.parameters(recurse=False)):
            continue
        for local, buf in module.named_buffers(recurse=False):
            if buf is not None and local not in module._non_persistent_buffers_set:
                out[f"{module_name}.{local}" if module_name else local] = buf
    return out
