"""Bad-input image cases: <size> missing or wrong, EXIF rotation, truncated / empty / fake images,
unusual modes, huge dimensions."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from dt_helpers import add_pair, cli_convert, images_of, make_image, problems_of, voc_xml
from PIL import Image


def _record(rs, stem):
    return next(r for r in rs.records if stem in r.image)


def test_missing_size_is_taken_from_the_image(dataset, tmp_path):
    add_pair(dataset, "nosize", xml=voc_xml("nosize.jpg", size=None, objects=[("beans", 1, 1, 30, 20)]),
             image_size=(32, 24))
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    [p] = problems_of(rep, "nosize.xml")
    assert p["kind"] == "missing_size" and p["action"] == "fixed" and p["field"] == "size"
    rec = _record(rs, "nosize")
    assert (rec.width, rec.height) == (32, 24) and rec.num_boxes == 1


def test_zero_size_is_taken_from_the_image(dataset, tmp_path):
    add_pair(dataset, "zero", [("beans", 1, 1, 30, 20)], size=(0, 0), image_size=(32, 24))
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    [p] = problems_of(rep, "zero.xml")
    assert p["kind"] == "missing_size" and p["line"] is not None
    assert (_record(rs, "zero").width, _record(rs, "zero").height) == (32, 24)


def test_wrong_size_uses_the_real_image_size(dataset, tmp_path):
    add_pair(dataset, "wrong", [("beans", 1, 1, 60, 20)], size=(64, 48), image_size=(32, 24))
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    kinds = [(p["kind"], p["action"]) for p in problems_of(rep, "wrong.xml")]
    assert kinds == [("size_mismatch", "fixed"), ("box_clipped", "fixed")]
    assert "64x48" in problems_of(rep, "wrong.xml")[0]["reason"]
    rec = _record(rs, "wrong")
    assert (rec.width, rec.height) == (32, 24)
    np.testing.assert_array_equal(rec.boxes, [[0, 0, 32, 20]])


def test_exif_rotated_image_with_displayed_size(dataset, tmp_path):
    # stored 40x20, EXIF 6 (rotate 90 CW) -> displayed 20x40; the annotation already uses 20x40
    add_pair(dataset, "rot", [("beans", 2, 3, 18, 38)], size=(20, 40), image_size=(40, 20), exif_orientation=6)
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    assert problems_of(rep, "rot.xml") == []
    rec = _record(rs, "rot")
    assert (rec.width, rec.height) == (20, 40)
    np.testing.assert_array_equal(rec.boxes, [[1, 2, 18, 38]])


def test_exif_rotated_image_annotated_on_raw_pixels(dataset, tmp_path):
    # labelImg shows raw pixels: <size> is the stored 40x20 and the box is in stored pixels
    add_pair(dataset, "raw", [("beans", 5, 3, 17, 9)], size=(40, 20), image_size=(40, 20), exif_orientation=6)
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    [p] = problems_of(rep, "raw.xml")
    assert p["kind"] == "exif_rotated" and p["action"] == "fixed"
    rec = _record(rs, "raw")
    assert (rec.width, rec.height) == (20, 40)
    # stored box (4, 2, 17, 9) rotated 90 CW in a 40x20 image -> (20 - 9, 4, 20 - 2, 17)
    np.testing.assert_array_equal(rec.boxes, [[11, 4, 18, 17]])


def test_exif_180_keeps_boxes_and_notes_the_assumption(dataset, tmp_path):
    add_pair(dataset, "r180", [("beans", 5, 3, 17, 9)], size=(40, 20), image_size=(40, 20), exif_orientation=3)
    rc, rs, rep = cli_convert(dataset, tmp_path / "out", "--strict")
    [p] = problems_of(rep, "r180.xml")
    assert p["kind"] == "exif_orientation" and p["action"] == "ignored"
    assert rc == 0  # an "ignored" note does not fail --strict
    np.testing.assert_array_equal(_record(rs, "r180").boxes, [[4, 2, 17, 9]])


def _noisy_jpeg(path, size=(64, 48)):
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)
    return path


def test_truncated_jpeg_is_skipped(dataset, tmp_path):
    _, img = add_pair(dataset, "trunc", [("beans", 1, 1, 5, 5)], image_size=False)
    data = _noisy_jpeg(img).read_bytes()
    img.write_bytes(data[: len(data) // 2])
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    [p] = problems_of(rep, "trunc.xml")
    assert p["kind"] == "truncated_image" and "trunc.jpg" in p["reason"]
    assert images_of(rs) == {"good1", "good2"}


def test_jpeg_with_bytes_after_the_end_marker_is_accepted(dataset, tmp_path):
    _, img = add_pair(dataset, "trailer", [("beans", 1, 1, 5, 5)], size=(64, 48), image_size=False)
    img.write_bytes(_noisy_jpeg(img).read_bytes() + b"SEFT phone trailer data")
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    assert problems_of(rep, "trailer.xml") == [] and "trailer" in images_of(rs)


def test_truncated_png_is_skipped(dataset, tmp_path):
    _, img = add_pair(dataset, "tpng", [("beans", 1, 1, 5, 5)], size=(64, 48), image_size=False, ext=".png")
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(img)
    img.write_bytes(img.read_bytes()[:-200])
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    assert [p["kind"] for p in problems_of(rep, "tpng.xml")] == ["truncated_image"]


def test_zero_byte_jpeg_is_skipped(dataset, tmp_path):
    _, img = add_pair(dataset, "empty", [("beans", 1, 1, 5, 5)], image_size=False)
    img.write_bytes(b"")
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    [p] = problems_of(rep, "empty.xml")
    assert p["kind"] == "empty_image" and "0 bytes" in p["reason"]
    assert images_of(rs) == {"good1", "good2"}


def test_non_image_named_jpg_is_skipped(dataset, tmp_path):
    _, img = add_pair(dataset, "html", [("beans", 1, 1, 5, 5)], image_size=False)
    img.write_text("<html><body>404 Not Found</body></html>")
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    [p] = problems_of(rep, "html.xml")
    assert p["kind"] == "not_an_image" and "html.jpg" in p["reason"]
    assert images_of(rs) == {"good1", "good2"}


@pytest.mark.parametrize("mode, ext", [("L", ".jpg"), ("RGBA", ".png"), ("I;16", ".png"), ("CMYK", ".jpg"),
                                       ("P", ".png"), ("LA", ".png")])
def test_unusual_image_modes_are_accepted(dataset, tmp_path, mode, ext):
    add_pair(dataset, "mode", [("beans", 1, 1, 30, 20)], ext=ext, mode=mode)
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    assert problems_of(rep, "mode.xml") == []
    with Image.open(dataset / "images" / f"mode{ext}") as im:
        assert im.mode == mode or (mode == "I;16" and im.mode == "I")
    rec = _record(rs, "mode")
    assert (rec.width, rec.height, rec.num_boxes) == (32, 24, 1)


def _png_header_only(path, w, h):
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0"))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("w, h", [(12000, 10000), (40000, 40000)])
def test_huge_dimensions_are_skipped_without_decoding(dataset, tmp_path, w, h):
    _, img = add_pair(dataset, "huge", [("beans", 1, 1, 5, 5)], size=(w, h), image_size=False, ext=".png")
    _png_header_only(img, w, h)
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    [p] = problems_of(rep, "huge.xml")
    assert p["kind"] == "huge_image" and "100,000,000" in p["reason"]
    assert images_of(rs) == {"good1", "good2"}


def test_probe_reads_exif_orientation(tmp_path):
    from data_tools.images import probe_image

    info = probe_image(make_image(tmp_path / "a.jpg", (40, 20), exif_orientation=8))
    assert (info.width, info.height, info.raw_width, info.raw_height, info.orientation) == (20, 40, 40, 20, 8)


def test_image_file_over_the_size_cap_is_skipped(dataset, tmp_path, monkeypatch):
    import data_tools.images as images

    add_pair(dataset, "big", [("beans", 1, 1, 5, 5)], size=(400, 300))
    small, big = (dataset / "images" / "good1.jpg").stat().st_size, (dataset / "images" / "big.jpg").stat().st_size
    assert big > small
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", small)
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    [p] = problems_of(rep, "big.xml")
    assert p["kind"] == "huge_file" and f"over the {small:,}-byte limit" in p["reason"]
    assert images_of(rs) == {"good1", "good2"}
