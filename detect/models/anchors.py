"""Anchor (default box) generators. Order: level-major, then row y, column x, then anchor; fp32 pixels."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from detect.models.box_ops import cell_centres


def cell_anchors(sizes: list[float], ratios: list[float]) -> Tensor:
    """Zero-centred anchors ``[len(sizes) * len(ratios), 4]`` xyxy; ratio = h / w, area = size ** 2.

    Order: for each size, each ratio.
    """
    rows = []
    for s in sizes:
        for r in ratios:
            w, h = s / math.sqrt(r), s * math.sqrt(r)
            rows.append([-w / 2, -h / 2, w / 2, h / 2])
    return torch.tensor(rows, dtype=torch.float32)


def grid_anchors(feature_sizes: list[tuple[int, int]], strides: list[int], sizes: list[list[float]],
                 ratios: list[float], device: torch.device | str | None = None) -> Tensor:
    """Anchors centred on every cell of every level.

    Args:
        feature_sizes: ``(H_l, W_l)`` per level; strides: pixels per cell per level;
        sizes: anchor sizes per level; ratios: h / w ratios shared by all levels.
    Returns:
        ``[sum_l H_l * W_l * len(sizes[l]) * len(ratios), 4]`` xyxy in input pixels; cell centres at
        ``(x + 0.5) * stride``.
    """
    out = []
    for (h, w), stride, level_sizes in zip(feature_sizes, strides, sizes):
        base = cell_anchors(level_sizes, ratios).to(device)
        centers = cell_centres(h, w, stride, device).repeat(1, 2)[:, None, :]  # [H*W, 1, 4] as (x, y, x, y)
        out.append((centers + base[None]).reshape(-1, 4))
    return torch.cat(out)


def ssd_sizes(num_levels: int, image_size: int, min_scale: float, max_scale: float) -> list[list[float]]:
    """SSD default-box sizes per level: scales linear from ``min_scale`` to ``max_scale`` of the image side,
    plus the geometric mean with the next scale (the extra square box of the SSD paper)."""
    if num_levels == 1:
        scales = [min_scale, max_scale]
    else:
        scales = [min_scale + (max_scale - min_scale) * i / (num_levels - 1) for i in range(num_levels)]
        scales.append(min(1.0, 2 * scales[-1] - scales[-2]))
    return [[scales[i] * image_size, math.sqrt(scales[i] * scales[i + 1]) * image_size] for i in range(num_levels)]


def ssd_default_boxes(feature_sizes: list[tuple[int, int]], strides: list[int], image_size: int,
                      ratios: list[float], min_scale: float = 0.07, max_scale: float = 0.9,
                      device: torch.device | str | None = None) -> Tensor:
    """SSD default boxes ``[A_total, 4]`` xyxy pixels: per cell, every ratio at the level's scale plus the
    in-between square (so ``len(ratios) + 1`` boxes per cell when 1.0 is among the ratios)."""
    sizes = ssd_sizes(len(feature_sizes), image_size, min_scale, max_scale)
    out = []
    for (h, w), stride, (s, s_next) in zip(feature_sizes, strides, sizes):
        base = torch.cat([cell_anchors([s], ratios), cell_anchors([s_next], [1.0])]).to(device)
        centers = cell_centres(h, w, stride, device).repeat(1, 2)[:, None, :]  # [H*W, 1, 4] as (x, y, x, y)
        out.append((centers + base[None]).reshape(-1, 4))
    return torch.cat(out)


def num_ssd_boxes_per_cell(ratios: list[float]) -> int:
    """Default boxes per cell of :func:`ssd_default_boxes`."""
    return len(ratios) + 1
