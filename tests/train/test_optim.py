"""Weight-decay groups are decided by construction (types, ndim, tags), and the three optimisers
follow their update rules (closed form for one step)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import vpeft
from tests.helpers import tiny_vit
from vpeft.errors import ConfigError
from vpeft.train.optim import (
    LR_SCALE_ATTR,
    build_optimizer,
    decay_decisions,
    no_weight_decay,
    param_groups,
)


def _decayed(model: nn.Module) -> dict[str, bool]:
    return {d.name: d.decay for d in decay_decisions(model)}


def test_lora_groups_by_construction():
    pm = vpeft.apply(tiny_vit(), "lora", num_classes=5, rank=4)
    decisions = _decayed(pm)
    # 2 blocks x (q, v) x (A, B) LoRA matrices + head weight decay; the head bias does not.
    decayed = sorted(n for n, d in decisions.items() if d)
    assert len(decayed) == 2 * 2 * 2 + 1
    head = pm.head
    params = dict(pm.named_parameters())
    assert any(params[n] is head.weight for n in decayed)
    not_decayed = [n for n, d in decisions.items() if not d]
    assert [params[n] is head.bias for n in not_decayed] == [True]
    groups = param_groups(pm, 0.05)
    counts = {g["weight_decay"]: sum(p.numel() for p in g["params"]) for g in groups}
    # LoRA: 4 slots x r (d_in + d_out) = 4 * 4 * 64; head 32*5 weight, 5 bias
    assert counts == {0.05: 4 * 4 * (32 + 32) + 32 * 5, 0.0: 5}


def test_full_finetuning_excludes_tokens_norms_biases():
    pm = vpeft.apply(tiny_vit(), "full", num_classes=5)
    decisions = {d.name: d for d in decay_decisions(pm)}
    params = dict(pm.named_parameters())
    by_id = {id(p): n for n, p in params.items()}
    vit = pm.model
    assert decisions[by_id[id(vit.cls_token)]].reason == "token/position embedding"
    assert decisions[by_id[id(vit.pos_embed)]].reason == "token/position embedding"
    for module in vit.modules():
        if isinstance(module, nn.LayerNorm):
            assert not decisions[by_id[id(module.weight)]].decay
        if isinstance(module, nn.Linear):
            assert decisions[by_id[id(module.weight)]].decay
            assert not decisions[by_id[id(module.bias)]].decay
    assert decisions[by_id[id(vit.patch_embed.proj.weight)]].decay  # 4-D conv kernel decays
    n_decayed = sum(params[n].numel() for n, d in decisions.items() if d.decay)
    # every Linear weight + the patch-embedding conv; tiny ViT: D=32, MLP 4D, 2 blocks, 5 classes
    d = 32
    per_block = d * 3 * d + d * d + d * 4 * d + 4 * d * d
    assert n_decayed == 2 * per_block + 3 * 8 * 8 * d + d * 5
    assert len(decisions) == sum(1 for p in pm.parameters() if p.requires_grad)


class _Odd(nn.Module):
    """Names that would fool substring matching: 'norm', 'bias', 'cls_token', 'prompt'."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.Linear(4, 4)  # a Linear called "norm": its weight must decay
        self.bias_proj = nn.Linear(4, 4, bias=False)  # name contains "bias": decays
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 4))  # not the backbone's: decays
        self.prompt = nn.Parameter(torch.zeros(3, 4))  # tagged below: does not decay
        self.scale = nn.Parameter(torch.ones(4))  # 1-D tagged False: decays
        self.ln = _ScaledNorm(4)  # norm subclass with a 2-D parameter: does not decay


class _ScaledNorm(nn.LayerNorm):
    def __init__(self, d: int) -> None:
        super().__init__(d)
        self.mix = nn.Parameter(torch.eye(d))


def test_rules_use_types_shapes_and_tags_not_names():
    m = _Odd()
    no_weight_decay(m.prompt)
    m.scale._vpeft_no_decay = False
    got = _decayed(m)
    assert got == {
        "cls_token": True,
        "prompt": False,
        "scale": True,
        "norm.weight": True,
        "norm.bias": False,
        "bias_proj.weight": True,
        "ln.weight": False,
        "ln.bias": False,
        "ln.mix": False,
    }


def test_install_context_tags_weight_decay():
    from vpeft.backbones import describe
    from vpeft.core.context import InstallContext

    vit = tiny_vit()
    vit.requires_grad_(False)
    ctx = InstallContext(vit, describe(vit), "test", 2)
    prompt = nn.Parameter(torch.zeros(4, 32))
    vit.register_parameter("prompt", prompt)
    ctx.train(prompt, weight_decay=False)
    ctx.train(vit.norm, weight_decay=True)  # force decay on a norm's 1-D parameters
    ctx.train(vit.blocks[0].mlp.fc1)  # default rule
    got = _decayed(vit)
    assert got == {
        "prompt": False,
        "blocks.0.mlp.fc1.weight": True,
        "blocks.0.mlp.fc1.bias": False,
        "norm.weight": True,
        "norm.bias": True,
    }


def test_frozen_parameters_are_left_out_and_empty_model_errors():
    m = _Odd()
    m.requires_grad_(False)
    m.prompt.requires_grad_(True)
    assert [d.name for d in decay_decisions(m)] == ["prompt"]
    m.prompt.requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        param_groups(m, 0.1)


def test_lr_scale_tag_makes_its_own_group():
    m = nn.Linear(3, 2)
    setattr(m.weight, LR_SCALE_ATTR, 10.0)
    groups = param_groups(m, 0.1)
    assert sorted((g["lr_scale"], g["weight_decay"]) for g in groups) == [(1.0, 0.0), (10.0, 0.1)]


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd"])
def test_one_step_closed_form(name):
    """θ = 1, g = 0.001, λ = 0.5, lr = 0.1: coupled L2 flips the update direction, AdamW not."""
    theta, g, wd, lr = 1.0, 1e-3, 0.5, 0.1
    p = nn.Parameter(torch.tensor([theta], dtype=torch.float64))
    opt = build_optimizer(name, [{"params": [p], "weight_decay": wd}], lr=lr, momentum=0.9)
    p.grad = torch.tensor([g], dtype=torch.float64)
    opt.step()
    eps = 1e-8
    expected = {
        # decoupled: θ(1 − lr λ) − lr · m̂/(√v̂ + ε), with m̂ = g, √v̂ = |g| at step 1
        "adamw": theta * (1 - lr * wd) - lr * g / (abs(g) + eps),
        # coupled: the moments see g + λθ
        "adam": theta - lr * (g + wd * theta) / (abs(g + wd * theta) + eps),
        # momentum buffer starts as g + λθ
        "sgd": theta - lr * (g + wd * theta),
    }[name]
    assert math.isclose(p.item(), expected, rel_tol=0, abs_tol=1e-12)


def test_unknown_optimizer():
    with pytest.raises(ConfigError, match="unknown optimizer"):
        build_optimizer("lion", [{"params": [nn.Parameter(torch.zeros(1))]}], lr=0.1)
