"""MTLoRA (Agiza et al., CVPR 2024) on the dense multi-task model: closed-form counts (tiny Swin,
the bundled swin-tiny-synth, a Swin-T-sized random model), exact identity at init, the routing
of the two streams (the next stage reads the task-agnostic output, the tap the task-specific
one), gradients to every LoRA tensor, save → load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from torch import nn
from typer.testing import CliRunner

import vpeft
from tests.dense.helpers import (
    build_dense,
    check_training_moves_only_trainables,
    dense_batch,
    dense_tasks,
)
from tests.helpers import images, tiny_swin
from tests.methods import checks
from vpeft.cli.main import app
from vpeft.core.task_switch import TaskSwitch
from vpeft.errors import ConfigError, UnsupportedBackboneError
from vpeft.factory import create_backbone
from vpeft.methods.lora.layer import LoraBranch
from vpeft.methods.mtlora import MtLoraLinear
from vpeft.tasks.dense import pascal_mt_tasks


def lora_count(dims: list[int], depths: list[int], rank: int, task_rank: int, tasks: int) -> int:
    """Closed form of the LoRA tensors (mlp ratio 4): TA-LoRA r·(d_in + d_out) on qkv (d → 3d),
    proj, fc1, fc2 of every block = 16·r·d, except the last stage's last block (qkv only: 4·r·d);
    TS-LoRA on proj, fc1, fc2 of every stage's last block: 12·r_t·d per task."""
    total = 0
    for i, (d, n) in enumerate(zip(dims, depths, strict=True)):
        final = i == len(dims) - 1
        total += 16 * rank * d * (n - 1) + (4 if final else 16) * rank * d
        total += tasks * 12 * task_rank * d
    return total


def extras_count(model: nn.Module) -> int:
    """The non-LoRA tensors MTLoRA trains, read off the plain timm model: patch embedding,
    every LayerNorm but the final one (the dense taps never run it), relative-position-bias
    tables, patch-merging reductions."""
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm) and m is not model.norm]
    norm_ids = {id(p) for m in norms for p in m.parameters()}
    n = sum(p.numel() for m in norms for p in m.parameters())
    n += sum(p.numel() for p in model.patch_embed.parameters() if id(p) not in norm_ids)
    n += sum(b.attn.relative_position_bias_table.numel() for s in model.layers for b in s.blocks)
    n += sum(s.downsample.reduction.weight.numel() for s in model.layers[1:])
    return n


def swin_dims(model: nn.Module) -> tuple[list[int], list[int]]:
    return [s.blocks[0].norm1.normalized_shape[0] for s in model.layers], [
        len(s.blocks) for s in model.layers
    ]


def test_closed_form_count_on_the_tiny_swin() -> None:
    pm = build_dense("mtlora", rank=8, task_rank=2)
    dims, depths = swin_dims(tiny_swin(0))
    assert (dims, depths) == ([16, 32], [2, 2])
    s = pm.summary()
    assert s.encoder_per_task == 2 * 12 * 2 * (16 + 32)
    assert s.trainable_encoder == lora_count(dims, depths, 8, 2, 2) + extras_count(tiny_swin(0))


@pytest.mark.parametrize(("rank", "task_rank"), [(16, 4), (32, 4), (64, 4)])
def test_closed_form_count_on_swin_tiny_synth_and_a_swin_t(rank: int, task_rank: int) -> None:
    for base in (
        create_backbone("swin-tiny-synth", random_init=True),
        timm.create_model("swin_tiny_patch4_window7_224", num_classes=0),
    ):
        dims, depths = swin_dims(base)
        if rank > dims[0]:  # swin-tiny-synth's first stage is 24 wide
            with pytest.raises(ConfigError, match="rank"):
                vpeft.apply(base, "mtlora", tasks=pascal_mt_tasks(), rank=rank)
            continue
        expected = lora_count(dims, depths, rank, task_rank, 4) + extras_count(base)
        pm = vpeft.apply(base, "mtlora", tasks=pascal_mt_tasks(), rank=rank, task_rank=task_rank)
        assert pm.summary().trainable_encoder == expected


def test_swin_t_counts_pinned() -> None:
    """Swin-T, 4 PASCAL tasks: the integers docs/methods/mtlora.md quotes."""
    base = timm.create_model("swin_tiny_patch4_window7_224", num_classes=0)
    extras = extras_count(base)
    assert extras == 1_599_546  # patch embedding, norms, bias tables, patch-merging reductions
    dims, depths = swin_dims(base)
    assert lora_count(dims, depths, 16, 4, 4) == 1_259_520
    assert lora_count(dims, depths, 32, 4, 4) == 2_242_560
    assert lora_count(dims, depths, 64, 4, 4) == 4_208_640


def test_identity_at_init_bit_for_bit() -> None:
    """LoRA B = 0: every task's output equals the frozen backbone's dense model exactly."""
    reference = build_dense("linear").eval()
    pm = build_dense("mtlora").eval()
    batch = dense_batch()
    with torch.no_grad():
        got, want = pm.forward_tasks(batch), reference.forward_tasks(batch)
    for task in want:
        assert torch.equal(got[task], want[task])


def _specific(pm: vpeft.PeftModel, stage: int, task: str) -> LoraBranch:
    block = pm.model.layers[stage].blocks[-1]
    return block.base.mlp.fc2.specific.copies[task]


def _taps_and_stage_inputs(pm: vpeft.PeftModel, task: str) -> tuple[list, list]:
    """The task's tapped maps and the input every stage received, in one forward."""
    inputs: list[torch.Tensor] = []
    hooks = [
        s.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].detach().clone()))
        for s in pm.model.layers
    ]
    try:
        with torch.no_grad(), pm.task_state.active(task):
            maps = pm.spec.tap_features(images(2, seed=4))
    finally:
        for h in hooks:
            h.remove()
    return [m.clone() for m in maps], inputs


def test_task_specific_lora_reaches_only_its_task_tap() -> None:
    """Changing the seg task's TS-LoRA of stage 0 changes seg's stage-0 tap and nothing
    else: not stage 1's input (the task-agnostic output), not seg's stage-1 tap, not the
    normals task's taps."""
    pm = build_dense("mtlora").eval()
    checks.perturb_trainables(pm)  # a non-trivial starting point (B ≠ 0 everywhere)
    before = {t: _taps_and_stage_inputs(pm, t) for t in ("seg", "normals")}
    with torch.no_grad():
        _specific(pm, 0, "seg").lora_B.add_(0.5)
    after = {t: _taps_and_stage_inputs(pm, t) for t in ("seg", "normals")}
    (seg_maps, seg_inputs), (seg_maps0, seg_inputs0) = after["seg"], before["seg"]
    assert not torch.allclose(seg_maps[0], seg_maps0[0])
    assert torch.equal(seg_maps[1], seg_maps0[1])
    for got, want in zip(seg_inputs, seg_inputs0, strict=True):
        assert torch.equal(got, want)
    for got, want in zip(after["normals"][0], before["normals"][0], strict=True):
        assert torch.equal(got, want)
    # the next stage reads the task-agnostic stream: the same for both tasks
    for got, want in zip(after["normals"][1], seg_inputs, strict=True):
        assert torch.equal(got, want)


def test_the_next_stage_reads_the_task_agnostic_output() -> None:
    """Stage 1's input is stage 0's task-agnostic output (TA-LoRA only), and the stage-0 tap is
    the task-specific one: different tensors once TS-LoRA is non-zero."""
    pm = build_dense("mtlora").eval()
    checks.perturb_trainables(pm)
    maps, inputs = _taps_and_stage_inputs(pm, "seg")
    # stage 1 starts with patch merging; its input is the channels-last stage-0 output
    agnostic = inputs[1].permute(0, 3, 1, 2)
    assert not torch.allclose(agnostic, maps[0])
    with torch.no_grad():
        for stage in range(2):
            for layer in ("proj", "fc1", "fc2"):
                block = pm.model.layers[stage].blocks[-1].base
                owner = block.attn if layer == "proj" else block.mlp
                getattr(owner, layer).specific.copies["seg"].lora_B.zero_()
        shared = pm.model.layers[0].blocks[-1].base.mlp.fc2.shared
        shared.lora_B.zero_()
        for layer in ("proj", "fc1"):
            block = pm.model.layers[0].blocks[-1].base
            owner = block.attn if layer == "proj" else block.mlp
            getattr(owner, layer).shared.lora_B.zero_()
    maps, inputs = _taps_and_stage_inputs(pm, "seg")
    # with TA and TS zero in that block, both streams are the frozen block's output
    torch.testing.assert_close(inputs[1].permute(0, 3, 1, 2), maps[0], rtol=0, atol=1e-6)


def test_mt_lora_linear_formula() -> None:
    """[x_a; x_t] ↦ [W x_a + b + s_a B_a A_a x_a; W x_a + b + s_t B_t A_t x_t]."""
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    shared, specific = LoraBranch(6, 5, 3, scale=2.0), LoraBranch(6, 5, 2, scale=4.0)
    for branch in (shared, specific):
        nn.init.normal_(branch.lora_B)
    layer = MtLoraLinear(base, shared, specific)
    xa, xt = torch.randn(4, 6), torch.randn(4, 6)
    got = layer(torch.cat([xa, xt]))
    w, b = base.weight, base.bias
    want_a = xa @ w.T + b + 2.0 * xa @ shared.lora_A.T @ shared.lora_B.T
    want_t = xa @ w.T + b + 4.0 * xt @ specific.lora_A.T @ specific.lora_B.T
    torch.testing.assert_close(got, torch.cat([want_a, want_t]))
    with pytest.raises(RuntimeError, match="batch of 3"):
        layer(torch.randn(3, 6))


def test_every_lora_tensor_gets_gradient_and_moves() -> None:
    trainable = check_training_moves_only_trainables(build_dense("mtlora"), steps=3)
    lora = [n for n in trainable if n.endswith(("lora_A", "lora_B"))]
    # TA: 4 per block, minus proj/fc1/fc2 of the last stage's last block; TS: 3 per stage/task
    assert len(lora) == 2 * ((4 * 4 - 3) + 3 * 2 * len(dense_tasks()))


def test_save_load_gives_identical_outputs(tmp_path: Path) -> None:
    pm = build_dense("mtlora", patch_merging="lora")
    checks.perturb_trainables(pm)
    path = tmp_path / "mtlora.safetensors"
    pm.save(path)
    loaded = vpeft.load(path, base=tiny_swin(0))
    assert set(loaded.trainable_parameters()) == set(pm.trainable_parameters())
    pm.eval()
    loaded.eval()
    batch = dense_batch()
    with torch.no_grad():
        got, want = loaded.forward_tasks(batch), pm.forward_tasks(batch)
    for task in want:
        assert torch.equal(got[task], want[task])
    # one task's file subset: that task's outputs unchanged
    only = vpeft.load(path, base=tiny_swin(0), tasks=["normals"]).eval()
    with torch.no_grad():
        assert torch.equal(only.forward_tasks(batch)["normals"], want["normals"])


def test_options_and_errors() -> None:
    plus = build_dense("mtlora", patch_merging="lora", rank=4, task_rank=2)
    plain = build_dense("mtlora", rank=4, task_rank=2)
    reduction = plain.model.layers[1].downsample.reduction
    # MTLoRA+: a rank-4 TA-LoRA (4·(64 + 32)) instead of the 64 × 32 reduction weight
    assert plain.summary().trainable_encoder - plus.summary().trainable_encoder == (
        reduction.weight.numel() - 4 * (64 + 32)
    )
    assert any(isinstance(m, TaskSwitch) for m in plain.modules()) and plain.is_task_specific
    with pytest.raises(ConfigError, match="patch_merging"):
        build_dense("mtlora", patch_merging="sometimes")
    with pytest.raises(ConfigError, match="rank 17"):
        build_dense("mtlora", rank=17)
    with pytest.raises(UnsupportedBackboneError, match="swin"):
        from tests.helpers import tiny_vit

        vpeft.apply(tiny_vit(0), "mtlora", tasks=dense_tasks())


def test_cli_params_and_a_tiny_training_run(tmp_path: Path) -> None:
    """`vpeft params` / `vpeft train` with `-m mtlora` on the bundled tiny Swin."""
    runner = CliRunner()
    base = ["-b", "swin-tiny-synth", "-m", "mtlora", "--tasks", "pascal-mt"]
    result = runner.invoke(app, ["params", *base, "--json"])
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert (got["trainable_encoder"], got["encoder_per_task"]) == (319_622, 4 * 12 * 4 * 360)
    args = ["train", *base, "--data", "dense-synthetic:limit=8", "--epochs", "1",
            "--warmup-epochs", "0", "--batch-size", "8", "--val-split", "none", "--no-progress",
            "--out", str(tmp_path / "run"), "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(summary["headline"]) == {"semseg", "parts", "saliency", "normals"}
    assert summary["trainable"]["trainable_encoder"] == 319_622
