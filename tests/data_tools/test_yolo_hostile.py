"""Bad YOLO folders: every bad line is reported with its file and line number, good lines and images are kept,
the inputs are untouched and nothing is left half-written (``cli_convert`` checks the last two)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from dt_helpers import cli_convert, make_image, problems_of

from data_tools.convert import convert
from data_tools.formats.common import ReadOptions
from data_tools.formats.yolo import read_yolo


def _yolo(root: Path, labels: dict[str, str], names=("cola", "chips"), yaml: str | None = None) -> Path:
    """``root/images/<stem>.jpg`` (40x20) + ``root/labels/<stem>.txt`` per entry, and ``data.yaml``."""
    for stem, text in labels.items():
        make_image(root / "images" / f"{stem}.jpg", (40, 20))
        if text is not None:
            (root / "labels").mkdir(parents=True, exist_ok=True)
            (root / "labels" / f"{stem}.txt").write_text(text)
    root.mkdir(parents=True, exist_ok=True)
    (root / "data.yaml").write_text(yaml if yaml is not None else "names: [" + ", ".join(names) + "]\n")
    return root


def test_bad_lines_are_reported_with_line_numbers_and_good_lines_kept(tmp_path):
    root = _yolo(tmp_path / "y", {
        "a": "0 0.5 0.5 0.5 0.5\n"          # good: [10, 5, 30, 15]
             "1 0.5 0.5 0.5\n"               # 4 values
             "x 0.5 0.5 0.5 0.5\n"           # class not a number
             "0 0.5 nan 0.5 0.5\n"           # non-finite
             "7 0.5 0.5 0.5 0.5\n"           # class id outside the names
             "0 0.5 0.5 0 0.2\n"             # zero width
             "0 20 10 8 4\n"                 # pixels, not fractions
             "\n# a comment\n"
             "1 0.25 0.25 0.5 0.5 0.93\n"    # with a saved confidence: kept
             "0 0.1 0.1 0.3 0.1 0.3 0.4\n",  # a polygon: its bounding box, fixed
        "b": None,                           # no label file: a background image
    })
    rc, rs, rep = cli_convert(root, tmp_path / "out")
    assert rc == 0
    rows = {(p["line"], p["field"]): p for p in problems_of(rep, "a.txt")}
    assert set(rows) == {(2, "line"), (3, "class"), (4, "y_center"), (5, "class"), (6, "width"), (7, "box"),
                         (11, None)}
    assert rows[(2, "line")]["kind"] == "bad_line" and "4 values" in rows[(2, "line")]["reason"]
    assert rows[(4, "y_center")]["kind"] == "bad_coordinate" and "non-finite" in rows[(4, "y_center")]["reason"]
    assert rows[(5, "class")]["kind"] == "unknown_class" and "class id 7" in rows[(5, "class")]["reason"]
    assert rows[(6, "width")]["kind"] == "zero_area_box"
    assert "not fractions" in rows[(7, "box")]["reason"]
    assert rows[(11, None)]["kind"] == "polygon_box" and rows[(11, None)]["action"] == "fixed"
    recs = {Path(r.image).stem: r for r in rs.records}
    np.testing.assert_allclose(recs["a"].boxes, [[10, 5, 30, 15], [0, 0, 20, 10], [4, 2, 12, 8]], atol=1e-4)
    assert recs["a"].labels.tolist() == [1, 2, 1] and recs["b"].num_boxes == 0
    assert rep["summary"]["boxes_skipped"] == 6 and rs.class_names == ["cola", "chips"]


def test_class_names_from_classes_txt_a_name_map_or_ids(tmp_path):
    root = _yolo(tmp_path / "map", {"a": "3 0.5 0.5 0.5 0.5\n"}, yaml="names: {0: cola, 3: 'tomato sauce'}\n")
    rs, problems = read_yolo(str(root), ReadOptions())
    assert rs.class_names == ["cola", "tomato sauce"] and rs.records[0].labels.tolist() == [2] and not problems
    flat = tmp_path / "flat"  # labelImg: images, .txt and classes.txt side by side
    make_image(flat / "a.jpg", (40, 20))
    (flat / "a.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    (flat / "classes.txt").write_text("cola\nchips\n")
    rs, _, summary = convert(flat, progress=False)
    assert summary["format"] == "yolo" and rs.class_names == ["cola", "chips"] and rs.records[0].labels.tolist() == [2]
    (flat / "classes.txt").unlink()
    rs, problems = read_yolo(str(flat), ReadOptions())
    assert rs.class_names == ["0", "1"] and [p.kind for p in problems] == ["no_class_names"]
    rs, _ = read_yolo(str(flat), ReadOptions(class_names=["cola", "chips"]))  # --classes names the ids
    assert rs.class_names == ["cola", "chips"] and rs.records[0].labels.tolist() == [2]


def test_broken_data_yaml_is_reported_with_its_line(tmp_path):
    root = _yolo(tmp_path / "y", {"a": "0 0.5 0.5 0.5 0.5\n"}, yaml="names: [cola, chips\nnc: 2\n")
    (root / "classes.txt").write_text("cola\nchips\n")
    rs, problems = read_yolo(str(root), ReadOptions())
    [p] = problems
    assert p.file.endswith("data.yaml") and p.kind == "bad_names" and p.line == 2 and "invalid YAML" in p.reason
    assert rs.class_names == ["cola", "chips"]  # the names file beside it is used


def test_orphan_labels_and_undecodable_label_files(tmp_path):
    root = _yolo(tmp_path / "y", {"a": "0 0.5 0.5 0.5 0.5\n", "bad": "0 0.5 0.5 0.5 0.5\n"})
    (root / "labels" / "ghost.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (root / "labels" / "bad.txt").write_bytes(b"0 0.5 0.5 0.5 0.5\n\xff\xfe 1 0.5\n")
    rc, rs, rep = cli_convert(root, tmp_path / "out")
    [ghost] = problems_of(rep, "ghost.txt")
    assert ghost["kind"] == "orphan_label" and "no image" in ghost["reason"]
    [bad] = problems_of(rep, "bad.txt")
    assert bad["kind"] == "bad_encoding" and bad["line"] == 2 and "skipped" in bad["reason"]
    assert [Path(r.image).stem for r in rs.records] == ["a"]  # an image whose boxes are unknown is not background


def test_huge_label_file_is_refused_without_reading_it(tmp_path, monkeypatch):
    import data_tools.formats.yolo as yolo

    monkeypatch.setattr(yolo, "MAX_TXT_BYTES", 64)
    root = _yolo(tmp_path / "y", {"a": "0 0.5 0.5 0.5 0.5\n" * 10, "b": "1 0.5 0.5 0.5 0.5\n"})
    rs, problems = read_yolo(str(root), ReadOptions())
    [p] = problems
    assert p.kind == "huge_file" and p.file.endswith("a.txt")
    assert [Path(r.image).stem for r in rs.records] == ["b"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_fifo_label_file_is_skipped_not_read(tmp_path):
    from dt_helpers import run_cli

    root = _yolo(tmp_path / "y", {"a": "0 0.5 0.5 0.5 0.5\n", "b": None})
    os.mkfifo(root / "labels" / "b.txt")
    r = run_cli("convert", str(root), "-o", str(tmp_path / "d.pkl"), "--quiet", timeout=60)
    assert r.returncode == 0, r.stderr
    assert "b.txt" in r.stdout and "FIFO" in r.stdout and "images: 1 (1 skipped" in r.stdout


def test_splits_from_roboflow_folders(tmp_path):
    root = tmp_path / "rf"
    for split in ("train", "valid", "test"):
        make_image(root / split / "images" / f"{split}1.jpg", (40, 20))
        (root / split / "labels").mkdir(parents=True)
        (root / split / "labels" / f"{split}1.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (root / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnc: 1\nnames: ['cola']\n")
    rs, problems, summary = convert(root, progress=False)
    assert not problems and summary["splits"] == {"test": 1, "train": 1, "val": 1}
    assert {r.split for r in rs.records} == {"train", "val", "test"}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs and symlinks")
def test_images_that_are_links_out_of_the_root_loops_or_fifos_are_skipped(tmp_path):
    root = _yolo(tmp_path / "y", {"a": "0 0.5 0.5 0.5 0.5\n"})
    make_image(tmp_path / "private" / "secret.jpg", (40, 20))
    os.symlink(tmp_path / "private" / "secret.jpg", root / "images" / "secret.jpg")
    os.symlink(root / "images" / "loop.jpg", root / "images" / "loop.jpg")
    os.mkfifo(root / "images" / "pipe.jpg")
    rs, problems = read_yolo(str(root), ReadOptions())
    assert {(Path(p.file).name, p.kind) for p in problems} == {
        ("secret.jpg", "outside_root"), ("loop.jpg", "symlink_loop"), ("pipe.jpg", "not_regular_file")}
    assert [Path(r.image).name for r in rs.records] == ["a.jpg"]


def test_a_class_id_of_a_billion_without_names_is_refused_not_listed(tmp_path):
    from data_tools.formats.yolo import MAX_CLASS_ID
    root = _yolo(tmp_path / "y", {"a": "1000000000 0.5 0.5 0.5 0.5\n0 0.5 0.5 0.2 0.2\n"})
    (root / "data.yaml").unlink()
    rs, problems = read_yolo(str(root), ReadOptions())
    [bad] = [p for p in problems if p.kind == "bad_class_id"]
    assert bad.line == 1 and f"is over {MAX_CLASS_ID:,}" in bad.reason
    assert rs.class_names == ["0"] and rs.records[0].num_boxes == 1
