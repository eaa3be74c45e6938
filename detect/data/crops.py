"""Product crops with their class, for training and measuring the embedder.

:func:`load_crops` reads either kind of source, deciding from the path:

- a folder of class folders, one product per photo (``train/Packages/<coarse>/<product>/*.jpg``, as the Grocery
  Store Dataset is laid out): a folder holding images and no label file (``.xml``, ``.json``, ``.txt``,
  ``.csv``, ``.yaml``); a photo's class is the innermost folder holding it (its name; its path below the root
  when two such folders share a name), and the whole photo is the product;
- anything else :func:`data_tools.sources.load_any` reads (a dataset ``.pkl``, a VOC / COCO / YOLO / CVAT /
  Label Studio / CSV source): each box is a crop of its class.

Crops are decoded once and kept in RAM (:class:`CropSet`): each with some context around its box (so the
augmentation can move the box outwards as well as inwards), its longer side at most ``max_side`` pixels.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_tools.errors import InvalidInput
from data_tools.images import ImageError, read_image
from data_tools.progress import progress
from data_tools.sources import load_any
from detect.data.augment import resize_longest

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
LABEL_EXTS = (".xml", ".json", ".txt", ".csv", ".yaml", ".yml", ".pkl")
CONTEXT = 0.25  # a box crop keeps this fraction of the box's side around it, where the image has it


@dataclass
class CropSet:
    """Cached crops.

    Attributes:
        images: ``[h, w, 3]`` uint8 RGB, one per crop (the box plus up to :data:`CONTEXT` around it).
        boxes: float32 ``[N, 4]`` xyxy: the product's box inside each of ``images``.
        labels: int64 ``[N]`` in ``0..C-1``.
        class_names: ``C`` names.
        sources: the photo each crop came from.
        kind: ``class_folders`` or ``boxes``.
    """

    images: list[np.ndarray]
    boxes: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    sources: list[str]
    kind: str

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: Sequence[int]) -> CropSet:
        idx = np.asarray(indices, np.int64)
        return CropSet([self.images[i] for i in idx], self.boxes[idx].reshape(-1, 4), self.labels[idx],
                       list(self.class_names), [self.sources[i] for i in idx], self.kind)

    def per_class(self) -> np.ndarray:
        """Crops per class: int64 ``[C]``."""
        return np.bincount(self.labels, minlength=len(self.class_names))


def is_class_folders(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder of images in class folders with no label file anywhere below it."""
    p = Path(path)
    if not p.is_dir():
        return False
    images = False
    for _, dirs, files in os.walk(p):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            low = name.lower()
            if low.endswith(LABEL_EXTS):
                return False
            images = images or low.endswith(IMAGE_EXTS)
    return images


def class_folder_photos(root: str | os.PathLike) -> tuple[list[str], list[str]]:
    """``(photo paths, class name of each)`` of a class-folder tree, sorted by path."""
    root = Path(root)
    photos = sorted(str(Path(d) / f) for d, dirs, files in os.walk(root) if not Path(d).name.startswith(".")
                    for f in files if f.lower().endswith(IMAGE_EXTS) and not f.startswith("."))
    folders = sorted({str(Path(p).parent) for p in photos})
    names: dict[str, str] = {}
    by_name: dict[str, list[str]] = {}
    for f in folders:
        by_name.setdefault(Path(f).name, []).append(f)
    for f in folders:
        clash = len(by_name[Path(f).name]) > 1 or Path(f) == root
        names[f] = Path(f).relative_to(root).as_posix() if clash and Path(f) != root else Path(f).name
    return photos, [names[str(Path(p).parent)] for p in photos]


def read_class_list(spec: str | Sequence[str] | None) -> list[str]:
    """``--classes``: a comma-separated list, a list of names, or a file (one name a line, ``#`` comments)."""
    if not spec:
        return []
    items = [spec] if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for item in items:
        if os.path.isfile(item):
            lines = Path(item).read_text(encoding="utf-8").splitlines()
            out += [s for line in lines if (s := line.split("#", 1)[0].strip())]
        else:
            out += [s.strip() for s in str(item).split(",") if s.strip()]
    return out


def keep_classes(cs: CropSet, wanted: Sequence[str], where: str, strict: bool = True) -> CropSet:
    """Only the crops of the classes ``wanted``, relabelled ``0..len(wanted)-1`` in that order.

    Raises:
        InvalidInput: (``strict``) a wanted class the data does not have, with the nearest name.
    """
    index = {n: i for i, n in enumerate(cs.class_names)}
    missing = [n for n in wanted if n not in index]
    if missing and strict:
        close = difflib.get_close_matches(missing[0], cs.class_names, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f" (it has {len(cs.class_names)} classes)"
        raise InvalidInput(f"{where}: no class '{missing[0]}'{hint}")
    names = [n for n in wanted if n in index]
    remap = np.full(len(cs.class_names), -1, np.int64)
    for new, n in enumerate(names):
        remap[index[n]] = new
    keep = np.flatnonzero(remap[cs.labels] >= 0)
    out = cs.subset(keep)
    out.labels = remap[cs.labels[keep]]
    out.class_names = names
    return out


def split_per_class(cs: CropSet, fraction: float, seed: int) -> tuple[CropSet, CropSet]:
    """``(train, val)``: ``fraction`` of each class's crops (rounded, at least 1 when it has 2 or more) held out."""
    rng = np.random.default_rng(seed)
    val: list[int] = []
    for k in range(len(cs.class_names)):
        idx = np.flatnonzero(cs.labels == k)
        n = min(len(idx) - 1, max(1, round(fraction * len(idx)))) if fraction > 0 else 0
        val += sorted(rng.permutation(idx)[:n].tolist())
    train = sorted(set(range(len(cs))) - set(val))
    return cs.subset(train), cs.subset(sorted(val))


def _shrink(image: np.ndarray, box: np.ndarray, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    if max(image.shape[:2]) <= max_side:
        return np.ascontiguousarray(image), box
    small, scale = resize_longest(image, max_side)
    return small, (box * scale).astype(np.float32)


def _context_crop(image: np.ndarray, box: np.ndarray, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """The box plus :data:`CONTEXT` around it (clipped) and the box inside that crop."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box
    cx, cy = CONTEXT * (x2 - x1), CONTEXT * (y2 - y1)
    a, b = int(max(0, np.floor(x1 - cx))), int(max(0, np.floor(y1 - cy)))
    c, d = int(min(w, np.ceil(x2 + cx))), int(min(h, np.ceil(y2 + cy)))
    inner = np.array([x1 - a, y1 - b, x2 - a, y2 - b], np.float32)
    return _shrink(image[b:d, a:c], inner, max_side)


def load_crops(path: str | os.PathLike, classes: Sequence[str] = (), max_side: int = 192, min_box_side: int = 8,
               log: Callable[[str], None] = print, strict_classes: bool = True) -> CropSet:
    """The crops of ``path`` (class folders or a labelled dataset; see the module doc), only of ``classes``
    when given (in that order; else every class in the data's order).

    Unreadable photos are skipped with a warning (the first 5 named).

    Raises:
        InvalidInput: no such path, no crop at all, or a wanted class the data lacks.
    """
    if not os.path.exists(path):
        raise InvalidInput(f"{path}: no such file or folder")
    wanted = set(classes)
    images: list[np.ndarray] = []
    boxes: list[np.ndarray] = []
    labels: list[int] = []
    sources: list[str] = []
    bad: list[str] = []
    if is_class_folders(path):
        kind = "class_folders"
        photos, photo_classes = class_folder_photos(path)
        names = sorted(set(photo_classes))
        index = {n: i for i, n in enumerate(names)}
        todo = [(p, c) for p, c in zip(photos, photo_classes) if not wanted or c in wanted]
        for p, c in progress(todo, len(todo), f"reading {Path(path).name}"):
            try:
                img = read_image(p, max_side=max_side)
            except ImageError as e:
                bad.append(str(e))
                continue
            h, w = img.shape[:2]
            img, box = _shrink(img, np.array([0, 0, w, h], np.float32), max_side)
            images.append(img)
            boxes.append(box)
            labels.append(index[c])
            sources.append(p)
    else:
        kind = "boxes"
        rs = load_any(path, log=log)
        names = list(rs.class_names)
        keep = {i for i, n in enumerate(names) if not wanted or n in wanted}
        for rec in progress(rs.records, len(rs.records), f"cropping {Path(path).name}"):
            chosen = [j for j, lab in enumerate(rec.labels) if int(lab) - 1 in keep]
            if not chosen:
                continue
            p = os.path.join(rs.image_root, rec.image)
            try:
                img = read_image(p)
            except ImageError as e:
                bad.append(str(e))
                continue
            for j in chosen:
                box = np.asarray(rec.boxes[j], np.float32)
                if min(box[2] - box[0], box[3] - box[1]) < min_box_side:
                    continue
                crop, inner = _context_crop(img, box, max_side)
                images.append(crop)
                boxes.append(inner)
                labels.append(int(rec.labels[j]) - 1)
                sources.append(p)
    for msg in bad[:5]:
        log(f"warning: skipping unreadable image: {msg}")
    if len(bad) > 5:
        log(f"warning: ... and {len(bad) - 5} more unreadable images")
    cs = CropSet(images, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64), names,
                 sources, kind)
    if classes:
        cs = keep_classes(cs, list(classes), str(path), strict_classes)
    else:  # drop classes without a crop (a label map's unused names)
        cs = keep_classes(cs, [n for n, c in zip(cs.class_names, cs.per_class()) if c > 0], str(path))
    if not len(cs):
        raise InvalidInput(f"{path}: no product crop found" + (" of the classes asked for" if classes else ""))
    return cs
