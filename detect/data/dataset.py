"""Records -> ``(image uint8 [3, S, S], target)`` samples for the detectors.

Every image is first brought to its *base* form: decoded with :func:`~data_tools.images.read_image`
(EXIF applied, any mode -> RGB) and resized so its longer side is ``S`` (``scale = S / max(W, H)``,
shorter side rounded); the record's boxes are multiplied by the same ``scale``. Training then runs the
augmentation pipeline (or a 4-image mosaic) on the base image; validation only pads it to ``S x S``.
So ``target["boxes"]`` of a validation sample are exactly ``record.boxes * scale`` (clipped to the
image), and ``original pixel = tensor pixel / scale``.

Image cache (``cache_images=True``): the base images of the whole dataset are decoded once, by a
thread pool (PIL and OpenCV release the GIL), into **one** flat uint8 array (about
``N * S * S * 3`` bytes at most: 2,000 images at 320 px are 0.6 GB). :func:`~detect.data.loader.build_loader`
builds it in the main process before the DataLoader workers start, so forked workers share its pages
copy-on-write instead of each decoding every image again. If a worker meets an unbuilt cache (a
DataLoader built by hand), it falls back to caching lazily, per worker, the images it is asked for.
An image that cannot be read raises :class:`~data_tools.images.ImageError` (with its path) when its
sample is requested; :meth:`DetectionDataset.check_images` lists them all up front so the trainer can
drop those records.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from data_tools.images import ImageError, read_image
from data_tools.progress import progress as stage_progress
from data_tools.records import RecordSet
from detect.config import AugmentConfig
from detect.data.augment import TrainPipeline, build_pipeline, mosaic

PROGRESS_MIN_IMAGES = 2000  # show a progress bar when caching at least this many images
PROPOSAL_LABEL = 0  # label of the proposal boxes inside a sample (class labels are 1..K)


def base_size(width: int, height: int, size: int) -> tuple[int, int, float]:
    """``(w, h, scale)`` of an image of ``width x height`` resized so its longer side is ``size``."""
    scale = size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale)), scale


class DetectionDataset(Dataset):
    """Samples of a RecordSet, letterboxed to ``image_size`` (see the module doc).

    Args:
        rs: the records; image paths are relative to ``rs.image_root``.
        image_size: ``S``; every image comes out ``[3, S, S]``.
        augment: augmentation settings (None: no augmentation, even when ``train``).
        train: use the random train pipeline (and mosaic when ``augment.mosaic > 0``).
        cache_images: keep decoded base images in RAM (module doc).
        seed: seed of the augmentation RNGs; DataLoader workers re-seed with :meth:`set_seed`.

        proposals: external region proposals, per record float32 ``[P, 4]`` xyxy in original pixels
            (:func:`detect.data.proposals.proposals_for_records`), or None.

    ``ds[i]`` -> ``(image uint8 [3, S, S], target)``; target = ``{"boxes": float32 [N, 4] xyxy in tensor
    pixels, "labels": int64 [N] in 1..K, "image_id": i + 1, "scale": float, "orig_size": (H, W)}``, plus
    ``"proposals": float32 [P, 4]`` in tensor pixels when the dataset has them: they ride through
    augmentation and mosaic as boxes of label :data:`PROPOSAL_LABEL`, so they move with the image.
    The image tensor is a ``[3, S, S]`` view of ``[S, S, 3]`` memory (channels-last).
    """

    def __init__(self, rs: RecordSet, image_size: int, augment: AugmentConfig | None, train: bool,
                 cache_images: bool = True, seed: int = 0, proposals: list[np.ndarray] | None = None) -> None:
        if proposals is not None and len(proposals) != len(rs.records):
            raise ValueError(f"got proposals for {len(proposals)} records but the dataset has {len(rs.records)}")
        self.rs = rs
        self.proposals = proposals
        self.seed = seed
        self.size = int(image_size)
        self.augment = augment
        self.train = train
        self.cache_images = cache_images
        self.pipeline = build_pipeline(augment, self.size, train, seed=seed)
        use_mosaic = train and augment is not None and augment.mosaic > 0
        self.tile_pipeline = TrainPipeline(augment, self.size, letterbox=False, seed=seed + 1) if use_mosaic else None
        self._mosaic_on = torch.ones(1, dtype=torch.uint8).share_memory_()  # seen by persistent workers
        self._rng = np.random.default_rng(seed)
        self._pixels: np.ndarray | None = None  # flat uint8 buffer of every base image
        self._offsets: np.ndarray | None = None  # int64 [N + 1] start of image i in _pixels
        self._errors: dict[int, ImageError] = {}
        self._lazy: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.rs.records)

    def subset(self, indices: list[int]) -> DetectionDataset:
        """The same dataset (settings, seed, proposals) over the records at ``indices``; the cache is rebuilt."""
        rs = self.rs
        sub = RecordSet(rs.class_names, rs.image_root, [rs.records[i] for i in indices], dict(rs.meta))
        props = None if self.proposals is None else [self.proposals[i] for i in indices]
        return DetectionDataset(sub, self.size, self.augment, self.train, self.cache_images, self.seed, props)

    # ------------------------------------------------------------------ switches

    def set_mosaic(self, enabled: bool) -> None:
        """Switch mosaic on/off; shared memory, so persistent DataLoader workers see it too."""
        self._mosaic_on[0] = int(bool(enabled))

    @property
    def mosaic_enabled(self) -> bool:
        return self.tile_pipeline is not None and bool(self._mosaic_on[0])

    def set_seed(self, seed: int) -> None:
        """Re-seed the augmentation RNGs (the loader calls this in each worker with a distinct seed)."""
        self._rng = np.random.default_rng(seed)
        if isinstance(self.pipeline, TrainPipeline):
            self.pipeline.set_seed(seed)
        if self.tile_pipeline is not None:
            self.tile_pipeline.set_seed(seed + 1)

    # ------------------------------------------------------------------ cache

    def prepare(self, threads: int | None = None, progress: bool | None = None) -> None:
        """Decode every image into the cache now (no-op without ``cache_images`` or when already built)."""
        if not self.cache_images or self._pixels is not None:
            return
        dims = [base_size(r.width, r.height, self.size) for r in self.rs.records]
        offsets = np.zeros(len(dims) + 1, np.int64)
        offsets[1:] = np.cumsum([w * h * 3 for w, h, _ in dims])
        pixels = np.empty(int(offsets[-1]), np.uint8)
        errors: dict[int, ImageError] = {}

        def fill(i: int) -> None:
            w, h, _ = dims[i]
            try:
                pixels[offsets[i] : offsets[i + 1]].reshape(h, w, 3)[:] = self._load(i)
            except ImageError as e:
                errors[i] = e

        threads = threads or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=threads) as pool:
            jobs = pool.map(fill, range(len(dims)))
            for _ in stage_progress(jobs, len(dims), f"caching images at {self.size}px", "img", progress,
                                    PROGRESS_MIN_IMAGES):
                pass
        self._pixels, self._offsets, self._errors = pixels, offsets, errors
        self._lazy.clear()

    def check_images(self) -> list[tuple[int, ImageError]]:
        """``[(index, error)]`` of every image that cannot be read (builds the cache, or decodes each image once)."""
        if self.cache_images:
            self.prepare()
            return sorted(self._errors.items())
        bad = []
        for i in range(len(self)):
            try:
                self._load(i)
            except ImageError as e:
                bad.append((i, e))
        return bad

    def image_path(self, index: int) -> str:
        return os.path.join(self.rs.image_root, self.rs.records[index].image)

    def _load(self, i: int) -> np.ndarray:
        """Decode image ``i`` and resize it to its base size ``[h, w, 3]``; raises ImageError."""
        rec = self.rs.records[i]
        path = self.image_path(i)
        w, h, _ = base_size(rec.width, rec.height, self.size)
        img = read_image(path, max_side=self.size)
        ih, iw = img.shape[:2]
        if abs(iw * rec.height - ih * rec.width) > 0.02 * max(iw * rec.height, ih * rec.width) + max(iw, ih):
            raise ImageError(path, f"image is {iw}x{ih} but its record says {rec.width}x{rec.height}", "size_mismatch")
        if (iw, ih) != (w, h):
            interp = cv2.INTER_AREA if iw > w else cv2.INTER_LINEAR
            img = cv2.resize(img, (w, h), interpolation=interp)
        return img

    def _base_image(self, i: int) -> np.ndarray:
        if self._pixels is not None:
            if i in self._errors:
                raise self._errors[i]
            rec = self.rs.records[i]
            w, h, _ = base_size(rec.width, rec.height, self.size)
            return self._pixels[self._offsets[i] : self._offsets[i + 1]].reshape(h, w, 3)
        if not self.cache_images:
            return self._load(i)
        if get_worker_info() is None:  # main process: build the shared cache once
            self.prepare()
            return self._base_image(i)
        if i not in self._lazy:  # a worker started before the cache was built: cache what it sees
            self._lazy[i] = self._load(i)
        return self._lazy[i]

    def base_sample(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(image [h, w, 3] uint8 with longer side S, boxes float32 [N, 4] * scale, labels int64 [N])``.

        External proposals, if any, follow the boxes with label :data:`PROPOSAL_LABEL`. The image may be a
        view of the cache: copy before writing to it.
        """
        rec = self.rs.records[i]
        img = self._base_image(i)
        w, h, scale = base_size(rec.width, rec.height, self.size)
        boxes = rec.boxes.astype(np.float32).reshape(-1, 4)
        labels = rec.labels.astype(np.int64).reshape(-1)
        if self.proposals is not None:
            props = np.asarray(self.proposals[i], np.float32).reshape(-1, 4)
            boxes = np.concatenate([boxes, props])
            labels = np.concatenate([labels, np.full(len(props), PROPOSAL_LABEL, np.int64)])
        boxes = boxes * np.float32(scale)
        np.clip(boxes, 0, np.array([w, h, w, h], np.float32), out=boxes)
        return img, boxes, labels

    # ------------------------------------------------------------------ samples

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        rec = self.rs.records[index]
        if self.mosaic_enabled and self._rng.random() < self.augment.mosaic:
            others = self._rng.integers(0, len(self), size=3)
            tiles = [self.tile_pipeline(*self.base_sample(int(j))) for j in (index, *others)]
            img, boxes, labels = mosaic(tiles, self.size, self._rng, self.augment.min_visibility)
        else:
            img, boxes, labels = self.pipeline(*self.base_sample(index))
        if self._pixels is not None and np.may_share_memory(img, self._pixels):
            img = img.copy()  # never hand out a view of the cache
        if img.shape != (self.size, self.size, 3):
            raise RuntimeError(f"pipeline returned {img.shape}, expected ({self.size}, {self.size}, 3)")
        boxes = np.ascontiguousarray(boxes, np.float32).reshape(-1, 4)
        labels = np.ascontiguousarray(labels, np.int64).reshape(-1)
        is_prop = labels == PROPOSAL_LABEL
        target = {
            "boxes": torch.from_numpy(boxes[~is_prop]),
            "labels": torch.from_numpy(labels[~is_prop]),
            "image_id": index + 1,
            "scale": self.size / max(rec.width, rec.height),
            "orig_size": (int(rec.height), int(rec.width)),
        }
        if self.proposals is not None:
            target["proposals"] = torch.from_numpy(boxes[is_prop])
        return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1), target
