"""Export: a merged adapter as plain timm weights (loadable by timm) and ONNX (onnxruntime)."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from typer.testing import CliRunner

import vpeft
from tests.helpers import tiny_vit
from tests.serve.helpers import images, write_adapter
from tests.serve.test_predict import BACKBONE, adapter_file
from vpeft.cli.main import app
from vpeft.core.wrapper import NotMergeableError
from vpeft.export import export_onnx, merged_model, save_timm_weights

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)


@pytest.mark.parametrize("method", ["lora", "ssf", "bitfit"])
def test_timm_weights_load_with_plain_timm(tmp_path, method: str) -> None:
    extra = {"rank": 4} if method == "lora" else {}
    files = {"a": write_adapter(tmp_path, "a", "lora", 3, seed=1),
             "b": write_adapter(tmp_path, "b", method, 4, seed=2, **extra)}  # fmt: skip
    pm = vpeft.load_adapters(tiny_vit(0), files).eval()
    x = images(2)
    path = tmp_path / "b-merged.safetensors"
    save_timm_weights(merged_model(pm, "b"), path)
    # num_classes in the overlay too: else timm drops a classifier of another size than 1000
    overlay = dict(file=str(path), num_classes=4)
    plain = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=True,
        num_classes=4,
        pretrained_cfg_overlay=overlay,
        **TINY,
    ).eval()
    torch.testing.assert_close(plain(x), pm(x, task="b"), atol=1e-5, rtol=1e-5)
    assert pm.named.merged is None  # export left the model unmerged


def test_onnx_matches_pytorch(tmp_path) -> None:
    pm = vpeft.load_adapters(tiny_vit(0), {"a": write_adapter(tmp_path, "a", "ssf", 3, seed=1)})
    diff = export_onnx(merged_model(pm, "a"), tmp_path / "a.onnx", (3, 32, 32))
    assert diff < 1e-4


def test_non_mergeable_adapter_is_refused(tmp_path) -> None:
    pm = vpeft.load_adapters(tiny_vit(0), {"p": write_adapter(tmp_path, "p", "vpt-deep", 3, 1)})
    with pytest.raises(NotMergeableError):
        merged_model(pm, "p")


def test_export_command(tmp_path) -> None:
    path = adapter_file(tmp_path, "shapes", "lora", 3, 1)
    out = tmp_path / "out" / "shapes"
    result = CliRunner().invoke(app, ["export", "-b", BACKBONE, "-a", str(path), "-o", str(out),
                                      "--onnx", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["onnx_max_abs_diff"] < 1e-4 and record["num_classes"] == 3
    single = vpeft.load(path, base=vpeft.create_backbone(BACKBONE)).eval()
    model = vpeft.create_backbone(BACKBONE)
    model.reset_classifier(3)
    from safetensors.torch import load_file

    model.load_state_dict(load_file(record["weights"]))
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(model.eval()(x), single(x), atol=1e-5, rtol=1e-5)
