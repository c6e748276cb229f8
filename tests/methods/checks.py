"""Checks every method must pass (HF-PEFT style): run them from per-method test files.

Each check builds its own models from a backbone factory (seeded, so two calls give the same
frozen weights) and asserts numbers, not shapes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

import vpeft
from tests.helpers import images

Factory = Callable[..., nn.Module]
NUM_CLASSES = 3


def build(method: str, factory: Factory, seed: int = 0, **options: Any) -> vpeft.PeftModel:
    torch.manual_seed(seed + 100)
    return vpeft.apply(factory(seed), method, num_classes=NUM_CLASSES, **options)


def perturb_trainables(pm: vpeft.PeftModel, seed: int = 7, std: float = 0.05) -> None:
    """Move every trainable tensor away from its init (makes merge/save checks non-vacuous)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in pm.trainable_parameters().values():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)


def check_identity_at_init(
    method: str, factory: Factory, atol: float = 1e-6, **options: Any
) -> None:
    """Installing the method must not change the outputs (same head on both)."""
    reference = factory(0)
    pm = build(method, factory, **options)
    reference.reset_classifier(NUM_CLASSES)
    reference.get_classifier().load_state_dict(pm.head.state_dict())
    reference.eval()
    pm.eval()
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(pm(x), reference(x), atol=atol, rtol=0)


def check_training_moves_only_trainables(
    method: str, factory: Factory, steps: int = 4, **options: Any
) -> vpeft.PeftModel:
    """Every trainable tensor gets a non-zero gradient and changes; frozen ones stay bit-equal."""
    pm = build(method, factory, **options)
    y = torch.arange(4) % NUM_CLASSES
    check_only_trainables_move(pm, lambda out: nn.functional.cross_entropy(out, y), steps)
    return pm


def check_only_trainables_move(
    pm: vpeft.PeftModel, loss_of: Callable[[Any], torch.Tensor], steps: int = 4
) -> None:
    """Train `pm` for `steps` Adam steps on a batch of 4 images with loss ``loss_of(pm(x))``:
    every trainable tensor gets a non-zero gradient and changes; frozen ones stay bit-equal."""
    pm.train()
    trainable = pm.trainable_parameters()
    assert trainable, "method trains nothing"
    frozen_before = {
        n: t.detach().clone()
        for n, t in pm.state_dict(keep_vars=True).items()
        if n not in trainable
    }
    start = {n: p.detach().clone() for n, p in trainable.items()}
    got_grad = dict.fromkeys(trainable, False)
    opt = torch.optim.Adam(trainable.values(), lr=1e-2)
    x = images(batch=4)
    for step in range(steps):
        torch.manual_seed(step)
        opt.zero_grad()
        loss = loss_of(pm(x))
        loss.backward()
        for n, p in trainable.items():
            if p.grad is not None and p.grad.abs().sum() > 0:
                got_grad[n] = True
        opt.step()
    no_grad = [n for n, ok in got_grad.items() if not ok]
    assert not no_grad, f"trainable tensors never received a gradient: {no_grad}"
    unchanged = [n for n, p in trainable.items() if torch.equal(p.detach(), start[n])]
    assert not unchanged, f"trainable tensors did not change: {unchanged}"
    for n, t in pm.state_dict(keep_vars=True).items():
        if n in frozen_before:
            assert torch.equal(t.detach(), frozen_before[n]), f"frozen tensor {n} changed"
            assert not (isinstance(t, nn.Parameter) and t.grad is not None and t.requires_grad)


def check_save_load(method: str, factory: Factory, tmp_path: Path, **options: Any) -> None:
    """save -> load on a fresh copy of the same backbone gives identical logits; file is minimal."""
    pm = build(method, factory, **options)
    perturb_trainables(pm)
    path = tmp_path / f"{method}.safetensors"
    pm.save(path)
    with safe_open(str(path), framework="pt") as f:
        keys = {k for k in f.keys() if not k.startswith("__config__.")}  # noqa: SIM118
    assert keys == set(pm.trainable_parameters()), "file must hold exactly the trained tensors"
    loaded = vpeft.load(path, base=factory(0))
    pm.eval()
    loaded.eval()
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), pm(x), atol=0, rtol=0)


def check_merge(method: str, factory: Factory, atol: float = 1e-5, **options: Any) -> nn.Module:
    """merge() returns a plain model with the same outputs (after a non-identity perturbation)."""
    pm = build(method, factory, **options)
    perturb_trainables(pm)
    pm.eval()
    x = images()
    with torch.no_grad():
        expected = pm(x)
    plain = pm.merge()
    plain.eval()
    plain_names = {type(m).__name__ for m in plain.modules()}
    assert "AdaptedLayer" not in plain_names
    with torch.no_grad():
        torch.testing.assert_close(plain(x), expected, atol=atol, rtol=1e-5)
    reference = factory(0)
    reference.reset_classifier(NUM_CLASSES)
    assert type(plain) is type(reference)
    assert set(plain.state_dict()) - set(reference.state_dict()) <= {
        k for k in plain.state_dict() if k.endswith(".bias")
    }, "merged model must have the plain backbone's tensor names"
    return plain


def outputs_and_grads(pm: vpeft.PeftModel, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Output, input gradient and every trainable's gradient of one backward of a fixed loss,
    for comparing two implementations of the same maths."""
    pm.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    out = pm(x)
    (out.square().sum() + out.sum()).backward()
    grads = {f"grad:{n}": p.grad.clone() for n, p in pm.trainable_parameters().items()}
    return {"out": out.detach(), "grad:x": x.grad.clone(), **grads}


def kron_sum_by_blocks(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Σ_i left_i ⊗ right_i written block by block, for closed-form checks of Kronecker sums:
    left (n, p, q), right (n, a, b); block (x, y), of size a×b, is Σ_i left[i, x, y] · right_i."""
    n, p, q = left.shape
    _, a, b = right.shape
    out = torch.zeros(p * a, q * b)
    for i in range(n):
        for x in range(p):
            for y in range(q):
                out[x * a : (x + 1) * a, y * b : (y + 1) * b] += left[i, x, y] * right[i]
    return out


def trainable_encoder(method: str, factory: Factory, **options: Any) -> int:
    return build(method, factory, **options).summary().trainable_encoder


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def deep_copy(module: nn.Module) -> nn.Module:
    return copy.deepcopy(module)
