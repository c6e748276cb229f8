"""Device choice and mixed precision: bf16 autocast on CUDA when asked (``amp="auto"``)."""

from __future__ import annotations

import contextlib

import torch

from ..errors import ConfigError


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` → ``cuda:<local_rank>`` when CUDA is available, else ``cpu``."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for setting `amp` on `device`, or None for full precision."""
    if amp == "off":
        return None
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if amp == "bf16":
        return torch.bfloat16
    raise ConfigError(f"unknown amp setting {amp!r}; choose auto, bf16 or off")


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """An autocast context for `dtype`, or a no-op context when `dtype` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
