"""`vpeft predict`: top-k class names from real image files under several adapters."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import vpeft
from tests.methods.checks import perturb_trainables
from vpeft.cli.main import app
from vpeft.data.transforms import data_config_for

BACKBONE = "vit-tiny-synth"


def adapter_file(folder: Path, name: str, method: str, k: int, seed: int) -> Path:
    pm = vpeft.apply(vpeft.create_backbone(BACKBONE), method, num_classes=k)
    perturb_trainables(pm, seed=seed, std=0.3)
    cfg = data_config_for(pm.model)
    vpeft.adapter_info.attach(
        pm,
        classes=[f"{name}_class{i}" for i in range(k)],
        preprocessing={"input_size": [3, *cfg.input_size], "mean": list(cfg.mean),
                       "std": list(cfg.std), "interpolation": cfg.interpolation},
    )  # fmt: skip
    path = folder / f"{name}.safetensors"
    pm.save(path)
    return path


def write_images(folder: Path, n: int, size: int = 40) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    files = [adapter_file(root, "shapes", "lora", 3, 1), adapter_file(root, "tex", "ssf", 4, 2)]
    return root, files, write_images(root / "imgs", 3)


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_predict_json_matches_the_single_adapter_models(setup) -> None:
    root, files, images = setup
    result = invoke("predict", str(root / "imgs"), "--backbone", BACKBONE,
                    "--adapter", str(files[0]), "--adapter", str(files[1]),
                    "--top-k", "2", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)["predictions"]
    assert len(out) == len(images) * 2
    from vpeft.serve.inference import decode_image

    for path in files:
        single = vpeft.load(path, base=vpeft.create_backbone(BACKBONE)).eval()
        transform = data_config_for(single.model).transform()
        for img in images:
            x = transform(decode_image(img)).unsqueeze(0)
            probs = single(x).softmax(-1)[0]
            entry = next(e for e in out if e["image"] == str(img) and e["adapter"] == path.stem)
            best = int(probs.argmax())
            assert entry["top_k"][0]["label"] == f"{path.stem}_class{best}"
            assert entry["top_k"][0]["score"] == pytest.approx(float(probs[best]), abs=1e-5)
            assert len(entry["top_k"]) == 2


def test_predict_csv_and_table(setup) -> None:
    _, files, images = setup
    result = invoke("predict", str(images[0]), "--backbone", BACKBONE, "--adapter",
                    str(files[1]), "--csv", "-k", "3")  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 3 and rows[0]["adapter"] == "tex" and rows[0]["rank"] == "1"
    table = invoke("predict", str(images[0]), "-b", BACKBONE, "-a", str(files[0]))
    assert table.exit_code == 0 and "shapes_class" in table.stdout


def test_predict_rejects_a_non_image(setup, tmp_path) -> None:
    _, files, _ = setup
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    result = invoke("predict", str(bad), "-b", BACKBONE, "-a", str(files[0]), "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"]["type"] == "ImageError"


def test_predictor_mixed_requests_equal_separate_ones(setup) -> None:
    from vpeft.serve.inference import Predictor, decode_image

    _, files, images = setup
    pm = vpeft.load_adapters(vpeft.create_backbone(BACKBONE), files)
    predictor = Predictor(pm)
    imgs = [decode_image(p) for p in images]
    mixed = predictor.predict([("shapes", imgs[0]), ("tex", imgs[1]), ("shapes", imgs[2])])
    alone = predictor.predict([("tex", imgs[1])])
    assert [p.label for p in mixed[1]] == [p.label for p in alone[0]]
    assert torch.allclose(torch.tensor([p.score for p in mixed[1]]),
                          torch.tensor([p.score for p in alone[0]]), atol=1e-5)  # fmt: skip
