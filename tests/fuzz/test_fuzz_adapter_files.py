"""Property-based fuzzing of adapter-file loading (issue 14): truncated and bit-flipped files,
foreign safetensors, wrong dtypes or shapes, hostile metadata JSON. Loading must end in a
`VpeftError` or give the saved model's exact outputs — never another exception, a hang or a
silently different model."""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save

import vpeft
from tests.helpers import images, tiny_vit
from tests.methods import checks
from vpeft.errors import VpeftError
from vpeft.io import CHECKSUM_KEY, tensor_checksum

FUZZ = settings(
    max_examples=40,
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
X = images(batch=2)


def _saved() -> tuple[bytes, torch.Tensor]:
    pm = checks.build("lora", tiny_vit, rank=2)
    checks.perturb_trainables(pm, std=0.2)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "a.safetensors"
        pm.eval().save(path)
        data = path.read_bytes()
    with torch.no_grad():
        return data, pm(X)


DATA, LOGITS = _saved()
HEADER_END = 8 + struct.unpack("<Q", DATA[:8])[0]


def _load(data: bytes) -> torch.Tensor | None:
    """Load `data` as an adapter file on the right base; the logits, or None on a vpeft error."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f.safetensors"
        path.write_bytes(data)
        try:
            pm = vpeft.load(path, base=tiny_vit(0))
        except VpeftError:
            return None
    with torch.no_grad():
        return pm.eval()(X)


def _same_or_refused(data: bytes) -> None:
    out = _load(data)
    if out is not None:
        torch.testing.assert_close(out, LOGITS, atol=0, rtol=0)


def _parts() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "a.safetensors"
        path.write_bytes(DATA)
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())  # noqa: SIM118


def _file(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> bytes:
    return save({k: v.contiguous() for k, v in tensors.items()}, metadata=meta)


def test_the_unmodified_file_loads_to_the_same_logits() -> None:
    torch.testing.assert_close(_load(DATA), LOGITS, atol=0, rtol=0)


@FUZZ
@given(st.integers(0, len(DATA) - 1))
def test_truncated_files_are_refused(length: int) -> None:
    assert _load(DATA[:length]) is None


@FUZZ
@given(st.integers(0, len(DATA) - 1), st.integers(0, 7))
def test_bit_flips_are_refused_or_harmless(position: int, bit: int) -> None:
    data = bytearray(DATA)
    data[position] ^= 1 << bit
    if position >= HEADER_END:  # tensor bytes: the checksum must catch every flip
        assert _load(bytes(data)) is None
    else:
        _same_or_refused(bytes(data))


@FUZZ
@given(st.integers(0, HEADER_END - 1), st.binary(min_size=1, max_size=8))
def test_header_overwrites_are_refused_or_harmless(position: int, junk: bytes) -> None:
    data = bytearray(DATA)
    data[position : position + len(junk)] = junk
    _same_or_refused(bytes(data[: len(DATA)]))


@FUZZ
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=10),
        st.sampled_from([(2,), (3, 4), (0,), (1, 1, 1)]),
        min_size=0,
        max_size=3,
    ),
    st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=3),
)
def test_foreign_safetensors_are_refused(shapes: dict, meta: dict) -> None:
    data = _file({k: torch.zeros(s) for k, s in shapes.items()}, meta)
    assert _load(data) is None


TENSORS, META = _parts()
TRAINED = sorted(k for k in TENSORS if not k.startswith("__"))


@FUZZ
@given(
    st.sampled_from(TRAINED),
    st.sampled_from(
        [torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int8, torch.bool]
    ),
)
def test_other_dtypes_load_cast_or_are_refused(name: str, dtype: torch.dtype) -> None:
    tensors = {**TENSORS, name: TENSORS[name].to(dtype)}
    meta = {**META, CHECKSUM_KEY: json.dumps(tensor_checksum(tensors))}
    out = _load(_file(tensors, meta))
    if dtype.is_floating_point:
        assert out is not None
        torch.testing.assert_close(out, LOGITS, atol=0.05, rtol=0.05)
    else:
        assert out is None  # integer / bool data in a trained float tensor is not an adapter


@FUZZ
@given(st.sampled_from(TRAINED), st.lists(st.integers(0, 9), min_size=0, max_size=3))
def test_other_shapes_are_refused(name: str, shape: list[int]) -> None:
    if tuple(shape) == tuple(TENSORS[name].shape):
        return
    tensors = {**TENSORS, name: torch.zeros(shape)}
    meta = {**META, CHECKSUM_KEY: json.dumps(tensor_checksum(tensors))}
    assert _load(_file(tensors, meta)) is None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
KEYS = ["methods", "tasks", "backbone", "fingerprint"]


@FUZZ
@given(st.sampled_from(KEYS), JSON)
def test_hostile_top_level_metadata_is_refused_or_harmless(key: str, value: object) -> None:
    _same_or_refused(_file(TENSORS, {**META, key: json.dumps(value)}))


def _replace_in(document: object, path: list, value: object) -> object:
    """`document` with the element at `path` (keys / indices, clipped to what exists) replaced."""
    if not path:
        return value
    if isinstance(document, dict) and document:
        keys = sorted(document)
        key = keys[path[0] % len(keys)]
        return {**document, key: _replace_in(document[key], path[1:], value)}
    if isinstance(document, list) and document:
        i = path[0] % len(document)
        return [*document[:i], _replace_in(document[i], path[1:], value), *document[i + 1 :]]
    return value


@FUZZ
@given(st.sampled_from(KEYS), st.lists(st.integers(0, 50), min_size=1, max_size=4), JSON)
def test_hostile_nested_metadata_is_refused_or_harmless(key, path, value) -> None:
    document = _replace_in(json.loads(META[key]), path, value)
    _same_or_refused(_file(TENSORS, {**META, key: json.dumps(document)}))


@pytest.mark.parametrize("key", KEYS)
def test_deeply_nested_and_huge_metadata_is_refused(key: str) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    assert _load(_file(TENSORS, {**META, key: deep})) is None
    huge = json.dumps("x" * 5_000_000)
    assert _load(_file(TENSORS, {**META, key: huge})) is None
