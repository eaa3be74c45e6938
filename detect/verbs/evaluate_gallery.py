"""``eval --gallery``: the two-stage pipeline (detector boxes named by a SKU gallery) scored like a closed-set head.

The detector's COCO results are renamed: each box is cropped from its photo, embedded and named by the gallery
(:class:`~detect.engine.inference.recognize.Recognizer`); its ``category_id`` becomes the evaluation dataset's
class of the same name (compared as :func:`~data_tools.records.class_key`: case and spacing do not matter). A SKU
that is not among the dataset's classes goes to one extra class, :data:`NOT_IN_DATASET`, that has no ground truth:
such a box is a false positive of no class (it takes no class's AP, the object it covers is missed; the report
counts it). A dataset class the gallery does not hold is said in one line: its boxes can only be missed.

Score of a named box: ``detector score x (similarity + 1) / 2`` (``score="product"``, the default), or the
detector's score alone (``score="detector"``). COCO AP ranks each class's detections by score; a box the gallery
names with low similarity is more often misnamed, so the product puts likely misnamings below confident
namings of the same class, where the detector score alone interleaves them. Every box is named with its best SKU
(no ``unknown``): AP sweeps the score, and the similarity is in it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np

from data_tools.images import ImageError, read_image
from data_tools.records import RecordSet, class_key
from detect.engine.inference.crop_embedder import crop_boxes
from detect.engine.inference.recognize import Recognizer, similarity_01

NOT_IN_DATASET = "(SKU not in the dataset)"  # the extra class of boxes named by a SKU the dataset lacks
SCORES = ("product", "detector")
_BATCH = 256  # crops embedded together (across photos)


def gallery_classes(rs: RecordSet, skus: list[str], log: Callable[[str], None] = print) -> tuple[RecordSet, dict]:
    """``(rs, {sku: label})``: each gallery SKU's label among ``rs``'s classes, matched by name.

    SKUs not among the classes get the label of :data:`NOT_IN_DATASET`, appended to a copy of ``rs``'s class names
    (``rs`` comes back unchanged when every SKU is a class). Dataset classes missing from the gallery are logged
    in one line.
    """
    by_key = {class_key(n): k + 1 for k, n in enumerate(rs.class_names)}
    labels = {s: by_key.get(class_key(s)) for s in skus}
    missing = [n for n in rs.class_names if class_key(n) not in {class_key(s) for s in skus}]
    if missing:
        shown = ", ".join(missing[:8]) + (f", ... ({len(missing)} in all)" if len(missing) > 8 else "")
        log(f"note: {len(missing)} of the dataset's {len(rs.class_names)} classes are not in the gallery (their "
            f"boxes can only be missed): {shown}")
    extra = [s for s, k in labels.items() if k is None]
    if extra:
        log(f"note: {len(extra)} gallery SKUs are not classes of the dataset; boxes named by them count as false "
            f"positives ({NOT_IN_DATASET})")
        rs = RecordSet([*rs.class_names, NOT_IN_DATASET], rs.image_root, rs.records, dict(rs.meta))
        labels = {s: (k if k is not None else len(rs.class_names)) for s, k in labels.items()}
    return rs, labels


def name_results(results: list[dict], rs: RecordSet, recognizer: Recognizer, sku_label: dict[str, int],
                 image_path: Callable[[int], str], score: str = "product", min_score: float = 0.0,
                 log: Callable[[str], None] = print) -> list[dict]:
    """Rename COCO ``results`` (``image_id`` = 1-based index into ``rs.records``, ``bbox`` xywh original pixels)
    by the gallery: new dicts with ``category_id`` = ``sku_label[sku]`` and the score of the module doc; results
    under ``min_score`` (detector score) are left out (they are not embedded).

    ``image_path(i)``: the file of record ``i`` (0-based). A photo that cannot be read is logged; its boxes are
    left out.
    """
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    per_image: dict[int, list[dict]] = defaultdict(list)
    for r in results:
        if r["score"] >= min_score:
            per_image[int(r["image_id"])].append(r)
    out: list[dict] = []
    pending: list[tuple[int, dict]] = []  # (image_id, result) of the crops not yet named
    crops: list[np.ndarray] = []
    for image_id in sorted(per_image):
        dets = per_image[image_id]
        rec = rs.records[image_id - 1]
        try:
            image = read_image(image_path(image_id - 1))
        except ImageError as exc:
            log(f"warning: {exc}; its boxes are left out of the gallery evaluation")
            continue
        sx, sy = image.shape[1] / max(rec.width, 1), image.shape[0] / max(rec.height, 1)
        xywh = np.array([d["bbox"] for d in dets], np.float64).reshape(-1, 4)
        boxes = np.stack([xywh[:, 0] * sx, xywh[:, 1] * sy, (xywh[:, 0] + xywh[:, 2]) * sx,
                          (xywh[:, 1] + xywh[:, 3]) * sy], axis=1)  # [K, 4] xyxy pixels of the decoded photo
        crops += crop_boxes(image, boxes)
        pending += [(image_id, d) for d in dets]
        if len(crops) >= _BATCH:
            out += _named(pending, recognizer.name_crops(crops), sku_label, score)
            pending, crops = [], []
    return out + _named(pending, recognizer.name_crops(crops), sku_label, score)


def _named(dets: list[tuple[int, dict]], namings: list, sku_label: dict[str, int], score: str) -> list[dict]:
    out = []
    for (image_id, d), n in zip(dets, namings):
        if n.nearest is None:  # an empty gallery names nothing
            continue
        s = d["score"] * similarity_01(n.similarity) if score == "product" else d["score"]
        out.append({"image_id": image_id, "category_id": int(sku_label[n.nearest]), "bbox": list(d["bbox"]),
                    "score": float(s)})
    return out

__all__ = ["NOT_IN_DATASET", "SCORES", "gallery_classes", "name_results"]
