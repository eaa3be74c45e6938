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
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path

import numpy as np

from data_tools import __version__
from data_tools.atomic import atomic_write_bytes
from data_tools.errors import UserError
from data_tools.images import check_image, orient_boxes
from data_tools.locate import absolute_inside, first_level_dirs, is_absolute_name, within
from data_tools.records import ClassMap, Problem, Record, RecordSet, box_kind, check_box, short
from data_tools.userfiles import UnsafeFile, file_identity, first_usable, read_json

MAX_JSON_BYTES = 1 << 30
"""Largest COCO JSON read (1 GiB; COCO 2017's train instances file is 448 MB)."""
REMAP_SHOWN = 10
"""Category remaps listed in the ``category_remap`` problem; the rest are counted."""


class CocoFormatError(UserError, ValueError):
    """The COCO file as a whole is unusable (not JSON, or missing its ``images`` list)."""


def _num(v: float) -> float | int:
    v = float(v)
    return int(v) if v.is_integer() else round(v, 4)


def to_coco(rs: RecordSet, names: list[str] | None = None, scores=None) -> dict:
    """The COCO ground-truth dict of ``rs`` (image ``i`` of the RecordSet gets id ``i + 1``).

    ``names``: each record's ``file_name`` (default: its path below the image root); ``scores``: per-record
    score arrays, written as each annotation's ``score`` (detections saved for correction).
    """
    images, annotations = [], []
    for i, rec in enumerate(rs.records, start=1):
        images.append({"id": i, "file_name": names[i - 1] if names else rec.image, "width": int(rec.width),
                       "height": int(rec.height)})
        for j, (box, label, diff) in enumerate(zip(rec.boxes, rec.labels, rec.difficult)):
            x1, y1, x2, y2 = (float(v) for v in box)
            w, h = x2 - x1, y2 - y1
            annotations.append({
                "id": len(annotations) + 1, "image_id": i, "category_id": int(label),
                "bbox": [_num(x1), _num(y1), _num(w), _num(h)], "area": _num(w * h),
                "iscrowd": 0, "difficult": int(bool(diff)),
            })
            if scores is not None:
                annotations[-1]["score"] = round(float(scores[i - 1][j]), 4)
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


def write_coco(rs: RecordSet, path: str | os.PathLike, names: list[str] | None = None, scores=None) -> dict:
    """Write :func:`to_coco` of ``rs`` to ``path`` atomically; returns the dict."""
    d = to_coco(rs, names, scores)
    atomic_write_bytes(path, json.dumps(d, ensure_ascii=False).encode("utf-8"))
    return d


def read_coco(json_path: str | os.PathLike, class_names: list[str] | None = None,
              image_root: str | os.PathLike | None = None) -> tuple[RecordSet, list[Problem]]:
    """Read a COCO detection JSON into a RecordSet whose ``image_root`` is the folder images are found in.

    The image root is ``image_root`` when given (``--image-root``), else the JSON's folder, or its parent
    when the JSON sits in an ``annotations/`` folder (COCO / CVAT layout); ``file_name`` is looked up
    there, in ``images/``, or in a first-level subfolder.
    An absolute ``file_name`` of a file inside the root is that file; any other absolute name, or one leaving
    the root, is reported and looked up by its base name inside the root.
    One image file listed under several ids (also under two names of one file: a symlink or a hard link)
    becomes one record with the boxes of all of them (exact repeats dropped), reported as ``duplicate_image``. Raises :class:`CocoFormatError` when the file as
    a whole is unusable (not JSON, no ``images`` list, no usable category).
    """
    file = os.fspath(json_path)
    data = _load_json(file)
    json_dir = os.path.dirname(os.path.abspath(file))
    root = os.path.abspath(image_root) if image_root is not None else image_root_of(file)
    if not os.path.isdir(root):
        raise CocoFormatError(f"image root {root} is not a folder")
    if not within(json_dir, root):  # file_name is then relative to the image root
        json_dir = root
    problems: list[Problem] = []
    cmap, cat_label = _categories(file, data, class_names, problems)
    entries: dict = {}  # image id -> _Entry (ids of one image file share its box list)
    order: list = []
    by_file: dict[str, object] = {}  # resolved image path -> first image id
    subdirs = first_level_dirs(root)
    for i, img in enumerate(data["images"]):
        entry = _image_entry(file, i, img, json_dir, root, subdirs, entries, problems)
        if entry is None:
            continue
        key = file_identity(os.path.join(root, entry.rec.image))  # a symlink or a hard link: the same file
        first = by_file.setdefault(key, img["id"])
        if first == img["id"]:
            order.append(first)
        else:
            head = entries[first]
            head.merged = True
            same = head.rec.image if entry.rec.image == head.rec.image else \
                f"{entry.rec.image} (the same file as {head.rec.image})"
            entry = _Entry(head.rec, entry.orient, entry.raw, head.parts)
            problems.append(Problem(file, f"image {same} is already listed as image id {short(first)}; "
                                    "the boxes of both ids go to one record", field=f"images[{i}]/file_name",
                                    action="fixed", kind="duplicate_image"))
        entries[img["id"]] = entry
    declared = {img.get("id") for img in data["images"] if isinstance(img, dict) and _is_id(img.get("id"))}
    _add_annotations(file, data.get("annotations") or [], entries, declared, cat_label, problems)
    out = [_finish_record(file, entries[img_id], problems) for img_id in order]
    return RecordSet(cmap.names, root, out, {"source": os.path.abspath(file), "format": "coco",
                                                  "inputs": len(data["images"])}), problems


def image_root_of(json_path: str | os.PathLike) -> str:
    """The folder a COCO file's images are relative to: its folder, or the parent of an ``annotations/`` one."""
    json_dir = os.path.dirname(os.path.abspath(json_path))
    return os.path.dirname(json_dir) if os.path.basename(json_dir).lower() == "annotations" else json_dir


def _is_id(v) -> bool:
    """COCO ids are integers or strings (never lists, dicts, floats or booleans)."""
    return isinstance(v, (int, str)) and not isinstance(v, bool)


def _load_json(file: str) -> dict:
    data = read_json(file, MAX_JSON_BYTES, CocoFormatError, "a COCO file")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise CocoFormatError(f"{file}: not a COCO detection file (no 'images' list)")
    if not isinstance(data.get("categories", []), list) or not isinstance(data.get("annotations", []), list):
        raise CocoFormatError(f"{file}: 'categories' and 'annotations' must be lists")
    return data


def _categories(file: str, data: dict, class_names, problems: list[Problem]) -> tuple[ClassMap, dict]:
    """Category id -> label. Drops bad/duplicate categories and Roboflow's unused parent category."""
    entries = data.get("categories") or []
    used = {a.get("category_id") for a in data.get("annotations") or [] if isinstance(a, dict)
            and _is_id(a.get("category_id"))}
    cats: dict[int, str] = {}
    parents: set[str] = set()
    for i, c in enumerate(entries):
        cid, name = (c.get("id"), c.get("name")) if isinstance(c, dict) else (None, None)
        if not isinstance(cid, int) or isinstance(cid, bool) or not isinstance(name, str) or not name.strip():
            problems.append(Problem(file, f"category {short(c)} needs an integer id and a name",
                                    field=f"categories[{i}]", kind="bad_category"))
            continue
        parent = c.get("supercategory")
        if isinstance(parent, str):
            parents.add(parent)
        elif parent is not None:
            problems.append(Problem(file, f"supercategory {short(parent)} is not a string; ignored",
                                    field=f"categories[{i}]/supercategory", action="ignored", kind="bad_category"))
        if cid in cats:
            problems.append(Problem(file, f"duplicate category id {cid}", field=f"categories[{i}]", kind="bad_category"))
        else:
            cats[cid] = name
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
    if not cat_label:
        raise CocoFormatError(_no_category_message(file, entries, cats, class_names))
    if any(cid != lab for cid, lab in cat_label.items()):
        pairs = [f"{cid}->{lab}" for cid, lab in sorted(cat_label.items())]
        more = f", ... ({len(pairs) - REMAP_SHOWN:,} more)" if len(pairs) > REMAP_SHOWN else ""
        problems.append(Problem(file, f"category ids remapped to labels 1..{len(cmap)}: "
                                + ", ".join(pairs[:REMAP_SHOWN]) + more, field="categories",
                                action="fixed", kind="category_remap"))
    return cmap, cat_label


def _no_category_message(file: str, entries: list, cats: dict, class_names) -> str:
    if not entries:
        return f"{file}: no categories: a COCO file needs a 'categories' list naming its classes"
    if not cats:
        return f"{file}: no usable categories (each needs an integer 'id' and a 'name')"
    names = ", ".join(repr(n) for n in list(cats.values())[:5]) + (", ..." if len(cats) > 5 else "")
    return f"{file}: none of its {len(cats):,} categories ({names}) is in the class list {short(class_names)}"


def _find(fn: str, json_dir: str, root: str, subdirs: list[str]) -> tuple[str | None, UnsafeFile | None]:
    """The first usable ``fn`` next to the JSON, in the root, in ``images/`` or in a first-level folder."""
    cands = [os.path.normpath(os.path.join(d, fn)) for d in (json_dir, root, os.path.join(root, "images"), *subdirs)]
    return first_usable([p for p in cands if within(p, root)], root)


@dataclass
class _Entry:
    """One usable ``images[i]``: its record (no boxes yet), EXIF orientation, raw size and box parts.

    A part is ``(xyxy, label, iscrowd, "annotations[j]", orientation)``; ``merged`` marks a record that
    received boxes from several image ids.
    """

    rec: Record
    orient: int
    raw: tuple[int, int]
    parts: list = dc_field(default_factory=list)
    merged: bool = False


def _image_entry(file, i, img, json_dir, root, subdirs, entries, problems) -> _Entry | None:
    """One ``images[i]`` entry -> :class:`_Entry`, or None (problem appended)."""
    where = f"images[{i}]"
    if not isinstance(img, dict) or "id" not in img or not isinstance(img.get("file_name"), str):
        problems.append(Problem(file, "image entry needs 'id' and 'file_name'", field=where, kind="bad_image_entry"))
        return None
    if not _is_id(img["id"]):
        problems.append(Problem(file, f"image id {short(img['id'])} is not an integer or string",
                                field=f"{where}/id", kind="bad_id"))
        return None
    if img["id"] in entries:
        problems.append(Problem(file, f"duplicate image id {short(img['id'])}", field=f"{where}/id",
                                kind="bad_image_entry"))
        return None
    fn = img["file_name"].strip().replace("\\", "/")
    exact = absolute_inside(fn, root)
    if exact is not None and os.path.lexists(exact):  # an absolute name of a file in the root: that file or none
        path, refused = first_usable([exact], root)
    elif is_absolute_name(fn) or not within(os.path.normpath(os.path.join(json_dir, fn)), root):
        path, refused = _find(Path(fn).name, json_dir, root, subdirs)
        action = "fixed" if path else "skipped"
        problems.append(Problem(file, f"file_name {short(img['file_name'])} is absolute or leaves the dataset root; "
                                + ("used " + os.path.relpath(path, root) if path else "no image of that name inside it"),
                                field=f"{where}/file_name", action=action, kind="unsafe_path"))
        if path is None:
            return None
    else:
        path, refused = _find(fn, json_dir, root, subdirs)
    if path is None and refused is not None:
        problems.append(Problem(file, f"image {os.path.relpath(refused.path, root)} {refused.reason}",
                                field=f"{where}/file_name", kind=refused.kind))
        return None
    if path is None:
        problems.append(Problem(file, f"image {short(fn)} not found under {root} (looked next to the JSON, in "
                                "images/ and in its first-level folders; give --image-root DIR when the images are elsewhere)",
                                field=f"{where}/file_name", kind="missing_image"))
        return None
    w, h = img.get("width"), img.get("height")
    declared = (w, h) if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (w, h)) else None
    checked = check_image(file, path, declared, problems, field=f"{where}/file_name", size_at=(None, where))
    if checked is None:
        return None
    info, width, height, orient = checked
    rec = Record(os.path.relpath(path, root).replace(os.sep, "/"), width, height, source=file)
    return _Entry(rec, orient, (info.raw_width, info.raw_height))


def _add_annotations(file, anns, entries, declared, cat_label, problems) -> None:
    """Attach boxes to their images; boxes of skipped images go with them (their image was reported)."""
    for i, a in enumerate(anns):
        where = f"annotations[{i}]"
        if not isinstance(a, dict):
            problems.append(Problem(file, "annotation is not an object", field=where, kind="bad_annotation"))
            continue
        aid, image_id, cid = short(a.get("id")), a.get("image_id"), a.get("category_id")
        if not _is_id(image_id):
            problems.append(Problem(file, f"annotation id {aid}: image_id {short(image_id)} is not an integer or "
                                    "string", field=f"{where}/image_id", kind="bad_id"))
            continue
        target = entries.get(image_id)
        if target is None:
            if image_id not in declared:
                problems.append(Problem(file, f"annotation id {aid}: no image with id {short(image_id)}",
                                        field=f"{where}/image_id", kind="orphan_annotation"))
            continue
        if not _is_id(cid):
            problems.append(Problem(file, f"annotation id {aid}: category_id {short(cid)} is not an integer",
                                    field=f"{where}/category_id", kind="bad_id"))
            continue
        label = cat_label.get(cid)
        if label is None:
            problems.append(Problem(file, f"annotation id {aid}: unknown class (category_id {short(cid)})",
                                    field=f"{where}/category_id", kind="unknown_class"))
            continue
        bbox = a.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)):
            problems.append(Problem(file, f"annotation id {aid}: bbox {short(bbox)} is not 4 numbers",
                                    field=f"{where}/bbox", kind="bad_coordinate"))
            continue
        try:
            x, y, w, h = (float(v) for v in bbox)
        except OverflowError:  # an integer too big for a float
            x = y = w = h = math.inf
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            problems.append(Problem(file, f"annotation id {aid}: non-finite bbox {short(bbox)}",
                                    field=f"{where}/bbox", kind="bad_coordinate"))
            continue
        if w <= 0 or h <= 0:
            kind = "zero_area_box" if w == 0 or h == 0 else "swapped_box"
            problems.append(Problem(file, f"annotation id {aid}: bbox width/height {w:g}x{h:g}",
                                    field=f"{where}/bbox", kind=kind))
            continue
        hard = bool(a.get("iscrowd", 0)) or a.get("difficult") in (1, True)  # export writes VOC's flag as "difficult"
        target.parts.append(((x, y, x + w, y + h), label, hard, where, target.orient))


def _finish_record(file: str, entry: _Entry, problems: list[Problem]) -> Record:
    """Rotate raw-pixel boxes if needed, then clip / drop them with the shared ``check_box``.

    On a record that got boxes from several image ids, a box repeating an earlier one (same class and
    coordinates) is dropped and reported.
    """
    rec, parts = entry.rec, entry.parts
    boxes = np.array([p[0] for p in parts], np.float64).reshape(-1, 4)
    orients = np.array([p[4] for p in parts], np.int64)
    for o in set(orients.tolist()) - {1}:
        boxes[orients == o] = orient_boxes(boxes[orients == o], o, *entry.raw)
    keep_boxes, keep = [], []
    seen: dict[tuple, str] = {}
    for j, (box, part) in enumerate(zip(boxes, parts)):
        checked, reason, action = check_box(tuple(box), rec.width, rec.height)
        if reason:
            kind = "box_clipped" if action == "fixed" else box_kind(reason)
            problems.append(Problem(file, f"{rec.image}: {reason}", field=f"{part[3]}/bbox", action=action, kind=kind))
        if checked is None:
            continue
        key = (part[1], *(round(v, 3) for v in checked))
        if entry.merged and key in seen:
            problems.append(Problem(file, f"{rec.image}: same class and box as {seen[key]} (the image is listed "
                                    "under several ids); dropped", field=f"{part[3]}/bbox", kind="duplicate_box"))
            continue
        seen.setdefault(key, part[3])
        keep_boxes.append(checked)
        keep.append(j)
    return Record(rec.image, rec.width, rec.height, np.array(keep_boxes, np.float32).reshape(-1, 4),
                  np.array([parts[j][1] for j in keep], np.int64), np.array([parts[j][2] for j in keep], bool),
                  source=file)
