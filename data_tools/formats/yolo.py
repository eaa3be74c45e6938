"""Ultralytics / Roboflow / labelImg YOLO folders <-> records.

Layout read: images anywhere under the root (``images/``, ``train/images/``, ``images/val/``, or beside
their ``.txt`` as labelImg saves them); an image's label file is found by replacing its nearest
``images`` folder with ``labels`` (Ultralytics' rule), else beside it with the same stem. Class names come
from ``data.yaml`` (``names:`` as a list or an ``{id: name}`` map; any ``*.yaml`` in the root with
``names`` will do), else ``classes.txt`` / ``obj.names`` / ``_darknet.labels`` (one name per line, line
``i`` is class id ``i``). An image without a label file is a background image (no boxes), as in
Ultralytics. A ``train``/``val``/``valid``/``test`` folder on an image's path becomes the record's
``split`` (``valid`` is read as ``val``).

A label line is ``class x_center y_center width height``, fractions of the image size; a sixth value
(a saved confidence) is ignored, and a segmentation line (``class x1 y1 x2 y2 ...``) becomes the
bounding box of its points (reported as fixed). Each bad line is reported with its file and line number.

Writing (:func:`write_yolo`): ``images/[split/]NAME``, ``labels/[split/]STEM.txt`` (an empty file for an
image without boxes), ``data.yaml`` and ``classes.txt`` (labelImg's YOLO mode reads the latter);
coordinates with 6 decimals.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from data_tools.atomic import atomic_write_text
from data_tools.formats.common import (
    MAX_TXT_BYTES,
    ROUNDING_SLACK,
    ImageFinder,
    Item,
    ReadOptions,
    add_box,
    class_map,
    image_files,
    image_item,
    number,
    read_text,
    to_recordset,
)
from data_tools.locate import IMAGE_EXTS
from data_tools.records import Problem, RecordSet
from data_tools.safe_yaml import load_yaml
from data_tools.userfiles import first_usable

MAX_YAML_BYTES = 1 << 20
MAX_CLASS_ID = 1_000_000  # classes without names are listed 0..max id: a larger id is a typo, not a SKU
NAMES_FILES = ("classes.txt", "obj.names", "_darknet.labels")
_FIELDS = ("class", "x_center", "y_center", "width", "height")
_NOT_NORMALISED = 1.5  # a coordinate this far past 1 was written in pixels, not fractions


def is_yolo_folder(folder: str) -> bool:
    """A folder with ``data.yaml``, a ``labels/`` folder holding ``.txt`` files, or images with a ``.txt`` of the
    same name beside them (labelImg's YOLO mode)."""
    if any(os.path.isfile(os.path.join(folder, n)) for n in ("data.yaml", "data.yml")):
        return True
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        texts = {os.path.splitext(f)[0] for f in filenames if f.lower().endswith(".txt") and f not in NAMES_FILES}
        if os.path.basename(dirpath).lower() == "labels" and texts:
            return True
        if any(os.path.splitext(f)[0] in texts for f in filenames if os.path.splitext(f)[1].lower() in IMAGE_EXTS):
            return True
    return False


def read_yolo(src: str, opts: ReadOptions) -> tuple[RecordSet, list[Problem]]:
    """Read a YOLO folder (or the folder of a given ``data.yaml``); see the module doc."""
    root = os.path.abspath(src if os.path.isdir(src) else os.path.dirname(src))
    problems: list[Problem] = []
    ids, names_file = _class_names(root, None if os.path.isdir(src) else os.path.abspath(src), problems)
    finder = ImageFinder(root)
    items: list[Item] = []
    claimed: set[str] = set()
    seen_ids: set[int] = set()
    images = image_files(root)
    for img in images:
        ok, unsafe = first_usable([img], root, finder.cache)
        if ok is None:  # a symlink leaving the root, a loop, a FIFO named .jpg
            problems.append(Problem(img, f"image {unsafe.reason}", kind=unsafe.kind))
            continue
        label, refused = _label_file(img, root, finder)
        if refused is not None:
            problems.append(Problem(refused.path, f"label file {refused.reason}", kind=refused.kind))
            claimed.add(os.path.abspath(refused.path))
            continue
        file = label or img
        item = image_item(file, finder, img, None, problems, sized=False)
        if label:
            claimed.add(os.path.abspath(label))
        if item is None:
            continue
        if label and not _read_lines(label, root, finder, item, ids, seen_ids, problems):
            continue
        items.append(item)
    _report_orphans(root, claimed, names_file, problems)
    if ids is None:  # no names anywhere: classes are called by their ids
        declared = [str(i) for i in range(max(seen_ids, default=-1) + 1)]
        if opts.class_names is not None:
            for it in items:
                for o in it.objects:
                    i = int(o.name)
                    o.name = opts.class_names[i] if i < len(opts.class_names) else f"class id {i}"
    else:
        declared = [ids[i] for i in sorted(ids)]
    cmap = class_map(items, opts.class_names, declared)
    return to_recordset(items, cmap, root, problems, finder, {"inputs": len(images)}), problems


def _label_file(img: str, root: str, finder: ImageFinder):
    """``(label path or None, refused UnsafeFile or None)`` for one image (see the module doc)."""
    stem = os.path.splitext(img)[0]
    parts = Path(os.path.relpath(stem, root)).parts
    cands = []
    for i in range(len(parts) - 2, -1, -1):  # the nearest images/ folder on the path
        if parts[i].lower() == "images":
            cands.append(os.path.join(root, *parts[:i], "labels", *parts[i + 1:]) + ".txt")
            break
    cands.append(stem + ".txt")
    path, refused = first_usable(cands, root, finder.cache)
    return path, refused


def _read_lines(label: str, root: str, finder: ImageFinder, item: Item, ids: dict[int, str] | None,
                seen_ids: set[int], problems: list[Problem]) -> bool:
    """Add the boxes of one label file to ``item``; False when the file is unreadable (image skipped)."""
    text, problem = read_text(label, MAX_TXT_BYTES, root, finder.cache)
    if problem is not None:
        problem.reason += f"; image {item.image} skipped (its boxes are unknown)"
        problems.append(problem)
        return False
    for ln, raw in enumerate(text.splitlines(), start=1):
        parts = raw.split()
        if not parts or parts[0].startswith("#"):
            continue
        values, bad = _parse(parts)
        if bad:
            problems.append(Problem(label, bad[1], line=ln, field=bad[0], kind=bad[2]))
            continue
        cls, cx, cy, w, h, polygon = values
        if ids is not None and cls not in ids:
            problems.append(Problem(label, f"class id {cls} is not in the {len(ids)} class names "
                                    f"(ids {min(ids)}..{max(ids)})", line=ln, field="class", kind="unknown_class"))
            continue
        seen_ids.add(cls)
        if polygon:
            problems.append(Problem(label, f"{(len(parts) - 1) // 2}-point polygon read as its bounding box", line=ln,
                                    action="fixed", kind="polygon_box"))
        box = ((cx - w / 2) * item.width, (cy - h / 2) * item.height, (cx + w / 2) * item.width,
               (cy + h / 2) * item.height)
        add_box(item, ids[cls] if ids is not None else str(cls), box, problems, line=ln, field="box",
                slack=ROUNDING_SLACK * max(item.width, item.height))
    return True


def _parse(parts: list[str]):
    """``((cls, cx, cy, w, h, polygon), None)`` or ``(None, (field, reason, kind))`` for one split line."""
    n = len(parts)
    polygon = n >= 7 and (n - 1) % 2 == 0
    if n not in (5, 6) and not polygon:
        return None, ("line", f"{n} values; a YOLO line is 'class x_center y_center width height'", "bad_line")
    cls_v, why = number(parts[0])
    if why or cls_v != int(cls_v) or cls_v < 0:
        return None, ("class", f"class id {parts[0][:40]!r} is not a non-negative integer", "bad_class_id")
    if cls_v > MAX_CLASS_ID:
        return None, ("class", f"class id {parts[0][:40]} is over {MAX_CLASS_ID:,}", "bad_class_id")
    nums = []
    for i, text in enumerate(parts[1:5] if not polygon else parts[1:], start=1):
        v, why = number(text)
        if why:
            name = _FIELDS[i] if not polygon else f"point {(i + 1) // 2} {'xy'[(i + 1) % 2]}"
            return None, (name, f"{why} {name}", "bad_coordinate")
        nums.append(v)
    if polygon:
        xs, ys = nums[0::2], nums[1::2]
        cx, cy, w, h = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)
    else:
        cx, cy, w, h = nums
    if max(abs(cx), abs(cy), w, h) > _NOT_NORMALISED:
        return None, ("box", f"coordinates {cx:g} {cy:g} {w:g} {h:g} are not fractions of the image size "
                      "(YOLO boxes are normalised to 0..1; were pixels written?)", "bad_coordinate")
    for name, v in (("width", w), ("height", h)):
        if v <= 0:
            kind = "zero_area_box" if v == 0 else "swapped_box"
            return None, (name, f"box {name} {v:g} (must be > 0)", kind)
    return (int(cls_v), cx, cy, w, h, polygon), None


def _class_names(root: str, given_yaml: str | None, problems: list[Problem]) -> tuple[dict[int, str] | None, str | None]:
    """``({class id: name}, file)`` from data.yaml or a names file; ``(None, None)`` when there is none."""
    yamls = [given_yaml] if given_yaml else [os.path.join(root, n) for n in ("data.yaml", "data.yml")] + sorted(
        str(p) for p in Path(root).glob("*.y*ml") if p.name not in ("data.yaml", "data.yml"))
    for f in yamls:
        if not os.path.isfile(f):
            continue
        ids = _yaml_names(f, root, problems, required=f in (given_yaml, os.path.join(root, "data.yaml")))
        if ids is not None:
            return ids, f
    for f in [os.path.join(d, n) for d in (root, os.path.join(root, "labels")) for n in NAMES_FILES]:
        if os.path.isfile(f):
            text, problem = read_text(f, MAX_YAML_BYTES, root)
            if problem is not None:
                problems.append(problem)
                continue
            names = [s.strip() for s in text.splitlines()]
            while names and not names[-1]:
                names.pop()
            if not names or not all(names):
                problems.append(Problem(f, "names file with no names or a blank line among them", kind="bad_names"))
                continue
            return dict(enumerate(names)), f
    problems.append(Problem(root, "no data.yaml or classes.txt: classes are named by their ids (0, 1, ...); add one "
                            "to name them", action="ignored", kind="no_class_names"))
    return None, None


def _yaml_names(f: str, root: str, problems: list[Problem], required: bool) -> dict[int, str] | None:
    text, problem = read_text(f, MAX_YAML_BYTES, root)
    if problem is not None:
        problems.append(problem)
        return None
    try:
        doc = load_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problems.append(Problem(f, f"invalid YAML: {getattr(e, 'problem', None) or e}",
                                line=mark.line + 1 if mark else None, kind="bad_names"))
        return None
    names = doc.get("names") if isinstance(doc, dict) else None
    if names is None:
        if required:
            problems.append(Problem(f, "no 'names:' list of class names", field="names", kind="bad_names"))
        return None
    if isinstance(names, list):
        pairs = list(enumerate(names))
    elif isinstance(names, dict):
        pairs = list(names.items())
    else:
        problems.append(Problem(f, f"'names' is a {type(names).__name__}, not a list or an id: name map",
                                field="names", kind="bad_names"))
        return None
    out: dict[int, str] = {}
    for k, v in pairs:
        key, _ = number(str(k)) if not isinstance(k, bool) else (None, None)
        if key is None or key != int(key) or key < 0 or not isinstance(v, (str, int, float)) or isinstance(v, bool) \
                or not str(v).strip():
            problems.append(Problem(f, f"names entry {str(k)[:40]}: {str(v)[:40]!r} needs an id >= 0 and a name",
                                    field=f"names[{str(k)[:40]}]", kind="bad_names"))
            continue
        out[int(key)] = str(v).strip()
    return out or None


def _report_orphans(root: str, claimed: set[str], names_file: str | None, problems: list[Problem]) -> None:
    """A ``.txt`` under a ``labels`` folder that no image uses is reported (its boxes are lost)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if "labels" not in (p.lower() for p in Path(os.path.relpath(dirpath, root)).parts):
            continue
        for f in sorted(filenames):
            path = os.path.join(dirpath, f)
            if f.lower().endswith(".txt") and f not in NAMES_FILES and path not in claimed and path != names_file:
                problems.append(Problem(path, "no image for this label file (looked for the same name under images/ "
                                        "and beside it)", kind="orphan_label"))


def write_yolo(rs: RecordSet, out: Path, dests: list[str], scores=None) -> list[Path]:
    """Write ``labels/DEST.txt`` per record (``dests``: image paths under ``out/images``), ``data.yaml``, ``classes.txt``."""
    written = []
    for rec, dest in zip(rs.records, dests):
        lines = []
        for (x1, y1, x2, y2), label in zip(rec.boxes.astype(float), rec.labels):
            w, h = (x2 - x1) / rec.width, (y2 - y1) / rec.height
            cx, cy = (x1 + x2) / 2 / rec.width, (y1 + y2) / 2 / rec.height
            lines.append(f"{int(label) - 1} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
        path = out / "labels" / Path(dest).with_suffix(".txt")
        written.append(atomic_write_text(path, "".join(s + "\n" for s in lines), durable=False))
    splits = sorted({r.split for r in rs.records if r.split})
    dirs = {s: f"images/{s}" for s in splits} or {"train": "images", "val": "images"}
    doc = {"path": ".", "train": dirs.get("train", next(iter(dirs.values()))), "val": dirs.get("val", dirs.get(
        "train", next(iter(dirs.values()))))}
    if "test" in dirs:
        doc["test"] = dirs["test"]
    doc["nc"] = rs.num_classes
    doc["names"] = dict(enumerate(rs.class_names))
    written.append(atomic_write_text(out / "data.yaml", yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)))
    written.append(atomic_write_text(out / "classes.txt", "".join(n + "\n" for n in rs.class_names)))
    return written
