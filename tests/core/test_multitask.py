"""Multi-task models: per-task copies ≡ independent single-task models, shared methods run the
backbone once, summaries split shared / per-task / head, files hold every task."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import vpeft
from tests.helpers import images, tiny_swin, tiny_vit
from tests.methods import checks
from vpeft.errors import ConfigError
from vpeft.tasks import ClassificationTask
from vpeft.tasks.dense import pascal_mt_tasks

TASKS = (("a", 3), ("b", 4))
RANK, DEPTH, WIDTH = 2, 2, 32  # tiny_vit: depth 2, width 32


def two_tasks() -> list[ClassificationTask]:
    return [ClassificationTask(name, num_classes=k) for name, k in TASKS]


def multi(method: str, shared: bool = False, **options: object) -> vpeft.PeftModel:
    torch.manual_seed(5)
    pm = vpeft.apply(tiny_vit(0), method, tasks=two_tasks(), shared=shared, **options)
    checks.perturb_trainables(pm, std=0.2)
    return pm.eval()


def single_like(pm: vpeft.PeftModel, method: str, task: str, **options: object) -> nn.Module:
    """A single-task model holding exactly `task`'s tensors of the multi-task `pm`."""
    k = dict(TASKS)[task]
    one = vpeft.apply(tiny_vit(0), method, num_classes=k, **options).eval()
    mine = pm.trainable_parameters()
    with torch.no_grad():
        for name, p in one.trainable_parameters().items():
            if name.startswith("heads.main."):
                source = f"heads.{task}." + name[len("heads.main.") :]
            else:  # "...lora_q.lora_A" -> "...lora_q.copies.<task>.lora_A"
                module, leaf = name.rsplit(".", 1)
                source = f"{module}.copies.{task}.{leaf}"
            p.copy_(mine[source])
    return one


@pytest.mark.parametrize("task", ["a", "b"])
def test_per_task_lora_equals_independent_single_task_models(task: str) -> None:
    pm = multi("lora", rank=RANK)
    one = single_like(pm, "lora", task, rank=RANK)
    x = images()
    torch.testing.assert_close(pm(x)[task], one(x), atol=0, rtol=0)
    # same gradients on the task's own tensors; the other task's copies get none
    pm(x)[task].square().sum().backward()
    one(x).square().sum().backward()
    mine = pm.trainable_parameters()
    for name, p in one.trainable_parameters().items():
        if name.startswith("heads."):
            continue
        module, leaf = name.rsplit(".", 1)
        torch.testing.assert_close(mine[f"{module}.copies.{task}.{leaf}"].grad, p.grad)
        other = "b" if task == "a" else "a"
        assert mine[f"{module}.copies.{other}.{leaf}"].grad is None


def test_per_task_bitfit_trains_task_copies_and_never_the_frozen_original() -> None:
    pm = multi("bitfit")
    one = vpeft.apply(tiny_vit(0), "bitfit", num_classes=3).eval()
    copies = pm.task_parameters
    assert copies is not None and len(copies) == len(one.trainable_parameters()) - 2
    originals = [o.detach().clone() for o in copies.originals()]
    with torch.no_grad():  # load task a's copies + head into the single-task model
        own = dict(one.model.named_parameters())
        for i, original in enumerate(copies.originals()):
            name = next(n for n, p in pm.model.named_parameters() if p is original)
            own[name].copy_(copies.tasks["a"][i])
        one.head.load_state_dict(pm.heads["a"].state_dict())
    x = images()
    torch.testing.assert_close(pm(x)["a"], one(x), atol=0, rtol=0)
    opt = torch.optim.SGD(pm.trainable_parameters().values(), lr=0.5)
    sum(out.square().sum() for out in pm.train()(x).values()).backward()
    opt.step()
    for before, after in zip(originals, copies.originals(), strict=True):
        assert torch.equal(before, after)  # frozen originals untouched
    moved = [not torch.equal(c, o) for c, o in zip(copies.tasks["b"], originals, strict=True)]
    assert all(moved)
    assert not any(p.requires_grad for p in copies.originals())


def _backbone_calls(pm: vpeft.PeftModel) -> int:
    calls = []
    handle = pm.model.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        pm(images())
    handle.remove()
    return len(calls)


def test_shared_method_runs_the_backbone_once_per_task_specific_once_per_task() -> None:
    assert _backbone_calls(multi("lora", shared=True, rank=RANK)) == 1
    assert _backbone_calls(multi("lora", rank=RANK)) == 2
    assert _backbone_calls(multi("linear")) == 1


def test_summary_splits_shared_per_task_and_heads() -> None:
    lora_one_copy = DEPTH * 2 * RANK * (WIDTH + WIDTH)  # q and v: r·(d_in + d_out)
    heads = sum(WIDTH * k + k for _, k in TASKS)
    per_task = multi("lora", rank=RANK).summary()
    assert (per_task.encoder_shared, per_task.encoder_per_task) == (0, 2 * lora_one_copy)
    assert per_task.head == heads and per_task.tasks == 2
    shared = multi("lora", shared=True, rank=RANK).summary()
    assert (shared.encoder_shared, shared.encoder_per_task) == (lora_one_copy, 0)
    assert shared.trainable == lora_one_copy + heads
    mixed = vpeft.apply(multi("lora", shared=True, rank=RANK), "bitfit")
    biases = sum(p.numel() for n, p in tiny_vit(0).named_parameters() if n.endswith("bias"))
    assert mixed.summary().encoder_per_task == 2 * biases


def test_save_load_all_tasks_and_a_subset(tmp_path) -> None:
    pm = vpeft.apply(multi("lora", rank=RANK), "bitfit", shared=True)
    checks.perturb_trainables(pm, seed=3)
    path = tmp_path / "mt.safetensors"
    pm.save(path)
    x = images()
    want = pm.eval()(x)
    loaded = vpeft.load(path, base=tiny_vit(0)).eval()
    assert list(loaded.tasks) == ["a", "b"]
    for task in ("a", "b"):
        torch.testing.assert_close(loaded(x)[task], want[task], atol=0, rtol=0)
    only_b = vpeft.load(path, base=tiny_vit(0), tasks=["b"]).eval()
    assert list(only_b.tasks) == ["b"] and list(only_b.heads) == ["b"]
    torch.testing.assert_close(only_b(x), want["b"], atol=0, rtol=0)
    assert only_b.summary().trainable < loaded.summary().trainable


def test_task_specific_modules_refuse_to_run_outside_a_task() -> None:
    pm = multi("lora", rank=RANK)
    with pytest.raises(ConfigError, match="no active task"):
        pm.model(images())
    with pytest.raises(ConfigError, match="unknown task"):
        pm(images(), task="c")


def test_single_task_methods_that_replace_the_forward_refuse_several_tasks() -> None:
    with pytest.raises(ConfigError, match="one task"):
        vpeft.apply(tiny_vit(0), "vqt", tasks=two_tasks())


def test_dense_tasks_read_the_stage_maps_of_a_hierarchical_backbone() -> None:
    torch.manual_seed(0)
    pm = vpeft.apply(tiny_swin(0), "lora", tasks=pascal_mt_tasks(embed_dim=8), rank=2).eval()
    x = images()
    with torch.no_grad():
        out = pm(x)
        maps = [m.permute(0, 3, 1, 2) for m in _stage_outputs(pm, x)]
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "semseg": (2, 21, 32, 32),
        "parts": (2, 7, 32, 32),
        "saliency": (2, 1, 32, 32),
        "normals": (2, 3, 32, 32),
    }
    with torch.no_grad(), pm.task_state.active("semseg"):
        want = pm.heads["semseg"](maps, (32, 32))
    torch.testing.assert_close(out["semseg"], want, atol=1e-6, rtol=0)


def _stage_outputs(pm: vpeft.PeftModel, x: torch.Tensor) -> list[torch.Tensor]:
    """Stage outputs (NHWC) of the Swin run stage by stage, with the semseg task's copies."""
    out = []
    with pm.task_state.active("semseg"):
        h = pm.model.patch_embed(x)
        for stage in pm.model.layers:
            h = stage(h)
            out.append(h)
    return out
