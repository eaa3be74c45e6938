"""Dense shelves: the dense recipe's class-agnostic NMS gives each product one box where class-aware NMS keeps
one per look-alike class, and it does not suppress the packed neighbours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from data_tools.synth_dense import GROUP, make_dense_dataset
from detect.config import load_config
from detect.models.postprocess import PostprocessSettings, postprocess
from detect.report.duplicates import cross_class_duplicates

CLASSES = 6
RECIPE = Path(__file__).resolve().parents[2] / "configs" / "dense.yaml"


def _look_alike_output(boxes: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """What an unsure detector outputs on a shelf: per product its box scored for its class and, 1-2 px off,
    for the look-alike brand of its group (lower). ``(boxes [1, 2G, 4], scores [1, 2G, C])``."""
    rng = np.random.default_rng(0)
    n = len(boxes)
    twin = (labels - 1) // GROUP * GROUP + (labels % GROUP)  # next brand of the same group (0-based)
    cand = np.concatenate([boxes, boxes + rng.uniform(-2, 2, size=boxes.shape)]).astype(np.float32)
    scores = np.zeros((2 * n, CLASSES), np.float32)
    scores[np.arange(n), labels - 1] = rng.uniform(0.6, 0.95, n)
    scores[n + np.arange(n), twin] = scores[np.arange(n), labels - 1] * 0.8
    return torch.from_numpy(cand)[None], torch.from_numpy(scores)[None]


def test_agnostic_nms_of_the_dense_recipe_keeps_one_box_per_product(tmp_path):
    rec = make_dense_dataset(tmp_path, images=1, classes=CLASSES, seed=4).records[0]
    assert len(rec.boxes) >= 30
    boxes, scores = _look_alike_output(rec.boxes, rec.labels)
    dense = PostprocessSettings.from_config(load_config(RECIPE).model)
    assert dense.agnostic and dense.max_detections >= 300
    aware = postprocess(boxes, scores, (640, 640), dense.replace(agnostic=False))[0]
    agnostic = postprocess(boxes, scores, (640, 640), dense)[0]
    dup_aware = cross_class_duplicates(rec.boxes, aware["boxes"], aware["labels"])
    dup_agnostic = cross_class_duplicates(rec.boxes, agnostic["boxes"], agnostic["labels"])
    assert (dup_aware == 1).all()  # class-aware: every product twice, as two brands
    assert (dup_agnostic == 0).all() and len(agnostic["boxes"]) == len(rec.boxes)  # one box per product
    assert sorted(agnostic["labels"].tolist()) == sorted(rec.labels.tolist())  # the better-scored, right brand


def test_cross_class_duplicates_counts_extra_classes_per_product():
    gt = np.array([[0, 0, 10, 20], [12, 0, 22, 20]], np.float32)
    det = np.array([[0, 0, 10, 20], [0, 1, 10, 20], [0, 0, 10, 19], [12, 0, 22, 20], [12, 0, 22, 21]], np.float32)
    assert cross_class_duplicates(gt, det, np.array([1, 2, 3, 4, 4])).tolist() == [2, 0]
    assert cross_class_duplicates(gt, det[:0], np.zeros(0)).tolist() == [0, 0]
