"""Wrapped modules still answer for the module they wrap, and install order does not matter.

- Swin resizing (`set_input_size` → each block's ``attn.set_window_size``) works after a method
  has wrapped the attention, and gives exactly the model that resizing before installing gives.
- ``adapter`` then ``prefix`` / ``vpt-deep`` (Swin) builds the same model as the other order.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import vpeft
from tests.helpers import images, tiny_swin, tiny_vit
from tests.methods import checks
from vpeft.core.wrapper import AdaptedLayer
from vpeft.methods.prompts.layers import ExtendedAttention

#: methods that wrap a Swin block's `attn` (adapter, prefix, VPT) or a linear inside it (LoRA)
SWIN_METHODS = ("adapter", "prefix", "vpt-deep", "lora", "adaptformer", "ssf")
NEW_WINDOW = 8  # stage 1: 16×16 tokens, 4×4 windows → 8×8; stage 2: 8×8 tokens → one window


def _trained(method: str, model: torch.nn.Module) -> vpeft.PeftModel:
    torch.manual_seed(3)
    pm = vpeft.apply(model, method, num_classes=checks.NUM_CLASSES)
    checks.perturb_trainables(pm)
    return pm.eval()


@pytest.mark.parametrize("method", SWIN_METHODS)
def test_swin_resizes_after_install_as_if_resized_before(method: str) -> None:
    x = images(3, seed=2)
    pm = _trained(method, tiny_swin())
    with torch.no_grad():
        before = pm(x)
    pm.model.set_input_size(window_size=NEW_WINDOW)
    assert pm.model.layers[0].blocks[0].attn.window_size == (NEW_WINDOW, NEW_WINDOW)

    resized_first = tiny_swin()
    resized_first.set_input_size(window_size=NEW_WINDOW)
    reference = _trained(method, resized_first)
    reference.load_state_dict(pm.state_dict())
    with torch.no_grad():
        after, expected = pm(x), reference(x)
    torch.testing.assert_close(after, expected, atol=0, rtol=0)
    assert (after - before).abs().max() > 1e-4  # the resize really changed the windows


def test_forwarded_attributes_reach_the_frozen_module() -> None:
    pm = _trained("adapter", tiny_swin())
    attn = pm.model.layers[0].blocks[0].attn
    assert isinstance(attn, AdaptedLayer)
    assert attn.num_heads == attn.base.num_heads == 2
    assert attn.window_size == attn.base.window_size
    with pytest.raises(AttributeError, match="no_such_attribute"):
        _ = attn.no_such_attribute


def _swap_order(first: str, second: str, factory, **second_options) -> vpeft.PeftModel:
    torch.manual_seed(5)
    pm = vpeft.apply(factory(), first, num_classes=checks.NUM_CLASSES)
    return vpeft.apply(pm, second, **second_options)


@pytest.mark.parametrize(
    ("factory", "prompt", "options"),
    [(tiny_vit, "prefix", {"num_tokens": 2}), (tiny_swin, "prefix", {"num_tokens": 2}),
     (tiny_swin, "vpt-deep", {"num_tokens": 3})],
)  # fmt: skip
def test_adapter_then_prompt_equals_prompt_then_adapter(
    factory, prompt: str, options: dict, tmp_path: Path
) -> None:
    adapter_first = _swap_order("adapter", prompt, factory, **options)
    checks.perturb_trainables(adapter_first)
    torch.manual_seed(5)
    prompt_first = vpeft.apply(factory(), prompt, num_classes=checks.NUM_CLASSES, **options)
    prompt_first = vpeft.apply(prompt_first, "adapter")
    # both orders build AdaptedLayer(base=ExtendedAttention(attention)): same tensors, same names
    block = adapter_first.spec.blocks[0]
    slot = getattr(block.attention.parent, block.attention.attr)
    assert isinstance(slot, AdaptedLayer) and isinstance(slot.base, ExtendedAttention)
    assert adapter_first.trainable_parameters().keys() == prompt_first.trainable_parameters().keys()
    prompt_first.load_state_dict(adapter_first.state_dict())
    x = images(2, seed=4)
    with torch.no_grad():
        torch.testing.assert_close(prompt_first.eval()(x), adapter_first.eval()(x), atol=0, rtol=0)
    # the file replays the methods in their order (adapter, then the prompt) onto a fresh backbone
    adapter_first.save(tmp_path / "a.safetensors")
    loaded = vpeft.load(tmp_path / "a.safetensors", base=factory()).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), adapter_first(x), atol=0, rtol=0)
