"""Descriptions of transformers models: slots, streams, sites; adapters sit where their papers
put them (numbers computed by hand from the frozen modules); lazy, optional import."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

import vpeft
from tests.backbones.hf_models import TINY, hf_vilt, hf_vit, transformers, vilt_inputs
from tests.methods.checks import perturb_trainables
from vpeft.backbones import describe
from vpeft.errors import ConfigError

SMALL = {k: v for k, v in TINY.items() if k not in ("image_size", "patch_size")}


def test_hf_vit_slots_are_the_separate_linears() -> None:
    model = hf_vit(0).backbone
    spec = describe(model)
    assert spec.family == "hf-vit" and spec.depth == 2 and spec.num_features == 32
    layer, block = model.layers[1], spec.blocks[1]
    m = block.matrices()
    assert m["q"].linear is layer.attention.q_proj and m["q"].rows is None
    assert m["k"].linear is layer.attention.k_proj and m["v"].linear is layer.attention.v_proj
    assert m["proj"].linear is layer.attention.o_proj
    assert m["fc1"].linear is layer.mlp.fc1 and m["fc2"].linear is layer.mlp.fc2
    assert block.attention.output_site.module is layer.attention.o_proj
    assert block.mlp.single and block.mlp.output.module is layer.mlp
    assert spec.unused == [model.pooler]


def test_clip_model_describes_both_towers() -> None:
    cfg = transformers.CLIPConfig(
        text_config=dict(SMALL, vocab_size=50, max_position_embeddings=8),
        vision_config=dict(TINY),
        projection_dim=16,
    )
    model = transformers.CLIPModel(cfg)
    spec = describe(model)
    assert [b.stream for b in spec.blocks] == ["vision", "vision", "text", "text"]
    assert [b.index for b in spec.blocks] == [0, 1, 2, 3]
    assert spec.blocks[2].attention.q.linear is model.text_model.encoder.layers[0].self_attn.q_proj
    inputs = {
        "pixel_values": torch.randn(2, 3, 32, 32),
        "input_ids": torch.randint(0, 50, (2, 5)),
    }
    assert spec.features(inputs).shape == (2, 32)
    text = describe(model.text_model)
    assert text.family == "hf-clip-text" and text.features(inputs["input_ids"]).shape == (2, 32)


def test_bridgetower_fusion_layers_expose_self_and_cross_attention() -> None:
    cfg = transformers.BridgeTowerConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        text_config=dict(SMALL, vocab_size=50, max_position_embeddings=16),
        vision_config=dict(hidden_size=64, num_hidden_layers=2, image_size=32, patch_size=8),
    )
    model = transformers.BridgeTowerModel(cfg)
    spec = describe(model)
    streams = [b.stream for b in spec.blocks]
    assert streams == ["text", "text", "fusion-text", "fusion-image"] * 1 + [
        "fusion-text",
        "fusion-image",
    ]
    fusion = [b for b in spec.blocks if b.stream.startswith("fusion")]
    assert len(fusion) == 4 and all(b.cross_attention is not None for b in fusion)
    layer = model.cross_modal_image_layers[1]
    block = fusion[3]
    assert block.module is layer
    assert block.attention.q.linear is layer.attention.self.query
    assert block.cross_attention.cross and block.cross_attention.k.linear is (
        layer.crossattention.self.key
    )
    assert block.cross_matrices()["v"].linear is layer.crossattention.self.value
    assert block.mlp.input.module is layer.intermediate
    assert block.mlp.output.module is layer.output.dense  # before dropout + residual + LN
    assert all(b.cross_attention is None for b in spec.blocks if b.stream == "text")
    pm = vpeft.apply(model, "lora", num_classes=2, rank=2)  # 6 blocks x (q, v)
    assert pm.summary().trainable_encoder == 6 * 2 * 2 * (32 + 32)
    inputs = {
        "input_ids": torch.randint(0, 50, (2, 5)),
        "attention_mask": torch.ones(2, 5, dtype=torch.long),
        "pixel_values": torch.randn(2, 3, 32, 32),
        "pixel_mask": torch.ones(2, 32, 32, dtype=torch.long),
    }
    assert spec.num_features == 64 and pm(inputs).shape == (2, 2)


def _manual_vit_layer(layer: nn.Module, x: torch.Tensor, a1: nn.Module, a2: nn.Module):
    """HF ViT layer with Houlsby adapters, by hand: h = x + A1(attn(LN1 x));
    y = h + A2(mlp(LN2 h)) — adapters on the sub-layer outputs, before the residuals."""
    attn = layer.attention
    q, k, v = (
        f(layer.layernorm_before(x)).view(2, -1, 2, 16).transpose(1, 2)
        for f in (attn.q_proj, attn.k_proj, attn.v_proj)
    )
    o = torch.softmax(q @ k.transpose(-1, -2) / 4.0, -1) @ v
    h = x + a1(attn.o_proj.base(o.transpose(1, 2).reshape(2, -1, 32)))
    mlp = layer.mlp.base
    return h + a2(mlp(layer.layernorm_after(h)))


def test_houlsby_adapters_sit_before_the_residuals_on_hf_vit() -> None:
    pm = vpeft.apply(hf_vit(0), "adapter", num_classes=2)
    perturb_trainables(pm, std=0.3)
    layer = pm.model.backbone.layers[0]
    a1 = layer.attention.o_proj.sequential["adapter"]
    a2 = layer.mlp.sequential["adapter"]
    x = torch.randn(2, 17, 32)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), _manual_vit_layer(layer, x, a1, a2), atol=1e-5, rtol=0)


def test_parallel_adapter_is_fed_the_mlp_input_on_split_vilt_mlp() -> None:
    """ViLT: y = h + (fc2(act(fc1(LN2 h))) + s·Δ(LN2 h)) — AdaptFormer beside the MLP, fed the
    LN2 output, added before the residual inside ViltOutput."""
    pm = vpeft.apply(hf_vilt(0), "adaptformer", num_classes=2, bottleneck=4, dropout=0.0)
    perturb_trainables(pm, std=0.3)
    layer = pm.model.backbone.encoder.layer[0]
    branch = layer.output.dense.parallel["adaptformer"].branch
    h = torch.randn(2, 9, 32)
    x_tilde = layer.layernorm_after(h)
    with torch.no_grad():
        got = layer.output(layer.intermediate(x_tilde), h)
        fc1, fc2 = layer.intermediate.base.dense, layer.output.dense.base
        act = layer.intermediate.base.intermediate_act_fn
        expected = h + fc2(act(fc1(x_tilde))) + branch(x_tilde)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    assert branch.scale == 0.1 and not torch.equal(branch(x_tilde), torch.zeros_like(h))


def test_vilt_houlsby_attention_adapter_wraps_the_output_projection() -> None:
    pm = vpeft.apply(hf_vilt(0), "adapter", num_classes=2)
    layer = pm.model.backbone.encoder.layer[1]
    assert "adapter" in layer.attention.output.dense.sequential
    assert "adapter" in layer.output.dense.sequential
    torch.manual_seed(0)
    assert pm(vilt_inputs()).shape == (2, 2)


def test_timm_use_does_not_import_transformers() -> None:
    code = (
        "import sys, timm, vpeft\n"
        "m = timm.create_model('vit_tiny_patch16_224', img_size=32, patch_size=8, depth=1,"
        " embed_dim=32, num_heads=2, num_classes=0)\n"
        "vpeft.apply(m, 'lora', num_classes=2)\n"
        "assert 'transformers' not in sys.modules, 'transformers was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_transformers_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # import now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'vpeft\[hf\]'"):
        vpeft.create_backbone("hf:ViTModel")


def test_unsupported_transformers_model_is_a_clear_error() -> None:
    model = transformers.BertModel(transformers.BertConfig(**SMALL, vocab_size=50))
    with pytest.raises(vpeft.UnsupportedBackboneError, match=r"BertModel.*ViTModel"):
        describe(model)
