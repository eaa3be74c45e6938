"""SSD: multi-scale default boxes on an FPN neck, batched matching and 3:1 hard-negative mining.

Everything in the loss runs on whole-batch tensors: targets are padded to ``[B, M]`` with a mask (a
padded row never matches), matching is one ``[B, M, A]`` IoU tensor, mining is one sort per batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detect.models.anchors import num_ssd_boxes_per_cell, ssd_default_boxes
from detect.models.backbones import build_backbone
from detect.models.box_coder import decode, encode
from detect.models.box_ops import batched_box_iou
from detect.models.detector import Detector
from detect.models.necks import FPN
from detect.models.options import ModelSettings
from detect.models.postprocess import PostprocessSettings, postprocess
from detect.models.targets import pad_targets

SSD_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # SSD's variances 0.1 / 0.2
MIN_NEGATIVES = 16  # negatives mined per image even when it has no object


@dataclass
class SSDOptions:
    """``model.ssd``: the neck, default-box and loss options."""

    neck_channels: int = 128  # channels of the FPN-style neck levels
    extra_levels: int = 2  # SSD extra layers after the backbone's last map
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5)
    min_scale: float = 0.07  # smallest default-box scale (fraction of image side)
    max_scale: float = 0.9
    iou_threshold: float = 0.5  # prior matched to an object at IoU >= this
    neg_pos_ratio: int = 3  # hard negative mining ratio
    box_weight: float = 1.0


def match_priors(priors: Tensor, gt_boxes: Tensor, gt_labels: Tensor, gt_mask: Tensor,
                 iou_threshold: float) -> tuple[Tensor, Tensor]:
    """SSD matching for the batch: each object's best prior, plus every prior with IoU >= threshold.

    Args:
        priors: [A, 4]; gt_boxes: [B, M, 4]; gt_labels: [B, M]; gt_mask: [B, M] bool (False = padding).
    Returns:
        labels [B, A] int64 (0 = background) and matched boxes [B, A, 4] (the prior itself where background).
    """
    bsz, m = gt_mask.shape  # m >= 1: pad_targets keeps one (masked) row for images without objects
    a = priors.shape[0]
    iou = batched_box_iou(gt_boxes, priors).masked_fill(~gt_mask[..., None], -1.0)  # [B, M, A]
    best_iou, best_gt = iou.max(dim=1)  # per prior [B, A]
    best_prior = iou.argmax(dim=2)  # per object [B, M]
    # Force each real object's best prior to it; padded rows scatter into a spare column A, dropped after.
    target_col = torch.where(gt_mask, best_prior, torch.full_like(best_prior, a))
    rows = torch.arange(m, device=priors.device).expand(bsz, m)
    best_iou = torch.cat([best_iou, best_iou.new_zeros(bsz, 1)], 1).scatter(1, target_col, 2.0)[:, :a]
    best_gt = torch.cat([best_gt, best_gt.new_zeros(bsz, 1)], 1).scatter(1, target_col, rows)[:, :a]
    positive = best_iou >= iou_threshold
    labels = torch.gather(gt_labels, 1, best_gt).masked_fill(~positive, 0)
    matched = torch.gather(gt_boxes.float(), 1, best_gt[..., None].expand(bsz, a, 4))
    matched = torch.where(positive[..., None], matched, priors[None].float())
    return labels, matched


def hard_negative_mask(ce: Tensor, positive: Tensor, neg_pos_ratio: int, min_negatives: int = MIN_NEGATIVES) -> Tensor:
    """The hardest negatives per image: ``neg_pos_ratio`` per positive (at least ``min_negatives``).

    Args:
        ce: per-prior classification loss [B, A]; positive: [B, A] bool.
    Returns:
        bool [B, A] of the chosen negatives.
    """
    num_pos = positive.sum(1, keepdim=True)
    num_neg = (num_pos * neg_pos_ratio).clamp(min=min_negatives)
    num_neg = torch.minimum(num_neg, (~positive).sum(1, keepdim=True))
    neg_loss = ce.detach().masked_fill(positive, -1.0)
    order = neg_loss.argsort(dim=1, descending=True)
    rank = order.argsort(dim=1)
    return (rank < num_neg) & ~positive


class SSDHead(nn.Module):
    """Per-level predictors: a 3x3 conv tower (BN + ReLU), dropout, then 3x3 class and box convs.

    ``forward(feats)`` -> class logits ``[B, A, C + 1]`` (index 0 = background), deltas ``[B, A, 4]``,
    anchors in level-major, then y, x, box order.
    """

    def __init__(self, channels: int, num_levels: int, boxes_per_cell: int, num_classes: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.k, self.c = boxes_per_cell, num_classes + 1
        self.tower = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                          nn.ReLU(inplace=True)) for _ in range(num_levels))
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.cls = nn.ModuleList(nn.Conv2d(channels, boxes_per_cell * self.c, 3, padding=1) for _ in range(num_levels))
        self.box = nn.ModuleList(nn.Conv2d(channels, boxes_per_cell * 4, 3, padding=1) for _ in range(num_levels))
        for conv in [*self.cls, *self.box]:
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, feats: list[Tensor]) -> tuple[Tensor, Tensor]:
        cls_out, box_out = [], []
        for f, tower, cls, box in zip(feats, self.tower, self.cls, self.box):
            x = self.dropout(tower(f))
            b = x.shape[0]
            cls_out.append(cls(x).permute(0, 2, 3, 1).reshape(b, -1, self.c))
            box_out.append(box(x).permute(0, 2, 3, 1).reshape(b, -1, 4))
        return torch.cat(cls_out, 1), torch.cat(box_out, 1)


class SSD(Detector):
    """Backbone -> FPN (+ extra levels) -> :class:`SSDHead`; the model contract of ARCHITECTURE.md.

    Args:
        backbone: a ``Backbone``; neck: an :class:`~detect.models.necks.FPN` with extra levels.
        strides: stride of each neck level; num_classes: C (labels 1..C).
        ratios, min_scale, max_scale: default boxes (:func:`~detect.models.anchors.ssd_default_boxes`).
        iou_threshold, neg_pos_ratio, box_weight: matching and loss.
        dropout: before the head's class and box convolutions.
        post: postprocess settings in eval.
    """

    exportable = True

    def __init__(self, *, backbone: nn.Module, neck: FPN, strides: list[int], num_classes: int,
                 ratios: list[float], min_scale: float = 0.07, max_scale: float = 0.9, iou_threshold: float = 0.5,
                 neg_pos_ratio: int = 3, box_weight: float = 1.0, dropout: float = 0.0,
                 post: PostprocessSettings | None = None) -> None:
        super().__init__(backbone, neck, post)
        self.strides, self.ratios = list(strides), list(ratios)
        self.head = SSDHead(neck.out_channels[0], len(strides), num_ssd_boxes_per_cell(ratios), num_classes, dropout)
        self.min_scale, self.max_scale = min_scale, max_scale
        self.iou_threshold, self.neg_pos_ratio, self.box_weight = iou_threshold, neg_pos_ratio, box_weight
        self._priors: dict[tuple, Tensor] = {}

    def priors(self, sizes: list[tuple[int, int]], image_size: tuple[int, int], device: torch.device) -> Tensor:
        """Default boxes [A, 4] fp32 for these level sizes (cached: inputs have fixed sizes)."""
        key = (tuple(sizes), image_size, str(device))
        if key not in self._priors:
            self._priors = {key: ssd_default_boxes(sizes, self.strides, max(image_size), self.ratios,
                                                   self.min_scale, self.max_scale, device)}
        return self._priors[key]

    def _raw(self, feats: list[Tensor], image_size: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
        """Head outputs in fp32: logits [B, A, C+1], deltas [B, A, 4], priors [A, 4]."""
        logits, deltas = self.head(feats)
        priors = self.priors([tuple(f.shape[-2:]) for f in feats], image_size, feats[0].device)
        return logits.float(), deltas.float(), priors

    def dense(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Everything before NMS: ``images`` [B, 3, H, W] 0..255 -> boxes [B, A, 4] xyxy pixels and class
        probabilities [B, A, C] (background dropped). What ``retail-detect export`` exports."""
        logits, deltas, priors = self._raw(self.features(images), (int(images.shape[-2]), int(images.shape[-1])))
        return decode(deltas, priors[None], SSD_BOX_WEIGHTS), logits.softmax(-1)[..., 1:]

    def detections(self, feats: list[Tensor], image_size: tuple[int, int], **extra) -> list[dict[str, Tensor]]:
        logits, deltas, priors = self._raw(feats, image_size)  # the head runs under the caller's autocast
        with torch.autocast(device_type=feats[0].device.type, enabled=False):  # box math in fp32
            boxes = decode(deltas, priors[None], SSD_BOX_WEIGHTS)
            return postprocess(boxes, logits.softmax(-1)[..., 1:], image_size, self.post)

    def losses(self, feats: list[Tensor], image_size: tuple[int, int], targets: list[dict[str, Tensor]], **extra
               ) -> dict[str, Tensor]:
        logits, deltas, priors = self._raw(feats, image_size)
        with torch.autocast(device_type=feats[0].device.type, enabled=False):
            gt_boxes, gt_labels, gt_mask = pad_targets(targets, feats[0].device)
            return self.loss(logits, deltas, priors, gt_boxes, gt_labels, gt_mask)

    def loss(self, logits: Tensor, deltas: Tensor, priors: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
             gt_mask: Tensor) -> dict[str, Tensor]:
        """Cross-entropy over positives + mined negatives and smooth-L1 over positives, both / #positives.

        Args: logits [B, A, C+1], deltas [B, A, 4], priors [A, 4], padded targets [B, M, 4] / [B, M] / [B, M].
        """
        labels, matched = match_priors(priors, gt_boxes, gt_labels, gt_mask, self.iou_threshold)
        positive = labels > 0
        num_pos = positive.sum().clamp(min=1).float()
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none")
        ce = ce.view_as(labels)
        chosen = positive | hard_negative_mask(ce, positive, self.neg_pos_ratio)
        cls_loss = (ce * chosen).sum() / num_pos
        target = encode(matched, priors[None], SSD_BOX_WEIGHTS)
        box = F.smooth_l1_loss(deltas, target, reduction="none", beta=1.0 / 9).sum(-1)
        box_loss = (box * positive).sum() / num_pos
        return {"cls": cls_loss, "box": self.box_weight * box_loss}


def build_ssd(cfg: ModelSettings, s: SSDOptions, num_classes: int) -> SSD:
    """SSD from the model settings ``cfg`` and its options ``s`` (``model.ssd``)."""
    backbone = build_backbone(cfg.backbone, cfg.backbone_weights, cfg.freeze_at, cfg.frozen_bn)
    neck = FPN(list(backbone.out_channels), s.neck_channels, extra_levels=s.extra_levels)
    strides = list(backbone.strides) + [backbone.strides[-1] * 2 ** (i + 1) for i in range(s.extra_levels)]
    return SSD(backbone=backbone, neck=neck, strides=strides, num_classes=num_classes, ratios=list(s.aspect_ratios),
               min_scale=s.min_scale, max_scale=s.max_scale, iou_threshold=s.iou_threshold,
               neg_pos_ratio=s.neg_pos_ratio, box_weight=s.box_weight, dropout=cfg.dropout,
               post=PostprocessSettings.from_config(cfg))
