"""Cross-class duplicates: products that carry boxes of more than one class (dense shelves, look-alike brands).

Class-aware NMS keeps one box per class on a product, so a detector unsure between look-alike brands reports
the product several times; class-agnostic NMS (``model.agnostic_nms``) keeps one. This counts the extras.
"""

from __future__ import annotations

import numpy as np
import torch

from detect.models.box_ops import iou_matrix


def cross_class_duplicates(gt_boxes: np.ndarray | torch.Tensor, boxes: np.ndarray | torch.Tensor,
                           labels: np.ndarray | torch.Tensor, iou: float = 0.5) -> np.ndarray:
    """Per ground-truth product, the number of classes beyond the first that have a box on it.

    Args:
        gt_boxes: products, float [G, 4] xyxy.
        boxes: detections (already thresholded by score), float [D, 4] xyxy in the same pixels.
        labels: int [D], the detections' classes.
        iou: a detection lies on a product at IoU >= this.
    Returns:
        int64 [G]: ``distinct classes on the product - 1`` (0 for a product with one class or no box).
    """
    lab = np.asarray(labels, np.int64).reshape(-1)
    on = iou_matrix(gt_boxes, boxes) >= iou  # [G, D]
    return np.array([max(0, len(np.unique(lab[row])) - 1) for row in on], np.int64)
