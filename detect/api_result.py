"""The :class:`Result` of one image of the Python API (:mod:`detect.api`): detections as numpy arrays.

A result wraps the dict :meth:`~detect.engine.inference.predictor.Predictor.predict_images` gives for one image
(after :class:`~detect.verbs.sku_stage.SkuStage` named its boxes, with a gallery) and builds everything else from
it with the functions the ``predict`` verb writes its outputs with, so the two never differ:
:meth:`Result.to_dict` is :func:`detect.verbs.predict_output.image_entry` (the entry of ``predictions.json``, shelf
rows by :func:`detect.verbs.shelf_rows.group_rows`), :meth:`Result.draw` is
:func:`detect.verbs.predict_output.draw_detections`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from torch import Tensor

from data_tools.images import read_image
from detect.verbs import predict_output as po
from detect.verbs.shelf_rows import class_counts, group_rows


def _numpy(x: Tensor | np.ndarray, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype).reshape(shape)


class Result:
    """The detections of one image, best score first.

    Attributes:
        boxes: float32 ``[K, 4]`` xyxy in the image's original pixels.
        scores: float32 ``[K]``.
        labels: int64 ``[K]`` in ``1..C``: label ``k`` is ``class_names[k - 1]``.
        names: the class name of every box (``K`` strings).
        class_names: all ``C`` class names (with a gallery: its SKUs, then ``unknown``).
        path: the image file, or None for an array or PIL image.
        width, height: the image size in pixels.
        tiles: how many tiles the image was cut into (0: predicted whole).
        sku, similarity: with a gallery, the SKU (same as ``names``) and its cosine similarity (float32 ``[K]``)
            per box; None without one.
        detector_labels: with a gallery, the detector's own labels (int64 ``[K]``); None without one.
    """

    def __init__(self, raw: dict, class_names: list[str], path: str | Path | None = None,
                 image: np.ndarray | None = None, row_gap: float = 0.5) -> None:
        self.raw = raw
        self.class_names = list(class_names)
        self.path = None if path is None else str(path)
        self.width, self.height = int(raw["width"]), int(raw["height"])
        self.tiles = int(raw.get("tiles", 0))
        self.boxes = _numpy(raw["boxes"], np.float32, (-1, 4))
        self.scores = _numpy(raw["scores"], np.float32, (-1,))
        self.labels = _numpy(raw["labels"], np.int64, (-1,))
        self.names = [self.class_names[k - 1] if 1 <= k <= len(self.class_names) else f"class_{k}"
                      for k in self.labels.tolist()]
        named = "sku_similarity" in raw
        self.sku = list(self.names) if named else None
        self.similarity = _numpy(raw["sku_similarity"], np.float32, (-1,)) if named else None
        self.detector_labels = _numpy(raw["detector_labels"], np.int64, (-1,)) if named else None
        self.row_gap = float(row_gap)
        self._image = image  # kept for arrays and PIL images only; a file is read again by draw()

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        where = self.path if self.path is not None else "array"
        return f"Result({where}, {self.width}x{self.height}, {len(self)} detections: {self.counts()})"

    def counts(self) -> dict[str, int]:
        """``{class name: boxes}`` (classes without a box left out), as ``counts`` in ``predictions.json``."""
        return class_counts(self.labels, self.class_names)

    def to_dict(self) -> dict:
        """This image's entry of ``predictions.json`` (``retail-detect predict``): path, size, detections (box,
        score, class_name, label, shelf row; ``sku*`` with a gallery), per-class and per-row counts.
        ``path`` is None for an array or PIL image; predict's ``drawn`` key is not here (nothing is written)."""
        rows, summary = group_rows(self.boxes, self.labels, self.class_names, self.row_gap)
        entry = po.image_entry(str(self.path), self.width, self.height, self.raw, self.class_names, rows,
                               summary, self.counts())
        if self.path is None:
            entry["path"] = None
        return entry

    def to_json(self, indent: int | None = None) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def image(self) -> np.ndarray:
        """The image these boxes are in: ``H x W x 3`` uint8 RGB (a file is read again)."""
        if self._image is not None:
            return self._image
        if self.path is None:
            raise ValueError("this result keeps no image to draw on")
        return read_image(self.path)

    def draw(self, path: str | Path | None = None) -> np.ndarray:
        """The image with its boxes drawn as ``predict`` draws them (``class score`` captions that never
        overprint each other; a legend when some have no room).

        Args:
            path: also write the drawing there (format by extension, written atomically; never over the input).

        Returns:
            ``H x W x 3`` uint8 RGB.
        """
        bgr = po.draw_detections(self.image(), self.raw, self.class_names)
        if path is not None:
            protected = {Path(self.path).resolve()} if self.path is not None else None
            po.write_drawn(path, bgr, protected)
        return np.ascontiguousarray(bgr[..., ::-1])


__all__ = ["Result"]
