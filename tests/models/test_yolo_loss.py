"""YOLO losses on hand-made tensors: values, normalisation, DFL targets, and descent on one batch."""

from __future__ import annotations

import pytest
import torch

from detect.models.yolo_assigner import Assignment, task_aligned_assign
from detect.models.yolo_loss import (
    YOLOLoss,
    box_loss,
    classification_loss,
    distribution_focal_loss,
    ltrb_targets,
)


def test_box_loss_zero_on_perfect_boxes_and_ignores_background() -> None:
    target = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 0.0, 0.0]]])
    pred = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]]])
    weight = torch.tensor([[1.0, 0.0]])
    for kind in ("giou", "ciou"):
        assert box_loss(pred, target, weight, kind).abs() < 1e-5
        far = pred + torch.tensor([20.0, 0.0, 20.0, 0.0])
        assert box_loss(far, target, weight, kind) > 1.0  # disjoint boxes: GIoU loss > 1
    with pytest.raises(ValueError, match="giou or ciou"):
        box_loss(pred, target, weight, "l1")


def test_varifocal_downweights_easy_negatives() -> None:
    logits = torch.full((1, 4, 2), -6.0)
    target = torch.zeros(1, 4, 2)
    assert classification_loss(logits, target, "varifocal") < 1e-3 * classification_loss(logits, target, "bce")
    target[0, 0, 1] = 0.8
    # The positive keeps weight 0.8 on its BCE (~0.8 * 6).
    assert torch.isclose(classification_loss(logits, target, "varifocal"), 0.8 * classification_loss(logits, target), rtol=1e-2)


def test_dfl_targets_and_minimum() -> None:
    points = torch.tensor([[16.0, 16.0]])
    strides = torch.tensor([8.0])
    boxes = torch.tensor([[[4.0, 0.0, 28.0, 200.0]]])
    t = ltrb_targets(points, strides, boxes, reg_max=16)
    assert torch.allclose(t, torch.tensor([[[1.5, 2.0, 1.5, 14.99]]]))
    # The loss is smallest for the two-bin distribution that puts the target between its bins.
    good = torch.full((1, 1, 4, 16), -20.0)
    good[..., 1] = good[..., 2] = 0.0
    bad = torch.zeros(1, 1, 4, 16)
    tt = torch.full((1, 1, 4), 1.5)
    w = torch.ones(1, 1)
    assert distribution_focal_loss(good, tt, w) < distribution_focal_loss(bad, tt, w)


def test_loss_normalised_by_target_scores() -> None:
    b, a, c = 2, 6, 3
    scores = torch.zeros(b, a, c)
    scores[0, 0, 1] = 0.5
    fg = scores.sum(-1) > 0
    boxes = torch.zeros(b, a, 4)
    boxes[0, 0] = torch.tensor([0.0, 0.0, 10.0, 10.0])
    target = Assignment(boxes, scores, fg, torch.zeros(b, a, dtype=torch.int64))
    pred = torch.tensor([5.0, 5.0, 15.0, 15.0]).expand(b, a, 4)
    logits = torch.zeros(b, a, c)
    out = YOLOLoss(box_weight=1.0)(logits, pred, target)
    # norm = max(0.5, 1) = 1; box term = 0.5 * GIoU loss of the one positive.
    from torchvision.ops import generalized_box_iou_loss
    expect = 0.5 * generalized_box_iou_loss(pred[0, :1], boxes[0, :1])[0]
    assert torch.isclose(out["box"], expect)
    assert set(out) == {"cls", "box"}


@pytest.mark.parametrize("cls_loss, dfl", [("bce", False), ("varifocal", True)])
def test_loss_decreases_on_one_batch(cls_loss: str, dfl: bool) -> None:
    torch.manual_seed(0)
    c = (torch.arange(8, dtype=torch.float32) + 0.5) * 8
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    points = torch.stack([xx, yy], -1).reshape(-1, 2)
    strides = torch.full((len(points),), 8.0)
    gt_boxes = torch.tensor([[[4.0, 6.0, 30.0, 40.0], [36.0, 20.0, 60.0, 60.0]], [[10.0, 10.0, 50.0, 30.0], [0, 0, 0, 0]]])
    gt_labels = torch.tensor([[1, 2], [2, 0]])
    gt_mask = torch.tensor([[True, True], [True, False]])
    r = 16
    logits = torch.zeros(2, len(points), 2, requires_grad=True)
    raw = torch.zeros(2, len(points), 4 * r if dfl else 4, requires_grad=True)
    opt = torch.optim.Adam([logits, raw], lr=0.05)
    loss_fn = YOLOLoss(cls_loss=cls_loss)
    history = []
    for _ in range(60):
        if dfl:
            dist = raw.view(2, -1, 4, r)
            ltrb = dist.softmax(-1) @ torch.arange(r, dtype=torch.float32) * 8
        else:
            dist, ltrb = None, torch.nn.functional.softplus(raw) * 8
        boxes = torch.cat([points - ltrb[..., :2], points + ltrb[..., 2:]], -1)
        assigned = task_aligned_assign(logits.detach().sigmoid(), boxes.detach(), points, strides,
                                       gt_boxes, gt_labels, gt_mask)
        losses = loss_fn(logits, boxes, assigned, dist, points, strides)
        assert set(losses) == ({"cls", "box", "dfl"} if dfl else {"cls", "box"})
        total = sum(losses.values())
        assert torch.isfinite(total)
        history.append(float(total.detach()))
        opt.zero_grad()
        total.backward()
        opt.step()
    assert history[-1] < 0.5 * history[0]
