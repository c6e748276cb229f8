"""VQT `memory="recompute"`: same outputs and gradients as the default, fewer saved bytes."""

from __future__ import annotations

import torch

from tests.helpers import images, tiny_vit
from tests.methods import checks
from vpeft.analysis import saved_activation_bytes


def _run(memory: str) -> tuple[dict[str, torch.Tensor], int]:
    pm = checks.build("vqt", tiny_vit, num_queries=3, memory=memory)
    checks.perturb_trainables(pm, std=0.1)
    pm.train().to(torch.float64)
    x = images(3).double()
    torch.manual_seed(5)  # same query-token and attention dropout masks in both
    out = pm(x)
    (out.square().sum() + out.sum()).backward()
    result = {"out": out.detach()}
    result.update({n: p.grad.clone() for n, p in pm.trainable_parameters().items()})
    pm.to(torch.float32)
    return result, saved_activation_bytes(pm, images(3))


def test_recompute_equals_keys_values_and_saves_less() -> None:
    default, default_bytes = _run("keys_values")
    lean, lean_bytes = _run("recompute")
    assert default.keys() == lean.keys()
    for key in default:
        torch.testing.assert_close(lean[key], default[key], rtol=1e-10, atol=1e-12, msg=key)
    assert lean_bytes < 0.75 * default_bytes


def test_recompute_eval_equals_default() -> None:
    pms = [checks.build("vqt", tiny_vit, memory=m).eval() for m in ("keys_values", "recompute")]
    with torch.no_grad():
        torch.testing.assert_close(pms[1](images()), pms[0](images()), rtol=0, atol=0)
