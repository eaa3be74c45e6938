"""Every label format round-trips: ours -> format -> ours gives the same images, boxes, labels and class order
(exactly for pixel formats, within the rounding of YOLO's fractions and Label Studio's percentages), and the
format of every export is detected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dt_helpers import make_image, tree_hashes

from data_tools.convert import convert
from data_tools.formats import FORMATS, FormatError, detect_format, file_format
from data_tools.formats.export import export_records
from data_tools.records import Record, RecordSet

# Largest error of a box edge after the round trip, in pixels (images here are at most 64 px wide).
TOLERANCE = {"voc": 0.0, "coco": 1e-4, "cvat": 0.0, "csv": 0.0, "yolo": 64 * 1e-6, "labelstudio": 1e-4}


@pytest.fixture
def records(tmp_path: Path) -> RecordSet:
    """Three images (one in a sub-folder, one without boxes), float and whole-image boxes, a difficult flag,
    and a class order that is not alphabetical."""
    root = tmp_path / "photos"
    make_image(root / "images" / "a.jpg", (64, 48))
    make_image(root / "images" / "aisle 2" / "b.png", (40, 30), fmt="PNG")
    make_image(root / "images" / "empty.jpg", (32, 24))
    recs = [
        Record("images/a.jpg", 64, 48, [[1.5, 2.25, 30.75, 40.0], [0, 0, 64, 48], [10, 10, 12.5, 11.5]], [2, 1, 2],
               difficult=[False, True, False]),
        Record("images/aisle 2/b.png", 40, 30, [[3, 4, 39, 29]], [1]),
        Record("images/empty.jpg", 32, 24),
    ]
    return RecordSet(["tomato sauce", "beans"], str(root), recs, {})


def _by_name(rs: RecordSet) -> dict[str, Record]:
    return {Path(r.image).name: r for r in rs.records}


def assert_same(rs: RecordSet, back: RecordSet, atol: float) -> None:
    assert back.class_names == rs.class_names
    a, b = _by_name(rs), _by_name(back)
    assert set(a) == set(b)
    for name, r in a.items():
        assert (b[name].width, b[name].height) == (r.width, r.height)
        np.testing.assert_allclose(b[name].boxes, r.boxes, atol=atol, rtol=0, err_msg=name)
        assert b[name].labels.tolist() == r.labels.tolist(), name


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_folder_export_reads_back_the_same_boxes(records, tmp_path, fmt):
    before = tree_hashes(Path(records.image_root))
    out = tmp_path / f"export_{fmt}"
    result = export_records(records, fmt, out)
    assert result["records"] == 3 and result["images"] == 3 and not result["problems"]
    assert tree_hashes(Path(records.image_root)) == before  # the source images are untouched
    assert not list(out.rglob(".*.tmp"))
    found, _, _ = detect_format(str(out))
    assert found == fmt
    back, problems, summary = convert(out, progress=False)
    assert problems == [] and summary["detected"]
    assert_same(records, back, TOLERANCE[fmt])
    if fmt in ("voc", "coco", "cvat"):  # the formats with a place for it keep the difficult flag
        assert _by_name(back)["a.jpg"].difficult.tolist() == [False, True, False]


@pytest.mark.parametrize("fmt,name", [("coco", "gt.json"), ("cvat", "gt.xml"), ("labelstudio", "tasks.json"),
                                      ("csv", "boxes.csv")])
def test_single_file_export_reads_back_with_image_root(records, tmp_path, fmt, name):
    out = tmp_path / name
    result = export_records(records, fmt, out)
    assert result["single_file"] and result["files"] == [str(out)]
    assert not (tmp_path / "images").exists()  # one file, no copies of the images
    assert file_format(str(out))[0] == fmt
    order = records.class_names if fmt in ("labelstudio", "csv") else None  # these files hold no class list
    back, problems, _ = convert(out, fmt, image_root=records.image_root, class_names=order, progress=False)
    assert problems == []
    assert_same(records, back, TOLERANCE[fmt])
    assert sorted(r.image for r in back.records) == sorted(r.image for r in records.records)


def test_yolo_and_cvat_keep_splits(records, tmp_path):
    for r, split in zip(records.records, ("train", "val", "train")):
        r.split = split
    y = tmp_path / "yolo"
    export_records(records, "yolo", y)
    assert (y / "images" / "train" / "a.jpg").is_file() and (y / "labels" / "val" / "aisle 2" / "b.txt").is_file()
    assert "train: images/train" in (y / "data.yaml").read_text() and "val: images/val" in (y / "data.yaml").read_text()
    back, _, summary = convert(y, progress=False)
    assert {Path(r.image).name: r.split for r in back.records} == {"a.jpg": "train", "b.png": "val", "empty.jpg": "train"}
    assert summary["splits"] == {"train": 2, "val": 1}
    c = tmp_path / "cvat.xml"
    export_records(records, "cvat", c)
    back, _, _ = convert(c, image_root=records.image_root, progress=False)
    assert {Path(r.image).name: r.split for r in back.records} == {"a.jpg": "train", "b.png": "val", "empty.jpg": "train"}


def test_link_mode_hard_links_and_none_mode_writes_labels_only(records, tmp_path):
    export_records(records, "yolo", tmp_path / "linked", images="link")
    src = Path(records.image_root) / "images" / "a.jpg"
    assert (tmp_path / "linked" / "images" / "a.jpg").stat().st_ino == src.stat().st_ino
    r = export_records(records, "voc", tmp_path / "bare", images="none")
    assert r["images"] == 0 and not (tmp_path / "bare" / "images").exists()
    assert len(list((tmp_path / "bare" / "annotations").rglob("*.xml"))) == 3


def test_detection_of_sources(tmp_path, records):
    for fmt in FORMATS:
        export_records(records, fmt, tmp_path / fmt)
    assert detect_format(str(tmp_path / "yolo" / "data.yaml"))[0] == "yolo"
    assert detect_format(str(tmp_path / "coco" / "annotations.json"))[:2] == ("coco", str(tmp_path / "coco" / "annotations.json"))
    assert detect_format(str(tmp_path / "labelstudio"))[0] == "labelstudio"
    (tmp_path / "empty").mkdir()
    with pytest.raises(FormatError, match="no annotations found"):
        detect_format(str(tmp_path / "empty"))
    with pytest.raises(FormatError, match="single VOC file"):
        detect_format(str(next((tmp_path / "voc" / "annotations").glob("*.xml"))))
    (tmp_path / "notes.md").write_text("hello")
    with pytest.raises(FormatError, match="not a known annotation file"):
        detect_format(str(tmp_path / "notes.md"))
    two = tmp_path / "two"
    two.mkdir()
    (two / "a.json").write_text("{}")
    (two / "b.csv").write_text("image,x1,y1,x2,y2,label\n")
    with pytest.raises(FormatError, match="several annotation files"):
        detect_format(str(two))


def test_export_names_strip_the_image_folder_and_stay_unique(tmp_path):
    make_image(tmp_path / "r" / "images" / "x.jpg")
    make_image(tmp_path / "r" / "X.jpg")
    rs = RecordSet(["a"], str(tmp_path / "r"), [Record("images/x.jpg", 32, 24), Record("X.jpg", 32, 24)], {})
    r = export_records(rs, "csv", tmp_path / "out")
    rows = (tmp_path / "out" / "annotations.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["x.jpg", "X_2.jpg"] and r["images"] == 2


def test_csv_export_quotes_formula_like_cells_and_reads_them_back(records, tmp_path):
    """OWASP's CSV injection advice: a class name a spreadsheet would run (``=...``, ``+``, ``-``, ``@``) is written
    with a leading ``'`` and read back as it was."""
    evil = ["=cmd|' /C calc'!A0", "@HYPERLINK(\"http://x\")"]
    rs = RecordSet(evil, records.image_root, records.records, {})
    out = tmp_path / "boxes.csv"
    export_records(rs, "csv", out)
    text = out.read_text()
    assert "'=cmd|" in text and "'@HYPERLINK" in text
    assert not any(cell.startswith(("=", "@")) for line in text.splitlines() for cell in line.split(","))
    back, problems, _ = convert(out, "csv", image_root=rs.image_root, class_names=evil, progress=False)
    assert problems == [] and back.class_names == evil
    assert_same(rs, back, TOLERANCE["csv"])


def test_control_characters_in_class_names_become_spaces_and_voc_export_works(records, tmp_path):
    rs = RecordSet(["tomato\x01sauce", "beans\x1b[31m"], records.image_root, records.records, {})
    from data_tools.records import ClassMap
    assert ClassMap(rs.class_names).names == ["tomato sauce", "beans [31m"]
    src = tmp_path / "csv_in.csv"
    export_records(rs, "csv", src)
    back, _, _ = convert(src, "csv", image_root=rs.image_root, progress=False)
    assert sorted(back.class_names) == ["beans [31m", "tomato sauce"]
    export_records(back, "voc", tmp_path / "voc_out")  # lxml refuses control characters; none are left
