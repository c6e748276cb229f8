"""Adapter files: a checksum of the tensor bytes catches flipped bits; identical content gives
identical bytes; class names and preprocessing travel with the file."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

import vpeft
from tests.helpers import tiny_vit
from vpeft import adapter_info
from vpeft.errors import AdapterFileError


def _saved(path: Path, seed: int = 0) -> Path:
    pm = vpeft.apply(tiny_vit(seed=0), "lora", num_classes=3, rank=2)
    adapter_info.attach(pm, classes=["cat", "dog", "10"], preprocessing={"input_size": [32, 32]})
    pm.save(path)
    return path


def _flip_in_tensor_data(path: Path, offset_from_data: int) -> None:
    raw = bytearray(path.read_bytes())
    header = struct.unpack("<Q", raw[:8])[0]
    raw[8 + header + offset_from_data] ^= 0x10
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("where", [0, 1000, -1])
def test_bit_flip_inside_tensor_data_is_an_adapter_file_error(tmp_path: Path, where: int) -> None:
    path = _saved(tmp_path / "a.safetensors")
    size = path.stat().st_size
    header = struct.unpack("<Q", path.read_bytes()[:8])[0]
    offset = where if where >= 0 else size - 9 - header
    _flip_in_tensor_data(path, offset)
    with pytest.raises(AdapterFileError, match="checksum"):
        vpeft.load(path, base=tiny_vit(seed=0))


def test_identical_content_gives_byte_identical_files(tmp_path: Path) -> None:
    a = _saved(tmp_path / "a.safetensors").read_bytes()
    b = _saved(tmp_path / "b.safetensors").read_bytes()
    assert a == b


def test_class_names_and_preprocessing_round_trip(tmp_path: Path) -> None:
    path = _saved(tmp_path / "a.safetensors")
    pm = vpeft.load(path, base=tiny_vit(seed=0))
    assert adapter_info.class_names(pm) == ["cat", "dog", "10"]
    assert adapter_info.read_info(path)["preprocessing"] == {"input_size": [32, 32]}
