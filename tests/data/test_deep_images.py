"""16-bit and float images are rescaled by their range, not saturated to white."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vpeft.data.readers import load_image
from vpeft.errors import DatasetError


def test_16bit_png_keeps_its_intensities(tmp_path: Path) -> None:
    values = np.array([[0, 1000], [30000, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")  # really a 16-bit file
    image = load_image(path)
    assert image.shape == (3, 2, 2)
    expected = torch.from_numpy(values.astype(np.float32) / 65535.0)
    torch.testing.assert_close(image[0], expected)
    assert torch.equal(image[0], image[2])
    assert float(image.mean()) < 0.5  # the old RGB conversion made almost all of it 1.0


def test_float_tiff_is_rescaled_by_its_range(tmp_path: Path) -> None:
    values = np.array([[-2.0, 0.0], [2.0, 6.0]], dtype=np.float32)
    path = tmp_path / "f.tif"
    Image.fromarray(values, mode="F").save(path)
    image = load_image(path)
    torch.testing.assert_close(image[1], torch.tensor([[0.0, 0.25], [0.5, 1.0]]))


def test_float_image_with_nan_is_a_dataset_error(tmp_path: Path) -> None:
    path = tmp_path / "nan.tif"
    Image.fromarray(np.array([[np.nan, 1.0]], dtype=np.float32), mode="F").save(path)
    with pytest.raises(DatasetError, match="NaN"):
        load_image(path)
