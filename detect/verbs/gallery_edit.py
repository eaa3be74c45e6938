"""``retail-detect gallery add / remove / list``: change or read an existing gallery in place.

add: reference photos of one product, each giving one reference: the whole photo (default), the largest product box
a detector finds in it (``--detector``), or the boxes a label file gives for it (``--labels``; any format
:func:`data_tools.sources.load_any` reads). Every photo is read and cropped before anything is written: one
unreadable photo, or one where no product is found, is one line naming it and the gallery is left as it was.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from data_tools.errors import InvalidInput
from data_tools.images import read_image
from detect.engine.inference.gallery import Gallery, GalleryError, NewReference
from detect.engine.inference.recognize import own_embedder_spec
from detect.verbs.gallery_build import load_embedder

Log = Callable[[str], None]


def gallery_embedder(gallery: Gallery, spec: str | None):
    """The embedder to add with: ``spec`` when given, else the gallery's own (its checkpoint when that path
    still exists, ``imagenet`` at the gallery's input size); refused unless it is the gallery's."""
    spec, size = own_embedder_spec(gallery, spec)
    embedder = load_embedder(spec, size)
    gallery.check_embedder(embedder.identity())
    return embedder


def _label_boxes(labels: str, photos: Sequence[str]) -> dict[str, np.ndarray]:
    """``{photo: boxes float32 [N, 4]}`` of the named photos in the label file/folder ``labels``."""
    from data_tools.sources import load_any

    rs = load_any(labels)
    by_path = {os.path.realpath(Path(rs.image_root) / r.image): r for r in rs.records}
    by_name: dict[str, list] = {}
    for r in rs.records:
        by_name.setdefault(Path(r.image).name, []).append(r)
    out = {}
    for photo in photos:
        rec = by_path.get(os.path.realpath(photo))
        if rec is None and len(by_name.get(Path(photo).name, [])) == 1:
            rec = by_name[Path(photo).name][0]
        if rec is None or not rec.num_boxes:
            raise InvalidInput(f"{photo}: {'no boxes' if rec is not None else 'not'} in --labels {labels}; "
                               "nothing added")
        out[photo] = rec.boxes
    return out


def _largest_boxes(detector: str, images: dict[str, np.ndarray], conf: float) -> dict[str, np.ndarray]:
    """``{photo: [1, 4]}``: the largest box the detector finds in each photo."""
    from detect.engine.inference.predictor import Predictor

    predictor = Predictor.from_weights(detector, conf=conf)
    out = {}
    for photo, image in images.items():
        boxes = predictor.predict_images([image])[0]["boxes"].numpy().reshape(-1, 4)
        if not len(boxes):
            raise InvalidInput(f"{photo}: no product found by --detector {detector} (confidence {conf}); "
                               "nothing added: crop the photo or pass --labels")
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        out[photo] = boxes[int(np.argmax(area))][None]
    return out


def add_photos(folder: str, sku: str, photos: Sequence[str], embedder: str | None = None,
               detector: str | None = None, labels: str | None = None, replace: bool = False,
               conf: float = 0.25, log: Log = print) -> dict:
    """Enrol ``photos`` as references of ``sku`` in gallery ``folder`` (module doc); returns a summary."""
    t0 = time.perf_counter()  # the printed time includes loading the embedder (and the detector)
    from detect.engine.inference.crop_embedder import crop_boxes

    if detector and labels:
        raise InvalidInput("give --detector or --labels, not both")
    gallery = Gallery.open(folder)
    if sku in gallery.skus and not replace:
        raise GalleryError(f"{folder}: SKU {sku!r} is already in the gallery ({len(gallery.references(sku))} "
                           "references); pass --replace to replace them")
    photos = list(dict.fromkeys(photos))
    images = {p: read_image(p) for p in photos}  # ImageError names the photo
    if labels:
        boxes = _label_boxes(labels, photos)
    elif detector:
        boxes = _largest_boxes(detector, images, conf)
    else:
        boxes = {p: None for p in photos}
    crops, sources = [], []
    for p in photos:
        if boxes[p] is None:
            crops.append(images[p])
            sources.append(p)
        else:
            for j, c in enumerate(crop_boxes(images[p], boxes[p])):
                crops.append(c)
                sources.append(f"{p}#detected" if detector else f"{p}#box{j}")
    model = gallery_embedder(gallery, embedder)
    vectors = model.embed(crops)
    gallery.add({sku: [NewReference(c, v, s) for c, v, s in zip(crops, vectors, sources)]}, replace=replace)
    seconds = time.perf_counter() - t0
    log(f"added SKU {sku!r}: {len(crops)} references from {len(photos)} photos in {seconds:.1f} s; gallery "
        f"{folder}: {len(gallery.skus)} SKUs, {len(gallery.refs)} references")
    return {"sku": sku, "references": len(crops), "photos": len(photos), "seconds": seconds}


def remove_sku(folder: str, sku: str, log: Log = print) -> int:
    """Remove ``sku`` from gallery ``folder``; returns how many references went."""
    gallery = Gallery.open(folder)
    n = gallery.remove(sku)
    log(f"removed SKU {sku!r} ({n} references); gallery {folder}: {len(gallery.skus)} SKUs, "
        f"{len(gallery.refs)} references")
    return n


def describe(gallery: Gallery) -> dict:
    """The gallery as plain data: embedder, threshold, calibration and every SKU's references."""
    return {"folder": str(gallery.folder), "embedder": gallery.embedder, "threshold": gallery.threshold,
            "calibration": gallery.manifest.get("calibration", {}),
            "skus": [{"name": s, "references": [{"id": r.id, "source": r.source, "crop": r.crop}
                                                for r in gallery.references(s)]} for s in gallery.skus]}


def list_gallery(folder: str, as_json: bool = False, log: Log = print) -> dict:
    """Print the gallery's SKUs (a table, or ``--json``)."""
    gallery = Gallery.open(folder)
    info = describe(gallery)
    if as_json:
        log(json.dumps(info, indent=1, ensure_ascii=False))
        return info
    e = gallery.embedder
    t = gallery.threshold
    log(f"gallery {folder}: {len(gallery.skus)} SKUs, {len(gallery.refs)} references; embedder {e.get('name')} "
        f"({e.get('kind')}, {e.get('dim')}-d, {e.get('image_size')} px); unknown threshold "
        + ("none" if t is None else f"{t:.3f}"))
    width = max([len(s) for s in gallery.skus] + [3])
    for s in info["skus"]:
        refs = s["references"]
        shown = ", ".join(r["source"] for r in refs[:3]) + (", ..." if len(refs) > 3 else "")
        log(f"  {s['name']:<{width}}  {len(refs):>4}  {shown}")
    return info
