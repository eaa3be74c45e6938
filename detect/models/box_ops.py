"""Box helpers: batched IoU for the heads (``torchvision.ops.box_iou`` under ``vmap``), grid cell centres, and
the one numpy IoU the report and the audit use (:func:`iou_matrix`). Boxes are xyxy pixels; the heads' are fp32.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou


def batched_box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU per image: ``a`` [B, N, 4] with ``b`` [B, M, 4] (per image) or [M, 4] (shared) -> [B, N, M] fp32.

    Pairs whose union is empty (zero-area padding rows) get IoU 0, not NaN.
    """
    a = a.float()
    b = b.float()
    if b.dim() == 2:
        iou = box_iou(a.reshape(-1, 4), b).view(a.shape[0], a.shape[1], b.shape[0])
    else:
        iou = torch.vmap(box_iou)(a, b)
    return iou.nan_to_num(0.0)


def iou_matrix(a: np.ndarray | Tensor, b: np.ndarray | Tensor) -> np.ndarray:
    """IoU of every box of ``a`` [N, 4] with every box of ``b`` [M, 4] (xyxy, numpy or tensors) -> float64 [N, M].

    ``torchvision.ops.box_iou`` in float64; a pair whose union is empty (two zero-area boxes) gets 0, not NaN.
    """
    a64 = torch.as_tensor(np.asarray(a, np.float64)).reshape(-1, 4)
    b64 = torch.as_tensor(np.asarray(b, np.float64)).reshape(-1, 4)
    if len(a64) == 0 or len(b64) == 0:
        return np.zeros((len(a64), len(b64)), np.float64)
    return box_iou(a64, b64).nan_to_num(0.0).numpy()


def intersection_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection area of every box of ``a`` [N, 4] with every box of ``b`` [M, 4] (xyxy) -> float64 [N, M]."""
    a64 = np.asarray(a, np.float64).reshape(-1, 1, 4)
    b64 = np.asarray(b, np.float64).reshape(1, -1, 4)
    wh = np.clip(np.minimum(a64[..., 2:], b64[..., 2:]) - np.maximum(a64[..., :2], b64[..., :2]), 0, None)  # [N, M, 2]
    return wh[..., 0] * wh[..., 1]


def cell_centres(height: int, width: int, stride: float, device: torch.device | str | None = None) -> Tensor:
    """Centres ``(x, y)`` [height * width, 2] fp32 of a ``height x width`` map's cells at ``stride``, row-major
    (matching ``map.flatten(2)``): ``((col + 0.5) * stride, (row + 0.5) * stride)``."""
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) * stride
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy], dim=-1).reshape(-1, 2)
