"""Shelf-like augmentation of product crops and the class-balanced batches metric learning wants.

:class:`CropAugmenter` turns a cached crop (:class:`~detect.data.crops.CropSet`) into a letterboxed training
image, as a detector's box would cut it from a shelf photo: the box's sides moved in and out (a loose or tight
box, context of the shelf in it), a strip of another product cut in at a side (the neighbour facing), colour
and light changes, blur, a perspective tilt, a price tag or hand over part of it (CoarseDropout), then the
letterbox (longer side ``image_size``, grey padding) the embedder sees at inference. Deterministic per seed.

:class:`ClassBalancedBatches` draws batches of ``P`` classes x ``K`` crops each (with replacement inside a
class that has fewer than ``K``), so every batch has positives for every class in it.
"""

from __future__ import annotations

from collections.abc import Iterator

import albumentations as A
import cv2
import numpy as np
import torch

from detect.config.embedder import CropAugmentConfig
from detect.data.augment import PAD_VALUE, letterbox
from detect.data.crops import CropSet

MIN_SIDE = 4  # a jittered box keeps at least this many pixels a side


def letterboxed_batch(images: list[np.ndarray], size: int) -> torch.Tensor:
    """Crops ``[h, w, 3]`` uint8 -> letterboxed uint8 ``[N, 3, S, S]``."""
    if not images:
        return torch.zeros((0, 3, size, size), dtype=torch.uint8)
    boxed = np.stack([letterbox(np.ascontiguousarray(c), size).image for c in images])
    return torch.from_numpy(boxed).permute(0, 3, 1, 2).contiguous()


def box_crops(cs: CropSet) -> list[np.ndarray]:
    """Each crop cut to its box (no context): what a detector's box gives at inference."""
    out = []
    for img, (x1, y1, x2, y2) in zip(cs.images, cs.boxes):
        a, b = int(max(0, np.floor(x1))), int(max(0, np.floor(y1)))
        c, d = int(max(a + 1, np.ceil(x2))), int(max(b + 1, np.ceil(y2)))
        out.append(img[b:d, a:c])
    return out


class CropAugmenter:
    """``augmenter(crops, index) -> [S, S, 3]`` uint8: crop ``index`` of ``crops`` augmented (see the module doc).

    Args:
        aug: probabilities and the box jitter.
        size: letterbox side ``S``.
        seed: seed of both random streams (numpy for the box and the neighbour, the Compose's own);
            :meth:`set_seed` re-seeds them (per epoch).
    """

    def __init__(self, aug: CropAugmentConfig, size: int, seed: int = 0) -> None:
        self.aug, self.size = aug, size
        t: list = []
        if aug.color > 0:
            t.append(A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03, p=aug.color))
        if aug.blur > 0:
            t.append(A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.MotionBlur(blur_limit=(3, 7))], p=aug.blur))
        if aug.perspective > 0:
            t.append(A.Perspective(scale=(0.02, 0.08), keep_size=True, border_mode=cv2.BORDER_CONSTANT,
                                   fill=PAD_VALUE, p=aug.perspective))
        if aug.hflip > 0:
            t.append(A.HorizontalFlip(p=aug.hflip))
        if aug.occlusion > 0:
            t.append(A.CoarseDropout(num_holes_range=(1, 2), hole_height_range=(0.1, 0.35),
                                     hole_width_range=(0.1, 0.35), fill="random_uniform", p=aug.occlusion))
        self.compose = A.Compose(t, seed=seed)
        self.rng = np.random.default_rng(seed)

    def set_seed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.compose.set_random_seed(seed)

    def jittered(self, crops: CropSet, index: int) -> np.ndarray:
        """Crop ``index`` cut at its box with each side moved by up to ``jitter`` x the box's side."""
        img = crops.images[index]
        h, w = img.shape[:2]
        x1, y1, x2, y2 = crops.boxes[index]
        bw, bh = x2 - x1, y2 - y1
        j = self.aug.jitter
        dx = self.rng.uniform(-j, j, 2) * bw
        dy = self.rng.uniform(-j, j, 2) * bh
        a = int(np.clip(np.floor(x1 + dx[0]), 0, w - MIN_SIDE))
        b = int(np.clip(np.floor(y1 + dy[0]), 0, h - MIN_SIDE))
        c = int(np.clip(np.ceil(x2 + dx[1]), a + MIN_SIDE, w))
        d = int(np.clip(np.ceil(y2 + dy[1]), b + MIN_SIDE, h))
        return img[b:d, a:c]

    def neighbour(self, crop: np.ndarray, crops: CropSet, index: int) -> np.ndarray:
        """``crop`` with a strip (10-30 % of its width) of another class's crop in place of its left or right edge."""
        others = np.flatnonzero(crops.labels != crops.labels[index])
        if not len(others):
            return crop
        other = crops.images[int(self.rng.choice(others))]
        h, w = crop.shape[:2]
        strip = max(1, int(round(w * self.rng.uniform(0.1, 0.3))))
        oh, ow = other.shape[:2]
        scaled = cv2.resize(other, (max(1, round(ow * h / oh)), h), interpolation=cv2.INTER_AREA)
        out = crop.copy()
        if self.rng.random() < 0.5:  # the neighbour on the left: its right edge shows
            out[:, :strip] = scaled[:, -strip:] if scaled.shape[1] >= strip else cv2.resize(scaled, (strip, h))
        else:
            out[:, w - strip:] = scaled[:, :strip] if scaled.shape[1] >= strip else cv2.resize(scaled, (strip, h))
        return out

    def __call__(self, crops: CropSet, index: int) -> np.ndarray:
        crop = self.jittered(crops, index)
        if self.aug.neighbour > 0 and self.rng.random() < self.aug.neighbour:
            crop = self.neighbour(crop, crops, index)
        crop = self.compose(image=np.ascontiguousarray(crop))["image"]
        return letterbox(np.ascontiguousarray(crop), self.size).image


class ClassBalancedBatches:
    """Batches of indices into ``labels`` (int64 ``[N]``): ``P`` classes x ``K`` crops each.

    An epoch has ``ceil(N / (P * K))`` batches; each draws ``P`` classes (all when fewer, cycling through a
    shuffled order so each class comes up about equally often) and ``K`` of each class's crops (a shuffled
    pass through them, refilled when used up). ``set_epoch(e)`` fixes the draws of epoch ``e`` for a ``seed``.
    """

    def __init__(self, labels: np.ndarray, classes_per_batch: int, per_class: int, seed: int = 0) -> None:
        self.labels = np.asarray(labels, np.int64)
        self.by_class = [np.flatnonzero(self.labels == k) for k in range(int(self.labels.max()) + 1)]
        self.classes = [k for k, idx in enumerate(self.by_class) if len(idx)]
        self.p = min(classes_per_batch, len(self.classes))
        self.k = per_class
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return max(1, -(-len(self.labels) // (self.p * self.k)))

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        queue: list[int] = []
        pools: dict[int, list[int]] = {}
        for _ in range(len(self)):
            batch: list[int] = []
            chosen: list[int] = []
            while len(chosen) < self.p:
                if not queue:
                    queue = rng.permutation(self.classes).tolist()
                k = queue.pop()
                if k not in chosen:
                    chosen.append(k)
            for k in chosen:
                for _ in range(self.k):
                    if not pools.get(k):
                        pools[k] = rng.permutation(self.by_class[k]).tolist()
                    batch.append(pools[k].pop())
            yield batch
