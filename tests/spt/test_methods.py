"""`spt-lora` / `spt-adapter`: shared method checks, per-entry training checks, plan files."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import vpeft
from tests.helpers import BACKBONES, images, tiny_convnext, tiny_vit
from tests.methods import checks
from tests.spt.helpers import RANK, crafted, crafted_plan
from vpeft.core.wrapper import AdaptedLayer, NotMergeableError
from vpeft.methods.spt import SparseDelta, SparseLinearDelta, SptPlan, build_plan, fold_sparse
from vpeft.methods.spt.candidates import canonical_parameters
from vpeft.methods.spt.structured import SptAdapter, SptLora, SptParallelAdapter

STRUCTURED = ["lora", "adapter"]


@pytest.mark.parametrize("structured", STRUCTURED)
@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_shared_method_checks(backbone: str, structured: str, tmp_path) -> None:
    factory = BACKBONES[backbone]
    method = f"spt-{structured}"
    plan = crafted_plan(factory(0), structured)
    kinds = {(e.unit.kind, e.decision) for e in plan.entries}
    assert {("matrix", "structured"), ("matrix", "sparse"), ("vector", "full")} <= kinds
    assert ("vector", "sparse") in kinds
    checks.check_identity_at_init(method, factory, plan=plan)
    pm = checks.check_training_moves_only_trainables(method, factory, plan=plan)
    assert pm.summary().trainable_encoder == plan.total  # the real count is the planned one
    checks.check_save_load(method, factory, tmp_path, plan=plan)
    if structured == "lora":
        checks.check_merge(method, factory, plan=plan)
    else:
        with pytest.raises(NotMergeableError, match="spt-adapter"):
            checks.build(method, factory, plan=plan).merge()


def _train(pm: vpeft.PeftModel, steps: int = 4) -> dict[str, torch.Tensor]:
    """Adam steps on fixed data; returns, per trainable tensor, where a gradient was non-zero."""
    trainable = pm.trainable_parameters()
    seen = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in trainable.items()}
    opt = torch.optim.Adam(trainable.values(), lr=1e-2)
    x, y = images(batch=4), torch.arange(4) % checks.NUM_CLASSES
    pm.train()
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(pm(x), y).backward()
        for n, p in trainable.items():
            seen[n] |= p.grad != 0
        opt.step()
    return seen


def _allowed(
    plan: SptPlan, reference: nn.Module, structured_moves: bool
) -> dict[str, torch.Tensor]:
    masks = {
        n: torch.zeros_like(p, dtype=torch.bool) for n, p, _ in canonical_parameters(reference)
    }
    for e in plan.entries:
        flat = masks[e.unit.param].view(-1)
        start = e.unit.offset
        if e.decision == "sparse":
            flat[start + e.indices] = True
        elif e.decision == "full" or structured_moves:
            flat[start : start + e.unit.numel] = True
    if "cls_token" in masks:
        masks["cls_token"][:] = True
    return masks


def _check_entries(plan: SptPlan, effective: nn.Module, reference: nn.Module, lora: bool) -> None:
    """Effective weights differ from the pretrained ones exactly where the plan allows."""
    allowed = _allowed(plan, reference, structured_moves=lora)
    have = {n: p for n, p, _ in canonical_parameters(effective)}
    head = {id(p) for p in reference.get_classifier().parameters()}
    for name, ref, _ in canonical_parameters(reference):
        if id(ref) in head:
            continue
        changed = have[name].detach() != ref.detach()
        assert not (changed & ~allowed[name]).any(), f"{name}: entries outside the plan moved"
    for e in plan.entries:
        if e.decision in ("sparse", "full"):
            moved = have[e.unit.param].detach().view(-1) != dict(
                (n, p) for n, p, _ in canonical_parameters(reference)
            )[e.unit.param].detach().view(-1)
            idx = e.unit.offset + (e.indices if e.indices is not None else torch.arange(e.cost))
            assert moved[idx].all(), f"{e.unit.key}: a planned entry did not train"


@pytest.mark.parametrize("structured", STRUCTURED)
@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_every_counted_scalar_trains_and_nothing_else_moves(backbone: str, structured: str) -> None:
    factory = BACKBONES[backbone]
    plan = crafted_plan(factory(0), structured)
    pm = checks.build(f"spt-{structured}", factory, plan=plan, dropout=0.0, drop_path=0.0)
    seen = _train(pm)
    head = {id(p) for p in pm.head.parameters()}
    counted = sum(m.numel() for n, m in seen.items() if id(pm.get_parameter(n)) not in head)
    assert counted == plan.total
    silent = {n: int((~m).sum()) for n, m in seen.items() if not m.all()}
    assert not silent, f"counted scalars that never received a gradient: {silent}"
    reference = factory(0)
    reference.reset_classifier(checks.NUM_CLASSES)
    if structured == "lora":
        effective = pm.merge()
    else:
        effective = copy.deepcopy(pm)
        fold_sparse(effective)
        effective = effective.model
    _check_entries(plan, effective, reference, lora=structured == "lora")


def test_modules_sit_where_the_spec_puts_them() -> None:
    model = tiny_vit()
    plan = crafted_plan(model, "lora")
    pm = vpeft.apply(tiny_vit(), "spt-lora", num_classes=3, plan=plan)
    qkv = pm.model.blocks[0].attn.qkv
    assert isinstance(qkv, AdaptedLayer)
    lora = qkv.parallel["spt_lora"]
    assert isinstance(lora, SptLora) and set(lora.rows) == {"q", "v"}  # one shared dropout
    assert lora.lora["q"].scale == 1.0 and lora.lora["q"].lora_A.shape == (RANK, 32)
    assert isinstance(qkv.parallel["spt_sparse"], SparseLinearDelta)  # k entries, q/v biases
    assert isinstance(lora.dropout, nn.Dropout) and lora.dropout.p == 0.1
    proj = pm.model.blocks[0].attn.proj.parallel["spt_lora"]
    assert isinstance(proj.dropout, nn.Identity)  # no dropout on the output projection's branch
    norm = pm.model.blocks[0].norm1
    assert isinstance(norm, AdaptedLayer) and isinstance(norm.reparam["spt_sparse"], SparseDelta)
    assert pm.model.cls_token.requires_grad
    adapter = vpeft.apply(
        tiny_vit(), "spt-adapter", num_classes=3, plan=crafted_plan(model, "adapter")
    )
    qkv = adapter.model.blocks[0].attn.qkv
    assert set(qkv.sequential) == {"spt_adapter_q", "spt_adapter_v"}
    assert isinstance(qkv.sequential["spt_adapter_q"], SptAdapter)
    proj = adapter.model.blocks[0].attn.proj
    assert isinstance(proj.parallel["spt_adapter_proj"], SptParallelAdapter) and not proj.sequential
    fc1 = adapter.model.blocks[0].mlp.fc1
    assert isinstance(fc1.sequential["spt_adapter_fc1"], SptAdapter)
    cnx = vpeft.apply(
        tiny_convnext(), "spt-lora", num_classes=3, plan=crafted_plan(tiny_convnext())
    )
    block = cnx.model.stages[0].blocks[0]
    assert isinstance(block, AdaptedLayer) and block.reparam  # the block owns gamma
    conv = block.base.conv_dw
    assert isinstance(conv, AdaptedLayer) and conv.reparam  # sparse on a depthwise conv


def test_plan_file_round_trip_reapply_and_load_from_adapter_file_alone(tmp_path) -> None:
    plan = crafted_plan(tiny_vit(), "lora")
    plan.save(tmp_path / "plan.safetensors")
    back = SptPlan.load(tmp_path / "plan.safetensors")
    assert back.to_json() == plan.to_json()
    for a, b in zip(plan.entries, back.entries, strict=True):
        assert (a.indices is None) == (b.indices is None)
        assert a.indices is None or torch.equal(a.indices, b.indices)
    pm = checks.build("spt-lora", tiny_vit, plan=str(tmp_path / "plan.safetensors"))
    assert pm.summary().trainable_encoder == plan.total
    checks.perturb_trainables(pm)
    pm.save(tmp_path / "task.safetensors")
    (tmp_path / "plan.safetensors").unlink()  # the adapter file carries the plan
    loaded = vpeft.load(tmp_path / "task.safetensors", base=tiny_vit())
    pm.eval()
    loaded.eval()
    x = images()
    torch.testing.assert_close(loaded(x), pm(x), atol=0, rtol=0)
    assert loaded.methods[0].config.plan.to_json() == plan.to_json()


def test_budget_from_a_sensitivity_file_and_the_random_fallback(tmp_path) -> None:
    sens, budget = crafted(tiny_vit())
    sens.save(tmp_path / "s.safetensors")
    source = str(tmp_path / "s.safetensors")
    pm = vpeft.apply(
        tiny_vit(), "spt-lora", num_classes=3, budget=str(budget), sensitivity=source, rank=RANK
    )
    assert pm.summary().trainable_encoder == budget
    assert pm.methods[0].config.to_dict()["budget"] is None  # the resolved plan is what's saved
    with pytest.warns(UserWarning, match="random-data sensitivity"):
        fallback = vpeft.apply(tiny_vit(), "spt-adapter", num_classes=3, budget=900, rank=RANK)
    plan = fallback.methods[0].config.plan
    assert plan.sensitivity["source"] == "random-data"
    assert fallback.summary().trainable_encoder == plan.total
    assert abs(plan.total - 900) < 0.15 * 900  # tiny model: a matrix jump is 10% of the budget


def test_composes_with_a_method_installed_before() -> None:
    pm = vpeft.apply(tiny_vit(), "lora", num_classes=3, rank=2, targets=("q", "v"))
    plan = crafted_plan(tiny_vit(), "lora")
    pm = vpeft.apply(pm, "spt-lora", plan=plan)
    lora = 2 * 2 * 2 * (32 + 32)  # depth × (q, v) × rank × (in + out)
    assert pm.summary().trainable_encoder == lora + plan.total
    checks.perturb_trainables(pm)
    pm.eval()
    with torch.no_grad():
        torch.testing.assert_close(pm.merge()(images()), pm(images()), atol=1e-5, rtol=1e-5)


def test_errors_are_clear(tmp_path) -> None:
    plan = crafted_plan(tiny_vit(), "lora")
    with pytest.raises(vpeft.ConfigError, match="allocated for lora"):
        vpeft.apply(tiny_vit(), "spt-adapter", num_classes=3, plan=plan)
    with pytest.raises(vpeft.ConfigError, match="does not fit this backbone"):
        vpeft.apply(tiny_vit(depth=3, embed_dim=48), "spt-lora", num_classes=3, plan=plan)
    with pytest.raises(vpeft.ConfigError, match="needs plan=FILE, or budget="):
        vpeft.apply(tiny_vit(), "spt-lora", num_classes=3)
    with pytest.raises(vpeft.ConfigError, match="either plan= or budget="):
        vpeft.apply(tiny_vit(), "spt-lora", num_classes=3, plan=plan, budget=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(vpeft.BudgetError, match="exceeds the largest"):
            vpeft.apply(tiny_vit(), "spt-lora", num_classes=3, budget="1M")
    with pytest.raises(vpeft.AdapterFileError, match="not an SPT plan"):
        vpeft.apply(tiny_vit(), "spt-lora", num_classes=3, plan=str(_adapter_file(tmp_path)))
    broken = copy.deepcopy(plan)
    sparse = next(e for e in broken.entries if e.indices is not None)
    sparse.indices = sparse.indices + sparse.unit.numel
    with pytest.raises(vpeft.ConfigError, match=r"indices of .* are corrupted"):
        vpeft.apply(tiny_vit(), "spt-lora", num_classes=3, plan=broken)


def _adapter_file(tmp_path):
    path = tmp_path / "linear.safetensors"
    vpeft.apply(tiny_vit(), "linear", num_classes=2).save(path)
    return path


def test_spt_adapter_fold_sparse_keeps_outputs_and_adapters() -> None:
    plan = crafted_plan(tiny_vit(), "adapter")
    pm = checks.build("spt-adapter", tiny_vit, plan=plan)
    checks.perturb_trainables(pm)
    pm.eval()
    x = images()
    with torch.no_grad():
        before = pm(x)
    folded = copy.deepcopy(pm)
    n = fold_sparse(folded)
    assert n == plan.breakdown()["sparse"] + plan.breakdown()["full"]
    kinds = {type(m) for m in folded.modules()}
    assert SparseLinearDelta not in kinds and SparseDelta not in kinds
    assert SptAdapter in kinds
    with torch.no_grad():
        torch.testing.assert_close(folded(x), before, atol=1e-5, rtol=1e-5)
    assert isinstance(folded.model.blocks[0].norm1, nn.LayerNorm)  # empty wrappers unwrapped


def test_build_plan_matches_installed_counts_for_both_kinds() -> None:
    sens, budget = crafted(tiny_vit())
    for structured in STRUCTURED:
        plan = build_plan(tiny_vit(), sens, budget, structured, RANK)
        pm = vpeft.apply(tiny_vit(), f"spt-{structured}", num_classes=3, plan=plan)
        assert pm.summary().trainable_encoder == plan.total
        assert abs(plan.total - budget) <= 0 if structured == "lora" else plan.total > 0
