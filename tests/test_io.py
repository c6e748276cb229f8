"""`vpeft.io`: one reader and one checked copy shared by adapter files and training checkpoints."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from vpeft.errors import AdapterFileError
from vpeft.io import ADAPTER_FILE, load_matching, read_safetensors, write_safetensors
from vpeft.train.checkpoint import CHECKPOINT_FILE, CheckpointError


def test_load_matching_copies_and_casts_in_place() -> None:
    target = torch.zeros(2, 3, dtype=torch.float16)
    saved = torch.arange(6, dtype=torch.float32).reshape(2, 3) / 4
    load_matching("f", {"w": target}, {"w": saved})
    assert target.dtype == torch.float16
    assert target.tolist() == [[0.0, 0.25, 0.5], [0.75, 1.0, 1.25]]


@pytest.mark.parametrize(
    ("kind", "error", "wording"),
    [
        (ADAPTER_FILE, AdapterFileError, "does not match the rebuilt model"),
        (CHECKPOINT_FILE, CheckpointError, "resume with the same backbone"),
    ],
)
def test_load_matching_names_what_differs(kind, error, wording) -> None:
    targets = {"a": torch.zeros(1), "b": torch.zeros(1)}
    with pytest.raises(error, match=wording) as info:
        load_matching("f.st", targets, {"a": torch.ones(1), "c": torch.ones(1)}, kind)
    assert "missing ['b'], unexpected ['c']" in str(info.value)
    with pytest.raises(error, match=r"f.st: .*b has shape \(2,\), the model expects \(1,\)"):
        load_matching("f.st", targets, {"a": torch.ones(1), "b": torch.ones(2)}, kind)


def test_read_safetensors_checks_the_kind_and_the_metadata(tmp_path) -> None:
    path = tmp_path / "a.safetensors"
    write_safetensors(path, {"x": torch.tensor([1.5])}, {"n": 3})
    tensors, meta = read_safetensors(path)
    assert tensors["x"].item() == 1.5 and meta == {"n": 3}
    with pytest.raises(CheckpointError, match="not a vpeft training checkpoint"):
        read_safetensors(path, CHECKPOINT_FILE)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        read_safetensors(tmp_path / "missing", CHECKPOINT_FILE)
    broken = tmp_path / "broken.safetensors"
    raw_meta = {"format": CHECKPOINT_FILE.format, "n": "{not json"}
    save_file({"x": torch.zeros(1)}, str(broken), metadata=raw_meta)
    with pytest.raises(CheckpointError, match=r"corrupted metadata .*; delete it"):
        read_safetensors(broken, CHECKPOINT_FILE)
