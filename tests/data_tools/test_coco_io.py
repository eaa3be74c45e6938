"""COCO export (loads in pycocotools) and import (Roboflow / CVAT quirks: ids from 0, sparse ids)."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from dt_helpers import make_image, temp_leftovers, tree_hashes
from pycocotools.coco import COCO

from data_tools.coco import CocoFormatError, read_coco, to_coco, write_coco
from data_tools.convert import convert
from detect.verbs.retail_data import main


def test_export_loads_in_pycocotools_with_the_same_counts(dataset, tmp_path):
    rs, _, _ = convert(dataset, progress=False)
    gt = tmp_path / "gt.json"
    d = write_coco(rs, gt)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt))
    assert len(coco.getImgIds()) == len(rs) == 2
    assert len(coco.getAnnIds()) == sum(r.num_boxes for r in rs.records) == 3
    assert sorted(coco.getCatIds()) == [1, 2] and [c["name"] for c in d["categories"]] == rs.class_names
    assert [im["id"] for im in d["images"]] == [1, 2] and [a["id"] for a in d["annotations"]] == [1, 2, 3]
    ann = coco.loadAnns(coco.getAnnIds(imgIds=[1]))[0]
    np.testing.assert_allclose(ann["bbox"], [1, 2, 9, 10])  # VOC (2,3,10,12) -> xyxy (1,2,10,12) -> xywh
    assert ann["area"] == 90 and ann["iscrowd"] == 0 and ann["category_id"] == 1
    assert {"info", "licenses"} <= set(d) and not temp_leftovers(tmp_path)


def test_export_with_no_boxes_still_loads(dataset, tmp_path):
    rs, _, _ = convert(dataset, progress=False)
    for r in rs.records:
        r.boxes, r.labels = r.boxes[:0], r.labels[:0]
    d = to_coco(rs)
    assert d["annotations"] == [] and len(d["images"]) == 2


def _coco_dir(tmp_path, categories, annotations, images=None):
    root = tmp_path / "rf"
    for name in ("a.jpg", "b.jpg"):
        make_image(root / name, (40, 30))
    images = images or [{"id": 0, "file_name": "a.jpg", "width": 40, "height": 30},
                        {"id": 1, "file_name": "b.jpg", "width": 40, "height": 30}]
    path = root / "_annotations.coco.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def test_roboflow_ids_from_zero_with_parent_category_are_remapped(tmp_path):
    cats = [{"id": 0, "name": "groceries", "supercategory": "none"},
            {"id": 1, "name": "milk", "supercategory": "groceries"},
            {"id": 2, "name": "beans", "supercategory": "groceries"}]
    anns = [{"id": 0, "image_id": 0, "category_id": 1, "bbox": [1, 2, 10, 5], "area": 50, "iscrowd": 0},
            {"id": 1, "image_id": 1, "category_id": 2, "bbox": [0, 0, 40, 30], "area": 1200, "iscrowd": 0}]
    path = _coco_dir(tmp_path, cats, anns)
    before = tree_hashes(path.parent)
    rs, problems = read_coco(path)
    assert tree_hashes(path.parent) == before
    assert rs.class_names == ["milk", "beans"]  # file id order, parent category dropped
    assert [p.kind for p in problems] == ["category_remap"]  # ids 1, 2 already equal labels 1, 2
    np.testing.assert_array_equal(rs.records[0].boxes, [[1, 2, 11, 7]])
    assert rs.records[1].labels.tolist() == [2] and rs.records[0].image == "a.jpg"


def test_sparse_ids_are_remapped_and_reported(tmp_path):
    cats = [{"id": 7, "name": "tea"}, {"id": 3, "name": "jam"}]
    anns = [{"id": 1, "image_id": 0, "category_id": 7, "bbox": [1, 1, 5, 5]},
            {"id": 2, "image_id": 0, "category_id": 3, "bbox": [2, 2, 5, 5]}]
    rs, problems = read_coco(_coco_dir(tmp_path, cats, anns))
    assert rs.class_names == ["jam", "tea"]
    [p] = problems
    assert p.kind == "category_remap" and p.action == "fixed" and "3->1, 7->2" in p.reason
    assert rs.records[0].labels.tolist() == [2, 1]


def test_bad_annotations_are_skipped_one_by_one(tmp_path):
    cats = [{"id": 1, "name": "tea"}]
    anns = [{"id": 1, "image_id": 0, "category_id": 1, "bbox": [1, 1, 5, 5]},
            {"id": 2, "image_id": 0, "category_id": 1, "bbox": [1, 1, "x", 5]},
            {"id": 3, "image_id": 0, "category_id": 1, "bbox": [1, 1, 0, 5]},
            {"id": 4, "image_id": 0, "category_id": 9, "bbox": [1, 1, 5, 5]},
            {"id": 5, "image_id": 99, "category_id": 1, "bbox": [1, 1, 5, 5]},
            {"id": 6, "image_id": 1, "category_id": 1, "bbox": [30, 20, 50, 50]},
            {"id": 7, "image_id": 1, "category_id": 1, "bbox": [100, 100, 5, 5]}]
    rs, problems = read_coco(_coco_dir(tmp_path, cats, anns))
    assert [(p.kind, p.field) for p in problems] == [
        ("bad_coordinate", "annotations[1]/bbox"), ("zero_area_box", "annotations[2]/bbox"),
        ("unknown_class", "annotations[3]/category_id"), ("orphan_annotation", "annotations[4]/image_id"),
        ("box_clipped", "annotations[5]/bbox"), ("box_outside", "annotations[6]/bbox")]
    assert rs.records[0].num_boxes == 1
    np.testing.assert_array_equal(rs.records[1].boxes, [[30, 20, 40, 30]])


def test_missing_image_and_escaping_file_name(tmp_path):
    images = [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30},
              {"id": 2, "file_name": "nope.jpg", "width": 40, "height": 30},
              {"id": 3, "file_name": "../../etc/b.jpg", "width": 40, "height": 30}]
    rs, problems = read_coco(_coco_dir(tmp_path, [{"id": 1, "name": "x"}], [], images))
    assert [(p.kind, p.action) for p in problems] == [("missing_image", "skipped"), ("unsafe_path", "fixed")]
    assert [r.image for r in rs.records] == ["a.jpg", "b.jpg"]


def test_invalid_json_reports_its_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n "images": [\n  {"id": 1,,}\n ]\n}')
    with pytest.raises(CocoFormatError, match=r"bad.json:3: invalid JSON"):
        read_coco(path)


def test_cvat_layout_and_voc_coco_voc_round_trip(dataset, tmp_path):
    rs, _, _ = convert(dataset, progress=False)
    (dataset / "annotations").mkdir(exist_ok=True)
    gt = dataset / "annotations" / "instances_default.json"
    assert main(["export-coco", str(_save(rs, tmp_path)), "-o", str(gt)]) == 0
    back, problems, summary = convert(gt, progress=False)
    assert problems == [] and back.class_names == rs.class_names and summary["format"] == "coco"
    assert [r.image for r in back.records] == [r.image for r in rs.records]
    for a, b in zip(rs.records, back.records):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.labels, b.labels)


def _save(rs, tmp_path):
    from data_tools.store import save_dataset

    path = tmp_path / "ds.pkl"
    save_dataset(rs, path)
    return path
