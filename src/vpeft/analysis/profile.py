"""`profile_model`: FLOPs, saved activations, state bytes and step time of one training step.

What the numbers should look like on a ViT (FLOPs of one step relative to one forward F):

- linear probe ≈ 1×F — the backbone is frozen and its input needs no gradient, so autograd
  runs no backward through it; only the head's weight gradient (2·B·D·C) is added.
- LoRA / adapters / BitFit ≈ 2×F — the backbone weights need no gradient, but gradients must
  flow through every frozen layer above the first trainable piece to reach it: one
  input-gradient product per forward product (1×F), while the weight gradients of the tiny
  trainable pieces are negligible. Two small corrections: the first block's frozen products
  whose input needs no gradient are skipped (LoRA on q, v: −1/4 of a block), and attention's
  two products have activations on both sides, so their backward is 2× their forward even with
  a frozen backbone (+ the attention share of F, ≈ 4% on ViT-B/16).
- full fine-tuning ≈ 3×F — input gradient and weight gradient for every product (the patch
  embedding's input gradient is skipped: the image needs none).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .flops import flop_counter, output_loss
from .memory import SavedTensorCounter, model_tensors, state_bytes

#: Keys of `vpeft profile --json` fixed by the public contract (design.md), in order.
CONTRACT_KEYS = (
    "forward_flops",
    "train_step_flops",
    "saved_activation_bytes",
    "trainable",
    "step_seconds",
)


@dataclass(frozen=True)
class ProfileReport:
    """Cost of one training step at batch `batch` (FLOPs and bytes are per batch)."""

    forward_flops: int
    train_step_flops: int
    saved_activation_bytes: int
    trainable: int
    step_seconds: float
    total_params: int
    param_bytes: int
    grad_bytes: int
    optimizer_bytes: int
    batch: int
    img_size: int
    device: str
    peak_memory_bytes: int | None = None  # measured allocator peak of a step (CUDA only)

    @property
    def training_memory_bytes(self) -> int:
        """Estimate: parameters + gradients + AdamW states + saved activations."""
        return (
            self.param_bytes + self.grad_bytes + self.optimizer_bytes + self.saved_activation_bytes
        )

    def as_dict(self) -> dict[str, Any]:
        """The contract keys first, then the extra figures (JSON-serialisable)."""
        fields = asdict(self)
        out = {key: fields.pop(key) for key in CONTRACT_KEYS}
        out.update(fields)
        out["training_memory_bytes"] = self.training_memory_bytes
        return out


def native_img_size(model: nn.Module) -> int:
    """The image side the backbone was built for (its patch embedding's, else timm's config)."""
    inner = getattr(model, "model", model)  # a PeftModel wraps the timm model
    size = getattr(getattr(inner, "patch_embed", None), "img_size", None)
    if size is None:
        cfg = getattr(inner, "pretrained_cfg", None) or {}
        size = cfg.get("input_size", (3, 224, 224))[-1]
    return int(size[-1]) if isinstance(size, tuple | list) else int(size)


def _in_chans(model: nn.Module) -> int:
    inner = getattr(model, "model", model)
    cfg = getattr(inner, "pretrained_cfg", None) or {}
    return int(cfg.get("input_size", (3,))[0])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def _restored(model: nn.Module) -> Iterator[list[nn.Parameter]]:
    """Yield the trainable parameters; afterwards restore their values and grads, the buffers
    (e.g. normalisation running statistics) and the train/eval mode."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    tensors = trainable + list(model.buffers())
    saved = [t.detach().clone() for t in tensors]
    was_training = model.training
    try:
        yield trainable
    finally:
        with torch.no_grad():
            for t, value in zip(tensors, saved, strict=True):
                t.copy_(value)
        for p in trainable:
            p.grad = None
        model.train(was_training)


def _on_device(value: Any, device: torch.device, dtype: torch.dtype) -> Any:
    if torch.is_tensor(value):
        return value.to(device, dtype) if value.is_floating_point() else value.to(device)
    if isinstance(value, dict):
        return {k: _on_device(v, device, dtype) for k, v in value.items()}
    raise ConfigError(f"profile inputs must be a tensor or a dict of tensors, got {type(value)}")


def _first_tensor(value: Any) -> torch.Tensor:
    return value if torch.is_tensor(value) else next(iter(value.values()))


def profile_model(
    pm: nn.Module,
    batch: int = 8,
    img_size: int | None = None,
    *,
    steps: int = 3,
    warmup: int = 1,
    lr: float = 1e-3,
    seed: int = 0,
    inputs: Any = None,
) -> ProfileReport:
    """Profile one AdamW training step of `pm` (a `PeftModel` or any image model) on random
    images of shape (batch, C, img_size, img_size), on the device of its parameters — or on
    the given `inputs` (a tensor or a dict of tensors such as ``pixel_values``, ``input_ids``,
    ``attention_mask``; moved to the model's device; floating fields cast to its dtype).

    One instrumented step counts forward / train-step FLOPs and saved activation bytes; then
    `warmup` untimed and `steps` timed full steps (forward, backward, AdamW update) give the
    median `step_seconds`. The model is left as it was: trainable values, buffers, grads and
    train/eval mode are restored afterwards.
    """
    if batch < 1 or steps < 1 or warmup < 0:
        raise ConfigError(
            f"profile needs batch >= 1, steps >= 1, warmup >= 0; got {batch}, {steps}, {warmup}"
        )
    first = next(iter(pm.parameters()))
    device, dtype = first.device, first.dtype
    generator = torch.Generator().manual_seed(seed)
    spec = getattr(pm, "spec", None)
    if inputs is None and spec is not None and spec.make_inputs is not None:
        inputs = spec.example_inputs(batch, img_size, generator)  # transformers: text + image
    if inputs is None:
        size = native_img_size(pm) if img_size is None else img_size
        images = torch.randn(batch, _in_chans(pm), size, size, generator=generator)
        images = images.to(device=device, dtype=dtype)
    else:
        images = _on_device(inputs, device, dtype)
        pixels = images if torch.is_tensor(images) else images.get("pixel_values")
        size = int(pixels.shape[-1]) if pixels is not None else 0
        batch = int(_first_tensor(images).shape[0])
    states = state_bytes(pm)

    with _restored(pm) as trainable:
        if not trainable:
            raise ConfigError("the model has no trainable parameter; nothing to profile")
        pm.train()
        with flop_counter() as flops, SavedTensorCounter(exclude=model_tensors(pm)) as saved:
            loss = output_loss(pm(images))
            forward = flops.get_total_flops()
            activation_bytes = saved.bytes
            loss.backward()
            step_flops = flops.get_total_flops()
        for p in trainable:
            p.grad = None

        optimizer = torch.optim.AdamW(trainable, lr=lr)
        times: list[float] = []
        peak: int | None = None
        for i in range(warmup + steps):
            if device.type == "cuda" and i == warmup:
                torch.cuda.reset_peak_memory_stats(device)
            _sync(device)
            start = time.perf_counter()
            output_loss(pm(images)).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
        if device.type == "cuda":
            peak = int(torch.cuda.max_memory_allocated(device))
        del optimizer

    return ProfileReport(
        forward_flops=int(forward),
        train_step_flops=int(step_flops),
        saved_activation_bytes=int(activation_bytes),
        trainable=sum(p.numel() for p in trainable),
        step_seconds=float(statistics.median(times)),
        total_params=sum(p.numel() for p in pm.parameters()),
        param_bytes=states.param_bytes,
        grad_bytes=states.grad_bytes,
        optimizer_bytes=states.optimizer_bytes,
        batch=batch,
        img_size=size,
        device=str(device),
        peak_memory_bytes=peak,
    )
