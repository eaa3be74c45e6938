"""Losses of the YOLO-style detector, computed densely over every point (no boolean indexing, fixed shapes).

- classification: BCE or varifocal loss against IoU-aware soft targets (``Assignment.scores``);
- box: GIoU or CIoU (``torchvision.ops``) on foreground points, weighted by their soft target;
- optional distribution focal loss (DFL) on the four side distances when the head predicts bins.

Every term is a sum divided by the sum of the soft targets of the batch (clamped to >= 1), as in
TOOD / YOLOv8, so the loss scale does not depend on how many objects a batch holds. All fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import complete_box_iou_loss, generalized_box_iou_loss

from detect.models.yolo_assigner import Assignment

BOX_LOSSES = {"giou": generalized_box_iou_loss, "ciou": complete_box_iou_loss}


def classification_loss(logits: Tensor, target: Tensor, kind: str = "bce", alpha: float = 0.75,
                        gamma: float = 2.0) -> Tensor:
    """Summed class loss. logits, target: [B, A, C]; target holds soft scores in [0, 1].

    ``varifocal``: negatives are down-weighted by ``alpha * p**gamma``, positives weighted by their target.
    """
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    if kind == "bce":
        return bce.sum()
    if kind == "varifocal":
        p = logits.detach().sigmoid()
        positive = (target > 0).float()
        weight = alpha * p.pow(gamma) * (1 - positive) + target * positive
        return (bce * weight).sum()
    raise ValueError(f"unknown classification loss '{kind}' (use bce or varifocal)")


def box_loss(pred: Tensor, target: Tensor, weight: Tensor, kind: str = "giou") -> Tensor:
    """Summed IoU-family loss. pred, target: [B, A, 4] xyxy; weight: [B, A] (0 on background points)."""
    if kind not in BOX_LOSSES:
        raise ValueError(f"unknown box loss '{kind}' (use {' or '.join(BOX_LOSSES)})")
    fg = weight > 0
    # Background points get their own (detached) box as target: a finite loss that the zero weight removes.
    target = torch.where(fg[..., None], target, pred.detach())
    loss = BOX_LOSSES[kind](pred.reshape(-1, 4), target.reshape(-1, 4), reduction="none")
    return (loss.view_as(weight) * weight).sum()


def ltrb_targets(points: Tensor, strides: Tensor, boxes: Tensor, reg_max: int) -> Tensor:
    """Side distances of ``boxes`` [B, A, 4] from ``points`` [A, 2] in units of ``strides`` [A],
    clamped into the bin range [0, reg_max - 1): [B, A, 4]."""
    lt = points - boxes[..., :2]
    rb = boxes[..., 2:] - points
    return (torch.cat([lt, rb], dim=-1) / strides[:, None]).clamp(0, reg_max - 1 - 0.01)


def distribution_focal_loss(pred_dist: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Summed DFL. pred_dist: [B, A, 4, R] bin logits; target: [B, A, 4] in [0, R-1); weight: [B, A]."""
    left = target.floor().long()
    wr = target - left.float()
    logp = F.log_softmax(pred_dist, dim=-1)
    lp_left = torch.gather(logp, -1, left[..., None]).squeeze(-1)
    lp_right = torch.gather(logp, -1, (left + 1)[..., None]).squeeze(-1)
    loss = -(lp_left * (1 - wr) + lp_right * wr).mean(dim=-1)  # [B, A]
    return (loss * weight).sum()


class YOLOLoss(nn.Module):
    """All loss terms from the predictions and an :class:`Assignment`.

    Args:
        cls_loss: ``bce`` | ``varifocal``; box_loss: ``giou`` | ``ciou``.
        cls_weight, box_weight, dfl_weight: multipliers of the terms.
    """

    def __init__(self, cls_loss: str = "bce", box_loss: str = "giou", cls_weight: float = 1.0,
                 box_weight: float = 2.5, dfl_weight: float = 0.5) -> None:
        super().__init__()
        if cls_loss not in ("bce", "varifocal"):
            raise ValueError(f"unknown classification loss '{cls_loss}' (use bce or varifocal)")
        if box_loss not in BOX_LOSSES:
            raise ValueError(f"unknown box loss '{box_loss}' (use {' or '.join(BOX_LOSSES)})")
        self.cls_loss, self.box_loss = cls_loss, box_loss
        self.cls_weight, self.box_weight, self.dfl_weight = cls_weight, box_weight, dfl_weight

    def forward(self, cls_logits: Tensor, pred_boxes: Tensor, target: Assignment,
                pred_dist: Tensor | None = None, points: Tensor | None = None,
                strides: Tensor | None = None) -> dict[str, Tensor]:
        """Scalar losses ``{"cls", "box"}`` (+ ``"dfl"`` when ``pred_dist`` is given).

        Args:
            cls_logits: [B, A, C]; pred_boxes: [B, A, 4] decoded xyxy pixels.
            target: the assignment for these predictions.
            pred_dist: [B, A, 4, R] bin logits (DFL head) with ``points`` [A, 2] and ``strides`` [A].
        """
        cls_logits, pred_boxes = cls_logits.float(), pred_boxes.float()
        norm = target.scores.sum().clamp(min=1.0)
        weight = target.scores.sum(dim=-1) * target.fg  # [B, A]
        losses = {
            "cls": self.cls_weight * classification_loss(cls_logits, target.scores, self.cls_loss) / norm,
            "box": self.box_weight * box_loss(pred_boxes, target.boxes, weight, self.box_loss) / norm,
        }
        if pred_dist is not None:
            if points is None or strides is None:
                raise ValueError("the DFL term needs the anchor points and their strides")
            ltrb = ltrb_targets(points, strides, target.boxes, pred_dist.shape[-1])
            losses["dfl"] = self.dfl_weight * distribution_focal_loss(pred_dist.float(), ltrb, weight) / norm
        return losses
