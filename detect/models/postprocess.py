"""The one postprocess every detector ends in: score filter -> batched NMS -> top-k per image.

Its settings are one explicit object, :class:`PostprocessSettings`, held by every detector as ``model.post``
(evaluation changes it for a while with :func:`~detect.models.detector.postprocess_settings`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import batched_nms, clip_boxes_to_image


@dataclass
class PostprocessSettings:
    """How raw detections become final ones.

    Attributes:
        score_thresh: candidates below this score are dropped.
        nms_thresh: IoU threshold of NMS.
        max_detections: detections kept per image (shelves are dense: default 300).
        agnostic: one NMS over all classes (a product gets one box, not one per look-alike class: dense
            shelves); default class-aware.
        pre_nms_topk: at most this many (box, class) candidates per image enter NMS.
    """

    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    max_detections: int = 300
    agnostic: bool = False
    pre_nms_topk: int = 5000

    @classmethod
    def from_config(cls, cfg) -> PostprocessSettings:
        """From the model settings (:class:`~detect.models.options.ModelSettings`: ``score_thresh``, ...)."""
        return cls(cfg.score_thresh, cfg.nms_thresh, cfg.max_detections, cfg.agnostic_nms)

    def replace(self, **changes) -> PostprocessSettings:
        """A copy with ``changes`` applied (None values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def postprocess(
    boxes: Tensor, scores: Tensor, image_size: tuple[int, int], settings: PostprocessSettings | None = None
) -> list[dict[str, Tensor]]:
    """Turn dense per-class scores into final detections for a whole batch.

    Args:
        boxes: decoded boxes, xyxy in input-tensor pixels: [B, N, 4] (shared by all classes) or
            [B, N, C, 4] (class-specific regression, as in Fast R-CNN).
        scores: class probabilities [B, N, C] for classes 1..C (background excluded).
        image_size: (H, W) of the input tensor; boxes are clipped to it.
        settings: thresholds, detection cap and NMS mode (defaults: :class:`PostprocessSettings`).

    Returns:
        B dicts: ``boxes`` float32 [K, 4], ``scores`` [K], ``labels`` int64 [K] in 1..C, sorted by score.
    """
    s = settings or PostprocessSettings()
    bsz, _, c = scores.shape
    cand, top_scores, class_idx = top_candidates(boxes, scores, image_size, s.pre_nms_topk)
    k = top_scores.shape[1]
    image_idx = torch.arange(bsz, device=boxes.device)[:, None].expand(-1, k)
    keep_mask = top_scores > s.score_thresh
    cand, top_scores, class_idx, image_idx = cand[keep_mask], top_scores[keep_mask], class_idx[keep_mask], image_idx[keep_mask]
    groups = image_idx if s.agnostic else image_idx * c + class_idx
    keep = batched_nms(cand, top_scores, groups, s.nms_thresh)  # sorted by score, descending
    # per image, the first max_detections of its kept candidates: a stable sort by image keeps score order,
    # and each candidate's rank within its image comes from the image's start offset
    order = torch.sort(image_idx[keep], stable=True).indices
    keep, out_img = keep[order], image_idx[keep][order]
    counts = torch.bincount(out_img, minlength=bsz)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(keep.numel(), device=keep.device) - starts[out_img]
    sel = rank < s.max_detections
    keep, out_img = keep[sel], out_img[sel]
    per_image = torch.bincount(out_img, minlength=bsz).tolist()
    return [{"boxes": b, "scores": sc, "labels": lab + 1}
            for b, sc, lab in zip(cand[keep].split(per_image), top_scores[keep].split(per_image),
                                  class_idx[keep].split(per_image))]


def top_candidates(boxes: Tensor, scores: Tensor, image_size: tuple[int, int], pre_nms_topk: int
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """The ``pre_nms_topk`` best (box, class) candidates of each image, boxes clipped to the input.

    Args:
        boxes: [B, N, 4] (shared by all classes) or [B, N, C, 4] (class-specific); scores: [B, N, C].

    Returns:
        boxes float32 [B, k, 4], scores float32 [B, k] (descending), class index int64 [B, k] in 0..C-1,
        with k = min(pre_nms_topk, N * C). Traceable (no host sync): the exported graph uses it too.
    """
    bsz, n, c = scores.shape
    k = min(pre_nms_topk, n * c)
    top_scores, top_idx = scores.float().reshape(bsz, n * c).topk(k, dim=1)  # [B, k]
    class_idx = top_idx % c
    if boxes.dim() == 4:  # class-specific boxes: candidate j is (anchor, class) = divmod(top_idx, C)
        flat, idx = boxes.float().reshape(bsz, n * c, 4), top_idx
    else:
        flat, idx = boxes.float(), torch.div(top_idx, c, rounding_mode="floor")
    cand = torch.gather(flat, 1, idx[..., None].expand(-1, -1, 4))  # [B, k, 4]
    return clip_boxes_to_image(cand, image_size), top_scores, class_idx
