"""Two-stage detector: backbone (+ FPN) -> RPN proposals (or external ones) -> RoI pooling -> box head.

``FastRCNN(images, targets=None, proposals=None)`` keeps the model contract of ARCHITECTURE.md:
a dict of scalar losses in training (``rpn_objectness``, ``rpn_box``, ``roi_cls``, ``roi_box``), and
``list[{"boxes", "scores", "labels"}]`` in input-tensor pixels in eval.

Fast R-CNN's original setting: pass ``proposals`` (per image a float [P, 4] tensor, xyxy in
input-tensor pixels, e.g. from :func:`detect.models.proposals_io.batch_proposals`); the RPN is then
skipped and its losses are absent. A model built with ``model.fast_rcnn.proposals`` set has no RPN
at all and needs proposals on every call.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from detect.config import ModelConfig
from detect.models.backbones import build_backbone
from detect.models.necks import FPN
from detect.models.roi_head import RoIHead
from detect.models.rpn import RPN
from detect.models.targets import pad_targets


def pad_proposals(proposals: list[Tensor], device: torch.device) -> tuple[Tensor, Tensor]:
    """Per-image proposals [P_i, 4] -> padded boxes [B, P, 4] fp32 and mask [B, P] (P = max(P_i, 1))."""
    rows = [{"boxes": p.reshape(-1, 4), "labels": torch.zeros(p.reshape(-1, 4).shape[0], dtype=torch.int64)}
            for p in proposals]
    boxes, _, mask = pad_targets(rows, device)
    return boxes, mask


class FastRCNN(nn.Module):
    """Fast R-CNN with an RPN (Faster R-CNN style proposals) or external proposals.

    Args:
        backbone: a ``Backbone`` (``normalize``, ``forward`` -> maps at ``strides``, ``freeze``/``unfreeze``).
        roi_head: the second stage, built for the maps this model feeds it.
        rpn: region proposal network, or None for external proposals only.
        neck: an FPN over all backbone maps, or None to use only the last (coarsest) map.
    """

    def __init__(self, backbone: nn.Module, roi_head: RoIHead, rpn: RPN | None = None, neck: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.rpn = rpn
        self.roi_head = roi_head

    def features(self, images: Tensor) -> list[Tensor]:
        """images [B, 3, H, W] 0..255 -> the maps both stages use (FPN levels, or the last backbone map)."""
        feats = self.backbone(self.backbone.normalize(images))
        return self.neck(feats) if self.neck is not None else [feats[-1]]

    def forward(
        self,
        images: Tensor,
        targets: list[dict[str, Tensor]] | None = None,
        proposals: list[Tensor] | None = None,
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Losses (training, with targets) or detections (eval).

        Args:
            images: uint8 or float 0..255 [B, 3, H, W].
            targets: B dicts with ``boxes`` [N_i, 4] (input-tensor pixels) and ``labels`` [N_i] in 1..C.
            proposals: optional B float tensors [P_i, 4] in input-tensor pixels; skip the RPN.
        """
        if self.training and targets is None:
            raise ValueError("FastRCNN in training mode needs targets (call model.eval() to predict)")
        if proposals is None and self.rpn is None:
            raise ValueError("this FastRCNN was built for external proposals (model.fast_rcnn.proposals): "
                             "pass proposals=[Tensor[P, 4], ...] per image")
        if proposals is not None and len(proposals) != images.shape[0]:
            raise ValueError(f"got proposals for {len(proposals)} images but a batch of {images.shape[0]}")
        image_size = (int(images.shape[-2]), int(images.shape[-1]))
        feats = self.features(images)
        gt = pad_targets(targets, images.device) if self.training else None
        losses: dict[str, Tensor] = {}
        if proposals is None:
            props, mask, losses = self.rpn(feats, image_size, (gt[0], gt[2]) if gt is not None else None)
        else:
            props, mask = pad_proposals(proposals, images.device)
        if gt is None:
            return self.roi_head.predict(feats, props, mask, image_size)
        return {**losses, **self.roi_head.loss(feats, props, mask, gt)}


def build_fast_rcnn(cfg: ModelConfig, num_classes: int) -> FastRCNN:
    """Build the detector from ``cfg`` (``cfg.fast_rcnn`` holds the head options)."""
    fr = cfg.fast_rcnn
    backbone = build_backbone(cfg.backbone, cfg.backbone_weights, cfg.freeze_at, cfg.frozen_bn)
    if fr.fpn:
        strides = list(backbone.strides)
        if len(fr.anchor_sizes) != len(strides):
            raise ValueError(f"model.fast_rcnn.anchor_sizes has {len(fr.anchor_sizes)} sizes but the FPN has "
                             f"{len(strides)} levels (strides {strides}): give one size per level")
        # The FPN paper's plain outputs: with BN + ReLU the box head learned 2-4x slower on Freiburg.
        neck: nn.Module | None = FPN(list(backbone.out_channels), fr.neck_channels, norm=False)
        channels, sizes = fr.neck_channels, [[float(s)] for s in fr.anchor_sizes]
    else:
        strides, neck = [backbone.strides[-1]], None
        channels, sizes = backbone.out_channels[-1], [[float(s) for s in fr.anchor_sizes]]
    rpn = None
    if fr.proposals is None:
        rpn = RPN(channels, strides, sizes, list(fr.anchor_ratios), fr.rpn_pre_nms_topk, fr.rpn_post_nms_topk,
                  fr.rpn_nms_thresh, fr.rpn_batch_per_image, fr.rpn_positive_fraction, fr.rpn_fg_iou, fr.rpn_bg_iou)
    roi_head = RoIHead(
        channels, strides, num_classes, fr.roi_op, fr.roi_size, fr.head_dim, cfg.dropout, fr.roi_canonical_size,
        fr.roi_batch_per_image, fr.roi_positive_fraction, fr.fg_iou, fr.bg_iou,
        cfg.score_thresh, cfg.nms_thresh, cfg.max_detections,
    )
    return FastRCNN(backbone, roi_head, rpn, neck)
