"""Dynamic label assignment for the YOLO-style detector, batched over images, points and objects.

Both assigners look at the whole batch at once: predictions ``[B, A, ...]`` over ``A`` anchor points
against ground truth padded to ``[B, M, ...]`` with a ``mask [B, M]`` (``pad_targets``). A padded row is
never assigned, whatever its box or label holds. There is no per-image Python loop and no host sync.

- :func:`task_aligned_assign` (TOOD / YOLOv8): metric ``t = s**alpha * iou**beta`` of each candidate point,
  ``topk`` points per object, soft targets ``t / max(t) * max(iou)`` per object.
- :func:`simota_assign` (YOLOX): cost ``cls_bce + 3 * (-log iou)``, a dynamic number of points per object
  (sum of its 10 best IoUs).

Candidates of an object are the points inside its box plus, on every level, the cell holding its centre
(so objects smaller than a cell still get candidates). A point claimed by several objects goes to the one
it overlaps best (TAL) or costs least (SimOTA): every point has at most one object.

Everything runs in fp32 without gradients.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from detect.models.box_ops import batched_box_iou

EPS = 1e-9


class Assignment(NamedTuple):
    """Per-point training targets.

    - ``boxes`` float32 [B, A, 4]: xyxy box of the assigned object (0 where background).
    - ``scores`` float32 [B, A, C]: soft class targets (IoU-aware; 0 for background and other classes).
    - ``fg`` bool [B, A]: the point has an object.
    - ``gt_index`` int64 [B, A]: index of that object in the padded ground truth (0 where background).
    """

    boxes: Tensor
    scores: Tensor
    fg: Tensor
    gt_index: Tensor


def candidates(points: Tensor, strides: Tensor, gt_boxes: Tensor, gt_mask: Tensor) -> Tensor:
    """Candidate points of each object: inside its box, or in the cell holding its centre.

    Args:
        points: [A, 2] point (cell centre) coordinates x, y in pixels.
        strides: [A] stride of each point's level.
        gt_boxes: [B, M, 4] xyxy; gt_mask: [B, M] real objects.

    Returns:
        bool [B, M, A].
    """
    x, y = points[:, 0], points[:, 1]
    b = gt_boxes[:, :, None, :]  # [B, M, 1, 4]
    inside = (x > b[..., 0]) & (y > b[..., 1]) & (x < b[..., 2]) & (y < b[..., 3])
    cx, cy = (b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2
    half = strides / 2
    centre_cell = ((x - cx).abs() <= half) & ((y - cy).abs() <= half)
    return (inside | centre_cell) & gt_mask[:, :, None]


def _one_per_point(chosen: Tensor, preference: Tensor) -> Tensor:
    """Keep, for each point, only the object it prefers among those that chose it.

    Args:
        chosen: bool [B, M, A] objects that picked each point.
        preference: [B, M, A] higher is better.

    Returns:
        bool [B, M, A] with at most one True per (image, point).
    """
    best = preference.masked_fill(~chosen, float("-inf")).argmax(dim=1, keepdim=True)  # [B, 1, A]
    one_hot = torch.zeros_like(chosen).scatter_(1, best, True)
    return one_hot & chosen


def _targets(pos: Tensor, weight: Tensor, gt_boxes: Tensor, gt_labels: Tensor, num_classes: int) -> Assignment:
    """Build per-point targets from the final assignment ``pos`` [B, M, A] and soft scores ``weight`` [B, M, A]."""
    fg = pos.any(dim=1)  # [B, A]
    gt_index = pos.float().argmax(dim=1)  # [B, A]
    boxes = torch.gather(gt_boxes, 1, gt_index[..., None].expand(-1, -1, 4))  # [B, A, 4]
    labels = torch.gather(gt_labels, 1, gt_index)  # [B, A] in 1..C (or 0 on padding)
    cls = (labels - 1).clamp(min=0)
    soft = (weight * pos).sum(dim=1)  # [B, A]
    scores = torch.zeros(*labels.shape, num_classes, dtype=torch.float32, device=labels.device)
    scores.scatter_(2, cls[..., None], (soft * fg)[..., None])
    boxes = boxes * fg[..., None]
    return Assignment(boxes, scores, fg, gt_index * fg)


@torch.no_grad()
def task_aligned_assign(
    pred_scores: Tensor,
    pred_boxes: Tensor,
    points: Tensor,
    strides: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    gt_mask: Tensor,
    topk: int = 10,
    alpha: float = 1.0,
    beta: float = 6.0,
) -> Assignment:
    """Task-aligned assignment (TOOD), batched.

    Args:
        pred_scores: [B, A, C] class probabilities (sigmoid) of the current predictions.
        pred_boxes: [B, A, 4] decoded predicted boxes, xyxy pixels.
        points: [A, 2] anchor points (x, y); strides: [A] their stride.
        gt_boxes: [B, M, 4] xyxy; gt_labels: [B, M] int64 in 1..C; gt_mask: [B, M] bool (False = padding).
        topk: points chosen per object (at most the number of points).
        alpha, beta: exponents of the alignment metric ``score**alpha * iou**beta``.

    Returns:
        :class:`Assignment`.
    """
    pred_scores, pred_boxes, gt_boxes = pred_scores.float(), pred_boxes.float(), gt_boxes.float()
    num_classes = pred_scores.shape[-1]
    cand = candidates(points.float(), strides.float(), gt_boxes, gt_mask)  # [B, M, A]
    iou = batched_box_iou(gt_boxes, pred_boxes) * cand  # [B, M, A]
    cls = (gt_labels - 1).clamp(min=0)  # padded rows: any valid index, masked by cand
    score = torch.gather(pred_scores.transpose(1, 2), 1, cls[..., None].expand(-1, -1, pred_scores.shape[1]))
    metric = score.pow(alpha) * iou.pow(beta) * cand  # [B, M, A]
    # Top-k candidates per object; non-candidates rank below every candidate (even one with metric 0).
    k = min(topk, metric.shape[-1])
    top = metric.masked_fill(~cand, -1.0).topk(k, dim=-1).indices  # [B, M, k]
    chosen = torch.zeros_like(cand).scatter_(2, top, True) & cand
    pos = _one_per_point(chosen, iou)
    metric = metric * pos
    # Soft target: metric normalised per object so its best point gets that object's best IoU.
    max_metric = metric.amax(dim=-1, keepdim=True)
    max_iou = (iou * pos).amax(dim=-1, keepdim=True)
    weight = metric / (max_metric + EPS) * max_iou
    return _targets(pos, weight, gt_boxes, gt_labels, num_classes)


@torch.no_grad()
def simota_assign(
    pred_scores: Tensor,
    pred_boxes: Tensor,
    points: Tensor,
    strides: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    gt_mask: Tensor,
    topk: int = 10,
    iou_weight: float = 3.0,
) -> Assignment:
    """SimOTA (YOLOX), batched: same arguments as :func:`task_aligned_assign`.

    Each object takes its ``k`` cheapest candidate points, ``k = clamp(int(sum of its topk IoUs), 1)``.
    Soft class targets are the IoU of the point's prediction with its object.
    """
    pred_scores, pred_boxes, gt_boxes = pred_scores.float(), pred_boxes.float(), gt_boxes.float()
    num_classes = pred_scores.shape[-1]
    cand = candidates(points.float(), strides.float(), gt_boxes, gt_mask)  # [B, M, A]
    iou = batched_box_iou(gt_boxes, pred_boxes) * cand
    cls = (gt_labels - 1).clamp(min=0)
    p = torch.gather(pred_scores.transpose(1, 2), 1, cls[..., None].expand(-1, -1, pred_scores.shape[1]))
    # Cost of a point for an object: BCE of the object's class over all classes, plus the IoU cost.
    p = p.clamp(EPS, 1 - EPS)
    neg = -torch.log1p(-pred_scores.clamp(max=1 - EPS)).sum(dim=-1)[:, None, :]  # [B, 1, A]: all classes negative
    cls_cost = neg + torch.log1p(-p) - torch.log(p)  # swap the object's class to positive
    cost = cls_cost + iou_weight * -torch.log(iou + 1e-8) + 1e5 * (~cand)
    k = min(topk, cost.shape[-1])
    dynamic_k = iou.topk(k, dim=-1).values.sum(-1).int().clamp(min=1)  # [B, M]
    order = cost.topk(k, dim=-1, largest=False).indices  # [B, M, k]
    rank_ok = torch.arange(k, device=cost.device) < dynamic_k[..., None]  # [B, M, k]
    chosen = torch.zeros_like(cand).scatter_(2, order, rank_ok) & cand
    pos = _one_per_point(chosen, -cost)
    return _targets(pos, iou, gt_boxes, gt_labels, num_classes)


ASSIGNERS = {"tal": task_aligned_assign, "simota": simota_assign}
