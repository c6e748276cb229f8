"""FLOP counts: closed forms for ViT (attention included) and the 1× / 2× / 3× step ratios."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import vpeft
from vpeft.analysis import attention_flops, forward_flops, train_step_flops


def vit_forward_closed_form(
    batch: int, img: int, patch: int, dim: int, depth: int, classes: int
) -> int:
    """2·MACs of a timm ViT with a class token: patch conv, then per block qkv (3D²), QKᵀ and AV
    (N²D each), proj (D²), fc1 and fc2 (4D² each) on N tokens, then the head on the class token."""
    patches = (img // patch) ** 2
    n = patches + 1
    conv = 2 * patches * (3 * patch * patch) * dim
    linear = 2 * n * dim * dim * (3 + 1 + 4 + 4)
    attention = 2 * n * n * dim * 2
    head = 2 * dim * classes
    return batch * (conv + depth * (linear + attention) + head)


def mid_vit() -> torch.nn.Module:
    """A mid-size random ViT (depth 4, width 192, 65 tokens): ratios without ViT-B's cost."""
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224", img_size=64, patch_size=8, embed_dim=192, depth=4,
        num_heads=3, num_classes=0,
    )  # fmt: skip


MID = dict(batch=2, img=64, patch=8, dim=192, depth=4, classes=10)


def test_vit_base_forward_equals_closed_form_including_attention() -> None:
    model = timm.create_model("vit_base_patch16_224")  # 1000-class head
    flops = forward_flops(model, torch.randn(1, 3, 224, 224))
    expected = vit_forward_closed_form(1, 224, 16, 768, 12, 1000)
    assert expected == 35_127_656_448
    assert flops == expected


def test_stock_counter_misses_cpu_attention_and_ours_adds_exactly_it() -> None:
    model = mid_vit()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(), FlopCounterMode(display=False) as stock:
        model(x)
    ours = forward_flops(model, x)
    attention = MID["batch"] * MID["depth"] * attention_flops((3, 65, 64), (3, 65, 64), (3, 65, 64))
    assert ours == vit_forward_closed_form(**{**MID, "classes": 0})
    assert ours - stock.get_total_flops() == attention


@pytest.mark.parametrize("mask", [False, True])
def test_fused_attention_counts_equal_the_math_backend(mask: bool) -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, n, 8, generator=g, requires_grad=True) for n in (5, 7, 7))
    bias = torch.randn(5, 7, generator=g) if mask else None

    def count(backend: SDPBackend) -> tuple[int, int, list[str]]:
        with sdpa_kernel(backend):
            step = train_step_flops(
                lambda t: F.scaled_dot_product_attention(t, k, v, attn_mask=bias), q,
                loss_fn=lambda o: o.sum(),
            )  # fmt: skip
        return step.forward, step.backward

    fused = count(SDPBackend.FLASH_ATTENTION)
    math = count(SDPBackend.MATH)
    assert fused == math
    forward = 2 * 2 * 3 * 5 * 7 * (8 + 8)
    assert fused == (forward, 2 * forward)


def test_attention_flops_supports_grouped_query_shapes() -> None:
    # 8 query heads sharing 2 key/value heads: products run at the query heads' count
    assert attention_flops((1, 8, 10, 16), (1, 2, 12, 16), (1, 2, 12, 32)) == 2 * 8 * 10 * 12 * 48


def _step(method: str, **options: object):
    pm = vpeft.apply(mid_vit(), method, num_classes=MID["classes"], **options)
    pm.train()
    return train_step_flops(pm, torch.randn(MID["batch"], 3, 64, 64))


def test_linear_probe_step_is_forward_plus_head_weight_gradient() -> None:
    """Nothing but the head trains and the image needs no gradient: no backward through the
    backbone, so the step is 1× forward + the head weight gradient 2·B·D·C."""
    step = _step("linear")
    assert step.forward == vit_forward_closed_form(**MID)
    assert step.backward == 2 * MID["batch"] * MID["dim"] * MID["classes"]
    assert step.train_step / step.forward == pytest.approx(1.0, rel=1e-3)


def test_full_finetuning_step_is_three_forwards_minus_image_gradient() -> None:
    """Every product gets an input and a weight gradient (2× its forward), except the patch
    convolution, whose input (the image) needs no gradient."""
    step = _step("full")
    b, p, d = MID["batch"], MID["patch"], MID["dim"]
    conv = 2 * b * (64 // p) ** 2 * (3 * p * p) * d
    assert step.train_step == 3 * step.forward - conv
    assert step.train_step / step.forward == pytest.approx(3.0, rel=0.05)


@pytest.mark.parametrize(("method", "options"), [("lora", {"rank": 8}), ("bitfit", {})])
def test_peft_step_is_about_two_forwards(method: str, options: dict) -> None:
    """Frozen weights need no weight gradient, but the gradient must flow back through every
    frozen product to reach the trainable pieces: ≈ 2× forward (within 5%: the first block's
    skipped products and attention's 2× backward move it by ±2–3% on this model)."""
    step = _step(method, **options)
    assert step.train_step / step.forward == pytest.approx(2.0, rel=0.05)
    full = _step("full")
    linear = _step("linear")
    assert linear.train_step < step.train_step < full.train_step


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("method", ["linear", "lora", "full"])
def test_cuda_attention_kernels_count_like_the_cpu_kernel(method: str, dtype: torch.dtype) -> None:
    """CUDA picks memory-efficient (fp32) or flash / cuDNN (bf16) attention: same counts."""
    steps = []
    for device in ("cpu", "cuda"):
        pm = vpeft.apply(mid_vit(), method, num_classes=10).to(device, dtype)
        pm.train()
        steps.append(train_step_flops(pm, torch.randn(2, 3, 64, 64, device=device, dtype=dtype)))
    assert steps[0] == steps[1]
