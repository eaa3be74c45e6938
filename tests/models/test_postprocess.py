"""The one postprocess: score filter, class-aware or agnostic NMS, a per-image cap, class-specific boxes."""

from __future__ import annotations

import torch

from detect.models.postprocess import PostprocessSettings, postprocess


def _two_overlapping() -> tuple[torch.Tensor, torch.Tensor]:
    """One image, 3 boxes: two nearly identical (a product scored as class 1 and class 2) and one apart."""
    boxes = torch.tensor([[[10.0, 10, 50, 50], [11, 11, 51, 51], [60, 60, 90, 90]]])
    scores = torch.tensor([[[0.9, 0.0], [0.0, 0.8], [0.7, 0.0]]])
    return boxes, scores


def test_class_aware_keeps_look_alikes_agnostic_keeps_one_box_per_product():
    boxes, scores = _two_overlapping()
    aware = postprocess(boxes, scores, (100, 100), PostprocessSettings(score_thresh=0.1))[0]
    assert aware["labels"].tolist() == [1, 2, 1] and torch.allclose(aware["scores"], torch.tensor([0.9, 0.8, 0.7]))
    agnostic = postprocess(boxes, scores, (100, 100), PostprocessSettings(score_thresh=0.1, agnostic=True))[0]
    assert agnostic["labels"].tolist() == [1, 1] and agnostic["boxes"][1].tolist() == [60, 60, 90, 90]


def test_score_filter_and_per_image_cap_and_empty_images():
    boxes = torch.tensor([[[0.0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]]]).repeat(3, 1, 1)
    scores = torch.tensor([[[0.9], [0.5], [0.3]], [[0.01], [0.02], [0.03]], [[0.2], [0.8], [0.6]]])
    out = postprocess(boxes, scores, (64, 64), PostprocessSettings(score_thresh=0.1, max_detections=2))
    assert [len(o["scores"]) for o in out] == [2, 0, 2]  # the cap is per image, the middle one is all below
    assert out[0]["scores"].tolist() == [0.8999999761581421, 0.5] and out[2]["scores"].tolist() == [
        0.800000011920929, 0.6000000238418579]
    assert out[1]["boxes"].shape == (0, 4) and out[1]["labels"].dtype == torch.int64


def test_class_specific_boxes_are_clipped():
    boxes = torch.tensor([[[[-5.0, -5, 20, 20], [30, 30, 80, 70]]]])  # [B=1, N=1, C=2, 4]
    scores = torch.tensor([[[0.4, 0.6]]])
    out = postprocess(boxes, scores, (64, 64), PostprocessSettings(score_thresh=0.1))[0]
    assert out["labels"].tolist() == [2, 1]
    assert out["boxes"].tolist() == [[30, 30, 64, 64], [0, 0, 20, 20]]
