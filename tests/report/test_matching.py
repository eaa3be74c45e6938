"""Matching at IoU 0.5 on hand-made images: TP/FP/FN, wrong class, duplicates, the confusion matrix."""

from __future__ import annotations

import numpy as np
import pytest

from data_tools.records import Record, RecordSet
from detect.report.matching import (
    BACKGROUND,
    CONFUSED,
    DUPLICATE,
    FOUND,
    MISSED,
    TP,
    WRONG_CLASS,
    confusion_matrix,
    detections_per_image,
    match_dataset,
    match_image,
    per_class_outcomes,
)

A, B = 1, 2
GT = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], np.float32)  # A, B, A
GT_LABELS = np.array([A, B, A])
#                 TP on box 0        A on the B box      duplicate of box 0   B on background
PRED = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [1, 0, 10, 10], [60, 60, 70, 70]], np.float32)
SCORES = np.array([0.9, 0.8, 0.7, 0.6])
PRED_LABELS = np.array([A, A, A, B])


def test_every_outcome_and_the_known_confusion_matrix():
    m = match_image(GT, GT_LABELS, PRED, SCORES, PRED_LABELS)
    assert m.pred_kind.tolist() == [TP, WRONG_CLASS, DUPLICATE, BACKGROUND]
    assert m.pred_gt.tolist() == [0, 1, -1, -1]
    assert m.gt_kind.tolist() == [FOUND, CONFUSED, MISSED]
    cm = confusion_matrix([GT_LABELS], [PRED_LABELS], [m], num_classes=2)
    #            pred A  pred B  background
    expected = [[1, 0, 1],  # true A: box 0 found, box 2 missed
                [1, 0, 0],  # true B: taken as A
                [1, 1, 0]]  # background: the duplicate A, the B on background
    assert cm.tolist() == expected
    assert cm[:2].sum(1).tolist() == [2, 1]  # rows sum to the ground truth per class
    assert cm[:, :2].sum(0).tolist() == [3, 1]  # columns to the detections per class
    o = per_class_outcomes(cm)
    assert o["tp"].tolist() == [1, 0] and o["fp"].tolist() == [2, 1] and o["fn"].tolist() == [1, 1]
    assert o["wrong_class"].tolist() == [1, 0] and o["confused"].tolist() == [0, 1]
    assert o["background"].tolist() == [1, 1] and o["missed"].tolist() == [1, 0]


def test_greedy_by_score_and_the_iou_threshold():
    gt = np.array([[0, 0, 10, 10]], np.float32)
    preds = np.array([[0, 0, 10, 8], [0, 0, 10, 10]], np.float32)  # the lower score fits better
    m = match_image(gt, [A], preds, [0.9, 0.5], [A, A])
    assert m.pred_kind.tolist() == [TP, DUPLICATE]  # the higher score takes the box
    assert m.pred_iou[0] == pytest.approx(0.8)
    half = np.array([[0, 0, 10, 5]], np.float32)  # IoU exactly 0.5 matches, just below does not
    assert match_image(gt, [A], half, [0.9], [A]).pred_kind.tolist() == [TP]
    below = np.array([[0, 0, 10, 4.9]], np.float32)
    m = match_image(gt, [A], below, [0.9], [A])
    assert m.pred_kind.tolist() == [BACKGROUND] and m.gt_kind.tolist() == [MISSED]


def test_a_correct_lower_scoring_box_beats_a_wrong_class_one():
    gt = np.array([[0, 0, 10, 10]], np.float32)
    preds = np.array([[0, 0, 10, 10], [0, 0, 10, 9]], np.float32)
    m = match_image(gt, [A], preds, [0.9, 0.4], [B, A])  # B first, then the right class
    assert m.pred_kind.tolist() == [BACKGROUND, TP] and m.gt_kind.tolist() == [FOUND]


def test_empty_sides():
    assert match_image(np.zeros((0, 4)), [], PRED, SCORES, PRED_LABELS).pred_kind.tolist() == [BACKGROUND] * 4
    assert match_image(GT, GT_LABELS, np.zeros((0, 4)), [], []).gt_kind.tolist() == [MISSED] * 3


def test_tp_at_a_higher_threshold_equals_matching_only_those_detections():
    rng = np.random.default_rng(0)
    for _ in range(20):
        xy = rng.uniform(0, 50, (6, 2))
        gt = np.concatenate([xy, xy + 12], 1).astype(np.float32)
        pred = gt[rng.integers(0, 6, 10)] + rng.normal(0, 3, (10, 4)).astype(np.float32)
        scores, labels, gl = rng.uniform(0, 1, 10), rng.integers(1, 3, 10), rng.integers(1, 3, 6)
        full = match_image(gt, gl, pred, scores, labels)
        for t in (0.3, 0.6):
            keep = scores >= t
            sub = match_image(gt, gl, pred[keep], scores[keep], labels[keep])
            assert np.array_equal(full.pred_kind[keep] == TP, sub.pred_kind == TP)


def test_coco_results_to_images_and_dataset_matching():
    rs = RecordSet(["a", "b"], "/nowhere", [Record("x.jpg", 100, 100, GT, GT_LABELS), Record("y.jpg", 50, 50)])
    results = [{"image_id": 1, "category_id": int(c), "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]),
                                                               float(b[3] - b[1])], "score": float(s)}
               for b, c, s in zip(PRED, PRED_LABELS, SCORES)]
    results.append({"image_id": 2, "category_id": 1, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.3})
    results.append({"image_id": 9, "category_id": 1, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.3})  # no such image
    dets = detections_per_image(results[::-1], 2)
    assert dets[0].scores.tolist() == pytest.approx(SCORES.tolist())  # sorted by score again
    assert dets[1].boxes.tolist() == [[1.0, 2.0, 4.0, 6.0]]  # xywh -> xyxy
    dm = match_dataset(rs, dets, conf=0.65)  # drops the B on background and the second image's box
    assert dm.confusion.tolist() == [[1, 0, 1], [1, 0, 0], [1, 0, 0]]
