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


class TwoLabelSet(torch.utils.data.Dataset):
    """Dict items: an image and one label per task (a's label: brightest channel, b's: the
    quadrant holding the brightest pixel), so both tasks are learnable."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, 32, 32, generator=g) * 0.3
        self.a = torch.randint(0, 3, (n,), generator=g)
        self.b = torch.randint(0, 4, (n,), generator=g)
        for i in range(n):
            self.x[i, self.a[i]] += 1.0
            r, c = divmod(int(self.b[i]), 2)
            self.x[i, :, r * 16 : r * 16 + 16, c * 16 : c * 16 + 16] += 0.8

    def __len__(self) -> int:
        return len(self.a)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.x[i], "labels_a": self.a[i], "labels_b": self.b[i]}


def _dict_tasks() -> list[ClassificationTask]:
    return [
        ClassificationTask("a", num_classes=3, target_field="labels_a"),
        ClassificationTask("b", num_classes=4, target_field="labels_b", loss_weight=0.5),
    ]


def test_trainer_sums_weighted_task_losses_and_reports_every_task(tmp_path) -> None:
    from vpeft.train import TrainConfig, train
    from vpeft.train.evaluate import evaluate_tasks

    torch.manual_seed(0)
    pm = vpeft.apply(tiny_vit(0), "lora", tasks=_dict_tasks(), rank=2)
    config = TrainConfig(
        epochs=3, warmup_epochs=0, lr=3e-3, batch_size=16, out_dir=str(tmp_path), progress=False
    )
    result = train(pm, TwoLabelSet(96, 1), None, TwoLabelSet(64, 2), config)
    last = result.history[-1]
    for key in ("train_loss/a", "train_loss/b", "train_top1/a", "test/a/top1", "test/b/loss"):
        assert key in last, key
    # the total is the weighted sum of the per-task means
    assert last["train_loss"] == pytest.approx(last["train_loss/a"] + 0.5 * last["train_loss/b"])
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    again = evaluate_tasks(pm, TwoLabelSet(64, 2), batch_size=9)
    assert again["a"].values["top1"] == pytest.approx(last["test/a/top1"])
    assert again["b"].values["loss"] == pytest.approx(last["test/b/loss"])
    reloaded = vpeft.load(tmp_path / "adapter.safetensors", base=tiny_vit(0))
    assert evaluate_tasks(reloaded, TwoLabelSet(64, 2))["b"].values["top1"] == pytest.approx(
        last["test/b/top1"]
    )


def test_profile_accepts_dict_inputs_with_the_same_counts() -> None:
    from vpeft.analysis.profile import profile_model

    pm = multi("lora", rank=RANK)
    x = images(batch=2)
    as_tensor = profile_model(pm, steps=1, warmup=0, inputs=x)
    as_dict = profile_model(pm, steps=1, warmup=0, inputs={"pixel_values": x})
    assert as_tensor.forward_flops == as_dict.forward_flops > 0
    assert as_tensor.saved_activation_bytes == as_dict.saved_activation_bytes > 0
    assert as_dict.batch == 2 and as_dict.img_size == 32


def test_multitask_resume_equals_an_uninterrupted_run(tmp_path) -> None:
    from safetensors.torch import load_file

    from vpeft.train import TrainConfig, train

    class Crash(Exception):
        pass

    def crash_after_first(record: dict) -> None:
        if record["epoch"] == 1:
            raise Crash

    def fresh() -> vpeft.PeftModel:
        torch.manual_seed(0)
        return vpeft.apply(tiny_vit(0), "bitfit", tasks=_dict_tasks())

    def config(out) -> TrainConfig:
        return TrainConfig(
            epochs=2, warmup_epochs=0, lr=1e-2, batch_size=16, out_dir=str(out), progress=False
        )

    data = (TwoLabelSet(48, 1), None, TwoLabelSet(32, 2))
    ref = train(fresh(), *data, config(tmp_path / "ref"))
    with pytest.raises(Crash):
        train(fresh(), *data, config(tmp_path / "cut"), on_epoch_end=crash_after_first)
    resumed = train(fresh(), *data, config(tmp_path / "cut"), resume=True)
    strip = lambda h: [{k: v for k, v in r.items() if k != "time_s"} for r in h]  # noqa: E731
    assert strip(resumed.history) == strip(ref.history)
    a = load_file(tmp_path / "cut" / "adapter.safetensors")
    b = load_file(tmp_path / "ref" / "adapter.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_torchrun_processes_match_one_on_dict_batches(tmp_path) -> None:
    """The DDP path with dict batches and two tasks: 2 gloo processes vs 1. The processes sum
    partial gradients in another order (float32 addition is not associative) and AdamW's
    normalisation carries those ~1e-7 differences on: 1e-5 on tensors, 1e-5 relative on losses
    (measured: 1.6e-6 at most)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    root = Path(__file__).resolve().parents[2]
    path = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    runs = {
        "one": [sys.executable, "-m", "tests.core.mt_run"],
        "two": [
            *(sys.executable, "-m", "torch.distributed.run", "--standalone"),
            *("--nproc_per_node", "2", "-m", "tests.core.mt_run"),
        ],
    }
    for name, cmd in runs.items():
        done = subprocess.run(
            [*cmd, str(tmp_path / name)], env=env, cwd=root, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-3000:]
    lines = {
        n: [json.loads(x) for x in (tmp_path / n / "metrics.jsonl").read_text().splitlines()]
        for n in runs
    }
    for a, b in zip(lines["one"], lines["two"], strict=True):
        for key in ("train_loss", "train_loss/a", "train_loss/b", "test/a/loss", "test/b/loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), key
    one = load_file(tmp_path / "one" / "adapter.safetensors")
    two = load_file(tmp_path / "two" / "adapter.safetensors")
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(one[key], two[key], atol=1e-5, rtol=0)


def test_per_task_copies_decay_as_their_originals() -> None:
    """The optimiser's structural rules look at the original: copies of the position
    embedding and of LayerNorm weights never decay, copies of linear weights do."""
    from vpeft.train.optim import decay_decisions

    pm = vpeft.apply(tiny_vit(0), "full", tasks=two_tasks())
    copies = pm.task_parameters
    assert copies is not None
    by_id = {id(p): n for n, p in pm.named_parameters()}
    decided = {d.name: d for d in decay_decisions(pm)}
    originals = copies.original_of()
    names = {id(p): n for n, p in pm.model.named_parameters()}
    for task in ("a", "b"):
        for copy in copies.tasks[task]:
            original = originals[id(copy)]
            decision = decided[by_id[id(copy)]]
            name = names[id(original)]
            if name == "pos_embed" or original.ndim <= 1:
                assert not decision.decay, name
            elif name.endswith("qkv.weight"):
                assert decision.decay and decision.reason == "weight", name
    pos = next(c for c in copies.tasks["a"] if names[id(originals[id(c)])] == "pos_embed")
    assert decided[by_id[id(pos)]].reason == "token/position embedding"
