"""Mixed-adapter batches: `pm(x, adapter_names=[...])` equals running each sample alone with its
own adapter's single-task model, for every method family and for a mix of composable methods."""

from __future__ import annotations

import pytest
import torch

import vpeft
from tests.helpers import tiny_vit
from tests.serve.helpers import METHODS, images, single, write_adapter
from vpeft.errors import ConfigError

ORDER = ["b", "a", "c", "a", "b", "a"]


def check_mixed(pm: vpeft.PeftModel, files: dict, names: list[str]) -> None:
    x = images(len(names), seed=3)
    outs = pm(x, adapter_names=names)
    assert len(outs) == len(names)
    for i, name in enumerate(names):
        alone = single(files[name])(x[i : i + 1])[0]
        torch.testing.assert_close(outs[i], alone, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("method", list(METHODS))
def test_mixed_batch_equals_each_sample_alone(tmp_path, method: str) -> None:
    files = {
        name: write_adapter(tmp_path, name, method, k, seed=s)
        for name, k, s in (("a", 3, 1), ("b", 4, 2), ("c", 3, 3))
    }
    pm = vpeft.load_adapters(tiny_vit(0), files).eval()
    check_mixed(pm, files, ORDER)
    check_mixed(pm, files, ["c"])  # one adapter only


def test_mixed_batch_of_different_composable_methods(tmp_path) -> None:
    cases = (("a", "lora", 3), ("b", "ssf", 4), ("c", "bitfit", 2), ("d", "adapter", 5))
    files = {n: write_adapter(tmp_path, n, m, k, seed=i) for i, (n, m, k) in enumerate(cases)}
    pm = vpeft.load_adapters(tiny_vit(0), files).eval()
    check_mixed(pm, files, ["d", "a", "c", "b", "a", "d", "c"])


def test_mixed_batch_gradients_reach_only_the_adapters_used(tmp_path) -> None:
    files = {n: write_adapter(tmp_path, n, "lora", 3, seed=i) for i, n in enumerate("ab")}
    pm = vpeft.load_adapters(tiny_vit(0), files)
    for p in pm.parameters():
        p.requires_grad_(id(p) not in pm._backbone_params)
    outs = pm(images(3), adapter_names=["a", "a", "a"])
    torch.stack(outs).square().sum().backward()
    grads = {n: p.grad for n, p in pm.named_parameters() if p.requires_grad}
    assert all(g is not None for n, g in grads.items() if ".a." in n or "heads.a." in n)
    assert all(g is None for n, g in grads.items() if ".b." in n or "heads.b." in n)


def test_mixed_batch_errors(tmp_path) -> None:
    files = {"a": write_adapter(tmp_path, "a", "lora", 3, seed=1)}
    pm = vpeft.load_adapters(tiny_vit(0), files).eval()
    with pytest.raises(ConfigError, match="unknown adapter"):
        pm(images(2), adapter_names=["a", "zzz"])
    with pytest.raises(ConfigError, match="entries for a batch"):
        pm(images(2), adapter_names=["a"])
