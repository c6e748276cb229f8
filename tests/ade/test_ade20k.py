"""ADE20K single-task segmentation (SPT's setting): the release reader on a generated
miniature, the SETR-PUP task on ViT taps (with LoRA), multi-scale + flip test, SPT sensitivity
from the segmentation loss, and `vpeft train` / `eval` with ``--data ade20k:ROOT``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from tests.helpers import tiny_vit
from vpeft.backbones import describe
from vpeft.cli.main import app
from vpeft.data.ade20k import Ade20kDataset, Ade20kTransform, reduce_zero_label, write_miniature
from vpeft.errors import DatasetError
from vpeft.methods.spt import build_plan, compute_sensitivity
from vpeft.model import apply
from vpeft.tasks import task_from_json
from vpeft.tasks.dense import (
    SegmentationTask,
    SetrPupHead,
    dense_tasks,
    multi_scale_probs,
    sliding_logits,
)


@pytest.fixture(scope="module")
def ade_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_miniature(tmp_path_factory.mktemp("ade")).parent


def test_reduce_zero_label() -> None:
    got = reduce_zero_label(np.array([[0, 1], [150, 7]], np.uint8))
    assert got.tolist() == [[255, 0], [149, 6]]
    with pytest.raises(DatasetError, match=r"0\.\.150"):
        reduce_zero_label(np.array([[151]], np.uint8), "x.png")


def test_reader_items_and_geometry(ade_root: Path) -> None:
    ds = Ade20kDataset(ade_root, "validation", size=32)
    assert len(ds) == 2 and ds.num_classes == 150
    item = ds[0]
    assert item["pixel_values"].shape == (3, 32, 32) and item["semseg"].shape == (32, 32)
    assert item["semseg"].dtype == torch.int64
    values = set(item["semseg"].unique().tolist())
    assert 255 in values and values - {255} <= set(range(150))
    native = Ade20kDataset(ade_root, "val", size=None)[0]
    assert native["pixel_values"].shape == (3, 40, 52)
    # eval: short side -> 32 (52 -> 42 wide), centre crop; labels nearest (no new values)
    image, label = native["pixel_values"], native["semseg"]
    img2, lab2 = Ade20kTransform(32)(image, label)
    assert img2.shape == (3, 32, 32)
    assert set(lab2.unique().tolist()) <= set(label.unique().tolist())
    train = Ade20kTransform(32, train=True)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        i3, l3 = train(image, label, g)
        assert i3.shape == (3, 32, 32) and l3.shape == (32, 32)
    # a crop larger than the resized image pads with ignore
    _, l4 = Ade20kTransform((16, 200))(image[:, :10], label[:10])
    assert (l4 == 255).any()


def test_reader_errors(tmp_path: Path) -> None:
    base = write_miniature(tmp_path, {"validation": 2})
    with pytest.raises(DatasetError, match="not an ADE20K release"):
        Ade20kDataset(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="training"):
        Ade20kDataset(tmp_path, "training")
    ann = sorted((base / "annotations" / "validation").iterdir())
    ann[0].rename(ann[0].with_suffix(".bak"))
    with pytest.raises(DatasetError, match=ann[0].stem + ".png"):
        Ade20kDataset(tmp_path, "validation")
    ann[0].with_suffix(".bak").rename(ann[0])
    ann[1].write_bytes(b"not a png")
    ds = Ade20kDataset(tmp_path, "validation")
    with pytest.raises(DatasetError, match=ann[1].name):
        ds[1]
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(ann[1])
    with pytest.raises(DatasetError, match=ann[1].name):
        ds[1]
    Image.fromarray(np.zeros((40, 52, 3), np.uint8)).save(ann[1])
    with pytest.raises(DatasetError, match="single-channel"):
        ds[1]


def test_setr_pup_task_on_vit_taps_with_lora() -> None:
    (task,) = dense_tasks(["semseg"], "ade20k", embed_dim=8)
    assert task.decoder == "setr-pup" and task.num_classes == 150
    assert task_from_json(task.to_json()) == task
    pm = apply(tiny_vit(), "lora", tasks=[task])
    assert isinstance(pm.heads["semseg"], SetrPupHead)
    # patch 8: three 2x stages bring the 4x4 token map to 32x32
    assert len(pm.heads["semseg"].decoder.stages) == 3 * 4
    maps = describe(pm.model).tap_features(torch.zeros(2, 3, 32, 32))
    assert [tuple(m.shape) for m in maps] == [(2, 32, 4, 4)] * 2
    x = torch.randn(2, 3, 32, 32)
    out = pm(x)
    assert out.shape == (2, 150, 32, 32)
    loss, n = task.loss(out, torch.randint(0, 150, (2, 32, 32)))
    loss.backward()
    assert n == 2 and any(p.grad is not None for n_, p in pm.named_parameters() if "lora" in n_)


def test_sliding_and_multi_scale_test() -> None:
    calls: list[tuple[int, ...]] = []

    def forward(z: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(z.shape[-2:]))
        return torch.cat([z[:, :1], -z[:, :1]], dim=1)  # two-class "model" of the crop size

    x = torch.randn(1, 3, 20, 50)
    out = sliding_logits(forward, x, (16, 16))
    assert out.shape == (1, 2, 20, 50) and set(calls) == {(16, 16)}
    torch.testing.assert_close(out[:, 0], x[:, 0])  # windows average to the identity
    probs = multi_scale_probs(forward, x, (16, 16), scales=(0.5, 1.0, 1.5))
    assert probs.shape == (1, 2, 20, 50)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 20, 50))


def test_spt_sensitivity_from_the_segmentation_loss(ade_root: Path) -> None:
    ds = Ade20kDataset(ade_root, "training", size=32)
    batches = list(torch.utils.data.DataLoader(ds, batch_size=2))
    task = SegmentationTask(
        "semseg", num_classes=150, target_field="semseg", decoder="setr-pup", embed_dim=8
    )
    seg = compute_sensitivity(tiny_vit(), batches, task=task)
    assert seg.meta["loss"] == "task segmentation:semseg" and seg.meta["samples"] == 4
    cls_batches = [(b["pixel_values"], torch.arange(len(b["semseg"])) % 3) for b in batches]
    cls = compute_sensitivity(tiny_vit(), cls_batches, num_classes=3)
    assert set(seg.scores) == set(cls.scores)
    assert sum(s.sum() for s in seg.scores.values()) > 0
    assert any(not torch.allclose(seg.scores[n], cls.scores[n]) for n in seg.scores)
    budget = 2000
    plan = build_plan(tiny_vit(), seg, budget, structured="lora", rank=2)
    assert 0 < plan.total <= budget
    pm = apply(tiny_vit(), "spt-lora", tasks=[task], plan=plan)
    assert pm(torch.zeros(1, 3, 32, 32)).shape == (1, 150, 32, 32)


def test_cli_train_and_eval_on_the_miniature(ade_root: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["--backbone", "vit_tiny_patch16_224", "--img-size", "32", "--random-init"]
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", *args, "--data", f"ade20k:{ade_root}", "-m", "lora",
                                 "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "2",
                                 "--no-progress", "--out", str(out), "--json"])  # fmt: skip
    assert result.exit_code == 0, result.stderr or result.output
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["tasks"] == ["semseg"] and "semseg" in summary["headline"]
    adapters = [p for p in out.iterdir() if p.suffix == ".safetensors"]
    assert adapters
    for extra in ([], ["--multi-scale"]):
        result = runner.invoke(app, ["eval", *args, "--data", f"ade20k:{ade_root}",
                                     "--adapter", str(adapters[0]), "--split", "validation",
                                     "--batch-size", "2", "--json", *extra])  # fmt: skip
        assert result.exit_code == 0, result.stderr or result.output
        record = json.loads(result.stdout.splitlines()[-1])
        assert 0 <= record["headline"]["semseg"] <= 100
    result = runner.invoke(app, ["train", *args, "--data", f"ade20k:{ade_root}", "--tasks",
                                 "semseg,parts", "--out", str(tmp_path / "bad")])  # fmt: skip
    assert result.exit_code != 0


def test_cli_sensitivity_on_ade20k(ade_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.safetensors"
    result = CliRunner().invoke(app, ["sensitivity", "--backbone", "vit_tiny_patch16_224",
                                      "--img-size", "32", "--data", f"ade20k:{ade_root}",
                                      "--samples", "4", "--batch", "2",
                                      "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.stderr or result.output
    from vpeft.methods.spt import Sensitivity

    meta = Sensitivity.load(out).meta
    assert meta["loss"] == "task segmentation:semseg" and meta["samples"] == 4
