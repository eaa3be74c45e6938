"""Shared box helpers: batched IoU (shared and per-image boxes, padding rows) and cell centres."""

from __future__ import annotations

import torch
from torchvision.ops import box_iou

from detect.models.box_ops import batched_box_iou, cell_centres


def test_batched_iou_matches_torchvision_and_pads_to_zero():
    a = torch.tensor([[[0.0, 0, 10, 10], [0, 0, 0, 0]], [[5, 5, 15, 15], [2, 2, 4, 4]]])  # [2, 2, 4], one padding row
    b = torch.tensor([[[0.0, 0, 10, 10], [5, 0, 15, 10], [0, 0, 0, 0]], [[5, 5, 15, 15], [0, 0, 3, 3], [9, 9, 9, 9]]])
    iou = batched_box_iou(a, b)
    assert iou.shape == (2, 2, 3) and not iou.isnan().any()
    assert torch.allclose(iou[0, 0], torch.tensor([1.0, 1 / 3, 0.0]))
    assert iou[0, 1].abs().sum() == 0  # zero-area padding: 0, not NaN
    assert torch.allclose(iou[1], box_iou(a[1], b[1]).nan_to_num(0.0))
    shared = batched_box_iou(a, b[0])  # the same [M, 4] boxes for every image (anchors, priors)
    assert shared.shape == (2, 2, 3) and torch.allclose(shared[1], box_iou(a[1], b[0]))


def test_cell_centres_are_row_major_half_stride_offsets():
    c = cell_centres(2, 3, 8)
    assert c.tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]
