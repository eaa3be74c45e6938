"""Two-stage detector: backbone (+ FPN) -> RPN proposals (or external ones) -> RoI pooling -> box head.

``FastRCNN(images, targets=None, proposals=None)`` keeps the model contract of ARCHITECTURE.md:
a dict of scalar losses in training (``rpn_objectness``, ``rpn_box``, ``roi_cls``, ``roi_box``), and
``list[{"boxes", "scores", "labels"}]`` in input-tensor pixels in eval.

Fast R-CNN's original setting: pass ``proposals`` (per image a float [P, 4] tensor, xyxy in
input-tensor pixels: the dataset's ``target["proposals"]`` with ``data.proposals`` set); the RPN is then
skipped and its losses are absent. A model built with ``model.fast_rcnn.rpn: false`` (what
``data.proposals`` sets) has no RPN at all and needs proposals on every call.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from data_tools.errors import InvalidInput
from detect.config import ModelConfig
from detect.models.backbones import build_backbone
from detect.models.detector import Detector
from detect.models.necks import FPN
from detect.models.postprocess import PostprocessSettings
from detect.models.roi_head import RoIHead
from detect.models.rpn import RPN
from detect.models.targets import pad_targets


def pad_proposals(proposals: list[Tensor], device: torch.device) -> tuple[Tensor, Tensor]:
    """Per-image proposals [P_i, 4] -> padded boxes [B, P, 4] fp32 and mask [B, P] (P = max(P_i, 1))."""
    rows = [{"boxes": p.reshape(-1, 4), "labels": torch.zeros(p.reshape(-1, 4).shape[0], dtype=torch.int64)}
            for p in proposals]
    boxes, _, mask = pad_targets(rows, device)
    return boxes, mask


class FastRCNN(Detector):
    """Fast R-CNN with an RPN (Faster R-CNN style proposals) or external proposals.

    Args:
        backbone: a ``Backbone`` (``normalize``, ``forward`` -> maps at ``strides``, ``freeze``/``unfreeze``).
        roi_head: the second stage, built for the maps this model feeds it.
        rpn: region proposal network, or None for external proposals only.
        neck: an FPN over all backbone maps, or None to use only the last (coarsest) map.
        post: postprocess settings of the box head in eval.

    Extra forward input ``proposals``: optional B float tensors [P_i, 4] in input-tensor pixels; they replace
    the RPN's.
    """

    def __init__(self, *, backbone: nn.Module, roi_head: RoIHead, rpn: RPN | None = None,
                 neck: nn.Module | None = None, post: PostprocessSettings | None = None) -> None:
        super().__init__(backbone, neck, post)
        self.rpn = rpn
        self.roi_head = roi_head

    @property
    def needs_proposals(self) -> bool:  # built without an RPN: every forward needs proposals=[...]
        return self.rpn is None

    def forward(self, images: Tensor, targets: list[dict[str, Tensor]] | None = None,
                proposals: list[Tensor] | None = None) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """See :meth:`Detector.forward`; ``proposals`` are checked against the batch first."""
        if proposals is None and self.rpn is None:
            raise InvalidInput("this FastRCNN was built for external proposals (data.proposals): "
                             "pass proposals=[Tensor[P, 4], ...] per image")
        if proposals is not None and len(proposals) != images.shape[0]:
            raise ValueError(f"got proposals for {len(proposals)} images but a batch of {images.shape[0]}")
        return super().forward(images, targets, proposals=proposals)

    def _proposals(self, feats: list[Tensor], image_size: tuple[int, int], proposals: list[Tensor] | None,
                   gt: tuple[Tensor, Tensor, Tensor] | None) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Padded proposals [B, P, 4], mask [B, P] and the RPN's losses (none for external proposals)."""
        if proposals is not None:
            return (*pad_proposals(proposals, feats[0].device), {})
        return self.rpn(feats, image_size, (gt[0], gt[2]) if gt is not None else None)

    def detections(self, feats: list[Tensor], image_size: tuple[int, int], proposals: list[Tensor] | None = None
                   ) -> list[dict[str, Tensor]]:
        props, mask, _ = self._proposals(feats, image_size, proposals, None)
        return self.roi_head.predict(feats, props, mask, image_size, self.post)

    def losses(self, feats: list[Tensor], image_size: tuple[int, int], targets: list[dict[str, Tensor]],
               proposals: list[Tensor] | None = None) -> dict[str, Tensor]:
        gt = pad_targets(targets, feats[0].device)
        props, mask, losses = self._proposals(feats, image_size, proposals, gt)
        return {**losses, **self.roi_head.loss(feats, props, mask, gt)}


def build_fast_rcnn(cfg: ModelConfig, num_classes: int) -> FastRCNN:
    """Build the detector from ``cfg`` (``cfg.fast_rcnn`` holds the head options)."""
    fr = cfg.fast_rcnn
    backbone = build_backbone(cfg.backbone, cfg.backbone_weights, cfg.freeze_at, cfg.frozen_bn)
    if fr.fpn:
        strides = list(backbone.strides)
        if len(fr.anchor_sizes) != len(strides):
            raise InvalidInput(f"model.fast_rcnn.anchor_sizes has {len(fr.anchor_sizes)} sizes but the FPN has "
                             f"{len(strides)} levels (strides {strides}): give one size per level")
        # The FPN paper's plain outputs: with BN + ReLU the box head learned 2-4x slower on Freiburg.
        neck: nn.Module | None = FPN(list(backbone.out_channels), fr.neck_channels, norm=False, init=fr.fpn_init)
        channels, sizes = fr.neck_channels, [[float(s)] for s in fr.anchor_sizes]
    else:
        strides, neck = [backbone.strides[-1]], None
        channels, sizes = backbone.out_channels[-1], [[float(s) for s in fr.anchor_sizes]]
    rpn = None
    if fr.rpn:
        rpn = RPN(channels, strides, sizes, list(fr.anchor_ratios), pre_nms_topk=fr.rpn_pre_nms_topk,
                  post_nms_topk=fr.rpn_post_nms_topk, nms_thresh=fr.rpn_nms_thresh,
                  batch_per_image=fr.rpn_batch_per_image, positive_fraction=fr.rpn_positive_fraction,
                  fg_iou=fr.rpn_fg_iou, bg_iou=fr.rpn_bg_iou)
    roi_head = RoIHead(
        channels, strides, num_classes, roi_op=fr.roi_op, roi_size=fr.roi_size, hidden=fr.head_dim,
        dropout=cfg.dropout, canonical_size=fr.roi_canonical_size, batch_per_image=fr.roi_batch_per_image,
        positive_fraction=fr.roi_positive_fraction, fg_iou=fr.fg_iou, bg_iou=fr.bg_iou,
        init=fr.head_init, box_beta=fr.roi_box_beta, upsample=fr.roi_upsample,
        norm=fr.roi_norm, subbins=fr.roi_subbins, class_agnostic=fr.roi_class_agnostic,
    )
    return FastRCNN(backbone=backbone, roi_head=roi_head, rpn=rpn, neck=neck, post=PostprocessSettings.from_config(cfg))
