"""The one postprocess every detector ends in: score filter -> batched NMS -> top-k per image."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import batched_nms, clip_boxes_to_image


def postprocess(
    boxes: Tensor,
    scores: Tensor,
    image_size: tuple[int, int],
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    max_detections: int = 300,
    pre_nms_topk: int = 5000,
) -> list[dict[str, Tensor]]:
    """Turn dense per-class scores into final detections for a whole batch.

    Args:
        boxes: decoded boxes, xyxy in input-tensor pixels: [B, N, 4] (shared by all classes) or
            [B, N, C, 4] (class-specific regression, as in Fast R-CNN).
        scores: class probabilities [B, N, C] for classes 1..C (background excluded).
        image_size: (H, W) of the input tensor; boxes are clipped to it.
        score_thresh: candidates below this score are dropped.
        nms_thresh: IoU threshold of class-aware NMS.
        max_detections: detections kept per image (shelves are dense: default 300).
        pre_nms_topk: at most this many (box, class) candidates per image enter NMS.

    Returns:
        B dicts: ``boxes`` float32 [K, 4], ``scores`` [K], ``labels`` int64 [K] in 1..C, sorted by score.
    """
    bsz, n, c = scores.shape
    boxes = boxes.float()
    scores = scores.float()
    # One batched NMS over all images: the group key separates image and class.
    flat_scores = scores.reshape(bsz, n * c)
    k = min(pre_nms_topk, n * c)
    top_scores, top_idx = flat_scores.topk(k, dim=1)  # [B, k]
    anchor_idx = top_idx // c
    class_idx = top_idx % c
    if boxes.dim() == 4:
        cand = boxes[torch.arange(bsz, device=boxes.device)[:, None], anchor_idx, class_idx]  # [B, k, 4]
    else:
        cand = torch.gather(boxes, 1, anchor_idx[..., None].expand(-1, -1, 4))  # [B, k, 4]
    cand = clip_boxes_to_image(cand, image_size)
    image_idx = torch.arange(bsz, device=boxes.device)[:, None].expand(-1, k)
    keep_mask = top_scores > score_thresh
    cand, top_scores, class_idx, image_idx = cand[keep_mask], top_scores[keep_mask], class_idx[keep_mask], image_idx[keep_mask]
    groups = image_idx * c + class_idx
    keep = batched_nms(cand, top_scores, groups, nms_thresh)  # sorted by score, descending
    out_img = image_idx[keep]
    results = []
    for i in range(bsz):
        sel = keep[out_img == i][:max_detections]
        results.append({"boxes": cand[sel], "scores": top_scores[sel], "labels": class_idx[sel] + 1})
    return results
