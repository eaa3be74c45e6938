"""Records <-> COCO JSON.

Export: image ids and annotation ids count from 1, ``category_id`` = label (1..K), ``bbox`` is
``[x, y, w, h]`` in pixels (no VOC +1: COCO coordinates are continuous), ``iscrowd`` 0, plus ``info``,
``licenses`` and ``categories``; the result loads in ``pycocotools.coco.COCO``.

Import (Roboflow / CVAT / COCO exports): category ids may start at 0, be sparse, or include
Roboflow's unused parent category; they are remapped to labels 1..K in id order (or to a given class
list, matched case-insensitively) and the remap is reported. Bad images and annotations are skipped
one by one with a :class:`Problem` naming ``images[i]`` / ``annotations[i]``.
"""

from __future__ import annotations

import datetime
import json
import math
import os
from pathlib import Path

import numpy as np

from data_tools import __version__
from data_tools.atomic import atomic_write_bytes
from data_tools.images import ImageError, orient_boxes, probe_image, resolve_size
from data_tools.locate import is_absolute_name, within
from data_tools.records import ClassMap, Problem, Record, RecordSet, check_box


class CocoFormatError(ValueError):
    """The COCO file as a whole is unusable (not JSON, or missing its ``images`` list)."""


def _num(v: float) -> float | int:
    v = float(v)
    return int(v) if v.is_integer() else round(v, 4)


def to_coco(rs: RecordSet) -> dict:
    """The COCO ground-truth dict of ``rs`` (image ``i`` of the RecordSet gets id ``i + 1``)."""
    images, annotations = [], []
    for i, rec in enumerate(rs.records, start=1):
        images.append({"id": i, "file_name": rec.image, "width": int(rec.width), "height": int(rec.height)})
        for box, label, diff in zip(rec.boxes, rec.labels, rec.difficult):
            x1, y1, x2, y2 = (float(v) for v in box)
            w, h = x2 - x1, y2 - y1
            annotations.append({
                "id": len(annotations) + 1, "image_id": i, "category_id": int(label),
                "bbox": [_num(x1), _num(y1), _num(w), _num(h)], "area": _num(w * h),
                "iscrowd": 0, "difficult": int(bool(diff)),
            })
    return {
        "info": {
            "description": f"retail-detect dataset ({len(images)} images)",
            "version": __version__,
            "date_created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "image_root": str(rs.image_root),
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k, "name": n, "supercategory": "product"} for k, n in enumerate(rs.class_names, 1)],
    }


def write_coco(rs: RecordSet, path: str | os.PathLike) -> dict:
    """Write :func:`to_coco` of ``rs`` to ``path`` atomically; returns the dict."""
    d = to_coco(rs)
    atomic_write_bytes(path, json.dumps(d, ensure_ascii=False).encode("utf-8"))
    return d


def read_coco(json_path: str | os.PathLike, class_names: list[str] | None = None) -> tuple[RecordSet, list[Problem]]:
    """Read a COCO detection JSON into a RecordSet whose ``image_root`` is the folder images are found in.

    The image root is the JSON's folder, or its parent when the JSON sits in an ``annotations/`` folder
    (COCO / CVAT layout); ``file_name`` is looked up there, in ``images/``, or in a first-level subfolder.
    Raises :class:`CocoFormatError` when the file as a whole is unusable.
    """
    file = os.fspath(json_path)
    data = _load_json(file)
    json_dir = os.path.dirname(os.path.abspath(file))
    root = os.path.dirname(json_dir) if os.path.basename(json_dir).lower() == "annotations" else json_dir
    problems: list[Problem] = []
    cmap, cat_label = _categories(file, data, class_names, problems)
    records: dict = {}
    order: list = []
    subdirs = sorted(e.path for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    for i, img in enumerate(data["images"]):
        rec = _image_record(file, i, img, json_dir, root, subdirs, records, problems)
        if rec is not None:
            records[img["id"]] = rec
            order.append(img["id"])
    declared = {img.get("id") for img in data["images"] if isinstance(img, dict) and isinstance(img.get("id"), (int, str))}
    _add_annotations(file, data.get("annotations") or [], records, declared, cat_label, problems)
    out = [_finish_record(file, *records[img_id], problems) for img_id in order]
    return RecordSet(cmap.names, root, out, {"source": os.path.abspath(file), "format": "coco",
                                                  "inputs": len(data["images"])}), problems


def _load_json(file: str) -> dict:
    try:
        with open(file, "rb") as f:
            data = json.loads(f.read().decode("utf-8-sig"))
    except json.JSONDecodeError as e:
        raise CocoFormatError(f"{file}:{e.lineno}: invalid JSON: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise CocoFormatError(f"{file}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise CocoFormatError(f"{file}: cannot read: {e.strerror}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise CocoFormatError(f"{file}: not a COCO detection file (no 'images' list)")
    if not isinstance(data.get("categories", []), list) or not isinstance(data.get("annotations", []), list):
        raise CocoFormatError(f"{file}: 'categories' and 'annotations' must be lists")
    return data


def _categories(file: str, data: dict, class_names, problems: list[Problem]) -> tuple[ClassMap, dict]:
    """Category id -> label. Drops bad/duplicate categories and Roboflow's unused parent category."""
    used = {a.get("category_id") for a in data.get("annotations") or [] if isinstance(a, dict)}
    cats: dict[int, str] = {}
    for i, c in enumerate(data.get("categories") or []):
        cid, name = (c.get("id"), c.get("name")) if isinstance(c, dict) else (None, None)
        if not isinstance(cid, int) or isinstance(cid, bool) or not isinstance(name, str) or not name.strip():
            problems.append(Problem(file, f"category {c!r} needs an integer id and a name", field=f"categories[{i}]",
                                    kind="bad_category"))
        elif cid in cats:
            problems.append(Problem(file, f"duplicate category id {cid}", field=f"categories[{i}]", kind="bad_category"))
        else:
            cats[cid] = name
    parents = {c.get("supercategory") for c in data.get("categories") or [] if isinstance(c, dict)}
    for cid in [cid for cid, n in cats.items() if n in parents and cid not in used and len(cats) > 1]:
        problems.append(Problem(file, f"category {cid} {cats.pop(cid)!r} is only a parent of other categories "
                                "and has no boxes; dropped", field="categories", action="ignored", kind="category_remap"))
    ids = sorted(cats)
    cmap = ClassMap(class_names) if class_names is not None else ClassMap.collect(cats[i] for i in ids)
    if class_names is None:  # keep the file's id order, not sorted names
        seen: dict[str, None] = {}
        for i in ids:
            seen.setdefault(cmap.lookup(cats[i])[1], None)
        cmap = ClassMap(seen)
    cat_label = {cid: cmap.lookup(cats[cid])[0] for cid in ids}
    cat_label = {cid: lab for cid, lab in cat_label.items() if lab is not None}
    if any(cid != lab for cid, lab in cat_label.items()):
        pairs = ", ".join(f"{cid}->{lab}" for cid, lab in sorted(cat_label.items()))
        problems.append(Problem(file, f"category ids remapped to labels 1..{len(cmap)}: {pairs}", field="categories",
                                action="fixed", kind="category_remap"))
    return cmap, cat_label


def _find(fn: str, json_dir: str, root: str, subdirs: list[str]) -> str | None:
    for d in (json_dir, root, os.path.join(root, "images"), *subdirs):
        p = os.path.normpath(os.path.join(d, fn))
        if within(p, root) and os.path.isfile(p):
            return p
    return None


def _image_record(file, i, img, json_dir, root, subdirs, records, problems) -> tuple | None:
    """One ``images[i]`` entry -> ``(Record without boxes, orientation, raw size, [])`` or None."""
    where = f"images[{i}]"
    if not isinstance(img, dict) or "id" not in img or not isinstance(img.get("file_name"), str):
        problems.append(Problem(file, "image entry needs 'id' and 'file_name'", field=where, kind="bad_image_entry"))
        return None
    if not isinstance(img["id"], (int, str)) or img["id"] in records:
        problems.append(Problem(file, f"duplicate or invalid image id {img['id']!r}", field=where, kind="bad_image_entry"))
        return None
    fn = img["file_name"].strip().replace("\\", "/")
    path = None
    if is_absolute_name(fn) or not within(os.path.normpath(os.path.join(json_dir, fn)), root):
        path = _find(Path(fn).name, json_dir, root, subdirs)
        action = "fixed" if path else "skipped"
        problems.append(Problem(file, f"file_name {img['file_name']!r} is absolute or leaves the dataset root; "
                                + ("used " + os.path.relpath(path, root) if path else "no image of that name inside it"),
                                field=f"{where}/file_name", action=action, kind="unsafe_path"))
        if path is None:
            return None
    else:
        path = _find(fn, json_dir, root, subdirs)
    if path is None:
        problems.append(Problem(file, f"image {fn!r} not found under {root} (looked next to the JSON, in images/ "
                                "and in its first-level folders)", field=f"{where}/file_name", kind="missing_image"))
        return None
    try:
        info = probe_image(path)
    except ImageError as e:
        problems.append(Problem(file, e.reason, field=f"{where}/file_name", kind=e.kind))
        return None
    w, h = img.get("width"), img.get("height")
    declared = (w, h) if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (w, h)) else None
    width, height, orient, kind, reason = resolve_size(declared, info)
    if kind:
        problems.append(Problem(file, reason, field=where, action="ignored" if kind == "exif_orientation" else "fixed",
                                kind=kind))
    rec = Record(os.path.relpath(path, root).replace(os.sep, "/"), width, height, source=file)
    return rec, orient, (info.raw_width, info.raw_height), []


def _add_annotations(file, anns, records, declared, cat_label, problems) -> None:
    """Attach boxes to their images; boxes of skipped images go with them (their image was reported)."""
    for i, a in enumerate(anns):
        where = f"annotations[{i}]"
        if not isinstance(a, dict):
            problems.append(Problem(file, "annotation is not an object", field=where, kind="bad_annotation"))
            continue
        image_id = a.get("image_id")
        target = records.get(image_id) if isinstance(image_id, (int, str)) else None
        if target is None:
            if image_id not in declared or not isinstance(image_id, (int, str)):
                problems.append(Problem(file, f"annotation id {a.get('id')!r}: no image with id {image_id!r}",
                                        field=f"{where}/image_id", kind="orphan_annotation"))
            continue
        label = cat_label.get(a.get("category_id"))
        if label is None:
            problems.append(Problem(file, f"annotation id {a.get('id')!r}: unknown class (category_id "
                                    f"{a.get('category_id')!r})", field=f"{where}/category_id", kind="unknown_class"))
            continue
        bbox = a.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)):
            problems.append(Problem(file, f"annotation id {a.get('id')!r}: bbox {bbox!r} is not 4 numbers",
                                    field=f"{where}/bbox", kind="bad_coordinate"))
            continue
        x, y, w, h = (float(v) for v in bbox)
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            problems.append(Problem(file, f"annotation id {a.get('id')!r}: non-finite bbox {bbox!r}",
                                    field=f"{where}/bbox", kind="bad_coordinate"))
            continue
        if w <= 0 or h <= 0:
            kind = "zero_area_box" if w == 0 or h == 0 else "swapped_box"
            problems.append(Problem(file, f"annotation id {a.get('id')!r}: bbox width/height {w:g}x{h:g}",
                                    field=f"{where}/bbox", kind=kind))
            continue
        target[3].append(((x, y, x + w, y + h), label, bool(a.get("iscrowd", 0)), where))


def _finish_record(file: str, rec: Record, orient: int, raw: tuple[int, int], parts: list,
                   problems: list[Problem]) -> Record:
    """Rotate raw-pixel boxes if needed, then clip / drop them with the shared ``check_box``."""
    boxes = np.array([p[0] for p in parts], np.float64).reshape(-1, 4)
    if orient != 1:
        boxes = orient_boxes(boxes, orient, *raw)
    keep_boxes, keep = [], []
    for j, (box, part) in enumerate(zip(boxes, parts)):
        checked, reason, action = check_box(tuple(box), rec.width, rec.height)
        if reason:
            kind = "box_clipped" if action == "fixed" else ("box_outside" if "outside" in reason else "zero_area_box")
            problems.append(Problem(file, f"{rec.image}: {reason}", field=f"{part[3]}/bbox", action=action, kind=kind))
        if checked is not None:
            keep_boxes.append(checked)
            keep.append(j)
    return Record(rec.image, rec.width, rec.height, np.array(keep_boxes, np.float32).reshape(-1, 4),
                  np.array([parts[j][1] for j in keep], np.int64), np.array([parts[j][2] for j in keep], bool),
                  source=file)
