"""Dynamic assigners of the YOLO detector on hand-made tensors: empty images, padding, crowding."""

from __future__ import annotations

import pytest
import torch

from detect.models.box_ops import batched_box_iou
from detect.models.yolo_assigner import ASSIGNERS, candidates, task_aligned_assign
from detect.models.yolo_loss import YOLOLoss


def _grid(size: int = 64, stride: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres of one level: points [A, 2], strides [A]."""
    c = (torch.arange(size // stride, dtype=torch.float32) + 0.5) * stride
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    pts = torch.stack([xx, yy], -1).reshape(-1, 2)
    return pts, torch.full((len(pts),), float(stride))


def _preds(points: torch.Tensor, b: int, c: int, half: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform scores and a box of side ``2 * half`` around every point."""
    boxes = torch.cat([points - half, points + half], -1).expand(b, -1, -1).clone()
    return torch.full((b, len(points), c), 0.3), boxes


@pytest.mark.parametrize("name", sorted(ASSIGNERS))
def test_empty_images_are_all_background(name: str) -> None:
    points, strides = _grid()
    scores, boxes = _preds(points, 2, 3)
    gt_boxes = torch.zeros(2, 1, 4)  # pad_targets' layout for a batch without objects
    gt_labels = torch.zeros(2, 1, dtype=torch.int64)
    gt_mask = torch.zeros(2, 1, dtype=torch.bool)
    out = ASSIGNERS[name](scores, boxes, points, strides, gt_boxes, gt_labels, gt_mask)
    assert not out.fg.any() and out.scores.abs().sum() == 0
    logits = torch.randn(2, len(points), 3, requires_grad=True)
    losses = YOLOLoss()(logits, boxes.clone().requires_grad_(True), out)
    assert losses["box"] == 0 and torch.isfinite(losses["cls"]) and losses["cls"] > 0
    sum(losses.values()).backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", sorted(ASSIGNERS))
def test_padded_rows_are_never_assigned(name: str) -> None:
    points, strides = _grid()
    scores, boxes = _preds(points, 2, 3)
    # Image 0: one object and a padded row whose (garbage) box covers the whole image and label is valid.
    # Image 1: only padding, including a zero row.
    gt_boxes = torch.tensor([[[8.0, 8.0, 30.0, 30.0], [0.0, 0.0, 64.0, 64.0]],
                             [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 64.0, 64.0]]])
    gt_labels = torch.tensor([[2, 1], [0, 3]])
    gt_mask = torch.tensor([[True, False], [False, False]])
    out = ASSIGNERS[name](scores, boxes, points, strides, gt_boxes, gt_labels, gt_mask)
    assert out.fg[0].any() and not out.fg[1].any()
    assert (out.gt_index[out.fg] == 0).all()  # only the real object of image 0
    assert (out.scores[0, :, [0, 2]] == 0).all() and (out.scores[0, out.fg[0], 1] > 0).all()
    assert torch.equal(out.boxes[0, out.fg[0]], gt_boxes[0, :1].expand(int(out.fg[0].sum()), 4))
    # Every foreground point lies in the object's box or in the cell of its centre.
    cand = candidates(points, strides, gt_boxes, gt_mask)[0, 0]
    assert cand[out.fg[0]].all()


@pytest.mark.parametrize("name", sorted(ASSIGNERS))
def test_more_objects_than_points(name: str) -> None:
    points, strides = _grid(size=16, stride=8)  # 4 points
    scores, boxes = _preds(points, 1, 2, half=4.0)
    g = torch.rand(1, 30, 2) * 12
    gt_boxes = torch.cat([g, g + 4 + torch.rand(1, 30, 2) * 8], -1)  # 30 overlapping objects
    gt_labels = torch.randint(1, 3, (1, 30))
    gt_mask = torch.ones(1, 30, dtype=torch.bool)
    out = ASSIGNERS[name](scores, boxes, points, strides, gt_boxes, gt_labels, gt_mask, topk=10)
    assert out.fg.shape == (1, 4) and out.fg.sum() >= 1
    assert ((out.scores > 0).sum(-1) <= 1).all()  # one object (one class) per point
    # Each point's target is exactly the box of the object it was given.
    assert torch.equal(out.boxes[out.fg], gt_boxes[0][out.gt_index[out.fg]])


def test_tal_prefers_aligned_points_and_caps_topk() -> None:
    points, strides = _grid()
    scores, boxes = _preds(points, 1, 1)
    gt_boxes = torch.tensor([[[4.0, 4.0, 60.0, 60.0]]])  # contains 49 points
    gt_labels = torch.ones(1, 1, dtype=torch.int64)
    out = task_aligned_assign(scores, boxes, points, strides, gt_boxes, gt_labels, torch.ones(1, 1, dtype=torch.bool), topk=5)
    assert int(out.fg.sum()) == 5
    # The best aligned point gets the highest soft target, equal to its IoU with the object.
    best = out.scores[0, :, 0].argmax()
    iou = batched_box_iou(gt_boxes, boxes)[0, 0]
    assert torch.isclose(out.scores[0, best, 0], iou[out.fg[0]].max(), atol=1e-4)


def test_tiny_object_still_gets_a_point() -> None:
    points, strides = _grid()
    scores, boxes = _preds(points, 1, 1)
    gt_boxes = torch.tensor([[[17.0, 17.0, 19.0, 19.0]]])  # 2 px: contains no cell centre
    out = task_aligned_assign(scores, boxes, points, strides, gt_boxes, torch.ones(1, 1, dtype=torch.int64),
                              torch.ones(1, 1, dtype=torch.bool))
    assert int(out.fg.sum()) == 1
