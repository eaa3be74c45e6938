"""One-stage, anchor-free, YOLO-style detector (in the spirit of YOLOX / YOLOv8).

backbone (strides 8/16/32) -> FPN + PAN (:class:`~detect.models.necks.FPNPAN`) -> a decoupled head per level
(class branch, box branch) -> one prediction per cell centre ("anchor point"):

- class logits ``[B, A, C]`` (sigmoid, no background class);
- box as the four distances left/top/right/bottom from the point, in strides: ``softplus(raw) * stride``,
  or (``dfl``) the expectation of a softmax over ``reg_max`` bins ``0..reg_max-1``, times the stride.

Training: a dynamic assigner (:mod:`detect.models.yolo_assigner`) over the whole batch, then
:class:`~detect.models.yolo_loss.YOLOLoss` -> ``{"cls", "box"}`` (+ ``"dfl"``). Eval: sigmoid scores and
decoded boxes -> the shared :func:`~detect.models.postprocess.postprocess`.

Precision: under autocast only the convolutions run in low precision; points, box decoding, assignment
and losses are computed in fp32 with autocast switched off.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detect.models.backbones import build_backbone
from detect.models.box_ops import cell_centres
from detect.models.detector import Detector
from detect.models.necks import FPNPAN, ConvBNAct
from detect.models.options import ModelSettings, option
from detect.models.postprocess import PostprocessSettings, postprocess
from detect.models.targets import pad_targets
from detect.models.yolo_assigner import Assignment, simota_assign, task_aligned_assign
from detect.models.yolo_loss import YOLOLoss


@dataclass
class YOLOOptions:
    """``model.yolo``: neck and head widths, the assigner and the loss."""

    neck_channels: int = 128  # FPN + PAN width
    head_channels: int = 128
    assigner: str = option("tal", choices=("tal", "simota"))  # tal (task-aligned) | simota
    topk: int = 10  # candidates per object for the assigner
    cls_loss: str = option("bce", choices=("bce", "varifocal"))
    box_loss: str = option("giou", choices=("giou", "ciou"))
    dfl: bool = False  # distribution focal loss on box sides
    reg_max: int = 16  # DFL bins per box side (distances 0..reg_max-1 strides)
    cls_weight: float = 1.0
    box_weight: float = 2.5
    dfl_weight: float = 0.5  # weight of the DFL term (only with dfl: true)
    tal_alpha: float = 1.0  # task-aligned metric: score ** tal_alpha * IoU ** tal_beta
    tal_beta: float = 6.0
    prior_prob: float = 0.01  # initial class probability (bias of the class logits)


def anchor_points(sizes: list[tuple[int, int]], strides: list[int], device: torch.device | str) -> tuple[Tensor, Tensor]:
    """Cell centres of every level: points [A, 2] (x, y) in pixels and their strides [A], fp32.

    Order: level-major, then row (y), then column (x), matching ``map.flatten(2)``.
    """
    pts, strs = [], []
    for (h, w), s in zip(sizes, strides):
        pts.append(cell_centres(h, w, s, device))
        strs.append(torch.full((h * w,), float(s), device=device))
    return torch.cat(pts), torch.cat(strs)


class YOLOHead(nn.Module):
    """Decoupled head, one per level (not shared): class branch and box branch of two 3x3 ConvBNAct each.

    Args:
        in_channels: channels of each neck level; num_levels: how many levels.
        num_classes: C; box_outputs: 4 (distances) or 4 * reg_max (DFL bins).
        head_channels: width of both branches; dropout: before the class prediction (train only).
        prior_prob: initial class probability, sets the class bias to ``-log((1 - p) / p)``.
        box_bias: initial box logit (every side / bin).

    ``forward(feats)`` -> class logits [B, A, C], box outputs [B, A, box_outputs] (points level-major).
    """

    def __init__(self, in_channels: int, num_levels: int, num_classes: int, box_outputs: int,
                 head_channels: int = 128, dropout: float = 0.0, prior_prob: float = 0.01,
                 box_bias: float = 0.0) -> None:
        super().__init__()
        hc = head_channels
        self.cls = nn.ModuleList(
            nn.Sequential(ConvBNAct(in_channels, hc), ConvBNAct(hc, hc), nn.Dropout(dropout), nn.Conv2d(hc, num_classes, 1))
            for _ in range(num_levels))
        self.box = nn.ModuleList(
            nn.Sequential(ConvBNAct(in_channels, hc), ConvBNAct(hc, hc), nn.Conv2d(hc, box_outputs, 1))
            for _ in range(num_levels))
        cls_bias = -math.log((1 - prior_prob) / prior_prob)
        for branch, bias in ((self.cls, cls_bias), (self.box, box_bias)):
            for seq in branch:
                nn.init.normal_(seq[-1].weight, std=0.01)
                nn.init.constant_(seq[-1].bias, bias)

    def forward(self, feats: list[Tensor]) -> tuple[Tensor, Tensor]:
        cls = [head(f).flatten(2) for head, f in zip(self.cls, feats)]  # [B, C, H*W] each
        box = [head(f).flatten(2) for head, f in zip(self.box, feats)]
        return torch.cat(cls, dim=2).transpose(1, 2), torch.cat(box, dim=2).transpose(1, 2)


class YOLO(Detector):
    """The detector; keeps the model contract of ARCHITECTURE.md.

    Args:
        backbone: a ``Backbone`` (``normalize``, maps at ``strides``, ``freeze``/``unfreeze``).
        neck: maps -> maps of ``head``'s width at the same strides (e.g. :class:`FPNPAN`).
        head: :class:`YOLOHead`.
        assigner: ``(scores, boxes, points, strides, gt_boxes, gt_labels, gt_mask) -> Assignment``.
        loss: :class:`YOLOLoss`.
        reg_max: DFL bins per side, or 0 for direct ``softplus`` distances.
        post: postprocess settings in eval.
    """

    exportable = True

    def __init__(self, *, backbone: nn.Module, neck: nn.Module, head: YOLOHead,
                 assigner: Callable[..., Assignment], loss: YOLOLoss, reg_max: int = 0,
                 post: PostprocessSettings | None = None) -> None:
        super().__init__(backbone, neck, post)
        self.head = head
        self.assigner = assigner
        self.loss = loss
        self.reg_max = reg_max
        self.strides = [int(s) for s in backbone.strides]
        if reg_max:
            self.register_buffer("bins", torch.arange(reg_max, dtype=torch.float32), persistent=False)

    def _raw(self, feats: list[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """feats -> class logits [B, A, C] and box outputs [B, A, 4 or 4R] (the head, under the caller's
        autocast), anchor points [A, 2] and strides [A] (fp32)."""
        cls, box = self.head(feats)
        points, strides = anchor_points([(int(f.shape[-2]), int(f.shape[-1])) for f in feats], self.strides,
                                        feats[0].device)
        return cls, box, points, strides

    def decode(self, box: Tensor, points: Tensor, strides: Tensor) -> tuple[Tensor, Tensor | None]:
        """Box outputs [B, A, 4 or 4R] -> boxes [B, A, 4] xyxy pixels (fp32), and bin logits [B, A, 4, R] or None."""
        box = box.float()
        if self.reg_max:
            dist = box.view(*box.shape[:2], 4, self.reg_max)
            ltrb = dist.softmax(dim=-1) @ self.bins  # [B, A, 4] in strides
        else:
            dist, ltrb = None, F.softplus(box)
        ltrb = ltrb * strides[:, None]
        return torch.cat([points - ltrb[..., :2], points + ltrb[..., 2:]], dim=-1), dist

    def dense(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Everything before NMS: ``images`` [B, 3, H, W] 0..255 -> boxes [B, A, 4] xyxy pixels and class
        probabilities [B, A, C]. What ``retail-detect export`` exports."""
        cls, box, points, strides = self._raw(self.features(images))
        boxes, _ = self.decode(box, points, strides)
        return boxes, cls.float().sigmoid()

    def detections(self, feats: list[Tensor], image_size: tuple[int, int], **extra) -> list[dict[str, Tensor]]:
        cls, box, points, strides = self._raw(feats)
        with torch.autocast(device_type=feats[0].device.type, enabled=False):  # box math in fp32
            boxes, _ = self.decode(box, points, strides)
            return postprocess(boxes, cls.float().sigmoid(), image_size, self.post)

    def losses(self, feats: list[Tensor], image_size: tuple[int, int], targets: list[dict[str, Tensor]], **extra
               ) -> dict[str, Tensor]:
        """``{"cls", "box"}`` (+ ``"dfl"``) scalar losses against ``targets`` (see :meth:`Detector.forward`)."""
        cls, box, points, strides = self._raw(feats)
        with torch.autocast(device_type=feats[0].device.type, enabled=False):
            boxes, dist = self.decode(box, points, strides)
            cls = cls.float()
            gt_boxes, gt_labels, gt_mask = pad_targets(targets, feats[0].device)
            assigned = self.assigner(cls.detach().sigmoid(), boxes.detach(), points, strides,
                                     gt_boxes, gt_labels, gt_mask)
            return self.loss(cls, boxes, assigned, dist, points, strides)


def build_yolo(cfg: ModelSettings, y: YOLOOptions, num_classes: int) -> YOLO:
    """Build the detector from the model settings ``cfg`` and its options ``y`` (``model.yolo``)."""
    if y.assigner == "tal":
        assigner = partial(task_aligned_assign, topk=y.topk, alpha=y.tal_alpha, beta=y.tal_beta)
    elif y.assigner == "simota":
        assigner = partial(simota_assign, topk=y.topk)
    else:
        raise ValueError(f"unknown model.yolo.assigner '{y.assigner}' (use tal or simota)")
    if y.dfl and y.reg_max < 2:
        raise ValueError(f"model.yolo.reg_max must be >= 2 with dfl: true (got {y.reg_max})")
    backbone = build_backbone(cfg.backbone, cfg.backbone_weights, cfg.freeze_at, cfg.frozen_bn)
    neck = FPNPAN(list(backbone.out_channels), y.neck_channels)
    reg_max = y.reg_max if y.dfl else 0
    # Initial distances: 2.5 strides per side (softplus(2.42) = 2.5); DFL starts from uniform bins.
    head = YOLOHead(y.neck_channels, len(backbone.strides), num_classes, 4 * reg_max if reg_max else 4,
                    y.head_channels, cfg.dropout, y.prior_prob, box_bias=0.0 if reg_max else 2.42)
    loss = YOLOLoss(y.cls_loss, y.box_loss, y.cls_weight, y.box_weight, y.dfl_weight)
    return YOLO(backbone=backbone, neck=neck, head=head, assigner=assigner, loss=loss, reg_max=reg_max,
                post=PostprocessSettings.from_config(cfg))
