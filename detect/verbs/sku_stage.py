"""``--gallery``: the naming stage between the detector and everything downstream (predict, audit).

:class:`SkuStage` takes one image's detections (the :meth:`~detect.engine.inference.predictor.Predictor.predict_images`
dict), names every box by the gallery (:class:`~detect.engine.inference.recognize.Recognizer`) and gives the same
dict back with its ``labels`` replaced by SKU labels over :attr:`SkuStage.names` (the gallery's SKUs, then
``unknown``), so rows, counts, drawings, the JSON/CSV and ``--save-labels`` work on SKU names unchanged. It adds
``detector_labels`` (the detector's own labels), ``sku_similarity`` and ``sku_alternatives``.

Any detector may come first: a product detector (one class) is what the pipeline is meant for; a closed-set
detector's classes are replaced by the gallery's names the same way (its NMS is then made class-agnostic, since
its classes no longer matter: one box per product).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch

from data_tools.errors import InvalidInput
from detect.engine.inference.recognize import UNKNOWN, Recognizer
from detect.verbs.shelf_rows import class_counts


class SkuStage:
    """Name every detection by a gallery.

    Attributes:
        names: class names of the renamed detections: the gallery's SKUs in its order, then :data:`UNKNOWN`
            (label ``k`` names ``names[k - 1]``; a gallery with a SKU called ``unknown`` shares that label).
        recognizer: the gallery and its embedder.
    """

    def __init__(self, recognizer: Recognizer) -> None:
        self.recognizer = recognizer
        skus = list(recognizer.skus)
        self.names = skus if UNKNOWN in skus else [*skus, UNKNOWN]
        self._label = {n: k + 1 for k, n in enumerate(self.names)}
        self.detector_totals: Counter = Counter()

    @classmethod
    def open(cls, gallery: str | Path, embedder: str | Path | None = None, unknown_below: float | None = None,
             device: str = "auto") -> SkuStage:
        """:meth:`Recognizer.open` (one line for a gallery that cannot be used) wrapped as a stage."""
        return cls(Recognizer.open(gallery, embedder, unknown_below, device=device))

    def describe(self) -> dict:
        """What predictions.json / audit.json record of the gallery: folder, embedder, SKUs, threshold."""
        r = self.recognizer
        return {"folder": str(r.gallery.folder), "embedder": r.embedder.name, "embedder_sha256": r.embedder.sha256,
                "skus": len(r.skus), "references": len(r.gallery.refs), "unknown_below": r.threshold}

    def apply(self, image: np.ndarray, result: dict, detector_names: list[str]) -> dict:
        """``result`` with its boxes named (see the module doc).

        Args:
            image: ``[H, W, 3]`` uint8 RGB, the photo ``result``'s boxes (``[K, 4]`` xyxy pixels) are in.
            result: ``boxes`` ``[K, 4]``, ``scores`` ``[K]``, ``labels`` ``[K]`` (detector labels in 1..C), ...
            detector_names: the detector's class names (for :attr:`detector_totals`).

        Returns:
            A new dict: ``labels`` int64 ``[K]`` over :attr:`names`, ``detector_labels`` int64 ``[K]``,
            ``sku_similarity`` float32 ``[K]``, ``sku_alternatives`` (K tuples of ``(sku, similarity)``).
        """
        boxes = torch.as_tensor(result["boxes"]).detach().cpu().numpy().reshape(-1, 4)
        detector_labels = torch.as_tensor(result["labels"]).detach().cpu().long()
        self.detector_totals.update(class_counts(detector_labels, detector_names))
        namings = self.recognizer.name(image, boxes)
        labels = torch.tensor([self._label[n.sku] for n in namings], dtype=torch.int64)
        sims = torch.tensor([n.similarity for n in namings], dtype=torch.float32)
        return {**result, "labels": labels, "detector_labels": detector_labels, "sku_similarity": sims,
                "sku_alternatives": [n.alternatives for n in namings]}


def open_stage(gallery: str | Path | None, embedder: str | Path | None = None, unknown_below: float | None = None,
               device: str = "auto") -> SkuStage | None:
    """The stage of ``--gallery`` (None without one); ``--embedder`` / ``--unknown-below`` alone are refused."""
    if gallery is None:
        if embedder is not None or unknown_below is not None:
            flag = "--embedder" if embedder is not None else "--unknown-below"
            raise InvalidInput(f"{flag} applies to --gallery (the boxes named by a SKU gallery); give --gallery GALLERY")
        return None
    return SkuStage.open(gallery, embedder, unknown_below, device)


__all__ = ["SkuStage", "open_stage"]
