"""Augmentation: boxes follow the pixels (flips, affine, letterbox, mosaic), visibility rules, seeding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detect.config import AugmentConfig
from detect.data.augment import TrainPipeline, boxes_to_original, letterbox, mosaic, val_pipeline


def _marked(h: int = 60, w: int = 100) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A grey image with one bright rectangle exactly under its box, and a big label id."""
    img = np.full((h, w, 3), 40, np.uint8)
    img[10:30, 20:50] = 250
    return img, np.array([[20, 10, 50, 30]], np.float32), np.array([10**9], np.int64)


def _box_of_bright(img: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(img[..., 0] > 150)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_letterbox_round_trip_and_padding():
    img, boxes, _ = _marked()
    lb = letterbox(img, 50, boxes)
    assert lb.image.shape == (50, 50, 3) and lb.scale == pytest.approx(0.5)
    assert lb.boxes.tolist() == [[10, 5, 25, 15]]
    assert (lb.image[30:] == 114).all()  # bottom padding, grey 114
    assert np.allclose(lb.boxes / lb.scale, boxes)  # tensor pixels back to original pixels
    back = boxes_to_original(torch.from_numpy(lb.boxes).half(), lb.scale, 100, 60)
    assert back.dtype == torch.float32 and back.tolist() == boxes.tolist()


def test_boxes_to_original_clips_to_the_original_image():
    """A box reaching into the padding (or past the canvas) ends at the original image's border."""
    tensor_px = torch.tensor([[-4.0, 10.0, 60.0, 45.0], [0.0, 0.0, 0.0, 0.0]])
    back = boxes_to_original(tensor_px, 0.5, 100, 60)
    assert back.tolist() == [[0.0, 20.0, 100.0, 60.0], [0.0, 0.0, 0.0, 0.0]]
    assert boxes_to_original(torch.zeros((0, 4)), 0.5, 100, 60).shape == (0, 4)


@pytest.mark.parametrize("aug", [AugmentConfig(hflip=1.0), AugmentConfig(hflip=0, vflip=1.0),
                                 AugmentConfig(hflip=0, affine_p=1.0, scale=(0.7, 0.7), rotate=0, translate=0)])
def test_boxes_follow_the_pixels_and_big_labels_survive(aug):
    img, boxes, labels = _marked(100, 100)
    out_img, out_boxes, out_labels = TrainPipeline(aug, 100, seed=1)(img, boxes, labels)
    assert out_labels.tolist() == [10**9] and out_boxes.dtype == np.float32
    assert np.allclose(out_boxes[0], _box_of_bright(out_img), atol=1.5), (out_boxes, _box_of_bright(out_img))


def test_boxes_mostly_cut_away_are_dropped():
    img = np.full((100, 100, 3), 40, np.uint8)
    # a 2x zoom about the centre maps x -> 50 + 2 (x - 50): the first box stays whole, the second keeps
    # 6 % of its area inside the image
    boxes = np.array([[40, 40, 60, 60], [70, 70, 90, 90]], np.float32)
    aug = AugmentConfig(hflip=0, affine_p=1.0, scale=(2.0, 2.0), rotate=0, translate=0, min_visibility=0.5)
    _, out_boxes, out_labels = TrainPipeline(aug, 100, seed=0)(img, boxes, np.array([1, 2]))
    assert out_labels.tolist() == [1]
    assert np.allclose(out_boxes, [[30, 30, 70, 70]], atol=1.0)


def test_same_seed_same_sample_and_val_is_deterministic():
    img, boxes, labels = _marked(100, 100)
    aug = AugmentConfig(hflip=0.5, affine_p=1.0, rotate=10, translate=0.1, color_jitter=1.0)
    a = TrainPipeline(aug, 64, seed=7)(img, boxes, labels)
    b = TrainPipeline(aug, 64, seed=7)(img, boxes, labels)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    v1, v2 = val_pipeline(64)(img, boxes, labels), val_pipeline(64)(img, boxes, labels)
    assert np.array_equal(v1[0], v2[0]) and np.allclose(v1[1], [[12.8, 6.4, 32.0, 19.2]])


def test_mosaic_places_four_tiles_and_their_boxes():
    rng = np.random.default_rng(0)
    tiles = [_marked(100, 100) for _ in range(4)]
    tiles = [(t[0], t[1], np.array([k + 1])) for k, t in enumerate(tiles)]
    img, boxes, labels = mosaic(tiles, 128, rng, min_visibility=0.3)
    assert img.shape == (128, 128, 3) and boxes.shape[1] == 4 and len(boxes) == len(labels)
    assert set(labels.tolist()) <= {1, 2, 3, 4} and len(labels) >= 1
    for b in boxes:  # every kept box sits on bright pixels of its tile
        x1, y1, x2, y2 = np.round(b).astype(int)
        assert img[y1:y2, x1:x2, 0].mean() > 150
    with pytest.raises(ValueError, match="4 tiles"):
        mosaic(tiles[:3], 128, rng)
