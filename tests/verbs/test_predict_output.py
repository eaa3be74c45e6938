import csv
import json
import os

import cv2
import numpy as np
import pytest
import torch

from data_tools.outputs import OutputRefused
from detect.verbs import predict_output as po

NAMES = ["cola", "chips"]


def _result():
    return {
        "boxes": torch.tensor([[1.0, 2.0, 30.5, 40.25], [50.0, 5.0, 60.0, 25.0]]),
        "scores": torch.tensor([0.9, 0.4]),
        "labels": torch.tensor([1, 2]),
    }


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "a.json"
    po.atomic_write_text(target, "old")
    po.atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert os.listdir(target.parent) == ["a.json"]


def test_atomic_write_failure_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "a.json"
    target.write_text("old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        po.atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.json"]


def test_json_and_csv(tmp_path):
    entry = po.image_entry("a.jpg", 100, 80, _result(), NAMES, np.array([0, 1]), [{"row": 0}], {"cola": 1})
    empty = po.image_entry("b.jpg", 10, 10, {"boxes": torch.zeros((0, 4))}, NAMES)
    errors = [{"file": "bad.jpg", "reason": "truncated"}]
    path = po.write_json(tmp_path, [entry, empty], errors, {"conf": 0.25})
    doc = json.loads(path.read_text())
    assert doc["format"] == po.FORMAT and doc["conf"] == 0.25 and doc["errors"] == errors
    d0 = doc["images"][0]["detections"][0]
    assert d0 == {"box": [1.0, 2.0, 30.5, 40.25], "score": 0.9, "class_name": "cola", "label": 1, "row": 0}
    assert doc["images"][0]["detections"][1]["class_name"] == "chips"
    assert doc["images"][1]["detections"] == [] and doc["images"][1]["num_detections"] == 0

    rows = list(csv.reader(po.write_csv(tmp_path, [entry, empty]).open()))
    assert rows[0] == ["image", "x1", "y1", "x2", "y2", "score", "class_name", "row"]
    assert rows[1] == ["a.jpg", "1.0", "2.0", "30.5", "40.25", "0.9", "cola", "0"]
    assert len(rows) == 3


def test_draw_and_write(tmp_path):
    img = np.zeros((80, 100, 3), dtype=np.uint8)
    drawn = po.draw_detections(img, _result(), NAMES)
    assert drawn.shape == (80, 100, 3) and drawn.any() and not img.any()
    colors = po.class_colors(len(NAMES))
    assert len(set(colors)) == len(colors)
    target = po.drawn_path(tmp_path, "shelves/sub/a.jpg")
    assert target == tmp_path / "images" / "shelves" / "sub" / "a.jpg"
    po.write_drawn(target, drawn)
    assert cv2.imread(str(target)).shape == (80, 100, 3)
    assert po.drawn_path(tmp_path, "x.gif").name == "x.gif.png"
    po.draw_detections(img, {"boxes": torch.zeros((0, 4))}, NAMES)  # no detections: fine


def test_write_drawn_refuses_inputs(tmp_path):
    src = tmp_path / "a.png"
    src.write_bytes(b"original")
    with pytest.raises(OutputRefused):
        po.write_drawn(src, np.zeros((4, 4, 3), np.uint8), {src.resolve()})
    assert src.read_bytes() == b"original"
