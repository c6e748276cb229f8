"""SPT on a CUDA device (skipped without one): same numbers as on the CPU."""

from __future__ import annotations

import pytest
import torch

import vpeft
from tests.helpers import images, tiny_vit
from tests.spt.helpers import crafted_plan
from vpeft.methods.spt import compute_sensitivity, sparse_matmul

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_sparse_matmul_on_cuda_matches_cpu() -> None:
    g = torch.Generator().manual_seed(0)
    flat = torch.randperm(96 * 64, generator=g)[:300]
    rows, cols = flat // 64, flat % 64
    values = torch.randn(300, generator=g, requires_grad=True)
    x = torch.randn(4, 50, 64, generator=g, requires_grad=True)
    y = sparse_matmul(x, values, rows, cols, 96)
    y.square().sum().backward()
    xc, vc = x.detach().cuda().requires_grad_(), values.detach().cuda().requires_grad_()
    yc = sparse_matmul(xc, vc, rows.cuda(), cols.cuda(), 96)
    yc.square().sum().backward()
    torch.testing.assert_close(yc.cpu(), y, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(vc.grad.cpu(), values.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(xc.grad.cpu(), x.grad, rtol=1e-4, atol=1e-5)


def test_sensitivity_and_spt_lora_on_cuda() -> None:
    model = tiny_vit()
    model.reset_classifier(3)
    batches = [(images(4, seed=s), torch.arange(4) % 3) for s in (1, 2)]
    cpu = compute_sensitivity(model, batches)
    gpu = compute_sensitivity(model.cuda(), [(x.cuda(), y.cuda()) for x, y in batches])
    for name, score in cpu.scores.items():
        torch.testing.assert_close(gpu.scores[name], score, rtol=1e-3, atol=1e-9)
    plan = crafted_plan(tiny_vit(), "lora")
    pm = vpeft.apply(tiny_vit().cuda(), "spt-lora", num_classes=3, plan=plan).cuda()
    assert pm.summary().trainable_encoder == plan.total
    opt = torch.optim.Adam(pm.trainable_parameters().values(), lr=1e-2)
    x, y = images(4).cuda(), (torch.arange(4) % 3).cuda()
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(pm(x), y).backward()
        opt.step()
    pm.eval()
    with torch.no_grad():
        torch.testing.assert_close(pm.merge()(x), pm(x), atol=1e-4, rtol=1e-4)
