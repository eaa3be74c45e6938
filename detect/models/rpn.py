"""Region proposal network: head, anchor targets, sampled losses and batched proposal selection.

Everything here works on the whole batch at once: targets come padded (see ``targets.pad_targets``),
anchor labels are ``[B, A]`` tensors, sampling is random scores + ``topk`` over masks, and proposal
selection runs a single ``batched_nms`` whose group key is (image, level). Anchors, box coding and
losses run in fp32 even under autocast (ARCHITECTURE.md, "Numerics").

Anchor order everywhere is the one of ``anchors.grid_anchors``: level-major, then y, x, anchor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms, clip_boxes_to_image

from detect.models.anchors import grid_anchors
from detect.models.box_coder import decode, encode
from detect.models.box_ops import batched_box_iou

RPN_BOX_WEIGHTS = (1.0, 1.0, 1.0, 1.0)  # RPN deltas are unweighted (as in Faster R-CNN)


def random_subset(mask: Tensor, num: Tensor, cap: int) -> Tensor:
    """Pick ``num[b]`` random True entries of each row of ``mask`` without a per-image loop.

    Args:
        mask: bool [B, N] candidates.
        num: int64 [B] how many to keep per row (``<= mask.sum(1)`` and ``<= cap``).
        cap: Python int upper bound of ``num`` (the ``topk`` width).

    Returns:
        bool [B, N]: the chosen entries (a subset of ``mask``).
    """
    out = torch.zeros_like(mask)
    cap = min(cap, mask.shape[1])
    if cap <= 0:
        return out
    # Random keys in [0, 1) for candidates, -1 for the rest: the top `num` keys are a uniform sample.
    key = torch.where(mask, torch.rand(mask.shape, device=mask.device), torch.full_like(mask, -1, dtype=torch.float))
    idx = key.topk(cap, dim=1).indices  # [B, cap]
    take = torch.arange(cap, device=mask.device)[None, :] < num[:, None]
    return out.scatter_(1, idx, take)


def sample_pos_neg(pos: Tensor, neg: Tensor, batch_per_image: int, positive_fraction: float) -> tuple[Tensor, Tensor]:
    """Balanced sampling per image, as in Fast/Faster R-CNN, vectorised over the batch.

    At most ``batch_per_image * positive_fraction`` positives per image; negatives fill the rest.

    Args:
        pos, neg: bool [B, N] candidate positives and negatives (disjoint).

    Returns:
        (pos_sel, neg_sel) bool [B, N].
    """
    max_pos = int(batch_per_image * positive_fraction)
    num_pos = pos.sum(1).clamp(max=max_pos)
    num_neg = torch.minimum(neg.sum(1), batch_per_image - num_pos)
    return random_subset(pos, num_pos, max_pos), random_subset(neg, num_neg, batch_per_image)


def rpn_targets(
    anchors: Tensor, gt_boxes: Tensor, gt_mask: Tensor, fg_iou: float = 0.7, bg_iou: float = 0.3
) -> tuple[Tensor, Tensor]:
    """Label every anchor of every image against padded ground truth.

    An anchor is positive at IoU >= ``fg_iou`` with some object, or when it is (one of) the best
    anchor(s) of an object (so every object gets an anchor); negative at max IoU < ``bg_iou``;
    ignored otherwise. Padded rows (``gt_mask == False``) never match anything; an image without
    objects has only negatives.

    Args:
        anchors: float [A, 4] xyxy pixels.
        gt_boxes: float [B, M, 4]; gt_mask: bool [B, M].

    Returns:
        labels float [B, A] (1 positive, 0 negative, -1 ignored) and matched boxes float [B, A, 4]
        (the matched object's box for positives, the anchor itself elsewhere, so encoding stays finite).
    """
    b, m = gt_mask.shape
    a = anchors.shape[0]
    anchors = anchors.float()
    iou = batched_box_iou(gt_boxes, anchors)  # [B, M, A]
    iou = iou.masked_fill(~gt_mask[:, :, None], -1.0)
    max_iou, matched_idx = iou.max(dim=1)  # [B, A]
    labels = torch.full((b, a), -1.0, device=anchors.device)
    labels = torch.where(max_iou < bg_iou, 0.0, labels)
    # Low-quality matches: for each real object, every anchor that reaches its best IoU.
    best = iou.max(dim=2, keepdim=True).values  # [B, M, 1]
    is_best = ((iou == best) & (best > 0) & gt_mask[:, :, None]).any(dim=1)  # [B, A]
    pos = (max_iou >= fg_iou) | is_best
    labels = torch.where(pos, 1.0, labels)
    matched = torch.gather(gt_boxes.float(), 1, matched_idx[..., None].expand(b, a, 4))
    matched = torch.where(pos[..., None], matched, anchors[None])
    return labels, matched


def rpn_loss(
    objectness: Tensor,
    deltas: Tensor,
    anchors: Tensor,
    labels: Tensor,
    matched: Tensor,
    batch_per_image: int,
    positive_fraction: float,
) -> dict[str, Tensor]:
    """Objectness BCE + smooth-L1 on sampled anchors, both normalised by the number sampled.

    Args:
        objectness: logits [B, A]; deltas: [B, A, 4]; anchors: [A, 4].
        labels, matched: from :func:`rpn_targets`.

    Returns:
        ``{"rpn_objectness": scalar, "rpn_box": scalar}`` (fp32).
    """
    pos_sel, neg_sel = sample_pos_neg(labels == 1, labels == 0, batch_per_image, positive_fraction)
    sampled = pos_sel | neg_sel
    n = sampled.sum().clamp(min=1).float()
    bce = F.binary_cross_entropy_with_logits(objectness.float(), labels.clamp(min=0), reduction="none")
    obj_loss = torch.where(sampled, bce, 0.0).sum() / n
    target = encode(matched, anchors.float()[None].expand_as(matched), RPN_BOX_WEIGHTS)
    l1 = F.smooth_l1_loss(deltas.float(), target, beta=1.0 / 9, reduction="none").sum(-1)
    box_loss = torch.where(pos_sel, l1, 0.0).sum() / n
    return {"rpn_objectness": obj_loss, "rpn_box": box_loss}


@torch.no_grad()
def select_proposals(
    anchors: Tensor,
    objectness: Tensor,
    deltas: Tensor,
    level_counts: list[int],
    image_size: tuple[int, int],
    pre_nms_topk: int,
    post_nms_topk: int,
    nms_thresh: float,
    min_size: float = 1e-3,
) -> tuple[Tensor, Tensor, Tensor]:
    """Decode, clip, top-k per level, one ``batched_nms`` for the batch, top-k per image: one fixed graph.

    Eager and exported (ONNX) runs take this same path: fixed shapes up to NMS, no host sync, no loop over
    the batch. Candidates that are too small (``w`` or ``h`` < ``min_size``) or not finite are not dropped but
    replaced by a zero box (which overlaps nothing, so it suppresses nothing in NMS) and never selected.
    NMS ranks by the objectness logits (the order of the probabilities, without their ties near 0 and 1).

    Args:
        anchors: [A, 4]; objectness: logits [B, A]; deltas: [B, A, 4] (all detached here).
        level_counts: anchors per level (sums to A), level-major order.
        image_size: (H, W) of the input tensor.

    Returns:
        boxes float [B, K, 4], scores float [B, K] (objectness probabilities, descending per image),
        mask bool [B, K] with K = ``post_nms_topk``; rows past an image's proposals have mask False,
        score 0 and a zero box. Proposals of one image never come from another image's anchors.
    """
    b = objectness.shape[0]
    dev = objectness.device
    obj = objectness.detach().float()
    idx, lvl = [], []
    start = 0
    for level, count in enumerate(level_counts):
        k = min(pre_nms_topk, count)
        idx.append(obj[:, start : start + count].topk(k, dim=1).indices + start)
        lvl.append(torch.full((k,), level, device=dev, dtype=torch.int64))
        start += count
    idx_t = torch.cat(idx, 1)  # [B, T]
    t = idx_t.shape[1]
    logits = torch.gather(obj, 1, idx_t)
    d = torch.gather(deltas.detach().float(), 1, idx_t[..., None].expand(-1, -1, 4))
    boxes = clip_boxes_to_image(decode(d, anchors.float()[idx_t], RPN_BOX_WEIGHTS), image_size)
    wh = boxes[..., 2:] - boxes[..., :2]
    ok = (wh >= min_size).all(-1) & torch.isfinite(logits) & torch.isfinite(boxes).all(-1)  # [B, T]
    boxes = torch.where(ok[..., None], boxes, 0.0)
    logits = torch.where(ok, logits, 0.0)
    img = torch.arange(b, device=dev)[:, None].expand(-1, t)
    group = img * len(level_counts) + torch.cat(lvl)[None]  # NMS per (image, level)
    flat_boxes, flat_logits = boxes.reshape(-1, 4), logits.reshape(-1)
    keep = batched_nms(flat_boxes, flat_logits, group.reshape(-1), nms_thresh)  # sorted by logit, descending
    return _topk_per_image(flat_boxes[keep], flat_logits[keep], img.reshape(-1)[keep], ok.reshape(-1)[keep],
                           b, post_nms_topk)


def _topk_per_image(boxes: Tensor, logits: Tensor, img: Tensor, ok: Tensor, b: int | Tensor, k: int
                    ) -> tuple[Tensor, Tensor, Tensor]:
    """The first ``k`` valid candidates of each image into padded [B, k] slots, as one ``topk`` (no loop).

    Args:
        boxes [M, 4], logits [M], img int64 [M] (image of each), ok bool [M]: flat candidates in rank order.
        b: the batch size (a traced size under export).

    Returns:
        boxes [B, k, 4], probabilities [B, k], mask [B, k]; unfilled slots: zero box, score 0, mask False.
    """
    m = logits.shape[0]
    mine = (img[None, :] == torch.arange(b, device=img.device)[:, None]) & ok[None, :]  # [B, M]
    # Key -rank for an image's own candidates, -inf for the others; k spare columns keyed -1e9 fill the rest.
    rank = torch.arange(m, device=img.device, dtype=torch.float32)
    key = torch.where(mine, -rank[None, :], float("-inf"))
    key = torch.cat([key, torch.full_like(key[:, :1], -1e9).expand(-1, k)], 1)  # [B, M + k]
    top, col = key.topk(k, dim=1)  # [B, k]: an image's candidates in rank order, then spare columns
    mask = top > -1e8
    src_boxes = torch.cat([boxes, boxes.new_zeros(k, 4)])  # spare columns gather zeros
    src_scores = torch.cat([logits.sigmoid(), logits.new_zeros(k)])
    out_boxes = torch.where(mask[..., None], src_boxes[col], 0.0)
    return out_boxes, torch.where(mask, src_scores[col], 0.0), mask


class RPNHead(nn.Module):
    """3x3 conv + ReLU shared over levels, then 1x1 objectness (A) and 1x1 box deltas (4A)."""

    def __init__(self, in_channels: int, num_anchors: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.cls = nn.Conv2d(in_channels, num_anchors, 1)
        self.reg = nn.Conv2d(in_channels, num_anchors * 4, 1)
        for layer in (self.conv, self.cls, self.reg):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, feats: list[Tensor]) -> tuple[Tensor, Tensor]:
        """feats: L maps [B, C, H_l, W_l] -> objectness [B, A_total], deltas [B, A_total, 4] (fp32)."""
        obj, reg = [], []
        for f in feats:
            t = F.relu(self.conv(f))
            b, _, h, w = t.shape
            obj.append(self.cls(t).permute(0, 2, 3, 1).reshape(b, -1))
            reg.append(self.reg(t).view(b, -1, 4, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, 4))
        return torch.cat(obj, 1).float(), torch.cat(reg, 1).float()


class RPN(nn.Module):
    """Anchors per level + :class:`RPNHead` + targets/losses (training) + proposal selection.

    Args:
        in_channels: channels of every input map (shared head).
        strides: stride of each map.
        sizes: anchor sizes per level (``[[32], [64], [128]]`` with an FPN, ``[[32, 64, 128]]`` without).
        ratios: anchor aspect ratios (h/w), shared by all levels.
    """

    def __init__(
        self,
        in_channels: int,
        strides: list[int],
        sizes: list[list[float]],
        ratios: list[float],
        pre_nms_topk: int = 1000,
        post_nms_topk: int = 300,
        nms_thresh: float = 0.7,
        batch_per_image: int = 256,
        positive_fraction: float = 0.5,
        fg_iou: float = 0.7,
        bg_iou: float = 0.3,
        min_size: float = 1e-3,
    ) -> None:
        super().__init__()
        if len(sizes) != len(strides):
            raise ValueError(f"RPN: {len(sizes)} anchor size groups for {len(strides)} feature levels")
        if len({len(s) for s in sizes}) != 1:
            raise ValueError("RPN: every level needs the same number of anchor sizes (one shared head)")
        self.strides, self.sizes, self.ratios = list(strides), [list(s) for s in sizes], list(ratios)
        self.head = RPNHead(in_channels, len(sizes[0]) * len(ratios))
        self.pre_nms_topk, self.post_nms_topk, self.nms_thresh = pre_nms_topk, post_nms_topk, nms_thresh
        self.batch_per_image, self.positive_fraction = batch_per_image, positive_fraction
        self.fg_iou, self.bg_iou, self.min_size = fg_iou, bg_iou, min_size
        self._anchor_cache: dict[tuple, Tensor] = {}

    def anchors(self, feats: list[Tensor]) -> tuple[Tensor, list[int]]:
        """Anchors [A, 4] (fp32, cached per feature sizes and device) and the count per level."""
        shapes = [tuple(f.shape[-2:]) for f in feats]
        key = (tuple(shapes), str(feats[0].device))
        if key not in self._anchor_cache:
            anchors = grid_anchors(shapes, self.strides, self.sizes, self.ratios, device=feats[0].device)
            self._anchor_cache = {key: anchors.float()}  # one input size at a time (fixed sizes)
        per_loc = len(self.sizes[0]) * len(self.ratios)
        return self._anchor_cache[key], [h * w * per_loc for h, w in shapes]

    def forward(
        self,
        feats: list[Tensor],
        image_size: tuple[int, int],
        gt: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Propose regions for the batch.

        Args:
            feats: L maps [B, C, H_l, W_l]; image_size: (H, W) of the input tensor.
            gt: padded (boxes [B, M, 4], mask [B, M]) to compute losses (training), else None.

        Returns:
            proposals [B, K, 4] (detached), mask [B, K], losses (empty without ``gt``).
        """
        anchors, counts = self.anchors(feats)
        objectness, deltas = self.head(feats)
        boxes, _, mask = select_proposals(
            anchors, objectness, deltas, counts, image_size,
            self.pre_nms_topk, self.post_nms_topk, self.nms_thresh, self.min_size,
        )
        losses: dict[str, Tensor] = {}
        if gt is not None:
            labels, matched = rpn_targets(anchors, gt[0], gt[1], self.fg_iou, self.bg_iou)
            losses = rpn_loss(objectness, deltas, anchors, labels, matched, self.batch_per_image,
                              self.positive_fraction)
        return boxes, mask, losses
