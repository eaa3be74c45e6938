"""torchvision detectors built on OUR backbone: the peers that `retail-detect bench` and `compare` measure against.

Each peer is a stock ``torchvision.models.detection`` model (FCOS, RetinaNet, Faster R-CNN, SSD) whose backbone
is our :class:`~detect.models.backbones.Backbone` plus torchvision's own ``FeaturePyramidNetwork``. The peer's
``GeneralizedRCNNTransform`` is fixed to the bench size (``min_size = max_size = S``) and uses the mean/std of our
backbone's ``normalize``, so both detectors see the same pixels. :class:`PeerDetector` wraps the torchvision model
in our model contract (``model(images uint8/float 0..255 [B,3,S,S], targets)`` -> losses | detections, and
``model.backbone`` is our Backbone), so the trainer, evaluator and bench treat peers like our own detectors.

Labels: SSD and Faster R-CNN (softmax) reserve class 0 for the background and are built with ``K + 1`` classes;
FCOS and RetinaNet (sigmoid) are built with ``K`` classes, get labels 0..K-1 and give back 1..K
(``PeerDetector.label_offset``), so no class channel is wasted on a label that never occurs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.ssd import SSD, SSDHead
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelP6P7

from data_tools.errors import InvalidInput
from detect.models.backbones import Backbone, build_backbone
from detect.models.fast_rcnn import FastRCNNOptions
from detect.models.options import ModelSettings
from detect.models.postprocess import PostprocessSettings
from detect.models.ssd import SSDOptions
from detect.models.yolo import YOLOOptions


def backbone_mean_std(backbone: Backbone) -> tuple[list[float], list[float]]:
    """Per-channel mean/std (for 0..1 images) equivalent to ``backbone.normalize`` (for 0..255 images).

    ``normalize(x) = (x / 255 - mean) / std`` is probed at 0 and 255 and checked at a mid value, so the peer's
    transform reproduces exactly what our detectors feed the backbone, whatever the backbone family.
    """
    probe = torch.tensor([0.0, 255.0, 100.0]).view(3, 1, 1, 1).expand(3, 3, 1, 1).contiguous()
    with torch.no_grad():
        out = backbone.normalize(probe).float()[:, :, 0, 0]  # [3 probes, 3 channels]
    lo, hi, mid = out[0], out[1], out[2]
    std = 1.0 / (hi - lo)
    mean = -lo * std
    expected = (100.0 / 255.0 - mean) / std
    if not torch.allclose(mid, expected, rtol=1e-3, atol=1e-3):
        raise ValueError("backbone.normalize is not a per-channel affine map; the peer cannot reproduce it")
    return mean.tolist(), std.tolist()


class StridedExtras(ExtraFPNBlock):
    """``n`` extra stride-2 levels after the last FPN map (3x3 conv, ReLU between), as SSD's extra layers."""

    def __init__(self, channels: int, n: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, stride=2, padding=1) for _ in range(n))

    def forward(self, results: list[Tensor], x: list[Tensor], names: list[str]) -> tuple[list[Tensor], list[str]]:
        """Append the extra levels to the FPN outputs and name them after the next integers."""
        last = results[-1]
        for i, conv in enumerate(self.convs):
            last = conv(torch.relu(last) if i else last)
            results.append(last)
            names.append(str(len(names)))
        return results, names


def _to_fp32(value):
    if isinstance(value, Tensor):
        return value.float()
    if isinstance(value, dict):
        return {k: _to_fp32(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_fp32(v) for v in value)
    return value


def fp32_outputs(module: nn.Module) -> nn.Module:
    """Cast ``module``'s outputs to fp32 (a forward hook: state-dict keys unchanged).

    Applied to the peers' heads: torchvision's ``BoxCoder.decode`` casts the anchors to the regression's dtype,
    which under bf16 autocast costs ~2 px at 256-512 px (see ARCHITECTURE.md, "Numerics"); our detectors keep box math in fp32 too.
    """
    module.register_forward_hook(lambda _m, _inputs, output: _to_fp32(output))
    return module


class TorchvisionBackbone(nn.Module):
    """Our Backbone (+ torchvision FPN) with the interface torchvision's detectors expect.

    ``forward(normalized images) -> OrderedDict[str, Tensor]`` named "0", "1", ... from the finest level;
    ``out_channels`` is an int. Outputs are cast to fp32 so that torchvision's anchors, which take the features'
    dtype, stay in fp32 under bf16 autocast (the convolutions still run in bf16).
    """

    def __init__(self, body: Backbone, fpn_channels: int | None, extra_blocks: ExtraFPNBlock | None = None) -> None:
        super().__init__()
        self.body = body
        if fpn_channels is None:  # no neck: the backbone's last (stride-32) map alone
            self.fpn = None
            self.out_channels = int(body.out_channels[-1])
        else:
            self.fpn = FeaturePyramidNetwork(list(body.out_channels), fpn_channels, extra_blocks=extra_blocks)
            self.out_channels = int(fpn_channels)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        """Normalized images [B,3,H,W] -> feature maps, finest first."""
        feats = self.body(x)
        if self.fpn is None:
            out = OrderedDict([("0", feats[-1])])
        else:
            out = self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))
        return OrderedDict((k, v.float()) for k, v in out.items())


class PeerDetector(nn.Module):
    """A torchvision detector behind our model contract.

    ``forward(images [B,3,H,W] uint8/float 0..255, targets=None)``: in training, a dict of scalar losses; in eval,
    ``list[{"boxes", "scores", "labels"}]`` in input-tensor pixels with labels 1..K. Only ``boxes`` and ``labels``
    of each target are passed on; ``label_offset`` is subtracted from the labels going in and added to the labels
    coming out (1 for sigmoid heads without a background class).
    """

    def __init__(self, net: nn.Module, name: str, label_offset: int = 0) -> None:
        super().__init__()
        self.net = net
        self.peer_name = name
        self.label_offset = label_offset

    def _post_owner(self) -> nn.Module:
        """The torchvision module holding the postprocess thresholds (Faster R-CNN: its RoI heads)."""
        return getattr(self.net, "roi_heads", self.net)

    @property
    def post(self) -> PostprocessSettings:
        """The torchvision model's postprocess thresholds as our :class:`PostprocessSettings` (class-aware NMS)."""
        m = self._post_owner()
        return PostprocessSettings(float(m.score_thresh), float(m.nms_thresh), int(m.detections_per_img))

    @post.setter
    def post(self, settings: PostprocessSettings) -> None:
        if settings.agnostic:
            raise InvalidInput(f"torchvision {self.peer_name} has class-aware NMS only (model.agnostic_nms: false)")
        m = self._post_owner()
        m.score_thresh, m.nms_thresh, m.detections_per_img = (settings.score_thresh, settings.nms_thresh,
                                                             settings.max_detections)

    @property
    def backbone(self) -> Backbone:
        """Our Backbone inside the peer (for freeze / unfreeze, like our detectors' ``model.backbone``)."""
        return self.net.backbone.body

    def forward(self, images: Tensor, targets: list[dict[str, Tensor]] | None = None):
        """Run the torchvision model on a 0..255 batch (it expects a list of 0..1 images)."""
        batch = list((images.float() / 255.0).unbind(0))
        off = self.label_offset
        if targets is not None:
            targets = [{"boxes": t["boxes"].float(), "labels": t["labels"] - off} for t in targets]
        out = self.net(batch, targets)
        if off and isinstance(out, list):
            for det in out:
                det["labels"] = det["labels"] + off
        return out


def _transform_kwargs(body: Backbone, image_size: int) -> dict:
    mean, std = backbone_mean_std(body)
    return {"min_size": image_size, "max_size": image_size, "image_mean": mean, "image_std": std}


def _level_strides(body: Backbone, extra: int) -> list[int]:
    strides = [int(s) for s in body.strides]
    return strides + [strides[-1] * 2 ** (i + 1) for i in range(extra)]


def tv_fcos(body: Backbone, cfg: ModelSettings, yolo: YOLOOptions, num_classes: int, image_size: int) -> FCOS:
    """torchvision FCOS: FPN (``yolo.neck_channels``) P3-P5 + P6/P7, one anchor per location sized as its stride.

    The raw model takes labels 0..K-1 (no background class); :func:`build_peer` shifts them.
    """
    ch = yolo.neck_channels
    backbone = TorchvisionBackbone(body, ch, LastLevelP6P7(ch, ch))
    strides = _level_strides(body, 2)
    anchors = AnchorGenerator(tuple((float(s),) for s in strides), ((1.0,),) * len(strides))
    head = fp32_outputs(FCOSHead(ch, anchors.num_anchors_per_location()[0], num_classes))
    return FCOS(backbone, num_classes, anchor_generator=anchors, head=head, score_thresh=cfg.score_thresh,
                nms_thresh=cfg.nms_thresh, detections_per_img=cfg.max_detections,
                **_transform_kwargs(body, image_size))


def tv_retinanet(body: Backbone, cfg: ModelSettings, yolo: YOLOOptions, num_classes: int,
                 image_size: int) -> RetinaNet:
    """torchvision RetinaNet: FPN (``yolo.neck_channels``) P3-P7, 9 anchors per location (3 octave scales of 4x
    stride, 3 ratios).

    The raw model takes labels 0..K-1 (no background class); :func:`build_peer` shifts them.
    """
    ch = yolo.neck_channels
    backbone = TorchvisionBackbone(body, ch, LastLevelP6P7(ch, ch))
    strides = _level_strides(body, 2)
    sizes = tuple(tuple(4.0 * s * 2 ** (k / 3) for k in range(3)) for s in strides)
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(strides))
    head = fp32_outputs(RetinaNetHead(ch, anchors.num_anchors_per_location()[0], num_classes))
    return RetinaNet(backbone, num_classes, anchor_generator=anchors, head=head, score_thresh=cfg.score_thresh,
                     nms_thresh=cfg.nms_thresh, detections_per_img=cfg.max_detections,
                     **_transform_kwargs(body, image_size))


def tv_faster_rcnn(body: Backbone, cfg: ModelSettings, fr: FastRCNNOptions, num_classes: int,
                   image_size: int) -> FasterRCNN:
    """torchvision Faster R-CNN with our two-stage settings ``fr`` (anchors, RPN top-k, RoI sampling, head width).

    With ``fr.fpn`` the RPN and ``MultiScaleRoIAlign`` use the FPN levels (one anchor size per level when
    the options give one per level); without it, the stride-32 map alone carries every anchor size.
    """
    backbone = TorchvisionBackbone(body, fr.neck_channels if fr.fpn else None)
    levels = len(body.strides) if fr.fpn else 1
    if levels > 1 and len(fr.anchor_sizes) == levels:
        sizes = tuple((float(s),) for s in fr.anchor_sizes)
    else:
        sizes = (tuple(float(s) for s in fr.anchor_sizes),) * levels
    anchors = AnchorGenerator(sizes, (tuple(fr.anchor_ratios),) * levels)
    rpn_head = fp32_outputs(RPNHead(backbone.out_channels, anchors.num_anchors_per_location()[0]))
    roi_pool = MultiScaleRoIAlign([str(i) for i in range(levels)], output_size=fr.roi_size, sampling_ratio=2)
    box_head = TwoMLPHead(backbone.out_channels * fr.roi_size**2, fr.head_dim)
    predictor = fp32_outputs(FastRCNNPredictor(fr.head_dim, num_classes + 1))
    return FasterRCNN(
        backbone, None, rpn_anchor_generator=anchors, rpn_head=rpn_head,
        rpn_pre_nms_top_n_train=fr.rpn_pre_nms_topk, rpn_pre_nms_top_n_test=fr.rpn_pre_nms_topk,
        rpn_post_nms_top_n_train=fr.rpn_post_nms_topk, rpn_post_nms_top_n_test=fr.rpn_post_nms_topk,
        rpn_nms_thresh=fr.rpn_nms_thresh, rpn_batch_size_per_image=fr.rpn_batch_per_image,
        rpn_positive_fraction=fr.rpn_positive_fraction, box_roi_pool=roi_pool, box_head=box_head,
        box_predictor=predictor, box_score_thresh=cfg.score_thresh, box_nms_thresh=cfg.nms_thresh,
        box_detections_per_img=cfg.max_detections, box_fg_iou_thresh=fr.fg_iou, box_bg_iou_thresh=fr.bg_iou,
        box_batch_size_per_image=fr.roi_batch_per_image, box_positive_fraction=fr.roi_positive_fraction,
        **_transform_kwargs(body, image_size),
    )


def tv_ssd(body: Backbone, cfg: ModelSettings, sc: SSDOptions, num_classes: int, image_size: int) -> SSD:
    """torchvision SSD on FPN (``sc.neck_channels``) + ``sc.extra_levels`` stride-2 extra levels.

    Default boxes come from ``DefaultBoxGenerator`` over the same levels (scales ``min_scale..max_scale``, ratios
    1, 2, 1/2 and the extra square box); hard-negative mining uses ``sc.neg_pos_ratio``.
    """
    ch = sc.neck_channels
    backbone = TorchvisionBackbone(body, ch, StridedExtras(ch, sc.extra_levels) if sc.extra_levels else None)
    levels = len(body.strides) + sc.extra_levels
    ratios = sorted({round(max(r, 1.0 / r)) for r in sc.aspect_ratios if r != 1.0})
    anchors = DefaultBoxGenerator([ratios] * levels, min_ratio=sc.min_scale, max_ratio=sc.max_scale)
    head = fp32_outputs(SSDHead([ch] * levels, anchors.num_anchors_per_location(), num_classes + 1))
    mean, std = backbone_mean_std(body)
    return SSD(backbone, anchors, (image_size, image_size), num_classes + 1, image_mean=mean, image_std=std,
               head=head, score_thresh=cfg.score_thresh, nms_thresh=cfg.nms_thresh,
               detections_per_img=cfg.max_detections, iou_thresh=sc.iou_threshold,
               positive_fraction=1.0 / (1.0 + sc.neg_pos_ratio))


# (our backbone, model settings, the mirrored head's options, K classes, image size S) -> torchvision model
PeerBuilder = Callable[[nn.Module, ModelSettings, Any, int, int], nn.Module]
PEER_BUILDERS: dict[str, PeerBuilder] = {
    "ssd": tv_ssd,
    "faster_rcnn": tv_faster_rcnn,
    "fcos": tv_fcos,
    "retinanet": tv_retinanet,
}
# The head whose options (``model.<head>``) each peer mirrors: a peer is measured at our head's settings.
PEER_HEADS: dict[str, str] = {"ssd": "ssd", "faster_rcnn": "fast_rcnn", "fcos": "yolo", "retinanet": "yolo"}
# Peers whose (sigmoid) heads have no background class: labels shift by one on the way in and out.
LABEL_OFFSET: dict[str, int] = {"fcos": 1, "retinanet": 1}
PEER_TITLES: dict[str, str] = {
    "ssd": "torchvision SSD",
    "faster_rcnn": "torchvision FasterRCNN",
    "fcos": "torchvision FCOS",
    "retinanet": "torchvision RetinaNet",
}


def build_peer(name: str, cfg: ModelSettings, options: Any, num_classes: int, image_size: int,
               backbone: Backbone | None = None) -> PeerDetector:
    """Build the torchvision peer ``name`` (see ``PEER_BUILDERS``) on our backbone, in our model contract.

    Args:
        name: ``ssd`` | ``faster_rcnn`` | ``fcos`` | ``retinanet``.
        cfg: model settings: backbone name/weights/freezing, score/NMS thresholds, detections per image.
        options: the options of the head the peer mirrors (``PEER_HEADS[name]``, e.g. ``YOLOOptions`` for fcos).
        num_classes: K foreground classes (labels 1..K).
        image_size: the fixed square input size S.
        backbone: an already built Backbone to use; by default one is built from ``cfg``.
    """
    if name not in PEER_BUILDERS:
        raise ValueError(f"unknown peer '{name}'; choose from {', '.join(PEER_BUILDERS)}")
    if backbone is None:
        backbone = build_backbone(cfg.backbone, cfg.backbone_weights, cfg.freeze_at, cfg.frozen_bn)
    net = PEER_BUILDERS[name](backbone, cfg, options, num_classes, image_size)
    return PeerDetector(net, name, LABEL_OFFSET.get(name, 0))
