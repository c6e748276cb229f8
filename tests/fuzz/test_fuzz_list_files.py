"""Property-based fuzzing of VTAB-1k list files (issue 14): missing fields, bad labels, paths
outside the task folder, huge numbers, undecodable bytes. Reading a split either gives exactly
the listed (path, label) pairs, inside the folder, or raises a `DatasetError`."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vpeft.data.readers import MAX_LABEL, VTAB1kDataset, parse_vtab_list
from vpeft.errors import DatasetError, VpeftError

FUZZ = settings(
    max_examples=80, deadline=2000, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
NAMES = ["a.png", "sub/b.png", "c d.png"]  # files that exist in the fuzzed task folder

PATHS = st.sampled_from(
    [*NAMES, "missing.png", "../x.png", "/etc/hostname", "sub/../../x.png", "./a.png", "sub/",
     "a.png\0", "", " ", "\t", "..", "~/a.png"]
) | st.text(max_size=12)  # fmt: skip
LABELS = st.sampled_from(
    ["0", "1", "7", "-1", "+2", "1.0", "1e3", "٣", "²", "0x1", "nan", "", str(MAX_LABEL),
     str(MAX_LABEL + 1), "9" * 40]
) | st.integers(-5, 2**70).map(str) | st.text(max_size=5)  # fmt: skip
LINES = st.lists(
    st.tuples(PATHS, st.sampled_from([" ", "\t", "  ", ""]), LABELS).map("".join)
    | st.text(max_size=20),
    min_size=0,
    max_size=6,
)


def _task(folder: Path) -> None:
    for name in NAMES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / name)


def _check(folder: Path, content: bytes) -> None:
    (folder / "train800.txt").write_bytes(content)
    try:
        samples = parse_vtab_list(folder / "train800.txt", folder)
        dataset = VTAB1kDataset(folder, "train800")
    except DatasetError:
        return
    except VpeftError as err:  # pragma: no cover - a vpeft error of another kind
        raise AssertionError(f"{type(err).__name__} instead of DatasetError: {err}") from err
    root = folder.resolve()
    for path, label in samples:
        assert path.resolve().is_relative_to(root), path
        assert 0 <= label <= MAX_LABEL
    assert len(dataset) == len(samples) >= 1
    assert dataset.num_classes == max(label for _, label in samples) + 1


@FUZZ
@given(LINES)
def test_list_files_give_listed_samples_or_a_dataset_error(lines: list[str]) -> None:
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "task"
        folder.mkdir()
        _task(folder)
        _check(folder, "\n".join(lines).encode("utf-8", "surrogatepass"))


@FUZZ
@given(st.binary(max_size=60))
def test_arbitrary_bytes_give_a_dataset_error_or_samples(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "task"
        folder.mkdir()
        _task(folder)
        _check(folder, content)


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("../outside.png 1", "outside the task folder"),
        ("/etc/hostname 0", "outside the task folder"),
        ("a.png 99999999999999999999", "malformed line"),
        ("a.png ²", "malformed line"),
        ("a.png", "malformed line"),
    ],
)
def test_named_list_file_errors(tmp_path: Path, line: str, match: str) -> None:
    _task(tmp_path)
    (tmp_path / "train800.txt").write_text(line + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=match):
        VTAB1kDataset(tmp_path, "train800")


def test_undecodable_list_file_is_a_dataset_error(tmp_path: Path) -> None:
    _task(tmp_path)
    (tmp_path / "train800.txt").write_bytes(b"a.png 1\n\xff\xfe 2\n")
    with pytest.raises(DatasetError, match="not UTF-8"):
        VTAB1kDataset(tmp_path, "train800")
