"""Box <-> regression-delta coding (Faster R-CNN parameterisation), always in fp32."""

from __future__ import annotations

import math

import torch
from torch import Tensor

BBOX_CLIP = math.log(1000.0 / 16)  # largest dw/dh before exp (as torchvision)


def _centers(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


def encode(gt: Tensor, anchors: Tensor, weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)) -> Tensor:
    """Deltas that turn ``anchors`` into ``gt``: both ``[..., 4]`` xyxy (broadcast) -> ``[..., 4]`` (dx, dy, dw, dh)."""
    gt, anchors = gt.float(), anchors.float()
    gx, gy, gw, gh = _centers(gt)
    ax, ay, aw, ah = _centers(anchors)
    aw, ah = aw.clamp(min=1e-6), ah.clamp(min=1e-6)
    wx, wy, ww, wh = weights
    return torch.stack([
        wx * (gx - ax) / aw,
        wy * (gy - ay) / ah,
        ww * torch.log(gw.clamp(min=1e-6) / aw),
        wh * torch.log(gh.clamp(min=1e-6) / ah),
    ], dim=-1)


def decode(deltas: Tensor, anchors: Tensor, weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)) -> Tensor:
    """Inverse of :func:`encode`: deltas ``[..., 4]`` + anchors ``[..., 4]`` (broadcast) -> boxes ``[..., 4]`` xyxy.

    ``dw``/``dh`` are clamped at log(1000/16) so a wild prediction cannot overflow.
    """
    deltas, anchors = deltas.float(), anchors.float()
    ax, ay, aw, ah = _centers(anchors)
    wx, wy, ww, wh = weights
    dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
    dw = (deltas[..., 2] / ww).clamp(max=BBOX_CLIP)
    dh = (deltas[..., 3] / wh).clamp(max=BBOX_CLIP)
    cx, cy = ax + dx * aw, ay + dy * ah
    w, h = aw * torch.exp(dw), ah * torch.exp(dh)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)
