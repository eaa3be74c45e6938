"""Fast R-CNN second stage: RoI pooling, proposal sampling, box head, losses and eval decoding.

Each concern is one function or one small module (not one 900-line ``roi_heads.py``):

- :func:`roi_levels` / :func:`pool_rois`: RoI pooling (``torchvision.ops.roi_pool`` by default, as in
  Fast R-CNN; ``roi_align`` as an option) with FPN multi-level assignment;
- :func:`sample_rois`: GT boxes appended to the proposals, IoU thresholds, positive fraction, vectorised
  across the batch on padded tensors;
- :class:`BoxHead`: two fully connected layers with dropout -> C+1 class scores + class-specific (or one
  class-agnostic set of) deltas;
- :func:`fast_rcnn_loss`: cross-entropy + smooth-L1 on the true class's deltas (or the shared ones);
- :class:`RoIHead`: glues them; :meth:`RoIHead.dense` gives what the shared ``postprocess`` takes (boxes
  [B, N, C, 4], or [B, N, 4] with class-agnostic deltas), and eval ends in it.

Box coding and losses run in fp32 (ARCHITECTURE.md, "Numerics").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align, roi_pool

from detect.models.box_coder import decode, encode
from detect.models.box_ops import batched_box_iou
from detect.models.postprocess import PostprocessSettings, postprocess
from detect.models.rpn import sample_pos_neg

ROI_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # Fast R-CNN's target normalisation
HEAD_INITS = ("normal", "pytorch")  # see BoxHead
ROI_NORMS = ("none", "group", "batch")  # see BoxHead


def roi_levels(boxes: Tensor, strides: list[int], canonical_size: float = 224.0, canonical_level: int = 4) -> Tensor:
    """FPN level of each RoI: k = floor(k0 + log2(sqrt(w*h) / s0)), clamped to the available levels.

    Level k means stride 2**k (k0 = 4 -> stride 16). The FPN paper's s0 = 224 suits ~800 px inputs;
    for small inputs scale s0 with the image (e.g. 112 at 320 px: boxes < 112 px pool from stride 8,
    112-224 px from stride 16, larger from stride 32).

    Args:
        boxes: [R, 4] xyxy pixels; strides: consecutive powers of two, finest first (e.g. [8, 16, 32]).

    Returns:
        int64 [R]: index into ``strides``.
    """
    wh = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    side = wh.float().clamp(min=1e-6).sqrt()
    k = torch.floor(canonical_level + torch.log2(side / canonical_size) + 1e-6)
    k_min, k_max = int(math.log2(strides[0])), int(math.log2(strides[-1]))
    return (k.clamp(k_min, k_max) - k_min).to(torch.int64)


def pool_rois(
    feats: list[Tensor],
    strides: list[int],
    rois: Tensor,
    op: str = "roi_pool",
    output_size: int = 7,
    canonical_size: float = 224.0,
    sampling_ratio: int = 2,
    by_mask: bool | None = None,
    upsample: int = 1,
    subbins: int = 1,
) -> Tensor:
    """Pool a fixed-size feature for every RoI of the batch.

    Args:
        feats: L maps [B, C, H_l, W_l] with ``strides[l]``.
        rois: [B, S, 4] xyxy in input-tensor pixels (S per image, padded slots allowed).
        op: ``roi_pool`` (max pooling over quantised bins, Fast R-CNN) or ``roi_align`` (bilinear, aligned).
            ``roi_pool`` reads a box's end as an inclusive cell (``round(x2 / stride)``, Caffe's pixel-index
            boxes); our x2 is exclusive (a box over the whole image is [0, 0, W, H]), so it is given
            ``x2 - stride, y2 - stride``: the box [0, 0, 8s, 8s] pools cells 0..7, not 0..8.
        upsample: pool from each map bilinearly upsampled by this factor (stride / ``upsample``): ``roi_pool``
            rounds a box's edges to the map's cells, so at small inputs (a product covering 3-15 cells of the
            stride-8 map at 160 px) the finer grid makes the pooled window follow the box; 1 = the maps as they are.
        subbins: ``roi_pool`` only: pool ``output_size * subbins`` bins and average each ``subbins x subbins``
            block, so an output bin is the mean of several small maxima (RoIAlign averages 4 samples per bin).
        by_mask: select each RoI's level by mask (True) or pool each level's RoIs only (False); None: by mask
            on CUDA, per level on the CPU. Both give the same result and both trace (an ONNX export on the CPU
            pools per level, as NonZero + Gather: 2-4x faster in onnxruntime than pooling every level).

    Returns:
        [B * S, C, output_size, output_size], image-major.

    On CUDA every RoI is pooled from every level and its own level is selected by mask: a few times the (cheap)
    pooling work, but fixed shapes and no host sync (no boolean indexing). On the CPU, where pooling is the
    expensive part and a sync costs nothing, each level pools only its own RoIs.
    """
    b, s = rois.shape[0], rois.shape[1]  # traced sizes under export (dynamic batch)
    flat = rois.reshape(-1, 4).float()
    batch_idx = torch.arange(b, device=rois.device, dtype=flat.dtype)[:, None].expand(-1, s).reshape(-1)
    indexed = torch.cat([batch_idx[:, None], flat], 1)  # [B*S, 5] as torchvision.ops expects

    def one(f: Tensor, stride: int, boxes: Tensor) -> Tensor:  # fp32: bf16 boxes would be off by pixels
        f = f.float()
        if upsample > 1:  # cell j of the upsampled map covers pixels [j, j + 1) * stride / upsample
            f, stride = F.interpolate(f, scale_factor=upsample, mode="bilinear", align_corners=False), stride / upsample
        if op == "roi_pool":
            pooled = roi_pool(f, boxes - boxes.new_tensor([0, 0, 0, stride, stride]), output_size * subbins, 1.0 / stride)
            return F.avg_pool2d(pooled, subbins) if subbins > 1 else pooled
        if op == "roi_align":
            return roi_align(f, boxes, output_size, 1.0 / stride, sampling_ratio, aligned=True)
        raise ValueError(f"unknown roi_op {op!r}: use 'roi_pool' or 'roi_align'")

    if len(feats) == 1:
        return one(feats[0], strides[0], indexed)
    levels = roi_levels(flat, strides, canonical_size)
    if by_mask is None:
        by_mask = flat.device.type != "cpu"
    if not by_mask:
        # Row 0 is a spare zero box that every level pools too: no pooling op ever sees 0 RoIs (OpenVINO refuses
        # them) and no Python branch on a level's count (a traced graph keeps no level out). The pooled rows
        # come back in RoI order by sorting their row numbers (a gather: no scatter with traced shapes).
        rows = torch.cat([indexed.new_zeros(1, 5), indexed])
        levels = torch.cat([levels.new_full((1,), -1), levels])
        spare = torch.zeros(1, dtype=torch.int64, device=rows.device)
        idx = [torch.cat([spare, torch.nonzero(levels == lv).squeeze(1)]) for lv in range(len(feats))]
        pooled = torch.cat([one(f, stride, rows[i]) for f, stride, i in zip(feats, strides, idx)])
        return pooled[torch.argsort(torch.cat(idx))[len(feats):]]  # row numbers 0 (L times), 1, ..., B*S
    levels = levels[:, None, None, None]
    out = one(feats[0], strides[0], indexed)
    for level in range(1, len(feats)):
        out = torch.where(levels == level, one(feats[level], strides[level], indexed), out)
    return out


def sample_rois(
    proposals: Tensor,
    prop_mask: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    gt_mask: Tensor,
    batch_per_image: int,
    positive_fraction: float,
    fg_iou: float = 0.5,
    bg_iou: float = 0.5,
) -> tuple[Tensor, Tensor, Tensor]:
    """Choose the RoIs to train the box head on, for the whole batch at once.

    GT boxes are appended to the proposals (so positives exist from step one). A RoI is foreground
    at max IoU >= ``fg_iou`` (label = its object's class), background at max IoU < ``bg_iou``
    (label 0); at most ``batch_per_image * positive_fraction`` foreground per image.

    Args:
        proposals: [B, P, 4], prop_mask: bool [B, P]; gt_*: padded targets [B, M, 4], [B, M], [B, M].

    Returns:
        rois [B, S, 4], labels int64 [B, S] (-1 = unused slot, 0 = background, 1..C = class) and
        matched object boxes [B, S, 4] (the RoI itself where not foreground), S = min(batch, P + M).
    """
    boxes = torch.cat([proposals.float(), gt_boxes.float()], 1)  # [B, N, 4]
    valid = torch.cat([prop_mask, gt_mask], 1)
    iou = batched_box_iou(boxes, gt_boxes).masked_fill(~gt_mask[:, None, :], 0.0)  # [B, N, M]
    max_iou, matched_idx = iou.max(dim=2)
    fg = valid & (max_iou >= fg_iou)
    bg = valid & (max_iou < bg_iou) & ~fg
    pos_sel, neg_sel = sample_pos_neg(fg, bg, batch_per_image, positive_fraction)
    # Compact the chosen RoIs into S slots per image: positives first, then negatives, then unused.
    key = pos_sel.float() * 2 + neg_sel.float() + torch.rand(valid.shape, device=valid.device) * 0.5
    s = min(batch_per_image, boxes.shape[1])
    idx = key.topk(s, dim=1).indices  # [B, S]
    used = torch.gather(pos_sel | neg_sel, 1, idx)
    is_pos = torch.gather(pos_sel, 1, idx)
    rois = torch.gather(boxes, 1, idx[..., None].expand(-1, -1, 4))
    unit = rois.new_tensor([0.0, 0.0, 1.0, 1.0])
    rois = torch.where(used[..., None], rois, unit)  # unused slots: a harmless finite box
    obj = torch.gather(matched_idx, 1, idx)
    labels = torch.gather(gt_labels, 1, obj) * is_pos
    labels = torch.where(used, labels, -1)
    matched = torch.gather(gt_boxes.float(), 1, obj[..., None].expand(-1, -1, 4))
    matched = torch.where(is_pos[..., None], matched, rois)
    return rois.detach(), labels, matched


class BoxHead(nn.Module):
    """Two fully connected layers (ReLU + dropout) -> class logits [R, C+1] and deltas [R, K*4].

    Deltas are class-specific for classes 1..C (K = C, no regression for background), or with
    ``class_agnostic`` one set for every class (K = 1, as Cascade R-CNN and MMDetection's
    ``reg_class_agnostic``): every foreground RoI then trains the same regressor instead of 1/C of them.
    ``init`` of the two output layers: ``normal`` (weights N(0, 0.01) for classes and N(0, 0.001) for deltas,
    bias 0: Detectron's) or ``pytorch`` (``nn.Linear``'s default, as torchvision's ``FastRCNNPredictor``). The
    two hidden layers always keep ``nn.Linear``'s default (as torchvision's ``TwoMLPHead``). The Fast R-CNN
    recipe uses class-agnostic deltas and ``pytorch`` init: why, in docs/experiments/fast_rcnn_ablation.md.

    ``norm`` of the pooled input [R, C, s, s]: ``none``, ``group`` (GroupNorm, 32 groups or fewer: per RoI) or
    ``batch`` (BatchNorm2d over the batch's RoIs, running statistics in eval). Max pooling (``roi_pool``) of
    zero-mean FPN maps gives inputs with a large positive mean (about +3 with std 3 at initialisation, where
    RoIAlign's average is ~0). Both norms made the head learn slower in short runs, so the recipes keep ``none``
    (docs/experiments/fast_rcnn_ablation.md).
    """

    def __init__(self, in_channels: int, roi_size: int, hidden: int, num_classes: int, dropout: float = 0.0,
                 init: str = "normal", norm: str = "none", class_agnostic: bool = False):
        super().__init__()
        if init not in HEAD_INITS:
            raise ValueError(f"unknown box head init {init!r}: use one of {', '.join(HEAD_INITS)}")
        if norm not in ROI_NORMS:
            raise ValueError(f"unknown RoI feature norm {norm!r}: use one of {', '.join(ROI_NORMS)}")
        self.num_classes = num_classes
        self.norm: nn.Module = nn.Identity()
        if norm == "group":
            self.norm = nn.GroupNorm(math.gcd(32, in_channels), in_channels)
        elif norm == "batch":
            self.norm = nn.BatchNorm2d(in_channels)
        self.fc = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * roi_size * roi_size, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        self.cls = nn.Linear(hidden, num_classes + 1)
        self.reg = nn.Linear(hidden, (1 if class_agnostic else num_classes) * 4)
        if init == "normal":
            nn.init.normal_(self.cls.weight, std=0.01)
            nn.init.normal_(self.reg.weight, std=0.001)
            nn.init.zeros_(self.cls.bias)
            nn.init.zeros_(self.reg.bias)

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        """pooled [R, C_in, s, s] -> logits [R, C+1], deltas [R, K*4] (both fp32; K = C or 1)."""
        h = self.fc(self.norm(pooled))
        return self.cls(h).float(), self.reg(h).float()


def fast_rcnn_loss(logits: Tensor, deltas: Tensor, labels: Tensor, reg_targets: Tensor,
                   beta: float = 1.0 / 9) -> dict[str, Tensor]:
    """Cross-entropy over C+1 classes + smooth-L1 on the true class's deltas (positives only).

    Args:
        logits: [R, C+1]; deltas: [R, C*4] class-specific or [R, 4] class-agnostic;
        labels: int64 [R] (-1 ignored, 0 background);
        reg_targets: encoded targets [R, 4]; beta: smooth-L1's switch from L2 to L1 (0: plain L1).

    Returns:
        ``{"roi_cls", "roi_box"}``, both summed over used RoIs and divided by their number.
    """
    used = labels >= 0
    n = used.sum().clamp(min=1).float()
    ce = F.cross_entropy(logits.float(), labels.clamp(min=0), reduction="none")
    cls_loss = torch.where(used, ce, 0.0).sum() / n
    r = labels.shape[0]
    per_class = deltas.float().view(r, -1, 4)  # [R, K, 4], K = C or 1
    which = (labels - 1).clamp(min=0) if per_class.shape[1] > 1 else torch.zeros_like(labels)
    d = per_class[torch.arange(r, device=labels.device), which]
    l1 = F.smooth_l1_loss(d, reg_targets.float(), beta=beta, reduction="none").sum(-1)
    box_loss = torch.where(labels > 0, l1, 0.0).sum() / n
    return {"roi_cls": cls_loss, "roi_box": box_loss}


class RoIHead(nn.Module):
    """RoI pooling + :class:`BoxHead`; losses in training, detections through ``postprocess`` in eval.

    Args:
        in_channels: channels of the pooled maps; strides: stride of each map (finest first).
        num_classes: C object classes (labels 1..C).
        roi_op / roi_size / canonical_size / upsample / subbins: see :func:`pool_rois` and :func:`roi_levels`.
        batch_per_image / positive_fraction / fg_iou / bg_iou: see :func:`sample_rois`.
        hidden / dropout / init / norm / class_agnostic: see :class:`BoxHead`;
        box_beta: smooth-L1 beta of :func:`fast_rcnn_loss`.
    Detections go through ``postprocess`` with the settings the detector passes to :meth:`predict`.
    """

    def __init__(
        self,
        in_channels: int,
        strides: list[int],
        num_classes: int,
        roi_op: str = "roi_pool",
        roi_size: int = 7,
        hidden: int = 512,
        dropout: float = 0.0,
        canonical_size: float = 224.0,
        batch_per_image: int = 256,
        positive_fraction: float = 0.25,
        fg_iou: float = 0.5,
        bg_iou: float = 0.5,
        init: str = "normal",
        box_beta: float = 1.0 / 9,
        upsample: int = 1,
        norm: str = "none",
        subbins: int = 1,
        class_agnostic: bool = False,
    ) -> None:
        super().__init__()
        if roi_op not in ("roi_pool", "roi_align"):
            raise ValueError(f"unknown roi_op {roi_op!r}: use 'roi_pool' or 'roi_align'")
        self.strides, self.num_classes = list(strides), num_classes
        self.roi_op, self.roi_size, self.canonical_size = roi_op, roi_size, canonical_size
        if upsample < 1:
            raise ValueError(f"RoI pooling upsample must be >= 1, got {upsample}")
        if subbins < 1:
            raise ValueError(f"RoI pooling subbins must be >= 1, got {subbins}")
        self.upsample, self.subbins = upsample, subbins
        self.box_head = BoxHead(in_channels, roi_size, hidden, num_classes, dropout, init, norm, class_agnostic)
        self.box_beta = box_beta
        self.batch_per_image, self.positive_fraction = batch_per_image, positive_fraction
        self.fg_iou, self.bg_iou = fg_iou, bg_iou

    def pool(self, feats: list[Tensor], rois: Tensor) -> Tensor:
        """rois [B, S, 4] -> pooled [B*S, C, roi_size, roi_size]."""
        return pool_rois(feats, self.strides, rois, self.roi_op, self.roi_size, self.canonical_size,
                         upsample=self.upsample, subbins=self.subbins)

    def loss(
        self, feats: list[Tensor], proposals: Tensor, prop_mask: Tensor, gt: tuple[Tensor, Tensor, Tensor]
    ) -> dict[str, Tensor]:
        """Sample RoIs against padded ``gt`` = (boxes [B,M,4], labels [B,M], mask [B,M]) and return losses."""
        rois, labels, matched = sample_rois(
            proposals, prop_mask, gt[0], gt[1], gt[2],
            self.batch_per_image, self.positive_fraction, self.fg_iou, self.bg_iou,
        )
        logits, deltas = self.box_head(self.pool(feats, rois))
        targets = encode(matched.reshape(-1, 4), rois.reshape(-1, 4), ROI_BOX_WEIGHTS)
        return fast_rcnn_loss(logits, deltas, labels.reshape(-1), targets, self.box_beta)

    def dense(self, feats: list[Tensor], proposals: Tensor, prop_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Score and refine every proposal: what :func:`postprocess` takes (one fixed graph, exportable).

        Args:
            feats: L maps [B, C, H_l, W_l]; proposals: [B, P, 4] xyxy input-tensor pixels; prop_mask: bool [B, P].

        Returns:
            boxes [B, P, 4] (class-agnostic deltas: one box for every class) or [B, P, C, 4] (class-specific),
            unclipped; scores [B, P, C] probabilities of classes 1..C, 0 on masked (padding) rows.
        """
        b, p = proposals.shape[0], proposals.shape[1]
        logits, deltas = self.box_head(self.pool(feats, proposals))
        scores = logits.softmax(-1)[:, 1:].reshape(b, p, self.num_classes) * prop_mask[..., None]
        deltas = deltas.reshape(b, p, -1, 4)  # [B, P, K, 4], K = C or 1
        boxes = decode(deltas, proposals.float()[:, :, None, :], ROI_BOX_WEIGHTS)
        return (boxes[:, :, 0] if self.box_head.reg.out_features == 4 else boxes), scores  # K = 1: [B, P, 4]

    def predict(
        self, feats: list[Tensor], proposals: Tensor, prop_mask: Tensor, image_size: tuple[int, int],
        post: PostprocessSettings | None = None,
    ) -> list[dict[str, Tensor]]:
        """Score and refine every proposal [B, P, 4] (mask [B, P]) -> detections via ``postprocess(post)``."""
        return postprocess(*self.dense(feats, proposals, prop_mask), image_size, post)
