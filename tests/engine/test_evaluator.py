"""COCO evaluation: perfect and empty predictions, dense images past COCO's 100 detections."""

from __future__ import annotations

import numpy as np
import pytest

from data_tools.records import Record, RecordSet
from detect.engine.inference.evaluator import coco_evaluate, format_metrics, plot_pr_curves


def _grid_recordset(n_objects: int) -> RecordSet:
    """One 1000x1000 image with ``n_objects`` disjoint 30x30 boxes of two classes."""
    boxes = []
    for i in range(n_objects):
        x, y = (i % 30) * 33.0, (i // 30) * 33.0
        boxes.append([x, y, x + 30, y + 30])
    labels = np.array([1 + i % 2 for i in range(n_objects)], np.int64)
    rec = Record(image="a.jpg", width=1000, height=1000, boxes=np.array(boxes, np.float32), labels=labels)
    return RecordSet(["cola", "chips"], "/nowhere", [rec], {})


def _perfect(rs: RecordSet) -> list[dict]:
    rec = rs.records[0]
    return [{"image_id": 1, "category_id": int(c), "bbox": [float(b[0]), float(b[1]), 30.0, 30.0], "score": 0.9}
            for b, c in zip(rec.boxes, rec.labels)]


def test_perfect_predictions_on_a_dense_image_score_one_at_300_detections():
    rs = _grid_recordset(250)  # more than COCO's 100 detections per image
    m = coco_evaluate(rs, _perfect(rs), max_dets=300)
    assert m["AP"] == pytest.approx(1.0) and m["AP50"] == pytest.approx(1.0) and m["AR300"] == pytest.approx(1.0)
    assert m["per_class"] == {"cola": pytest.approx(1.0), "chips": pytest.approx(1.0)}
    capped = coco_evaluate(rs, _perfect(rs), max_dets=100)
    assert capped["AR100"] == pytest.approx(0.8)  # COCO's cap (per image and class): 100 of 125 found
    assert "AP 1.000" in format_metrics(m)


def test_no_predictions_gives_zeros_not_a_crash(tmp_path):
    rs = _grid_recordset(5)
    m = coco_evaluate(rs, [], max_dets=300)
    assert m["AP"] == 0.0 and m["per_class"] == {"cola": 0.0, "chips": 0.0} and m["detections"] == 0
    assert plot_pr_curves(m, tmp_path / "pr.png") is None


def test_half_wrong_class_halves_ap(tmp_path):
    rs = _grid_recordset(20)
    preds = _perfect(rs)
    for p in preds:
        if p["category_id"] == 2:
            p["category_id"] = 1  # every 'chips' predicted as 'cola'
    m = coco_evaluate(rs, preds, max_dets=300)
    assert m["per_class"]["chips"] == 0.0 and 0.4 < m["per_class"]["cola"] < 0.8
    assert plot_pr_curves(m, tmp_path / "pr.png").stat().st_size > 1000
