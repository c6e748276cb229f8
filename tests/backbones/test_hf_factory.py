"""`hf:` backbone names, config folders, and parameter counts on full-size default configs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import timm
import torch
from typer.testing import CliRunner

import vpeft
from tests.backbones.hf_models import transformers
from vpeft.cli.main import app

SMALL = "hf:ViTModel:hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64"


def test_cli_params_lora_on_hf_vit_b_matches_timm() -> None:
    result = CliRunner().invoke(
        app, ["params", "--backbone", "hf:ViTModel", "--method", "lora", "--json"]
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["trainable_encoder"] == 294_912  # 12 blocks × (q, v) × 8 × (768 + 768)
    assert record["head"] == 768 * 1000 + 1000


@pytest.fixture(scope="module")
def vit_b_pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    """HF ViTModel (default config = ViT-B/16) and timm ViT-B/16, random weights, built once."""
    hf = vpeft.create_backbone("hf:ViTModel")
    tm = timm.create_model("vit_base_patch16_224", num_classes=0)
    return hf, tm


@pytest.mark.parametrize(
    ("method", "opts"),
    [
        ("bitfit", {}),
        ("norm", {}),
        ("ssf", {}),
        ("adapter", {}),
        ("adaptformer", {}),
        ("vpt-deep", {}),
        ("prefix", {}),
        ("lora", {"targets": ("q", "k", "v", "proj", "fc1", "fc2")}),
    ],
)
def test_vit_b_counts_equal_timm(vit_b_pair, method: str, opts: dict) -> None:
    hf, tm = vit_b_pair
    got = vpeft.apply(copy.deepcopy(hf), method, num_classes=10, **opts).summary()
    want = vpeft.apply(copy.deepcopy(tm), method, num_classes=10, **opts).summary()
    assert got.trainable_encoder == want.trainable_encoder
    assert got.head == want.head == 7690


def test_vit_b_bitfit_closed_form(vit_b_pair) -> None:
    """Σ biases of ViT-B/16 on the CLS path (the pooler excluded): patch conv + final LN +
    12 × (q, k, v, o, fc1, fc2, 2 LN)."""
    hf, _ = vit_b_pair
    d, f = 768, 3072
    closed = d + d + 12 * (4 * d + f + d + 2 * d)
    got = vpeft.apply(copy.deepcopy(hf), "bitfit", num_classes=10).summary().trainable_encoder
    assert got == closed == 102_912


def test_overrides_are_typed_and_checked() -> None:
    model = vpeft.create_backbone(SMALL + ",qkv_bias=false,layer_norm_eps=1e-6")
    assert model.config.hidden_size == 32 and model.config.qkv_bias is False
    assert model.config.layer_norm_eps == 1e-6 and model.layers[0].attention.q_proj.bias is None
    with pytest.raises(vpeft.ConfigError, match="no attribute 'hiden_size'"):
        vpeft.create_backbone("hf:ViTModel:hiden_size=32")
    with pytest.raises(vpeft.ConfigError, match="expected int"):
        vpeft.create_backbone("hf:ViTModel:hidden_size=big")
    with pytest.raises(vpeft.ConfigError, match="cannot build ViltModel"):
        vpeft.create_backbone("hf:ViltModel:hidden_size=33")  # not a multiple of 12 heads
    with pytest.raises(vpeft.UnsupportedBackboneError, match="hf:ViTModel"):
        vpeft.create_backbone("hf:BertModel")


def test_seeded_random_weights_are_reproducible() -> None:
    a, b = vpeft.create_backbone(SMALL), vpeft.create_backbone(SMALL)
    c = vpeft.create_backbone(SMALL, seed=1)
    wa, wb, wc = (m.layers[0].attention.q_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_local_folder_with_config_and_weights(tmp_path: Path) -> None:
    model = vpeft.create_backbone(SMALL, seed=3)
    model.save_pretrained(tmp_path / "vit")
    loaded = vpeft.create_backbone(str(tmp_path / "vit"))
    assert type(loaded) is transformers.ViTModel
    for (name, p), q in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    (tmp_path / "vit" / "model.safetensors").unlink()
    random = vpeft.create_backbone(str(tmp_path / "vit"))  # config only: seeded random weights
    assert random.config.hidden_size == 32
    assert not torch.equal(random.layers[0].mlp.fc1.weight, model.layers[0].mlp.fc1.weight)


def test_cli_profile_on_tiny_hf_vit() -> None:
    result = CliRunner().invoke(
        app,
        [
            "profile",
            "--backbone",
            SMALL + ",image_size=32,patch_size=8",
            "--method",
            "lora",
            "--img-size",
            "32",
            "--batch",
            "2",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["forward_flops"] > 0


def test_cli_profile_on_vilt_with_text_and_image() -> None:
    """`vpeft profile` feeds a ViLT backbone text + image (40 tokens, configured image size)."""
    vilt = "hf:ViltModel:hidden_size=32,num_hidden_layers=2,num_attention_heads=2,"
    vilt += "intermediate_size=64,image_size=32,patch_size=8"
    args = ["--method", "vpt-deep", "--opt", "num_tokens=4", "--batch", "2", "--json"]
    result = CliRunner().invoke(app, ["profile", "--backbone", vilt, *args])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["img_size"] == 32 and record["trainable"] == 2 * 4 * 32 + 1000 * 33
    spec = vpeft.backbones.describe(vpeft.create_backbone(vilt))
    inputs = spec.example_inputs(2)
    assert inputs["input_ids"].shape == (2, 40) and inputs["pixel_values"].shape == (2, 3, 32, 32)
