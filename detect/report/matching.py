"""Per-image matching of detections to ground truth at one IoU threshold (0.5): TP / FP / FN, wrong-class
boxes and a confusion matrix with a background row and column.

Two greedy passes per image, detections in descending score order:

1. **Same class** (what AP50 counts): a detection takes the unmatched ground-truth box of its own class with
   the highest IoU >= ``iou``; it is then a true positive (TP), else a false positive.
2. **Other class**: a false positive of pass 1 that overlaps a ground-truth box still unmatched after pass 1,
   of another class, with IoU >= ``iou`` is a *wrong-class* box (the object was found, its class is wrong).

What is left: a detection overlapping (more than any such other-class box) a box of its own class that
another detection already took is a *duplicate*; any other false positive lies on *background*; a ground-truth box matched by neither pass is
*missed*. Because pass 1 only looks at higher-scoring detections, the pass-1 result of the detections at
or above a score ``t`` is the same as matching those detections alone: one matching at the lowest
threshold gives TP / FP / FN at every higher one (:mod:`detect.report.counts` uses this for its sweep).

Confusion matrix ``[K + 1, K + 1]``: row = true class, column = predicted class, index ``K`` = background.
TPs are on the diagonal, wrong-class boxes off it, background and duplicate false positives in the
background row, missed objects in the background column. Row ``k`` sums to class ``k``'s ground-truth count
and column ``k`` to its detections.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from data_tools.records import RecordSet
from detect.models.box_ops import iou_matrix

# outcome codes of a detection
TP, WRONG_CLASS, DUPLICATE, BACKGROUND = 0, 1, 2, 3
# outcome codes of a ground-truth box
FOUND, CONFUSED, MISSED = 0, 1, 2
PRED_KINDS = ("tp", "wrong_class", "duplicate", "background")
GT_KINDS = ("found", "wrong_class", "missed")


@dataclass
class ImageMatch:
    """Matching of one image (arrays in the order given, detections not re-sorted).

    Attributes:
        pred_kind: int64 ``[P]``: :data:`TP`, :data:`WRONG_CLASS`, :data:`DUPLICATE` or :data:`BACKGROUND`.
        pred_gt: int64 ``[P]``: index of the ground-truth box a TP or wrong-class detection matched, else -1.
        pred_iou: float32 ``[P]``: IoU with that box (for a duplicate: with the box it duplicates), else 0.
        gt_kind: int64 ``[G]``: :data:`FOUND`, :data:`CONFUSED` (a wrong-class detection took it) or :data:`MISSED`.
    """

    pred_kind: np.ndarray
    pred_gt: np.ndarray
    pred_iou: np.ndarray
    gt_kind: np.ndarray


def match_image(gt_boxes: np.ndarray, gt_labels: np.ndarray, pred_boxes: np.ndarray, pred_scores: np.ndarray,
                pred_labels: np.ndarray, iou: float = 0.5) -> ImageMatch:
    """Match one image's detections to its ground truth (module doc).

    Args:
        gt_boxes: float ``[G, 4]`` xyxy pixels; gt_labels: int ``[G]`` in ``1..K``.
        pred_boxes: float ``[P, 4]`` xyxy pixels; pred_scores: float ``[P]``; pred_labels: int ``[P]``.
        iou: the IoU a match needs (inclusive).
    """
    gt_boxes = np.asarray(gt_boxes, np.float32).reshape(-1, 4)
    gt_labels = np.asarray(gt_labels, np.int64).reshape(-1)
    pred_boxes = np.asarray(pred_boxes, np.float32).reshape(-1, 4)
    pred_labels = np.asarray(pred_labels, np.int64).reshape(-1)
    scores = np.asarray(pred_scores, np.float64).reshape(-1)
    n_pred, n_gt = len(pred_boxes), len(gt_boxes)
    kind = np.full(n_pred, BACKGROUND, np.int64)
    pred_gt = np.full(n_pred, -1, np.int64)
    pred_iou = np.zeros(n_pred, np.float32)
    gt_kind = np.full(n_gt, MISSED, np.int64)
    if n_pred == 0 or n_gt == 0:
        return ImageMatch(kind, pred_gt, pred_iou, gt_kind)
    ious = iou_matrix(pred_boxes, gt_boxes)  # [P, G]
    same = pred_labels[:, None] == gt_labels[None, :]  # [P, G]
    order = np.argsort(-scores, kind="stable")
    taken = np.zeros(n_gt, bool)
    for p in order:  # pass 1: own class
        cand = np.where(same[p] & ~taken, ious[p], -1.0)
        g = int(cand.argmax())
        if cand[g] >= iou:
            taken[g] = True
            kind[p], pred_gt[p], pred_iou[p] = TP, g, ious[p, g]
    gt_kind[taken] = FOUND
    for p in order:  # pass 2: another class's box that pass 1 left unmatched
        if kind[p] == TP:
            continue
        other = np.where(~same[p] & (gt_kind == MISSED), ious[p], -1.0)
        own = np.where(same[p], ious[p], -1.0)  # its own-class boxes at >= iou were all taken in pass 1
        g, d = int(other.argmax()), int(own.argmax())
        if other[g] >= iou and other[g] >= own[d]:
            gt_kind[g] = CONFUSED
            kind[p], pred_gt[p], pred_iou[p] = WRONG_CLASS, g, ious[p, g]
        elif own[d] >= iou:
            kind[p], pred_iou[p] = DUPLICATE, ious[p, d]
    return ImageMatch(kind, pred_gt, pred_iou, gt_kind)


def confusion_matrix(gt_labels: Sequence[np.ndarray], pred_labels: Sequence[np.ndarray],
                     matches: Sequence[ImageMatch], num_classes: int) -> np.ndarray:
    """int64 ``[K + 1, K + 1]`` over images (module doc): rows true class, columns predicted, ``K`` = background.

    Args:
        gt_labels, pred_labels: per image int ``[G]`` / ``[P]`` labels in ``1..K``.
        matches: per image :func:`match_image` of exactly those boxes and detections.
    """
    k = num_classes
    cm = np.zeros((k + 1, k + 1), np.int64)
    for gl, pl, m in zip(gt_labels, pred_labels, matches):
        gl = np.asarray(gl, np.int64).reshape(-1) - 1
        pl = np.asarray(pl, np.int64).reshape(-1) - 1
        hit = m.pred_gt >= 0  # TP and wrong-class: (true class of the matched box, predicted class)
        np.add.at(cm, (gl[m.pred_gt[hit]], pl[hit]), 1)
        np.add.at(cm, (np.full(int((~hit).sum()), k), pl[~hit]), 1)  # background / duplicate FPs
        miss = m.gt_kind == MISSED
        np.add.at(cm, (gl[miss], np.full(int(miss.sum()), k)), 1)
    return cm


@dataclass
class Detections:
    """One image's detections as arrays: boxes float32 ``[P, 4]`` xyxy original pixels, scores ``[P]``, labels ``[P]``."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def above(self, conf: float) -> Detections:
        keep = self.scores >= conf
        return Detections(self.boxes[keep], self.scores[keep], self.labels[keep])


def detections_per_image(results: list[dict], num_images: int) -> list[Detections]:
    """COCO results (``image_id`` 1-based, ``bbox`` xywh) -> one :class:`Detections` per image, by score.

    Results of an ``image_id`` outside ``1..num_images`` are ignored.
    """
    boxes: list[list] = [[] for _ in range(num_images)]
    scores: list[list] = [[] for _ in range(num_images)]
    labels: list[list] = [[] for _ in range(num_images)]
    for r in results:
        i = int(r["image_id"]) - 1
        if 0 <= i < num_images:
            x, y, w, h = r["bbox"]
            boxes[i].append((x, y, x + w, y + h))
            scores[i].append(r["score"])
            labels[i].append(r["category_id"])
    out = []
    for b, s, lab in zip(boxes, scores, labels):
        s = np.asarray(s, np.float32)
        order = np.argsort(-s, kind="stable")
        out.append(Detections(np.asarray(b, np.float32).reshape(-1, 4)[order], s[order],
                              np.asarray(lab, np.int64)[order]))
    return out


@dataclass
class DatasetMatch:
    """Every image of a dataset matched at one confidence: ``dets[i]`` (detections >= ``conf``), ``matches[i]``."""

    conf: float
    iou: float
    dets: list[Detections]
    matches: list[ImageMatch]
    confusion: np.ndarray  # [K + 1, K + 1]


def match_dataset(rs: RecordSet, dets: list[Detections], conf: float, iou: float = 0.5) -> DatasetMatch:
    """Match the detections scoring ``>= conf`` of every record of ``rs`` (same order as ``dets``)."""
    kept = [d.above(conf) for d in dets]
    matches = [match_image(r.boxes, r.labels, d.boxes, d.scores, d.labels, iou) for r, d in zip(rs.records, kept)]
    cm = confusion_matrix([r.labels for r in rs.records], [d.labels for d in kept], matches, rs.num_classes)
    return DatasetMatch(conf, iou, kept, matches, cm)


def per_class_outcomes(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Per class int64 ``[K]`` from a confusion matrix: ``gt``, ``det``, ``tp``, ``fp``, ``fn``, ``wrong_class``
    (detections of this class on another class's object), ``confused`` (objects of this class given another class),
    ``background`` (detections of this class on background or duplicates), ``missed``."""
    k = confusion.shape[0] - 1
    body = confusion[:k, :k]
    tp = np.diag(body).copy()
    gt = confusion[:k, :].sum(1)
    det = confusion[:, :k].sum(0)
    return {"gt": gt, "det": det, "tp": tp, "fp": det - tp, "fn": gt - tp,
            "wrong_class": body.sum(0) - tp, "confused": body.sum(1) - tp,
            "background": confusion[k, :k].copy(), "missed": confusion[:k, k].copy()}
