"""Count accuracy on hand-made counts, shelf rows, and the confidence sweep's argmin."""

from __future__ import annotations

import numpy as np
import pytest

from data_tools.records import Record, RecordSet
from detect.report.counts import confidence_sweep, count_errors, count_matrix, recommend_conf, row_errors
from detect.report.matching import Detections


def test_count_matrix_and_errors():
    true = count_matrix([np.array([1, 1]), np.array([1, 2])], 2)
    pred = count_matrix([np.array([1, 2]), np.array([2, 1])], 2)
    assert true.tolist() == [[2, 0], [1, 1]] and pred.tolist() == [[1, 1], [1, 1]]
    e = count_errors(true, pred)
    assert e["total_mae"] == 0.0 and e["total_exact"] == 1.0  # 2 products found in each image ...
    assert e["class_mae"] == 1.0 and e["class_exact"] == 0.5  # ... but a cola counted as chips is 2 miscounts
    assert e["per_class_mae"] == [0.5, 0.5] and e["per_class_exact"] == [0.5, 0.5]
    none = count_errors(np.zeros((2, 3), np.int64), np.array([[0, 0, 1], [0, 0, 0]]))
    assert none["per_class_mae"] == [None, None, 1.0]  # a class nobody saw has no count error
    assert none["total_mae"] == 0.5


def test_row_errors_use_shared_rows():
    top = [[0, 0, 10, 20], [12, 0, 22, 20], [24, 0, 34, 20]]
    bottom = [[0, 50, 10, 70], [12, 50, 22, 70]]
    gt = np.array(top + bottom, np.float32)
    pred = np.array(top[:2] + bottom + [[24, 50, 34, 70]], np.float32)  # one facing moved down a shelf
    r = row_errors([gt], [pred])
    assert r == {"rows": 2, "row_mae": 1.0, "row_exact": 0.0}
    assert count_errors(count_matrix([np.ones(5)], 1), count_matrix([np.ones(5)], 1))["total_mae"] == 0.0
    assert row_errors([gt], [gt])["row_exact"] == 1.0


def _one_image() -> tuple[RecordSet, list[Detections]]:
    gt = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], np.float32)
    rs = RecordSet(["a"], "/nowhere", [Record("x.jpg", 100, 100, gt, [1, 1, 1])])
    boxes = np.concatenate([gt, [[60, 60, 70, 70], [80, 80, 90, 90]]]).astype(np.float32)
    scores = np.array([0.9, 0.9, 0.3, 0.1, 0.1], np.float32)  # 2 sure TPs, a weak TP, 2 weak FPs
    return rs, [Detections(boxes, scores, np.ones(5, np.int64))]


def test_sweep_finds_the_threshold_that_miscounts_least():
    rs, dets = _one_image()
    sweep = confidence_sweep(rs, dets, thresholds=[0.05, 0.1, 0.2, 0.3, 0.4, 0.5])
    assert [s["class_mae"] for s in sweep] == [2.0, 2.0, 0.0, 0.0, 1.0, 1.0]
    assert [s["tp"] for s in sweep] == [3, 3, 3, 3, 2, 2] and [s["fp"] for s in sweep] == [2, 2, 0, 0, 0, 0]
    assert sweep[2]["f1"] == pytest.approx(1.0) and sweep[0]["precision"] == pytest.approx(0.6)
    assert sweep[4]["recall"] == pytest.approx(2 / 3)
    assert recommend_conf(sweep)["conf"] == 0.2  # 0.2 and 0.3 tie: the lower threshold


def test_recommend_prefers_f1_on_equal_count_error():
    rows = [{"conf": 0.1, "class_mae": 1.0, "total_mae": 0.2, "f1": 0.5},
            {"conf": 0.5, "class_mae": 1.0, "total_mae": 0.9, "f1": 0.7},
            {"conf": 0.9, "class_mae": 2.0, "total_mae": 2.0, "f1": 0.9}]
    assert recommend_conf(rows)["conf"] == 0.5
    assert recommend_conf(rows, "total_mae")["conf"] == 0.1  # products counted, classes ignored
    assert recommend_conf([]) is None
