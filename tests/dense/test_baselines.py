"""The dense multi-task baselines pass the per-method checks on a tiny Swin with two dense
tasks: identity at init (where claimed), every trainable tensor moves while every frozen one
stays bit-identical, save → load gives identical outputs, closed-form counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

import vpeft
from tests.dense.helpers import (
    build_dense,
    check_training_moves_only_trainables,
    dense_batch,
    dense_tasks,
)
from tests.helpers import tiny_swin, tiny_vit
from tests.methods import checks
from vpeft.methods.multitask.layers import post_norm_adapter_params

#: (method, options, identity at init)
CASES: list[tuple[str, dict[str, Any], bool]] = [
    ("linear", {}, True),
    ("full", {}, True),
    ("full", {"shared": True}, True),
    ("bitfit", {}, True),
    ("relative-bias", {}, True),
    ("vpt-shallow", {"num_tokens": 3}, False),
    ("vpt-deep", {"num_tokens": 3}, False),
    ("lora-qkv", {}, True),
    ("adapter-ln", {"reduction": 4}, True),
    ("low-rank-adapter", {"reduction": 4}, True),
    ("shared-adapter", {"reduction": 4}, True),
]
IDS = [f"{m}{'-shared' if o.get('shared') else ''}" for m, o, _ in CASES]


@pytest.mark.parametrize(("method", "options", "identity"), CASES, ids=IDS)
def test_identity_at_init(method: str, options: dict[str, Any], identity: bool) -> None:
    if not identity:
        pytest.skip(f"{method} is not an identity at init (prompts take attention mass)")
    reference = build_dense("linear").eval()
    pm = build_dense(method, **options).eval()
    batch = dense_batch()
    with torch.no_grad():
        got, want = pm.forward_tasks(batch), reference.forward_tasks(batch)
    for task in want:
        torch.testing.assert_close(got[task], want[task], atol=1e-5, rtol=0)


@pytest.mark.parametrize(("method", "options", "identity"), CASES, ids=IDS)
def test_training_moves_every_trainable_and_no_frozen_tensor(
    method: str, options: dict[str, Any], identity: bool
) -> None:
    check_training_moves_only_trainables(build_dense(method, **options), steps=4)


@pytest.mark.parametrize(("method", "options", "identity"), CASES, ids=IDS)
def test_save_load_identical(
    method: str, options: dict[str, Any], identity: bool, tmp_path: Path
) -> None:
    pm = build_dense(method, **options)
    checks.perturb_trainables(pm)
    pm.train()  # move the decoders' BatchNorm statistics away from their init
    with torch.no_grad():
        pm.forward_tasks(dense_batch(batch=2, seed=9))
    path = tmp_path / "dense.safetensors"
    pm.save(path)
    with safe_open(str(path), framework="pt") as f:
        keys = {k for k in f.keys() if not k.startswith("__")}  # noqa: SIM118
    assert keys == set(pm.trainable_parameters())
    loaded = vpeft.load(path, base=tiny_swin(0))
    assert (loaded.shared_norms is None) == (pm.shared_norms is None)
    pm.eval()
    loaded.eval()
    batch = dense_batch()
    with torch.no_grad():
        got, want = loaded.forward_tasks(batch), pm.forward_tasks(batch)
    for task in want:
        torch.testing.assert_close(got[task], want[task], atol=0, rtol=0)


def test_dense_model_never_trains_the_final_norm_the_taps_skip() -> None:
    pm = build_dense("full")
    final = {id(p) for p in pm.model.norm.parameters()}
    assert final and not any(id(p) in final for p in pm.trainable_parameters().values())
    encoder = sum(p.numel() for p in pm.model.parameters()) - checks.count(pm.model.norm)
    assert pm.summary().trainable_encoder == 2 * encoder
    # a classification model still trains it (its pooled path runs the final norm)
    one = vpeft.apply(tiny_swin(0), "full", num_classes=3)
    assert one.summary().trainable_encoder == checks.count(one.model)


@pytest.mark.parametrize("method", ["full", "shared-adapter"])
def test_shared_installs_share_one_set_of_stage_norms(method: str) -> None:
    options = {"shared": True} if method == "full" else {}
    pm = build_dense(method, **options)
    norms = {id(h.norms) for h in pm.heads.values()}
    assert len(norms) == 1 and pm.shared_norms is not None
    assert id(pm.shared_norms) in norms
    per_task = build_dense("linear")
    assert pm.summary().head == per_task.summary().head - checks.count(pm.shared_norms)
    # explicit per-task norms on a shared install
    pm = build_dense(method, shared_norms=False, **options)
    assert pm.shared_norms is None and len({id(h.norms) for h in pm.heads.values()}) == 2


def test_closed_form_counts_on_tiny_swin() -> None:
    dims = [16, 16, 32, 32]  # tiny_swin: depths (2, 2), embed 16
    tasks = len(dense_tasks())
    pm = build_dense("adapter-ln", reduction=4)
    assert pm.summary().trainable_encoder == tasks * sum(
        post_norm_adapter_params(d, d // 4) for d in dims
    )
    pm = build_dense("low-rank-adapter", reduction=4, rank_divisor=2)
    assert pm.summary().trainable_encoder == tasks * sum(
        post_norm_adapter_params(d, d // 4, max(d // 8, 1)) for d in dims
    )
    pm = build_dense("lora-qkv")
    assert pm.summary().trainable_encoder == tasks * sum(4 * (d + 3 * d) + 2 * d for d in dims)
    pm = build_dense("shared-adapter", reduction=4)
    plain = tiny_swin(0)
    layer_norms = [m for m in plain.modules() if isinstance(m, torch.nn.LayerNorm)]
    norms = sum(checks.count(m) for m in layer_norms) - checks.count(plain.norm)
    adapters = sum(post_norm_adapter_params(d, d // 4) for d in dims)
    assert pm.summary().trainable_encoder == adapters + norms
    assert pm.summary().encoder_per_task == 0
    pm = build_dense("relative-bias")
    assert pm.summary().trainable_encoder == tasks * sum(
        t.numel() for t in pm.spec.relative_position_tables
    )


def test_clear_errors_off_swin() -> None:
    with pytest.raises(vpeft.UnsupportedBackboneError, match="not meaningful on vit"):
        vpeft.apply(tiny_vit(), "relative-bias", num_classes=2)
    from tests.helpers import tiny_pvt

    with pytest.raises(vpeft.UnsupportedBackboneError, match="fused qkv"):
        vpeft.apply(tiny_pvt(), "lora-qkv", num_classes=2)
