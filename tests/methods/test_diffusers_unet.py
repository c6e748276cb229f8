"""APT and LoRA on the attention layers of a tiny random-weight diffusers `UNet2DConditionModel`
(spec/apt.md: the paper's Stable Diffusion setting), installed headless with `vpeft.adapt`:
the description (attn1 self, attn2 cross with k/v on the text states), the golden identities
(APT at P = 0, s = 0; LoRA at init) and a denoising training step that moves every adapted
tensor and leaves every UNet tensor bit-identical."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import vpeft
from vpeft.backbones import describe
from vpeft.errors import ConfigError
from vpeft.methods.apt.layer import ApproximatedPrompts

diffusers = pytest.importorskip("diffusers")

CROSS_DIM = 32


def tiny_unet() -> nn.Module:
    torch.manual_seed(0)
    return diffusers.UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=CROSS_DIM,
        attention_head_dim=8,
        norm_num_groups=8,
    ).eval()


def inputs(seed: int = 1) -> dict[str, torch.Tensor]:
    return describe(tiny_unet()).example_inputs(2, generator=torch.Generator().manual_seed(seed))


def denoise(unet: nn.Module, x: dict[str, torch.Tensor]) -> torch.Tensor:
    return unet(**x).sample


def test_description_self_and_cross_attention() -> None:
    unet = tiny_unet()
    spec = describe(unet)
    assert spec.family == "diffusers-unet"
    # down block 0 (32 ch), mid block (64 ch), up block 1 (two layers, 32 ch)
    assert [(b.stage, b.dim) for b in spec.blocks] == [(0, 32), (2, 64), (4, 32), (4, 32)]
    for block in spec.blocks:
        self_attn, cross = block.attention, block.cross_attention
        assert self_attn is not None and cross is not None
        assert not self_attn.cross and cross.cross
        assert self_attn.module is block.module.attn1 and cross.module is block.module.attn2
        # q reads the image tokens, k / v the text states
        assert cross.q.in_features == block.dim
        assert cross.k.in_features == CROSS_DIM and cross.v.in_features == CROSS_DIM
        assert cross.proj.linear is block.module.attn2.to_out[0]
        assert self_attn.k.in_features == block.dim


def test_apply_points_to_adapt() -> None:
    with pytest.raises(ConfigError, match=r"vpeft\.adapt"):
        vpeft.apply(tiny_unet(), "lora", num_classes=3)
    with pytest.raises(ConfigError, match="without a task head"):
        vpeft.adapt(tiny_unet(), "vpt-deep")


def test_apt_at_zero_prompts_is_the_plain_unet() -> None:
    x = inputs()
    with torch.no_grad():
        reference = denoise(tiny_unet(), x)
        unet = vpeft.adapt(tiny_unet(), "apt", num_prompts=4, rank=2)
        modules = [m for m in unet.modules() if isinstance(m, ApproximatedPrompts)]
        assert len(modules) == 2 * 4  # attn1 and attn2 of each of the 4 transformer blocks
        assert not torch.equal(denoise(unet, x), reference)  # random P: APT is in the path
        for m in modules:
            m.prompts.zero_()
            assert float(m.log_scale) == 0.0
        assert torch.equal(denoise(unet, x), reference)


def test_apt_reads_the_query_side_input() -> None:
    """X of the cross-attention APT is the image-token input (width dim), not the text."""
    unet = vpeft.adapt(tiny_unet(), "apt", num_prompts=4, rank=2)
    seen: list[tuple[int, ...]] = []
    for m in unet.modules():
        if isinstance(m, ApproximatedPrompts):
            m.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
    with torch.no_grad():
        denoise(unet, inputs())
    widths = [s[-1] for s in seen]
    assert len(seen) == 8 and widths == [32, 32, 64, 64, 32, 32, 32, 32]
    assert all(s[1] != 8 for s in seen)  # never the 8 text tokens


def test_lora_at_init_is_the_plain_unet() -> None:
    x = inputs()
    with torch.no_grad():
        reference = denoise(tiny_unet(), x)
        unet = vpeft.adapt(tiny_unet(), "lora", rank=4, targets=("q", "k", "v", "proj"))
        assert torch.equal(denoise(unet, x), reference)
    trained = [n for n, p in unet.named_parameters() if p.requires_grad]
    assert len(trained) == 4 * 2 * 4 * 2  # blocks · (attn1, attn2) · (q, k, v, proj) · (A, B)
    assert sum(".attn2." in n for n in trained) == len(trained) // 2


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("apt", {"num_prompts": 4, "rank": 2}),
        ("lora", {"rank": 4, "targets": ("q", "k", "v", "proj")}),
    ],
)
def test_denoising_step_moves_only_the_adapted_tensors(method: str, options: dict) -> None:
    unet = tiny_unet()
    frozen = [(n, p, p.detach().clone()) for n, p in unet.named_parameters()]
    buffers = [(n, b, b.detach().clone()) for n, b in unet.named_buffers()]
    unet = vpeft.adapt(unet, method, **options)
    trained = [(n, p) for n, p in unet.named_parameters() if p.requires_grad]
    assert trained and all(not p.requires_grad for _, p, _ in frozen)
    start = {n: p.detach().clone() for n, p in trained}
    opt = torch.optim.AdamW([p for _, p in trained], lr=1e-2)
    unet.train()
    # two steps: LoRA's A gets no gradient while B is still zero
    for step in range(2):
        x = inputs(seed=10 + step)
        noise = torch.randn_like(x["sample"])
        x["sample"] = x["sample"] + noise  # a noisy latent; the target is the noise
        loss = nn.functional.mse_loss(denoise(unet, x), noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for name, p in trained:
        assert not torch.equal(p.detach(), start[name]), f"{name} did not move"
    for name, p, before in frozen:
        assert p.grad is None and torch.equal(p.detach(), before), f"UNet tensor {name} changed"
    for name, b, before in buffers:
        assert torch.equal(b, before), name
