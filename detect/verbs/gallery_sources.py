"""Where a gallery's reference crops come from: the labelled boxes of a dataset, or a folder of class folders.

- A dataset (anything :func:`data_tools.sources.load_any` reads: a dataset ``.pkl``, a VOC / YOLO / COCO / CVAT /
  Label Studio / CSV source): each class is a SKU, each of its boxes a candidate reference (the box's crop).
- A folder of class folders, one product per photo (the Grocery Store layout ``train/Packages/<coarse>/<product>/
  *.jpg``): each folder that holds photos is a SKU named after the folder, each photo a candidate (the whole photo).

:func:`spread` picks ``K`` candidates of a SKU from as many different photos as it can, spread over the photos in
name order, deterministically. The crops themselves are read later (:func:`read_crop`), one at a time.
"""

from __future__ import annotations

import dataclasses
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from data_tools.errors import InvalidInput
from data_tools.images import read_image


@dataclasses.dataclass(frozen=True)
class Pick:
    """One reference to enrol: SKU ``sku`` from photo ``path`` (box ``box`` xyxy pixels, or None: the whole
    photo); ``source`` is what the gallery records (``images/a.jpg#box2`` or ``Milk/Arla/1.jpg``)."""

    sku: str
    path: str
    box: tuple[float, float, float, float] | None
    source: str


def class_folders(root: str | os.PathLike) -> dict[str, list[Pick]]:
    """``{sku: [Pick, ...]}`` of a folder of class folders, photos in name order; the class of a photo is the
    innermost folder holding it, named as :func:`detect.data.crops.class_folder_photos` names it (the same
    names ``retail-detect embedder train`` gives its classes)."""
    from detect.data.crops import class_folder_photos

    root = Path(root)
    photos, names = class_folder_photos(root)
    if not photos:
        raise InvalidInput(f"{root}: neither labels (VOC, YOLO, COCO, ...) nor class folders of photos found")
    out: dict[str, list[Pick]] = {}
    for photo, sku in zip(photos, names):
        out.setdefault(sku, []).append(Pick(sku, photo, None, Path(photo).relative_to(root).as_posix()))
    return out


def dataset_boxes(path: str | os.PathLike, log: Callable[[str], None] | None = None) -> dict[str, list[Pick]]:
    """``{sku: [Pick, ...]}`` of a dataset's boxes, per class, in photo-name order (largest box of a photo first)."""
    from data_tools.sources import load_any

    rs = load_any(path, log=log)
    out: dict[str, list[Pick]] = {name: [] for name in rs.class_names}
    for rec in sorted(rs.records, key=lambda r: r.image):
        area = (rec.boxes[:, 2] - rec.boxes[:, 0]) * (rec.boxes[:, 3] - rec.boxes[:, 1])
        for j in np.argsort(-area, kind="stable"):
            if area[j] <= 0:
                continue
            name = rs.class_names[int(rec.labels[j]) - 1]
            box = tuple(float(v) for v in rec.boxes[j])
            out[name].append(Pick(name, str(Path(rs.image_root) / rec.image), box, f"{rec.image}#box{int(j)}"))
    return {k: v for k, v in out.items() if v}


def load_candidates(path: str | os.PathLike, log: Callable[[str], None] | None = None) -> tuple[dict[str, list[Pick]], str]:
    """The candidates of ``path`` and what it was read as (``labels`` or ``class folders``: a folder of photos
    with no label file below it, :func:`detect.data.crops.is_class_folders`)."""
    from detect.data.crops import is_class_folders

    if is_class_folders(path):
        return class_folders(path), "class folders"
    return dataset_boxes(path, log), "labels"


def spread(picks: Sequence[Pick], k: int | None) -> list[Pick]:
    """``k`` of ``picks`` (all when None): one per photo first, the photos evenly spaced in name order, then
    second boxes of the same photos, and so on. Deterministic."""
    if k is None or k >= len(picks):
        return list(picks)
    by_photo: dict[str, list[Pick]] = defaultdict(list)
    for p in picks:
        by_photo[p.path].append(p)
    photos = list(by_photo)
    first = sorted({int(round(i)) for i in np.linspace(0, len(photos) - 1, min(k, len(photos)))})
    order = [photos[i] for i in first] + [p for i, p in enumerate(photos) if i not in set(first)]
    chosen: list[Pick] = []
    depth = 0
    while len(chosen) < k:
        for photo in order:
            if depth < len(by_photo[photo]):
                chosen.append(by_photo[photo][depth])
                if len(chosen) == k:
                    break
        depth += 1
    return chosen


def select(candidates: dict[str, list[Pick]], per_class: int | None, classes: str | None) -> dict[str, list[Pick]]:
    """The picks of each SKU (``--per-class``), for the SKUs named in ``classes`` (``"a,b"``; None: all)."""
    if per_class is not None and per_class < 1:
        raise InvalidInput(f"--per-class must be at least 1, not {per_class}")
    names = sorted(candidates)
    if classes is not None:
        wanted = [c.strip() for c in classes.split(",") if c.strip()]
        missing = [c for c in wanted if c not in candidates]
        if missing:
            raise InvalidInput(f"--classes: no class {', '.join(map(repr, missing[:5]))} in the dataset (it has "
                               f"{', '.join(names[:8])}{', ...' if len(names) > 8 else ''})")
        names = list(dict.fromkeys(wanted))
    return {n: spread(candidates[n], per_class) for n in names}


def read_crop(pick: Pick, cache: dict[str, np.ndarray]) -> np.ndarray:
    """The crop of ``pick`` (``[h, w, 3]`` uint8 RGB); ``cache`` keeps the last photo read (boxes of one photo
    come together). Raises ImageError for an unreadable photo."""
    from detect.engine.inference.crop_embedder import crop_boxes

    if pick.path not in cache:
        cache.clear()
        cache[pick.path] = read_image(pick.path)
    image = cache[pick.path]
    return image if pick.box is None else crop_boxes(image, np.asarray([pick.box]))[0]
