"""Augmentation pipelines (albumentations 2.0.8) built from :class:`~detect.config.AugmentConfig`.

A *sample* is ``(image [H, W, 3] uint8 RGB, boxes float32 [N, 4] xyxy pixels, labels int64 [N])``; every
pipeline maps a sample to a sample.

- :func:`letterbox`: resize so the longer side is ``S``, pad bottom/right with 114 grey to ``S x S``.
  ``tensor pixel = original pixel * scale``. The validation pipeline is exactly this (deterministic).
  :func:`boxes_to_original` maps a model's boxes back (``original = tensor / scale``), for eval and predict.
- :class:`TrainPipeline`: colour jitter, Gaussian noise, blur, horizontal/vertical flips, affine
  (rotate/scale/translate, 114 border), letterbox to ``S``, then a bbox-safe random crop
  (``AtLeastOneBBoxRandomCrop`` of 50/65/80 % of ``S``, resized back to ``S``). Transforms whose
  probability is 0 are left out. Boxes keep at least ``min_visibility`` of their area or are dropped
  with their labels; an image that loses every box gives an empty target.
- Labels (ARCHITECTURE.md, "Augmentation": albumentations 2.0.8 turns numeric label fields into float32 and a Compose
  remembers the first label type it saw): we pass two int64 fields of *small indices* —
  ``class_idx`` (index into the sample's unique labels) and ``box_idx`` (0..N-1) — and map the
  survivors back to the original int64 labels, so any label value (250, 10**9) survives exactly.
- :func:`mosaic`: four samples (each already through the tile pipeline) on one ``S x S`` canvas
  around a random centre, boxes shifted, clipped to their quadrant, and dropped when less than
  ``min_visibility`` of their area or under ``min_side`` pixels remains.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import albumentations as A
import cv2
import numpy as np
import torch

from detect.config import AugmentConfig

PAD_VALUE = 114
CROP_FRACTIONS = (0.5, 0.65, 0.8)  # random-crop side as a fraction of S
MIN_BOX_SIDE = 2.0  # pixels; thinner boxes left by augmentation are dropped

Sample = tuple[np.ndarray, np.ndarray, np.ndarray]
Pipeline = Callable[[np.ndarray, np.ndarray, np.ndarray], Sample]


class Letterboxed(NamedTuple):
    image: np.ndarray  # [S, S, 3] uint8
    scale: float  # tensor pixels per original pixel
    boxes: np.ndarray  # float32 [N, 4] in the letterboxed image's pixels


def resize_longest(image: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Resize ``image`` [H, W, C] so its longer side is ``size``: ``(resized, scale)``, dims rounded.

    INTER_AREA when shrinking, INTER_LINEAR when enlarging; no copy when the size already fits.
    """
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if (nw, nh) == (w, h):
        return image, scale
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image), (nw, nh), interpolation=interp), scale


def letterbox(image: np.ndarray, size: int, boxes: np.ndarray | None = None) -> Letterboxed:
    """Resize the longer side to ``size`` and pad bottom/right with :data:`PAD_VALUE` to ``size x size``.

    Args:
        image: [H, W, 3] uint8.
        boxes: optional float [N, 4] xyxy in ``image`` pixels.
    Returns:
        ``(image [S, S, 3] uint8, scale, boxes float32 [N, 4] = boxes * scale, clipped to the image)``.
    """
    resized, scale = resize_longest(image, size)
    h, w = resized.shape[:2]
    if (h, w) != (size, size):
        resized = cv2.copyMakeBorder(np.ascontiguousarray(resized), 0, size - h, 0, size - w,
                                     cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    out = np.zeros((0, 4), np.float32)
    if boxes is not None and len(boxes):
        out = np.asarray(boxes, np.float32).reshape(-1, 4) * np.float32(scale)
        np.clip(out, 0, [w, h, w, h], out=out)
    return Letterboxed(np.ascontiguousarray(resized), scale, out)


def boxes_to_original(boxes: torch.Tensor, scale: float, width: int, height: int) -> torch.Tensor:
    """Undo :func:`letterbox` for boxes: letterboxed tensor pixels -> the original image's pixels.

    Args:
        boxes: ``[K, 4]`` xyxy in tensor pixels (any float dtype, any device).
        scale: the letterbox scale (tensor pixels per original pixel).
        width, height: the original image's size.
    Returns:
        float32 ``[K, 4]`` ``boxes / scale`` clipped to ``[0, width] x [0, height]``, on the same device.
    """
    out = boxes.float() / float(scale)
    out[:, 0::2] = out[:, 0::2].clamp(0, width)
    out[:, 1::2] = out[:, 1::2].clamp(0, height)
    return out


def val_pipeline(size: int) -> Pipeline:
    """Letterbox only (deterministic)."""

    def run(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> Sample:
        lb = letterbox(image, size, boxes)
        return lb.image, lb.boxes, np.asarray(labels, np.int64).reshape(-1)

    return run


class TrainPipeline:
    """Random train-time augmentation of one sample (see the module doc).

    Args:
        aug: probabilities and ranges.
        size: letterbox side ``S``.
        letterbox: False for mosaic tiles: colour, noise, blur, flips and affine only, size unchanged.
        seed: seed of the Compose's own random state (re-seed per DataLoader worker with :meth:`set_seed`).
    """

    def __init__(self, aug: AugmentConfig, size: int, letterbox: bool = True, seed: int | None = None) -> None:
        self.size = size
        self.compose = A.Compose(
            _transforms(aug, size, letterbox),
            bbox_params=A.BboxParams(
                format="pascal_voc", label_fields=["class_idx", "box_idx"], min_visibility=aug.min_visibility,
                min_width=MIN_BOX_SIDE, min_height=MIN_BOX_SIDE, clip=True, filter_invalid_bboxes=True,
            ),
            seed=seed,
        )

    def set_seed(self, seed: int) -> None:
        self.compose.set_random_seed(seed)

    def __call__(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> Sample:
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        labels = np.asarray(labels, np.int64).reshape(-1)
        uniq, class_idx = np.unique(labels, return_inverse=True)
        out = self.compose(image=image, bboxes=boxes, class_idx=class_idx.astype(np.int64).reshape(-1),
                           box_idx=np.arange(len(boxes), dtype=np.int64))
        keep = np.rint(np.asarray(out["box_idx"], np.float64)).astype(np.int64).reshape(-1)
        new_boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
        new_labels = labels[keep]
        cls = np.rint(np.asarray(out["class_idx"], np.float64)).astype(np.int64).reshape(-1)
        if len(new_labels) != len(new_boxes) or (len(cls) and not np.array_equal(uniq[cls], new_labels)):
            raise RuntimeError("albumentations returned labels out of step with the boxes")
        return np.ascontiguousarray(out["image"]), new_boxes, new_labels


def _transforms(aug: AugmentConfig, size: int, letterbox: bool) -> list:
    t: list = []
    if aug.color_jitter > 0:  # hue kept small: colour is what tells many brands apart
        t.append(A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.02, p=aug.color_jitter))
    if aug.noise > 0:
        t.append(A.GaussNoise(std_range=(0.02, 0.06), p=aug.noise))
    if aug.blur > 0:
        t.append(A.Blur(blur_limit=(3, 5), p=aug.blur))
    if aug.hflip > 0:
        t.append(A.HorizontalFlip(p=aug.hflip))
    if aug.vflip > 0:
        t.append(A.VerticalFlip(p=aug.vflip))
    if aug.affine_p > 0:
        t.append(A.Affine(
            scale=tuple(aug.scale), translate_percent=(-aug.translate, aug.translate),
            rotate=(-aug.rotate, aug.rotate), border_mode=cv2.BORDER_CONSTANT, fill=PAD_VALUE, p=aug.affine_p,
        ))
    if letterbox:
        t += _letterbox_transforms(size)
        if aug.crop > 0:
            crops = [A.AtLeastOneBBoxRandomCrop(int(f * size), int(f * size), p=1.0) for f in CROP_FRACTIONS]
            t += [A.OneOf(crops, p=aug.crop), A.LongestMaxSize(max_size=size, p=1.0)]
    return t


def _letterbox_transforms(size: int) -> list:
    return [
        A.LongestMaxSize(max_size=size, p=1.0),
        A.PadIfNeeded(min_height=size, min_width=size, position="top_left", border_mode=cv2.BORDER_CONSTANT,
                      fill=PAD_VALUE, p=1.0),
    ]


def build_pipeline(aug: AugmentConfig | None, size: int, train: bool, seed: int | None = None) -> Pipeline:
    """The train pipeline when ``train`` and ``aug`` is given, else the letterbox-only val pipeline."""
    if train and aug is not None:
        return TrainPipeline(aug, size, letterbox=True, seed=seed)
    return val_pipeline(size)


def mosaic(tiles: Sequence[Sample], size: int, rng: np.random.Generator, min_visibility: float = 0.3,
           min_side: float = MIN_BOX_SIDE, scale_range: tuple[float, float] = (0.5, 1.0)) -> Sample:
    """Four samples on one ``size x size`` canvas (YOLO-style mosaic).

    A random centre ``(cx, cy)`` in the middle 40 % splits the canvas into quadrants; tile ``i`` (top-left,
    top-right, bottom-left, bottom-right) is resized so its longer side is ``size * U(scale_range)`` and
    placed with its inner corner on the centre; what overflows its quadrant is cut off. Boxes are
    shifted, clipped to the tile's visible part and kept only if at least ``min_visibility`` of their
    area and ``min_side`` pixels in each direction remain.

    Returns ``(image [S, S, 3] uint8, boxes float32 [M, 4], labels int64 [M])``.
    """
    if len(tiles) != 4:
        raise ValueError(f"mosaic needs 4 tiles, got {len(tiles)}")
    canvas = np.full((size, size, 3), PAD_VALUE, np.uint8)
    cx, cy = (int(rng.uniform(0.3, 0.7) * size) for _ in range(2))
    all_boxes, all_labels = [], []
    for i, (image, boxes, labels) in enumerate(tiles):
        h, w = image.shape[:2]
        s = size * rng.uniform(*scale_range) / max(h, w)
        tw, th = max(1, round(w * s)), max(1, round(h * s))
        tile = cv2.resize(np.ascontiguousarray(image), (tw, th), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        left, top = i % 2 == 0, i < 2
        x0 = cx - tw if left else cx
        y0 = cy - th if top else cy
        vx1, vx2 = (max(x0, 0), cx) if left else (cx, min(x0 + tw, size))
        vy1, vy2 = (max(y0, 0), cy) if top else (cy, min(y0 + th, size))
        if vx2 <= vx1 or vy2 <= vy1:
            continue
        canvas[vy1:vy2, vx1:vx2] = tile[vy1 - y0 : vy2 - y0, vx1 - x0 : vx2 - x0]
        fx, fy = tw / w, th / h  # exact per-axis factors of the rounded resize
        b = np.asarray(boxes, np.float32).reshape(-1, 4) * np.array([fx, fy, fx, fy], np.float32)
        b += np.array([x0, y0, x0, y0], np.float32)
        clipped = np.clip(b, [vx1, vy1, vx1, vy1], [vx2, vy2, vx2, vy2]).astype(np.float32)
        keep = _visible(b, clipped, min_visibility, min_side)
        all_boxes.append(clipped[keep])
        all_labels.append(np.asarray(labels, np.int64).reshape(-1)[keep])
    boxes = np.concatenate(all_boxes) if all_boxes else np.zeros((0, 4), np.float32)
    labels = np.concatenate(all_labels) if all_labels else np.zeros((0,), np.int64)
    return canvas, boxes.astype(np.float32).reshape(-1, 4), labels.astype(np.int64)


def _visible(full: np.ndarray, clipped: np.ndarray, min_visibility: float, min_side: float) -> np.ndarray:
    """bool [N]: the clipped box keeps enough of the full box's area and is at least ``min_side`` wide and high."""
    fw, fh = full[:, 2] - full[:, 0], full[:, 3] - full[:, 1]
    cw, ch = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    area = np.maximum(fw * fh, 1e-6)
    return (cw >= min_side) & (ch >= min_side) & (cw * ch >= min_visibility * area)
