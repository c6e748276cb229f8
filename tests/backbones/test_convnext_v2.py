"""ConvNeXt-V2 (timm ``conv_mlp=True``: 1x1-conv MLP with GRN, LayerNorm2d) with pretrained
weights: a checkpoint written from timm's own state_dict loads through `--weights`, the blocks
are converted to the channels-last layout that methods describe, and the model computes what
timm's conv-MLP model computes."""

from __future__ import annotations

import copy
import warnings

import pytest
import timm
import torch
from safetensors.torch import save_file

import vpeft
from tests.helpers import images
from tests.methods import checks
from vpeft.backbones import describe
from vpeft.factory import create_backbone

ARGS = dict(dims=(8, 16, 16, 32), depths=(1, 1, 2, 1), num_classes=0)


def tiny_convnext_v2(seed: int = 0, **kw: object) -> torch.nn.Module:
    """A tiny timm ConvNeXt-V2 (conv_mlp=True) with non-trivial GRN and norm parameters."""
    torch.manual_seed(seed)
    model = timm.create_model("convnextv2_atto", **{**ARGS, **kw})
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "grn" in name or "norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    return model.eval()


def test_the_conv_mlp_layout_is_converted_and_computes_the_same(tmp_path) -> None:
    timm_model = tiny_convnext_v2()
    assert all(b.use_conv_mlp for s in timm_model.stages for b in s.blocks)
    x = images(batch=2)
    with torch.no_grad():
        want = timm_model(x)
    converted = copy.deepcopy(timm_model)
    spec = describe(converted)
    assert not any(b.module.use_conv_mlp for b in spec.blocks)
    assert all(isinstance(b.fc1.linear, torch.nn.Linear) for b in spec.blocks)
    with torch.no_grad():
        torch.testing.assert_close(converted(x), want, atol=1e-5, rtol=1e-5)


def test_a_timm_checkpoint_of_the_conv_mlp_model_loads_through_weights(tmp_path) -> None:
    timm_model = tiny_convnext_v2(seed=3)
    path = tmp_path / "convnextv2.safetensors"
    save_file({k: v.contiguous() for k, v in timm_model.state_dict().items()}, str(path))
    x = images(batch=2)
    with torch.no_grad():
        want = timm_model(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backbone = create_backbone("convnextv2_atto", weights=path, **ARGS)
    pm = vpeft.apply(backbone, "bitfit", num_classes=3)
    with torch.no_grad():
        torch.testing.assert_close(pm.spec.features(x), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("linear", {}),
        ("bitfit", {}),
        ("norm", {}),
        ("lora", {"rank": 2, "targets": ("fc1", "fc2")}),
        ("adaptformer", {"bottleneck": 4}),
    ],
)
def test_methods_work_on_convnext_v2(method: str, options: dict, tmp_path) -> None:
    pm = checks.check_training_moves_only_trainables(method, tiny_convnext_v2, **options)
    assert pm.summary().trainable > 0
    checks.check_save_load(method, tiny_convnext_v2, tmp_path, **options)
