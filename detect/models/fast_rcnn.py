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

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from data_tools.errors import InvalidInput
from detect.models.backbones import build_backbone
from detect.models.detector import Detector
from detect.models.necks import FPN
from detect.models.options import ModelSettings, at_least, option
from detect.models.postprocess import PostprocessSettings, postprocess
from detect.models.roi_head import RoIHead
from detect.models.rpn import RPN
from detect.models.targets import pad_targets


@dataclass
class FastRCNNOptions:
    """``model.fast_rcnn``: neck, RPN, RoI sampling and box head options."""

    fpn: bool = True  # use an FPN neck (multi-level RoI assignment); False: single C5-stride map
    neck_channels: int = 128
    anchor_sizes: tuple[float, ...] = (32.0, 64.0, 128.0)  # one size per level (x2 octave per level)
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_pre_nms_topk: int = 1000
    rpn_post_nms_topk: int = 300
    rpn_nms_thresh: float = 0.7
    rpn_batch_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_fg_iou: float = 0.7  # anchor positive at IoU >= this (and each object's best anchor)
    rpn_bg_iou: float = 0.3  # anchor negative at max IoU < this; in between: ignored
    roi_op: str = option("roi_pool", choices=("roi_pool", "roi_align"))  # roi_pool is Fast R-CNN's
    roi_size: int = 7
    roi_canonical_size: float = 112.0  # FPN level rule k = floor(4 + log2(sqrt(wh) / this)), k=4 is stride 16;
    # the paper's 224 suits ~800 px inputs, 112 suits 256-416 px (boxes < 112 px pool from stride 8)
    roi_batch_per_image: int = 256
    roi_positive_fraction: float = 0.25
    fg_iou: float = 0.5
    bg_iou: float = 0.5
    head_dim: int = 512  # width of the two fully connected layers
    rpn: bool = True  # False: no RPN, the proposals come from data.proposals (set automatically with it)
    # box head outputs: normal (N(0, 0.01) classes, N(0, 0.001) deltas) | pytorch (nn.Linear's)
    head_init: str = option("normal", choices=("normal", "pytorch"))
    # normalise the pooled RoI features: none | group (GroupNorm) | batch (BatchNorm)
    roi_norm: str = option("none", choices=("none", "group", "batch"))
    roi_subbins: int = option(1, at_least(1))  # roi_pool: each output bin averages subbins x subbins max-pooled bins
    roi_upsample: int = option(1, at_least(1))  # pool from maps bilinearly upsampled by this factor (finer roi_pool)
    roi_box_beta: float = option(1.0 / 9, at_least(0))  # smooth-L1 beta of the box head's regression loss (0: L1)
    roi_class_agnostic: bool = False  # one set of box deltas for all classes (True) or one per class
    # FPN convs: pytorch (default init) | kaiming_a1 (the FPN paper's / torchvision's)
    fpn_init: str = option("pytorch", choices=("pytorch", "kaiming_a1"))

    def use_external_proposals(self) -> None:
        """``data.proposals`` replace the RPN: the model is built without one."""
        self.rpn = False


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

    @property
    def exportable(self) -> bool:  # with its RPN, dense() is one fixed graph; external proposals are not
        return self.rpn is not None

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

    def _dense(self, feats: list[Tensor], image_size: tuple[int, int], proposals: list[Tensor] | None = None
               ) -> tuple[Tensor, Tensor]:
        """Proposals (RPN or external) -> the box head's boxes [B, P, 4] or [B, P, C, 4] and scores [B, P, C]."""
        props, mask, _ = self._proposals(feats, image_size, proposals, None)
        return self.roi_head.dense(feats, props, mask)

    def dense(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Everything before the final NMS, as one fixed graph (what ``retail-detect export`` exports).

        ``images`` [B, 3, H, W] 0..255 -> RPN (anchors, decode, top-k per level, clip, NMS per image and level,
        ``rpn_post_nms_topk`` = P proposals per image, padding rows scored 0) -> RoI pooling, box head, softmax,
        decode: boxes [B, P, 4] (class-agnostic deltas) or [B, P, C, 4] xyxy input-tensor pixels (unclipped)
        and scores [B, P, C] probabilities of classes 1..C. ``postprocess`` of these is :meth:`detections`.
        """
        if self.rpn is None:
            raise InvalidInput("this FastRCNN was built for external proposals (data.proposals): it has no "
                               "proposal stage to export")
        return self._dense(self.features(images), (int(images.shape[-2]), int(images.shape[-1])))

    def detections(self, feats: list[Tensor], image_size: tuple[int, int], proposals: list[Tensor] | None = None
                   ) -> list[dict[str, Tensor]]:
        return postprocess(*self._dense(feats, image_size, proposals), image_size, self.post)

    def losses(self, feats: list[Tensor], image_size: tuple[int, int], targets: list[dict[str, Tensor]],
               proposals: list[Tensor] | None = None) -> dict[str, Tensor]:
        gt = pad_targets(targets, feats[0].device)
        props, mask, losses = self._proposals(feats, image_size, proposals, gt)
        return {**losses, **self.roi_head.loss(feats, props, mask, gt)}


def build_fast_rcnn(cfg: ModelSettings, fr: FastRCNNOptions, num_classes: int) -> FastRCNN:
    """Build the detector from the model settings ``cfg`` and its options ``fr`` (``model.fast_rcnn``)."""
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
