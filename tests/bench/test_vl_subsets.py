"""What `benchmarks/vl_synthetic.py` needs from `vpeft bench` (its port rests on these): random
subsets of the VL splits and a cut retrieval gallery (`SweepConfig.sample`), a run that only
scores (`evaluate_only`, zero-shot CLIP), skipped records for methods that do not apply, and a
VL bench run that gives exactly the numbers of the same run made by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import Subset, default_collate

import vpeft
from vpeft.analysis.profile import profile_model
from vpeft.bench.runner import _vl_eval_inputs, first_images, sampled
from vpeft.bench.store import ResultStore, run_key
from vpeft.bench.sweep import SweepConfig, build_plan, final_specs, run_serial
from vpeft.bench.table import build_rows
from vpeft.cli.vl_data import vl_data
from vpeft.data.vl import new_classes
from vpeft.errors import ConfigError
from vpeft.factory import create_backbone
from vpeft.tasks.vl import RetrievalTask, base_to_new
from vpeft.train import TrainConfig, train
from vpeft.train.batches import model_inputs
from vpeft.train.evaluate import evaluate_tasks
from vpeft.train.rng import seed_everything

TRAIN = {"optimizer": "adamw", "epochs": 1, "batch_size": 8, "warmup_epochs": 0.0,
         "eval_batch_size": 64}  # fmt: skip


def _final(cfg: SweepConfig, store: ResultStore, method: str) -> dict:
    plan = build_plan(cfg)
    unit = next(u for u in plan["units"] if u["method"] == method)
    (spec,) = final_specs(plan, unit, *unit["grid"][0])
    return store.get(run_key(spec))


def test_sampled_draws_with_the_seed_and_keeps_small_splits() -> None:
    data = list(range(10))
    a = sampled(data, 4, seed=3)
    expected = torch.randperm(10, generator=torch.Generator().manual_seed(3))[:4].tolist()
    assert isinstance(a, Subset) and list(a) == expected
    assert list(sampled(data, 4, seed=4)) != expected  # another seed, another draw
    assert sampled(data, 10, seed=3) is data and sampled(data, None, seed=3) is data


def test_gallery_keeps_the_first_images_and_their_captions_and_resizes_the_task() -> None:
    model = create_backbone("vilt-tiny-synth")
    vl = vl_data("retrieval", model, ("train", "test"))
    full = vl.splits["test"]
    cut = first_images(full, 3)
    keep = [t for t in range(full.num_texts) if int(full.caption_image[t]) < 3]
    assert (cut.num_images, cut.num_texts, len(cut.images)) == (3, len(keep), 3)
    assert 0 < len(keep) < full.num_texts
    assert cut.caption_image.tolist() == full.caption_image[keep].tolist()
    assert torch.equal(cut.images(2), full.images(2))
    spec = {"eval_splits": {"test": "test"}, "sample": {"gallery": 3, "eval": 2}}
    inputs, task = _vl_eval_inputs(spec, vl.splits, vl.task)
    assert isinstance(task, RetrievalTask)
    assert (task.num_images, task.num_texts) == (3, len(keep))  # the gallery is cut, not sampled
    assert inputs["test"].num_texts == len(keep)


def test_sample_is_checked() -> None:
    base = {"name": "s", "protocol": "vl-synthetic", "tasks": ["vqa"], "methods": ["lora"]}
    with pytest.raises(ConfigError, match="positive sizes"):
        build_plan(SweepConfig(**base, sample={"train": 0}))
    with pytest.raises(ConfigError, match="positive sizes"):
        build_plan(SweepConfig(**base, sample={"test": 5}))
    with pytest.raises(ConfigError, match="vl protocols"):
        build_plan(SweepConfig(name="s", sample={"train": 5}))
    with pytest.raises(ConfigError, match="measure_batch"):
        build_plan(SweepConfig(name="s", measure_batch=8))
    # a sweep without `sample` keeps the run keys it had before the field existed
    assert "sample" not in build_plan(SweepConfig(**base))["units"][0]["base"]


def test_vl_bench_run_with_subsets_equals_the_run_made_by_hand(tmp_path: Path) -> None:
    """Same subsets, same seed before `apply` (the script's order): bit-identical training loss
    and test score, and the costs `profile_model` gives on the same batch."""
    seed = 1
    cfg = SweepConfig(name="s", protocol="vl-synthetic", methods=["lora"], tasks=["vqa"],
                      seeds=[seed], train=TRAIN, lr=[1e-3], wd=[0.01],
                      sample={"train": 24, "eval": 16}, measure_batch=4)  # fmt: skip
    store = ResultStore(tmp_path / "store")
    run_serial(build_plan(cfg), store, device="cpu")
    record = _final(cfg, store, "lora")

    model = create_backbone("vilt-tiny-synth")
    vl = vl_data("vqa", model, ("train", "test"))
    order = torch.randperm(len(vl.splits["train"]), generator=torch.Generator().manual_seed(seed))
    train_set = Subset(vl.splits["train"], order[:24].tolist())
    order = torch.randperm(len(vl.splits["test"]), generator=torch.Generator().manual_seed(0))
    test_set = Subset(vl.splits["test"], order[:16].tolist())
    seed_everything(seed)
    pm = vpeft.apply(model, "lora", tasks=[vl.task])
    config = TrainConfig(**{**TRAIN, "lr": 1e-3, "weight_decay": 0.01, "seed": seed},
                         progress=False, save_adapter=False, device="cpu")  # fmt: skip
    last = train(pm, train_set, None, test_set, config).history[-1]
    assert record["metrics"]["train_loss"] == last["train_loss"]
    assert record["metrics"]["score"] == last["test/vqa/vqa_score"]
    assert record["flops"]["train_images"] == 24
    assert record["params"]["trainable"] == pm.summary().trainable
    # the costs were measured on the first 4 training samples, as profile_model measures them
    batch = default_collate([train_set[i] for i in range(4)])
    report = profile_model(pm, inputs=model_inputs(batch, pm.tasks), steps=1, warmup=0)
    assert record["flops"]["batch"] == record["memory"]["batch"] == 4
    assert record["flops"]["forward_batch"] == report.forward_flops
    assert record["memory"]["saved_activation_bytes"] == report.saved_activation_bytes


def test_zero_shot_only_scores_and_inapplicable_methods_are_skipped(tmp_path: Path) -> None:
    cfg = SweepConfig(name="z", protocol="vl-synthetic", tasks=["clip"],
                      methods=["frozen", "linear", "vpt-deep"], train=TRAIN,
                      variants={"frozen": {"method": "linear", "evaluate_only": True}},
                      sample={"train": 8})  # fmt: skip
    store = ResultStore(tmp_path / "store")
    report = run_serial(build_plan(cfg), store, device="cpu")
    assert len(report.trained) == 3 and report.complete
    frozen = _final(cfg, store, "frozen")
    model = create_backbone("clip-tiny-synth")
    pm = vpeft.apply(model, "linear", tasks=[vl_data("clip-base", model, ("test",)).task])
    base = evaluate_tasks(pm, vl_data("clip-base", model, ("test",)).splits["test"], 64, "cpu")
    pm.tasks["clip"] = pm.tasks["clip"].with_classes(tuple(new_classes()))
    new = evaluate_tasks(pm, vl_data("clip-new", model, ("test",)).splits["test"], 64, "cpu")
    expected = base_to_new(base["clip"].values["top1"], new["clip"].values["top1"])
    assert frozen["metrics"]["epochs"] == 0 and frozen["params"]["trainable"] == 0
    assert frozen["metrics"]["base_to_new"] == expected
    assert frozen["metrics"]["score"] == expected["hm"]
    for name, why in (("linear", "nothing to train"), ("vpt-deep", "not meaningful on hf-clip")):
        record = _final(cfg, store, name)
        assert record["status"] == "skipped" and why in record["skipped"]
        assert "metrics" not in record
    assert run_serial(build_plan(cfg), store, device="cpu").trained == []  # kept, not retried
    assert [r.method for r in build_rows(store.records(sweep="z"))] == ["frozen"]
