"""`torch.compile` for vpeft models, with a clear error where this machine cannot compile.

    pm_fast = compile_model(pm)        # same outputs as `pm` within COMPILE_TOLERANCE (fp32)

The compiled module shares parameters with `pm` (training it trains `pm`; save / merge `pm`).
TorchInductor generates C++ (CPU) or Triton (CUDA) kernels: on a CPU without a C++ compiler the
first call fails, so `compile_model` runs one probe and raises `CompileUnavailableError` saying
why, instead of failing later inside a training loop.
"""

from __future__ import annotations

import shutil
from typing import Any

import torch
from torch import nn

from ..errors import VpeftError

#: Eager vs compiled fp32 outputs agree to this (kernel fusion reorders float sums).
COMPILE_TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}


class CompileUnavailableError(VpeftError):
    """torch.compile cannot run here (no C++ compiler, unsupported platform, …)."""


def compile_unavailable_reason(device: torch.device | str = "cpu") -> str | None:
    """Why compiling for `device` cannot work here, or None when it should."""
    device = torch.device(device)
    if device.type == "cpu" and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        return "TorchInductor needs a C++ compiler (g++ / clang++) for CPU kernels; none on PATH"
    if device.type == "cuda" and not torch.cuda.is_available():
        return "CUDA is not available"
    return None


def compile_model(model: nn.Module, probe: torch.Tensor | None = None, **options: Any) -> nn.Module:
    """`torch.compile(model, **options)`; with `probe`, run it once now (compilation happens
    there) and raise `CompileUnavailableError` with the reason when it cannot compile."""
    device = next(model.parameters()).device
    reason = compile_unavailable_reason(device)
    if reason is not None:
        raise CompileUnavailableError(f"cannot torch.compile on {device}: {reason}")
    compiled = torch.compile(model, **options)
    if probe is not None:
        try:
            with torch.no_grad():
                compiled(probe)
        except Exception as err:  # the compiler backends raise many types
            raise CompileUnavailableError(
                f"torch.compile failed on {device}: {type(err).__name__}: {err}"
            ) from err
    return compiled
