"""Image reading (EXIF rotation, odd modes, bad files) and the Dataset's cache and targets."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from data_tools.images import ImageError, probe_image, read_image
from data_tools.synth import make_tiny_dataset
from detect.data import DetectionDataset


def test_read_image_modes_and_exif(tmp_path):
    rgba = tmp_path / "a.png"
    Image.new("RGBA", (7, 5), (10, 20, 30, 0)).save(rgba)
    assert read_image(rgba).shape == (5, 7, 3)
    gray16 = tmp_path / "g.png"
    Image.fromarray(np.full((4, 6), 60000, np.uint16)).save(gray16)
    g = read_image(gray16)
    assert g.shape == (4, 6, 3) and g.dtype == np.uint8 and g.max() > 200
    rotated = tmp_path / "r.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.new("RGB", (40, 20), (200, 10, 10)).save(rotated, exif=exif)
    assert read_image(rotated).shape == (40, 20, 3)  # H x W after the EXIF rotation


@pytest.mark.parametrize("content, kind", [(b"", "empty_image"), (b"not an image", None)])
def test_read_image_refuses_bad_files(tmp_path, content, kind):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(content)
    with pytest.raises(ImageError) as err:
        read_image(bad)
    assert str(bad) in str(err.value)
    if kind:
        assert err.value.kind == kind


def test_read_image_opens_files_like_probe_image(tmp_path):
    """The one opener: a FIFO is refused without blocking, a missing file is ``missing_image``, as when probed."""
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    missing = tmp_path / "gone.jpg"
    for path, kind in ((fifo, "not_regular_file"), (missing, "missing_image")):
        with pytest.raises(ImageError) as decoded:
            read_image(path)
        with pytest.raises(ImageError) as probed:
            probe_image(path)
        assert decoded.value.kind == probed.value.kind == kind
        assert decoded.value.reason == probed.value.reason


def test_dataset_targets_in_tensor_pixels_with_and_without_cache(tmp_path):
    rs = make_tiny_dataset(tmp_path, images=3, classes=2, seed=1, size=(120, 80))
    cached = DetectionDataset(rs, 60, None, False, cache_images=True)
    plain = DetectionDataset(rs, 60, None, False, cache_images=False)
    cached.prepare()
    for i in range(3):
        (a, ta), (b, tb) = cached[i], plain[i]
        assert a.shape == (3, 60, 60) and a.dtype == torch.uint8
        assert torch.equal(a, b) and torch.allclose(ta["boxes"], tb["boxes"])
        assert ta["scale"] == pytest.approx(0.5) and ta["image_id"] == i + 1
        assert torch.allclose(ta["boxes"], torch.from_numpy(rs.records[i].boxes) * 0.5, atol=1e-4)
        assert ta["labels"].tolist() == rs.records[i].labels.tolist()
