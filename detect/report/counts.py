"""Count accuracy, the retail metric: how many facings per image (per class, per shelf row) the detector
miscounts, and a confidence sweep that finds the ``--conf`` that miscounts least.

Counts are taken at a confidence threshold: the predicted count of class ``k`` in an image is its number of
detections scoring ``>= conf``; the true count is its number of ground-truth boxes. Errors are absolute
differences, so a missed facing and an extra one both count as one miscount:

- ``total``: ``|predicted - true|`` of all products in an image;
- ``class``: the sum over classes of ``|predicted_k - true_k|`` in an image (a cola counted as chips is two
  miscounts), the number :func:`recommend_conf` minimises;
- per class: ``|predicted_k - true_k|`` over the images where class ``k`` is in the ground truth or predicted;
- per shelf row: ground truth and detections are grouped into rows together
  (:func:`detect.verbs.shelf_rows.assign_rows` on both sets), then ``|predicted - true|`` per row.

MAE is the mean error, ``exact`` the fraction of images (rows) counted exactly.
"""

from __future__ import annotations

import numpy as np

from data_tools.records import RecordSet
from detect.report.matching import TP, Detections, match_image
from detect.verbs.shelf_rows import assign_rows

SWEEP = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 .. 0.95


def count_matrix(labels: list[np.ndarray], num_classes: int) -> np.ndarray:
    """int64 ``[N, K]``: per image (one label array ``[M]`` in ``1..K`` each) the count of each class."""
    out = np.zeros((len(labels), num_classes), np.int64)
    for i, lab in enumerate(labels):
        lab = np.asarray(lab, np.int64).reshape(-1)
        lab = lab[(lab >= 1) & (lab <= num_classes)]
        out[i] = np.bincount(lab - 1, minlength=num_classes)
    return out


def count_errors(true: np.ndarray, pred: np.ndarray) -> dict:
    """Count errors from ``true`` and ``pred`` count matrices ``[N, K]`` (module doc).

    Returns ``total_mae``, ``total_exact``, ``class_mae``, ``class_exact`` (every class exact), ``per_class_mae``
    and ``per_class_exact`` (lists of ``K``; None for a class neither present nor predicted), ``images``.
    """
    true, pred = np.asarray(true, np.int64), np.asarray(pred, np.int64)
    n = true.shape[0]
    if n == 0:
        return {"images": 0, "total_mae": 0.0, "total_exact": 1.0, "class_mae": 0.0, "class_exact": 1.0,
                "per_class_mae": [None] * true.shape[1], "per_class_exact": [None] * true.shape[1]}
    total = np.abs(pred.sum(1) - true.sum(1))  # [N]
    diff = np.abs(pred - true)  # [N, K]
    seen = (true > 0) | (pred > 0)  # [N, K]
    per_mae, per_exact = [], []
    for k in range(true.shape[1]):
        d = diff[seen[:, k], k]
        per_mae.append(float(d.mean()) if d.size else None)
        per_exact.append(float((d == 0).mean()) if d.size else None)
    return {"images": int(n), "total_mae": float(total.mean()), "total_exact": float((total == 0).mean()),
            "class_mae": float(diff.sum(1).mean()), "class_exact": float((diff.sum(1) == 0).mean()),
            "per_class_mae": per_mae, "per_class_exact": per_exact}


def row_errors(gt_boxes: list[np.ndarray], pred_boxes: list[np.ndarray], gap_factor: float = 0.5) -> dict:
    """Per shelf row count errors: ``{"rows", "row_mae", "row_exact"}`` over every row of every image.

    Args:
        gt_boxes, pred_boxes: per image float ``[G, 4]`` / ``[P, 4]`` xyxy pixels (detections already at the
            chosen confidence).
    """
    errors = []
    for g, p in zip(gt_boxes, pred_boxes):
        g, p = np.asarray(g, np.float32).reshape(-1, 4), np.asarray(p, np.float32).reshape(-1, 4)
        if len(g) + len(p) == 0:
            continue
        rows = assign_rows(np.concatenate([g, p]), gap_factor)  # [G + P]: shared rows for both sets
        n = int(rows.max()) + 1
        true = np.bincount(rows[: len(g)], minlength=n)
        pred = np.bincount(rows[len(g):], minlength=n)
        errors.append(np.abs(pred - true))
    e = np.concatenate(errors) if errors else np.zeros(0, np.int64)
    return {"rows": int(e.size), "row_mae": float(e.mean()) if e.size else 0.0,
            "row_exact": float((e == 0).mean()) if e.size else 1.0}


def confidence_sweep(rs: RecordSet, dets: list[Detections], thresholds=SWEEP, iou: float = 0.5) -> list[dict]:
    """Precision, recall, F1 (IoU ``iou``, all classes pooled) and count errors at each threshold.

    One matching at the lowest threshold serves all of them (see :mod:`detect.report.matching`).

    Returns one dict per threshold: ``conf``, ``tp``, ``fp``, ``fn``, ``precision``, ``recall``, ``f1``,
    ``total_mae``, ``total_exact``, ``class_mae``, ``class_exact``.
    """
    thresholds = sorted(float(t) for t in thresholds)
    k = rs.num_classes
    lo = thresholds[0] if thresholds else 0.0
    img, lab, score, is_tp = [], [], [], []
    for i, (r, d) in enumerate(zip(rs.records, dets)):
        d = d.above(lo)
        m = match_image(r.boxes, r.labels, d.boxes, d.scores, d.labels, iou)
        img.append(np.full(len(d.scores), i, np.int64))
        lab.append(d.labels)
        score.append(d.scores)
        is_tp.append(m.pred_kind == TP)
    n = len(rs.records)
    img_a = np.concatenate(img) if img else np.zeros(0, np.int64)
    lab_a = np.concatenate(lab).astype(np.int64) if lab else np.zeros(0, np.int64)
    score_a = np.concatenate(score) if score else np.zeros(0, np.float32)
    tp_a = np.concatenate(is_tp) if is_tp else np.zeros(0, bool)
    valid = (lab_a >= 1) & (lab_a <= k)
    true = count_matrix([r.labels for r in rs.records], k)
    n_gt = int(true.sum())
    out = []
    for t in thresholds:
        keep = score_a >= t
        tp = int((tp_a & keep).sum())
        fp = int(keep.sum()) - tp
        fn = n_gt - tp
        pred = np.zeros((n, k), np.int64)
        sel = keep & valid
        np.add.at(pred, (img_a[sel], lab_a[sel] - 1), 1)
        e = count_errors(true, pred)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / n_gt if n_gt else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out.append({"conf": t, "tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1,
                    "total_mae": e["total_mae"], "total_exact": e["total_exact"],
                    "class_mae": e["class_mae"], "class_exact": e["class_exact"]})
    return out


def recommend_conf(sweep: list[dict], key: str = "class_mae") -> dict | None:
    """The sweep row with the lowest ``key`` (``class_mae``: miscounted facings per product, or ``total_mae``:
    miscounted products whatever their class); ties go to the higher F1, then the lower threshold."""
    if not sweep:
        return None
    return min(sweep, key=lambda s: (round(s[key], 12), -round(s["f1"], 12), s["conf"]))
