"""A detector as one self-contained graph: ``dense`` -> top-k -> score filter -> NMS -> top ``max_detections``.

:class:`SelfContained` is what ``retail-detect export`` traces to ONNX (and OpenVINO reads from it). It takes

- ``images`` float32 ``[B, 3, S, S]`` in 0..255, letterboxed as in training (dynamic ``B``),
- ``score_thresh`` float32 ``[1]``: candidates scoring at or below it are dropped (predict passes its
  ``--conf``, eval 0.001), so one file serves both,

and returns the final detections of the whole batch as flat rows, sorted by image, then by score:

- ``boxes`` float32 ``[N, 4]`` xyxy in input pixels, ``scores`` float32 ``[N]``, ``labels`` int64 ``[N]`` in
  1..C, ``batch_index`` int64 ``[N]`` (the image of each row).

NMS is ONNX's own ``NonMaxSuppression``, per image and per class (one class for class-agnostic NMS), on the
same ``pre_nms_topk`` candidates as :func:`~detect.models.postprocess.postprocess`; then at most
``max_detections`` per image (no fixed 300: the recipe's value). In eager mode the same graph runs
torchvision's ``batched_nms``, so the export can be checked against PyTorch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms

from detect.models.postprocess import PostprocessSettings, top_candidates

OUTPUT_NAMES = ("boxes", "scores", "labels", "batch_index")
INPUT_NAMES = ("images", "score_thresh")


class _NonMaxSuppression(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` (boxes [B, N, 4], scores [B, K, N]) -> selected [M, 3] int64 (image, class, box).

    Eager: torchvision's ``batched_nms`` over (image, class) groups, rows ordered as ONNX Runtime orders them
    (image, then class, then score descending).
    """

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, max_per_class: Tensor, iou: Tensor, score_thresh: Tensor) -> Tensor:
        b, k, n = scores.shape
        img, cls, box = torch.meshgrid(torch.arange(b), torch.arange(k), torch.arange(n), indexing="ij")
        flat = scores.reshape(-1)
        ok = flat > score_thresh.reshape(())
        img, cls, box, flat = img.reshape(-1)[ok], cls.reshape(-1)[ok], box.reshape(-1)[ok], flat[ok]
        keep = batched_nms(boxes[img, box], flat, img * k + cls, float(iou.reshape(())))
        keep = keep[torch.argsort(img[keep] * k + cls[keep], stable=True)]  # groups in order, score order inside
        return torch.stack([img[keep], cls[keep], box[keep]], 1)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class, iou, score_thresh):
        return g.op("NonMaxSuppression", boxes, scores, max_per_class, iou, score_thresh, center_point_box_i=0)


def _exporting() -> bool:
    return torch.onnx.is_in_onnx_export()


def _sort_by_image(batch_index: Tensor, scores: Tensor) -> Tensor:
    """Order [M] of rows by image, then score descending. Exported, the second sort is on the unique int64
    key ``image * M + rank by score``: no ties, so no runtime's tie-breaking matters (OpenVINO's ``TopK``
    does not keep the input order of equal keys)."""
    if _exporting():
        m = scores.shape[0]
        by_score = torch.topk(scores, m, largest=True, sorted=True).indices
        key = batch_index[by_score] * m + torch.arange(m, dtype=torch.int64)
        by_image = torch.topk(key, m, largest=False, sorted=True).indices
        return by_score[by_image]
    by_score = torch.argsort(scores, descending=True, stable=True)
    return by_score[torch.argsort(batch_index[by_score], stable=True)]


def flat_detections(boxes: Tensor, scores: Tensor, image_size: tuple[int, int], post: PostprocessSettings,
                    score_thresh: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Dense outputs -> final detections as flat rows (see the module docstring).

    Args:
        boxes: [B, N, 4] or [B, N, C, 4] xyxy input pixels; scores: [B, N, C] probabilities of classes 1..C.
        image_size: (H, W) of the input; post: NMS threshold, class-agnostic or not, caps.
        score_thresh: float32 [1].

    Returns:
        boxes [M, 4], scores [M], labels int64 [M] in 1..C, batch_index int64 [M], by image then score.
    """
    bsz = scores.shape[0]
    cand, top_scores, class_idx = top_candidates(boxes, scores, image_size, post.pre_nms_topk)  # [B, k, ...]
    k = top_scores.shape[1]
    groups = 1 if post.agnostic else scores.shape[2]
    # scores per NMS group [B, groups, k]: a candidate scores only in its own class (0 elsewhere, below any threshold)
    group_idx = torch.zeros_like(class_idx) if post.agnostic else class_idx
    nms_scores = torch.zeros(bsz, groups, k, dtype=top_scores.dtype, device=top_scores.device)
    nms_scores = nms_scores.scatter(1, group_idx[:, None, :], top_scores[:, None, :])
    max_per_class = torch.tensor([k], dtype=torch.int64)
    iou = torch.tensor([post.nms_thresh], dtype=torch.float32)
    selected = _NonMaxSuppression.apply(cand, nms_scores, max_per_class, iou, score_thresh.reshape(1).float())
    img, cand_idx = selected[:, 0], selected[:, 2]
    flat = img * k + cand_idx
    out_scores = top_scores.reshape(-1)[flat]
    out_boxes = cand.reshape(-1, 4)[flat]
    out_labels = class_idx.reshape(-1)[flat] + 1
    order = _sort_by_image(img, out_scores)
    img, out_scores, out_boxes, out_labels = img[order], out_scores[order], out_boxes[order], out_labels[order]
    # rank of each row inside its image; rows past max_detections are dropped
    counts = (img[None, :] == torch.arange(bsz, device=img.device)[:, None]).sum(1)  # [B]
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(img.shape[0], device=img.device) - starts[img]
    sel = rank < post.max_detections
    return out_boxes[sel], out_scores[sel], out_labels[sel], img[sel]


class SelfContained(nn.Module):
    """``model.dense`` + :func:`flat_detections`: the graph ``retail-detect export`` writes.

    Args:
        model: a detector with ``dense(images) -> (boxes, scores)`` (``exportable = True``).
        post: its postprocess settings (the recipe's NMS threshold, class-agnostic NMS, ``max_detections``).
    """

    def __init__(self, model: nn.Module, post: PostprocessSettings) -> None:
        super().__init__()
        self.model = model
        self.post = post

    def forward(self, images: Tensor, score_thresh: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """images float32 [B, 3, S, S] 0..255, score_thresh [1] -> boxes [M, 4], scores [M], labels [M],
        batch_index [M]."""
        boxes, scores = self.model.dense(images)
        return flat_detections(boxes, scores, (int(images.shape[-2]), int(images.shape[-1])), self.post, score_thresh)
