"""SSF's memory-lean path (saves its output, folds into norms) equals the plain maths.

Reference: y ↦ y·γ + β by plain autograd after the base layer (the pre-fast-path forward).
Compared in float64 so that a wrong gradient cannot hide behind a loose tolerance.
"""

from __future__ import annotations

import pytest
import torch

from tests.helpers import BACKBONES, images
from tests.methods import checks
from vpeft.analysis import saved_activation_bytes
from vpeft.methods.ssf.scale_shift import ScaleShift


def _plain_forward(self: ScaleShift, y: torch.Tensor) -> torch.Tensor:
    shape = (-1,) + (1,) * self.trailing
    return y * self.scale.view(shape).to(y.dtype) + self.shift.view(shape).to(y.dtype)


def _plain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ScaleShift, "forward", _plain_forward)
    monkeypatch.delattr(ScaleShift, "fused_forward")


@pytest.mark.parametrize("backbone", list(BACKBONES))
@pytest.mark.parametrize("convs", ["patch_embed", "all"])
def test_ssf_fast_path_equals_plain_maths(backbone: str, convs: str, monkeypatch) -> None:
    pm = checks.build("ssf", BACKBONES[backbone], init_std=0.2, convs=convs)
    checks.perturb_trainables(pm, std=0.1)
    pm.train().to(torch.float64)
    x = images().double()
    torch.manual_seed(3)
    fast = checks.outputs_and_grads(pm, x)
    with monkeypatch.context() as m:
        _plain(m)
        torch.manual_seed(3)
        plain = checks.outputs_and_grads(pm, x)
    assert fast.keys() == plain.keys()
    for key in fast:
        torch.testing.assert_close(fast[key], plain[key], rtol=1e-10, atol=1e-12, msg=key)


def test_ssf_saves_fewer_activation_bytes_than_full_and_plain_ssf(monkeypatch) -> None:
    """Per ViT block the plain SSF keeps each scaled layer's input (21 widths per token); the
    lean path keeps 10 (12 without the residual links of `test_ssf_residual.py`), below full
    fine-tuning's 16 (exact byte counts, no timing)."""
    x = images(4)
    ssf = checks.build("ssf", BACKBONES["vit"]).train()
    full = checks.build("full", BACKBONES["vit"]).train()
    lean = saved_activation_bytes(ssf, x)
    with monkeypatch.context() as m:
        _plain(m)
        plain = saved_activation_bytes(ssf, x)
    assert lean < 0.85 * saved_activation_bytes(full, x) < plain
