"""The synthetic shelf generator: deterministic, valid boxes, and exact round trips through VOC and COCO."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools.coco import COCO

from data_tools.store import load_dataset
from data_tools.synth import generate, make_tiny_dataset
from detect.verbs.retail_data import main


def _by_image(rs):
    return {r.image: r for r in rs.records}


def test_generate_is_deterministic_and_boxes_are_valid(tmp_path):
    a = generate(tmp_path / "a", images=4, classes=3, seed=5, size=(96, 80))
    b = generate(tmp_path / "b", images=4, classes=3, seed=5, size=(96, 80))
    generate(tmp_path / "c", images=4, classes=3, seed=6, size=(96, 80))
    assert a["boxes"] == b["boxes"] > 0
    for name in ("shelf_0001.jpg", "shelf_0004.jpg"):
        assert (tmp_path / "a/images" / name).read_bytes() == (tmp_path / "b/images" / name).read_bytes()
    assert (tmp_path / "a/images/shelf_0001.jpg").read_bytes() != (tmp_path / "c/images/shelf_0001.jpg").read_bytes()
    rs = make_tiny_dataset(tmp_path / "t", images=6, classes=4, seed=1, size=(96, 80))
    labels = np.concatenate([r.labels for r in rs.records])
    assert set(labels.tolist()) <= {1, 2, 3, 4} and len(set(labels.tolist())) >= 3
    for r in rs.records:
        assert r.boxes.dtype == np.float32 and r.labels.dtype == np.int64
        assert (r.boxes[:, 2] > r.boxes[:, 0]).all() and (r.boxes[:, 3] > r.boxes[:, 1]).all()
        assert (r.boxes >= 0).all() and (r.boxes[:, [0, 2]] <= 96).all() and (r.boxes[:, [1, 3]] <= 80).all()


def test_synth_convert_export_round_trip_is_exact(tmp_path, capsys):
    out = tmp_path / "shelves"
    assert main(["synth", "-o", str(out), "--images", "5", "--classes", "3", "--seed", "2", "--size", "120x90"]) == 0
    truth = make_tiny_dataset(tmp_path / "truth", images=5, classes=3, seed=2, size=(120, 90))
    pkl, gt = tmp_path / "ds.pkl", tmp_path / "gt.json"
    assert main(["convert", str(out), "-o", str(pkl), "--strict"]) == 0
    assert main(["export-coco", str(pkl), "-o", str(gt)]) == 0
    rs = load_dataset(pkl)
    assert rs.class_names == truth.class_names
    got = _by_image(rs)
    for rec in truth.records:  # synth -> VOC XML -> convert: exact (integer VOC pixels)
        g = got[rec.image]
        np.testing.assert_array_equal(g.boxes, rec.boxes)
        np.testing.assert_array_equal(g.labels, rec.labels)
        np.testing.assert_array_equal(g.truncated, rec.truncated)
    coco = COCO(str(gt))
    assert len(coco.getImgIds()) == 5
    assert len(coco.getAnnIds()) == sum(len(r.labels) for r in truth.records)
    data = json.loads(gt.read_text())
    files = {im["id"]: im["file_name"] for im in data["images"]}
    for ann in data["annotations"]:  # convert -> COCO: exact, xywh
        rec = got[files[ann["image_id"]]]
        x, y, w, h = ann["bbox"]
        row = np.array([x, y, x + w, y + h], np.float32)
        assert any(np.allclose(row, b, atol=1e-4) and lab == ann["category_id"] for b, lab in zip(rec.boxes, rec.labels))


def test_generate_refuses_sizes_out_of_bounds(tmp_path):
    for size, word in (((5000, 64), "too large"), ((64, 8), "too small")):
        with pytest.raises(ValueError, match=word):
            generate(tmp_path / "s", images=1, classes=1, size=size)
    assert not (tmp_path / "s").exists()
