"""Hostile COCO JSON: unhashable ids, deep nesting, one image under several ids, no categories or boxes,
20,000 categories. Each gets one clear line naming the field; nothing crashes with a traceback."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from dt_helpers import make_image

from data_tools.coco import CocoFormatError, read_coco
from detect.verbs.retail_data import main


def _write(tmp_path, doc, images=("a.jpg", "b.jpg")):
    root = tmp_path / "coco"
    for name in images:
        make_image(root / name, (40, 30))
    path = root / "gt.json"
    path.write_text(json.dumps(doc))
    return path


def _imgs():
    return [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30},
            {"id": 2, "file_name": "b.jpg", "width": 40, "height": 30}]


def test_unhashable_ids_are_reported_with_their_field(tmp_path):
    cats = [{"id": 1, "name": "tea", "supercategory": ["drinks"]}, {"id": [2], "name": "jam"}]
    anns = [{"id": 1, "image_id": 1, "category_id": [1], "bbox": [1, 1, 5, 5]},
            {"id": 2, "image_id": {"x": 1}, "category_id": 1, "bbox": [1, 1, 5, 5]},
            {"id": [3], "image_id": 2, "category_id": {"a": 1}, "bbox": [1, 1, 5, 5]},
            {"id": 4, "image_id": 2, "category_id": 1, "bbox": [1, 1, 5, 5]}]
    images = _imgs() + [{"id": [9], "file_name": "a.jpg"}]
    rs, problems = read_coco(_write(tmp_path, {"images": images, "annotations": anns, "categories": cats}))
    fields = {p.field: p for p in problems}
    assert set(fields) == {"categories[0]/supercategory", "categories[1]", "images[2]/id",
                           "annotations[0]/category_id", "annotations[1]/image_id", "annotations[2]/category_id"}
    assert "[1]" in fields["annotations[0]/category_id"].reason and "category_id" in fields[
        "annotations[0]/category_id"].reason
    assert "image_id" in fields["annotations[1]/image_id"].reason
    assert [r.num_boxes for r in rs.records] == [0, 1] and rs.class_names == ["tea"]


def test_unhashable_ids_through_the_cli_exit_cleanly(tmp_path, capsys):
    anns = [{"id": 1, "image_id": {"x": 1}, "category_id": [1], "bbox": [1, 1, 5, 5]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}]
    path = _write(tmp_path, {"images": _imgs(), "annotations": anns,
                             "categories": [{"id": 1, "name": "tea", "supercategory": {"no": 1}}]})
    assert main(["convert", str(path), "-o", str(tmp_path / "d.pkl"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "annotations[0]/image_id" in out and "Traceback" not in out


def test_deeply_nested_json_is_one_clear_line(tmp_path, capsys):
    path = tmp_path / "deep.json"
    path.write_text('{"images": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(CocoFormatError, match=r"deep\.json: JSON nested too deeply"):
        read_coco(path)
    assert main(["convert", str(path), "-o", str(tmp_path / "d.pkl")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nested too deeply" in err


def test_one_image_under_several_ids_is_one_record_with_merged_boxes(tmp_path):
    images = _imgs() + [{"id": 3, "file_name": "./a.jpg", "width": 40, "height": 30}]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]},
            {"id": 2, "image_id": 3, "category_id": 1, "bbox": [10, 10, 5, 5]},
            {"id": 3, "image_id": 3, "category_id": 1, "bbox": [1, 1, 5, 5]},  # same box as id 1
            {"id": 4, "image_id": 2, "category_id": 1, "bbox": [2, 2, 5, 5]}]
    rs, problems = read_coco(_write(tmp_path, {"images": images, "annotations": anns,
                                               "categories": [{"id": 1, "name": "tea"}]}))
    assert [r.image for r in rs.records] == ["a.jpg", "b.jpg"]
    np.testing.assert_array_equal(rs.records[0].boxes, [[1, 1, 6, 6], [10, 10, 15, 15]])
    by_kind = {p.kind: p for p in problems}
    dup = by_kind["duplicate_image"]
    assert dup.field == "images[2]/file_name" and "image id 1" in dup.reason and dup.action == "fixed"
    assert by_kind["duplicate_box"].field == "annotations[2]/bbox"


def test_file_without_categories_is_refused(tmp_path, capsys):
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}]
    path = _write(tmp_path, {"images": _imgs(), "annotations": anns, "categories": []})
    with pytest.raises(CocoFormatError, match="no categories"):
        read_coco(path)
    assert main(["convert", str(path), "-o", str(tmp_path / "d.pkl")]) == 1
    assert "no categories" in capsys.readouterr().err and not (tmp_path / "d.pkl").exists()


def test_file_without_boxes_is_warned_loudly(tmp_path, capsys):
    path = _write(tmp_path, {"images": _imgs(), "annotations": [], "categories": [{"id": 1, "name": "tea"}]})
    assert main(["convert", str(path), "-o", str(tmp_path / "d.pkl"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning:") and "no boxes" in err


def test_twenty_thousand_categories_are_summarised(tmp_path, capsys):
    cats = [{"id": i, "name": f"product_{i:05d}"} for i in range(20_000)]
    anns = [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 1, 5, 5]}]
    path = _write(tmp_path, {"images": _imgs(), "annotations": anns, "categories": cats})
    assert main(["convert", str(path), "-o", str(tmp_path / "d.pkl"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) < 400 and len(out) < 4000
    assert "19,9" in out and "more" in out


def test_json_over_the_size_cap_is_refused_unread(tmp_path, monkeypatch):
    import data_tools.coco as coco

    path = _write(tmp_path, {"images": _imgs(), "annotations": [], "categories": [{"id": 1, "name": "tea"}]})
    monkeypatch.setattr(coco, "MAX_JSON_BYTES", 64)
    with pytest.raises(CocoFormatError, match=r"gt\.json is \d+ bytes, over the 64-byte limit"):
        read_coco(path)


def test_two_names_of_one_file_by_a_hard_link_are_one_record(tmp_path):
    """``b.jpg`` is a hard link to ``a.jpg`` (two names, one inode): reported as a duplicate image and merged, like
    the same file listed twice by name, instead of two records of one photo."""
    root = tmp_path / "coco"
    make_image(root / "a.jpg", (40, 30))
    os.link(root / "a.jpg", root / "b.jpg")
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [10, 10, 5, 5]}]
    path = root / "gt.json"
    path.write_text(json.dumps({"images": _imgs(), "annotations": anns, "categories": [{"id": 1, "name": "tea"}]}))
    rs, problems = read_coco(path)
    assert [r.image for r in rs.records] == ["a.jpg"] and rs.records[0].num_boxes == 2
    [dup] = [p for p in problems if p.kind == "duplicate_image"]
    assert dup.field == "images[1]/file_name" and "b.jpg (the same file as a.jpg)" in dup.reason


def test_an_absolute_file_name_inside_the_root_is_that_file(tmp_path):
    """``/…/coco/shelf2/x.jpg`` names a file in the root: it is used, not the other ``x.jpg`` found first by base
    name in ``images/``; an absolute name whose file is missing is still reported, and so is one outside."""
    root = tmp_path / "coco"
    make_image(root / "images" / "x.jpg", (40, 30))
    make_image(root / "shelf2" / "x.jpg", (50, 20))
    make_image(tmp_path / "elsewhere" / "y.jpg", (40, 30))
    images = [{"id": 1, "file_name": str(root / "shelf2" / "x.jpg"), "width": 50, "height": 20},
              {"id": 2, "file_name": str(root / "shelf3" / "x.jpg"), "width": 40, "height": 30},
              {"id": 3, "file_name": str(tmp_path / "elsewhere" / "y.jpg"), "width": 40, "height": 30}]
    path = root / "gt.json"
    path.write_text(json.dumps({"images": images, "annotations": [], "categories": [{"id": 1, "name": "tea"}]}))
    rs, problems = read_coco(path)
    assert [r.image for r in rs.records] == ["shelf2/x.jpg", "images/x.jpg"]
    assert [(p.field, p.kind, p.action) for p in problems if p.kind != "duplicate_image"] == [
        ("images[1]/file_name", "unsafe_path", "fixed"), ("images[2]/file_name", "unsafe_path", "skipped")]
