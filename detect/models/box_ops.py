"""Box helpers shared by the heads: batched IoU (``torchvision.ops.box_iou`` under ``vmap``) and grid cell
centres. Boxes are xyxy pixels, fp32."""

from __future__ import annotations

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


def cell_centres(height: int, width: int, stride: float, device: torch.device | str | None = None) -> Tensor:
    """Centres ``(x, y)`` [height * width, 2] fp32 of a ``height x width`` map's cells at ``stride``, row-major
    (matching ``map.flatten(2)``): ``((col + 0.5) * stride, (row + 0.5) * stride)``."""
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) * stride
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy], dim=-1).reshape(-1, 2)
