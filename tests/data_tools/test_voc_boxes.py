"""Bad-input XML cases inside a good file: coordinates, boxes, flags, class names, object counts;
and the exact VOC write -> read round trip."""

from __future__ import annotations

import numpy as np
import pytest
from dt_helpers import add_pair, cli_convert, images_of, line_of, make_image, problems_of, temp_leftovers

from data_tools.records import Record
from data_tools.voc import read_voc, write_voc


def _record(rs, stem):
    return next(r for r in rs.records if r.image.endswith(f"/{stem}.jpg"))


def _convert_one(dataset, tmp_path, stem, objects, *extra, **kw):
    add_pair(dataset, stem, objects, **kw)
    rc, rs, rep = cli_convert(dataset, tmp_path / "out", *extra)
    assert {"good1", "good2"} <= images_of(rs)
    return rs, problems_of(rep, f"{stem}.xml")


@pytest.mark.parametrize("value, kind, word", [
    ("NaN", "bad_coordinate", "non-finite"), ("inf", "bad_coordinate", "non-finite"),
    ("abc", "bad_coordinate", "non-numeric"), ("", "bad_coordinate", "non-numeric"),
    ("1_0", "bad_coordinate", "non-numeric"),
])
def test_bad_coordinate_drops_only_that_object(dataset, tmp_path, value, kind, word):
    objs = [("beans", 2, 2, 9, 9), {"name": "beans", "xmin": "3", "ymin": "3", "xmax": value, "ymax": "9"}]
    rs, probs = _convert_one(dataset, tmp_path, "nan", objs)
    assert len(probs) == 1 and probs[0]["kind"] == kind and word in probs[0]["reason"]
    assert probs[0]["field"] == "object[2]/bndbox/xmax"
    assert probs[0]["line"] == line_of(dataset / "annotations" / "nan.xml", "<xmax>", 2)
    np.testing.assert_array_equal(_record(rs, "nan").boxes, [[1, 1, 9, 9]])


def test_missing_coordinate_and_bndbox_and_name(dataset, tmp_path):
    objs = [{"name": "beans", "xmin": "1", "ymin": "1", "xmax": "5"}, {"name": "beans"},
            {"xmin": "1", "ymin": "1", "xmax": "5", "ymax": "5"}, ("beans", 1, 1, 6, 6)]
    rs, probs = _convert_one(dataset, tmp_path, "miss", objs)
    assert [p["kind"] for p in probs] == ["missing_coordinate", "missing_box", "missing_name"]
    assert [p["field"] for p in probs] == ["object[1]/bndbox/ymax", "object[2]/bndbox", "object[3]/name"]
    assert _record(rs, "miss").num_boxes == 1


def test_float_coordinates_are_accepted(dataset, tmp_path):
    rs, probs = _convert_one(dataset, tmp_path, "flt", [("beans", "12.5", "3.25", "20.75", "1.5e1")])
    assert probs == []
    np.testing.assert_allclose(_record(rs, "flt").boxes, [[11.5, 2.25, 20.75, 15.0]])


def test_whole_image_box_follows_the_voc_pixel_rule(dataset, tmp_path):
    rs, probs = _convert_one(dataset, tmp_path, "whole", [("beans", 1, 1, 32, 24)])
    assert probs == []
    np.testing.assert_array_equal(_record(rs, "whole").boxes, [[0, 0, 32, 24]])


def test_swapped_box_is_skipped(dataset, tmp_path):
    rs, probs = _convert_one(dataset, tmp_path, "swap", [("beans", 20, 2, 5, 9), ("beans", 2, 2, 9, 9)])
    assert len(probs) == 1 and probs[0]["kind"] == "swapped_box" and probs[0]["field"] == "object[1]/bndbox/xmax"
    assert "xmin=20 xmax=5" in probs[0]["reason"]
    assert _record(rs, "swap").num_boxes == 1


def test_zero_area_box_is_skipped(dataset, tmp_path):
    rs, probs = _convert_one(dataset, tmp_path, "zero", [("beans", 2, 2, 9, 9), ("beans", 7, 3, 7, 9)])
    assert len(probs) == 1 and probs[0]["kind"] == "zero_area_box" and probs[0]["field"] == "object[2]/bndbox/xmax"
    assert probs[0]["line"] is not None and probs[0]["action"] == "skipped"
    assert _record(rs, "zero").num_boxes == 1


def test_partly_outside_box_is_clipped(dataset, tmp_path):
    rs, probs = _convert_one(dataset, tmp_path, "part", [("beans", 0, 2, 40, 9)])
    assert len(probs) == 1 and probs[0]["kind"] == "box_clipped" and probs[0]["action"] == "fixed"
    assert probs[0]["field"] == "object[1]/bndbox/xmin"
    np.testing.assert_array_equal(_record(rs, "part").boxes, [[0, 1, 32, 9]])


def test_wholly_outside_box_is_skipped(dataset, tmp_path):
    rs, probs = _convert_one(dataset, tmp_path, "out", [("beans", 40, 2, 50, 9), ("beans", 2, 2, 9, 9)])
    assert len(probs) == 1 and probs[0]["kind"] == "box_outside" and probs[0]["action"] == "skipped"
    assert _record(rs, "out").num_boxes == 1


def test_missing_difficult_defaults_to_zero_and_bad_flag_is_reported(dataset, tmp_path):
    objs = [{"name": "beans", "xmin": "1", "ymin": "1", "xmax": "5", "ymax": "5"},
            {"name": "beans", "xmin": "1", "ymin": "1", "xmax": "6", "ymax": "6", "difficult": "1", "truncated": "1"},
            {"name": "beans", "xmin": "1", "ymin": "1", "xmax": "7", "ymax": "7", "difficult": "maybe"}]
    rs, probs = _convert_one(dataset, tmp_path, "diff", objs)
    assert [p["kind"] for p in probs] == ["bad_flag"] and probs[0]["field"] == "object[3]/difficult"
    rec = _record(rs, "diff")
    assert rec.difficult.tolist() == [False, True, False] and rec.truncated.tolist() == [False, True, False]


def test_unknown_class_with_classes_file_is_skipped(dataset, tmp_path):
    classes = tmp_path / "classes.txt"
    classes.write_text("# products\nbeans\ncake\n")
    rs, probs = _convert_one(dataset, tmp_path, "unk", [("bean", 1, 1, 5, 5), ("cake", 1, 1, 6, 6)],
                             "--classes", str(classes))
    assert len(probs) == 1 and probs[0]["kind"] == "unknown_class" and probs[0]["field"] == "object[1]/name"
    assert "did you mean 'beans'" in probs[0]["reason"]
    assert probs[0]["line"] == line_of(dataset / "annotations" / "unk.xml", "<name>bean</name>")
    assert rs.class_names == ["beans", "cake"] and _record(rs, "unk").labels.tolist() == [2]


def test_without_classes_file_names_are_collected(dataset, tmp_path):
    rs, probs = _convert_one(dataset, tmp_path, "new", [("zebra snacks", 1, 1, 5, 5)])
    assert probs == [] and rs.class_names == ["beans", "cake", "zebra snacks"]


def test_differently_cased_names_map_to_the_canonical_class(dataset, tmp_path):
    classes = tmp_path / "classes.txt"
    classes.write_text("Beans\ncake\n")
    rs, probs = _convert_one(dataset, tmp_path, "case", [("  BEANS ", 1, 1, 5, 5), ("Cake", 1, 1, 6, 6)],
                             "--classes", str(classes))
    assert rs.class_names == ["Beans", "cake"]
    assert _record(rs, "case").labels.tolist() == [1, 2]
    assert {p["kind"] for p in probs} == {"class_name_case"} and all(p["action"] == "fixed" for p in probs)
    assert "'Cake' read as 'cake'" in probs[1]["reason"]


def test_case_variants_without_classes_file_become_one_class(dataset, tmp_path):
    add_pair(dataset, "b1", [("Cake", 1, 1, 5, 5)])
    rs, probs = _convert_one(dataset, tmp_path, "b2", [("CAKE", 1, 1, 5, 5)])
    assert rs.class_names == ["beans", "cake"]  # "cake" is the most frequent spelling


@pytest.mark.parametrize("n", [0, 1, 5])
def test_zero_one_many_objects(dataset, tmp_path, n):
    rs, probs = _convert_one(dataset, tmp_path, "many", [("beans", 1 + i, 1, 10 + i, 10) for i in range(n)])
    assert probs == []
    rec = _record(rs, "many")
    assert rec.num_boxes == n and rec.boxes.dtype == np.float32 and rec.labels.dtype == np.int64


def test_write_read_round_trip_is_exact(tmp_path):
    img = make_image(tmp_path / "ds" / "images" / "shelf é.png", (50, 40))
    rec = Record("images/shelf é.png", 50, 40,
                 np.array([[0, 0, 50, 40], [1.5, 2.25, 10.125, 30.7], [12.3, 4.1, 33.3, 39.99]], np.float32),
                 np.array([2, 1, 3]), np.array([False, True, False]), np.array([True, False, False]))
    names = ["beans", "café crème", "Tomato Sauce"]
    xml = tmp_path / "ds" / "annotations" / "shelf é.xml"
    write_voc(rec, names, xml)
    assert not temp_leftovers(tmp_path) and img.exists()
    back, problems = read_voc(xml, names, root=tmp_path / "ds")
    assert problems == []
    assert (back.image, back.width, back.height) == (rec.image, rec.width, rec.height)
    np.testing.assert_array_equal(back.boxes, rec.boxes)
    np.testing.assert_array_equal(back.labels, rec.labels)
    np.testing.assert_array_equal(back.difficult, rec.difficult)
    np.testing.assert_array_equal(back.truncated, rec.truncated)
    assert "<xmin>1</xmin>" in xml.read_text(encoding="utf-8")  # 1-based on disk


def test_write_voc_rejects_labels_outside_the_class_list(tmp_path):
    rec = Record("a.jpg", 10, 10, np.array([[0, 0, 5, 5]], np.float32), np.array([3]))
    with pytest.raises(ValueError, match="label 3"):
        write_voc(rec, ["a", "b"], tmp_path / "a.xml")
    assert not (tmp_path / "a.xml").exists() and not temp_leftovers(tmp_path)
