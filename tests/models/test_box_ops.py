"""Shared box helpers: batched IoU (shared and per-image boxes, padding rows), cell centres, and the numpy IoU
(against ``torchvision.ops.box_iou``) and intersection matrices."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou

from detect.models.box_ops import batched_box_iou, cell_centres, intersection_matrix, iou_matrix


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


def test_iou_matrix_is_torchvision_box_iou_in_float64():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 50, (7, 2))
    a = np.concatenate([xy, xy + rng.uniform(1, 30, (7, 2))], axis=1)  # [7, 4] xyxy
    b = np.concatenate([a[:3] + 2.5, [[0.0, 0, 0, 0]]])  # [4, 4], one zero-area box
    iou = iou_matrix(a, b)
    assert iou.shape == (7, 4) and iou.dtype == np.float64
    expected = box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    assert np.array_equal(iou, expected)
    assert iou_matrix(torch.from_numpy(a).float(), b[:2]).shape == (7, 2)  # tensors are taken too
    assert iou_matrix(a, np.zeros((0, 4))).shape == (7, 0) and iou_matrix(np.zeros((0, 4)), b).shape == (0, 4)
    empty = np.array([[3.0, 3, 3, 3]])
    assert iou_matrix(empty, empty).tolist() == [[0.0]]  # empty union: 0, where torchvision gives NaN
    assert box_iou(torch.from_numpy(empty), torch.from_numpy(empty)).isnan().all()


def test_intersection_matrix_areas():
    a = np.array([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    b = np.array([[5.0, 5, 15, 15], [0, 0, 2, 3], [40, 40, 50, 50]])
    assert intersection_matrix(a, b).tolist() == [[25.0, 6.0, 0.0], [0.0, 0.0, 0.0]]
