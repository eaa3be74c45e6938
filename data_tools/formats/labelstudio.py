"""Label Studio JSON exports <-> records.

Read: the "JSON" export (a list of tasks ``{"data": {"image": URL}, "annotations": [{"result": [...]}],
"predictions": [...]}``) and the "JSON-MIN" one (``{"image": URL, "label": [...]}``). A rectangle is
``value: {x, y, width, height, rotation, rectanglelabels: [name]}`` in percent of
``original_width`` / ``original_height``. The first annotation that was not cancelled is read; a task
with none falls back to its first prediction (pre-labels), and a task with neither is skipped as not
labelled yet (an annotation with an empty result is an image without products). Label Studio rotates a
rectangle about its top-left corner; a rotated one becomes its enclosing upright box (fixed). Other
result types (choices, polygons, keypoints, brushes) are reported and ignored. Problems name the task
and result: ``[3]/annotations[0]/result[2]/value/width``. The classes are the names found, sorted, or in
the order of a ``classes.txt`` beside the JSON.

Image URLs: ``/data/local-files/?d=PATH`` is ``PATH`` below the image root; an upload
(``/data/upload/7/1a2b3c4d-shelf.jpg``) and a web or cloud URL are found by file name (without the
upload's ``1a2b3c4d-`` prefix) in the image root (default: the JSON's folder; ``--image-root``), its
``images/`` folder and its first-level folders.

Write (:func:`write_labelstudio`): one task per image with ``/data/local-files/?d=`` URLs (serve the
export folder as Label Studio's local-files document root), ground truth as ``annotations`` and
detections (with scores) as ``predictions``, so Label Studio shows them as pre-labels to correct.
"""

from __future__ import annotations

import json
import math
import os
import posixpath
import re
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from data_tools.atomic import atomic_write_bytes
from data_tools.errors import UserError
from data_tools.formats.common import (
    MAX_LABEL_BYTES,
    ROUNDING_SLACK,
    ImageFinder,
    Item,
    ReadOptions,
    add_box,
    class_map,
    class_order,
    image_item,
    to_recordset,
)
from data_tools.locate import IMAGE_EXTS
from data_tools.records import Problem, RecordSet, short
from data_tools.userfiles import read_json

MARKER = "retail-detect"
"""``data.exported_by`` of the tasks this project writes (``retail-data export`` recognises its own files by it)."""
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")
_IMAGE_KEYS = ("image", "img", "image_url", "url")


class LabelStudioError(UserError, ValueError):
    """The file as a whole is unusable (not JSON, not a list of tasks)."""


def load_tasks(file: str) -> list:
    """The task list of a Label Studio export (a single task object is accepted too)."""
    data = read_json(file, MAX_LABEL_BYTES, LabelStudioError, "a Label Studio export")
    if isinstance(data, dict) and ("data" in data or "image" in data):
        data = [data]
    if not isinstance(data, list):
        raise LabelStudioError(f"{file}: not a Label Studio export (a JSON list of tasks)")
    return data


def read_labelstudio(src: str, opts: ReadOptions) -> tuple[RecordSet, list[Problem]]:
    """Read a Label Studio JSON or JSON-MIN export (see the module doc)."""
    file = os.fspath(src)
    tasks = load_tasks(file)
    json_dir = os.path.dirname(os.path.abspath(file))
    root = os.path.abspath(opts.image_root or json_dir)
    finder = ImageFinder(root)
    problems: list[Problem] = []
    items = [it for i, task in enumerate(tasks) if (it := _task(file, i, task, finder, json_dir, problems)) is not None]
    order, order_file = class_order(json_dir, problems) if opts.class_names is None else (None, None)
    cmap = class_map(items, opts.class_names, None, order)
    meta = {"inputs": len(tasks), "class_order": order_file}
    return to_recordset(items, cmap, root, problems, finder, meta), problems


def _task(file: str, i: int, task, finder: ImageFinder, json_dir: str, problems: list[Problem]) -> Item | None:
    where = f"[{i}]"
    if not isinstance(task, dict):
        problems.append(Problem(file, "task is not a JSON object", field=where, kind="bad_task"))
        return None
    minimal = "data" not in task
    data = task if minimal else task.get("data")
    url = _image_url(data)
    if url is None:
        problems.append(Problem(file, f"task has no image URL in {'its fields' if minimal else 'data'}",
                                field=f"{where}/{'image' if minimal else 'data/image'}", kind="missing_image"))
        return None
    results, rwhere = _results(file, task, where, minimal, problems)
    if results is None:
        return None
    name, extra = _image_name(url)
    path, reason, kind = finder.find(name, [json_dir], extra)
    ifield = f"{where}/{'image' if minimal else 'data/image'}"
    if reason:
        problems.append(Problem(file, reason, field=ifield, action="fixed" if path else "skipped", kind=kind))
    if path is None:
        return None
    declared = _declared_size(results)
    item = image_item(file, finder, path, declared, problems, field=where, sized=declared is not None)
    if item is None:
        return None
    base = item.raw if item.orientation != 1 else (item.width, item.height)
    for j, r in enumerate(results):
        _rectangle(file, r, f"{rwhere}[{j}]", item, base, minimal, problems)
    return item


def _image_url(data) -> str | None:
    if not isinstance(data, dict):
        return None
    for k in _IMAGE_KEYS:
        if isinstance(data.get(k), str) and data[k].strip():
            return data[k].strip()
    for v in data.values():
        if isinstance(v, str) and os.path.splitext(urlsplit(v).path)[1].lower() in IMAGE_EXTS:
            return v.strip()
    return None


def _image_name(url: str) -> tuple[str, tuple[str, ...]]:
    """``(name to look up below the root, other base names to try)`` for an image URL."""
    parts = urlsplit(url)
    if "d" in parse_qs(parts.query) and parts.path.rstrip("/").endswith("local-files"):
        return parse_qs(parts.query)["d"][0], ()
    path = unquote(parts.path)
    base = posixpath.basename(path)
    stripped = _UPLOAD_PREFIX.sub("", base)
    extra = (stripped,) if stripped != base else ()
    if parts.scheme or parts.netloc or path.startswith("/data/"):
        return base, extra
    return path, extra


def _results(file: str, task: dict, where: str, minimal: bool, problems: list[Problem]):
    """``(result list, its field path)`` of the annotation to read, or ``(None, None)`` (problem appended)."""
    if minimal:
        res = task.get("label", [])
        return (res, f"{where}/label") if isinstance(res, list) else _bad(file, f"{where}/label", problems)
    for key in ("annotations", "completions", "predictions"):
        entries = task.get(key) or []
        if not isinstance(entries, list):
            return _bad(file, f"{where}/{key}", problems)
        usable = [(k, a) for k, a in enumerate(entries) if isinstance(a, dict) and not a.get("was_cancelled")]
        if usable:
            k, a = usable[0]
            if len(usable) > 1:
                problems.append(Problem(file, f"{len(usable)} {key}; only the first is read", field=f"{where}/{key}",
                                        action="ignored", kind="several_annotations"))
            res = a.get("result", [])
            return (res, f"{where}/{key}[{k}]/result") if isinstance(res, list) else _bad(
                file, f"{where}/{key}[{k}]/result", problems)
    problems.append(Problem(file, "task has no annotation or prediction (not labelled yet)", field=where,
                            kind="unlabelled_task"))
    return None, None


def _bad(file: str, field: str, problems: list[Problem]):
    problems.append(Problem(file, "not a list", field=field, kind="bad_task"))
    return None, None


def _declared_size(results: list) -> tuple[int, int] | None:
    for r in results:
        if isinstance(r, dict):
            w, h = r.get("original_width"), r.get("original_height")
            if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (w, h)):
                return w, h
    return None


def _rectangle(file: str, r, where: str, item: Item, base: tuple[int, int], minimal: bool,
               problems: list[Problem]) -> None:
    if not isinstance(r, dict):
        problems.append(Problem(file, "result is not a JSON object", field=where, kind="bad_task"))
        return
    v = r if minimal else r.get("value")
    kind = r.get("type") or ("rectanglelabels" if isinstance(v, dict) and "rectanglelabels" in v else None)
    if kind not in ("rectanglelabels", "rectangle"):
        problems.append(Problem(file, f"result of type {short(kind)} is not a rectangle; ignored", field=where,
                                action="ignored", kind="not_a_box"))
        return
    vw = where if minimal else f"{where}/value"
    if not isinstance(v, dict):
        problems.append(Problem(file, "rectangle has no value", field=vw, kind="bad_coordinate"))
        return
    nums = {}
    for k in ("x", "y", "width", "height"):
        x = v.get(k)
        if not _finite(x):
            problems.append(Problem(file, f"{k} {short(x)} is not a finite number", field=f"{vw}/{k}",
                                    kind="bad_coordinate"))
            return
        nums[k] = float(x)
    for k in ("width", "height"):
        if nums[k] <= 0:
            problems.append(Problem(file, f"{k} {nums[k]:g} (must be > 0)", field=f"{vw}/{k}",
                                    kind="zero_area_box" if nums[k] == 0 else "swapped_box"))
            return
    labels = v.get("rectanglelabels") or v.get("labels")
    if not isinstance(labels, list) or not labels or not isinstance(labels[0], str) or not labels[0].strip():
        problems.append(Problem(file, f"rectangle has no label ({short(labels)})", field=f"{vw}/rectanglelabels",
                                kind="missing_name"))
        return
    if len(labels) > 1:
        problems.append(Problem(file, f"{len(labels)} labels on one rectangle; {labels[0]!r} used",
                                field=f"{vw}/rectanglelabels", action="ignored", kind="several_labels"))
    W, H = base
    x1, y1, w, h = nums["x"] * W / 100, nums["y"] * H / 100, nums["width"] * W / 100, nums["height"] * H / 100
    box = (x1, y1, x1 + w, y1 + h)
    rotation = v.get("rotation") or 0
    if _finite(rotation) and rotation % 360:
        box = _rotated_about_corner(x1, y1, w, h, rotation)
        problems.append(Problem(file, f"rectangle rotated by {rotation:g} degrees read as its enclosing upright box",
                                field=f"{vw}/rotation", action="fixed", kind="rotated_box"))
    add_box(item, labels[0], box, problems, field=where, slack=ROUNDING_SLACK * max(W, H))


def _finite(x: object) -> bool:
    """A JSON number that is a finite float (a 400-digit integer is not: it overflows a float)."""
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:
        return False


def _rotated_about_corner(x: float, y: float, w: float, h: float, degrees: float) -> tuple[float, float, float, float]:
    """The upright box enclosing a ``w x h`` rectangle at ``(x, y)`` rotated by ``degrees`` about that corner."""
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    xs = [x + dx * c - dy * s for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))]
    ys = [y + dx * s + dy * c for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))]
    return min(xs), min(ys), max(xs), max(ys)


def to_tasks(rs: RecordSet, names: list[str], scores=None) -> list[dict]:
    """Label Studio tasks for ``rs``; ``names``: image paths below the local-files root; ``scores``: per-record
    score arrays, which makes the boxes ``predictions`` (pre-labels) instead of ``annotations``."""
    tasks = []
    for i, (rec, name) in enumerate(zip(rs.records, names)):
        W, H = float(rec.width), float(rec.height)
        result = []
        for j, (box, label) in enumerate(zip(rec.boxes.astype(float), rec.labels)):
            x1, y1, x2, y2 = box
            r = {"id": f"r{i + 1}_{j + 1}", "type": "rectanglelabels", "from_name": "label", "to_name": "image",
                 "original_width": int(rec.width), "original_height": int(rec.height), "image_rotation": 0,
                 "value": {"x": 100 * x1 / W, "y": 100 * y1 / H, "width": 100 * (x2 - x1) / W,
                           "height": 100 * (y2 - y1) / H, "rotation": 0,
                           "rectanglelabels": [rs.class_names[int(label) - 1]]}}
            if scores is not None:
                r["score"] = round(float(scores[i][j]), 4)
            result.append(r)
        task = {"id": i + 1, "data": {"image": "/data/local-files/?d=" + quote(name), "exported_by": MARKER}}
        if scores is not None:
            mean = float(sum(scores[i]) / len(scores[i])) if len(scores[i]) else 0.0
            task["predictions"] = [{"model_version": MARKER, "score": round(mean, 4), "result": result}]
        else:
            task["annotations"] = [{"result": result}]
        tasks.append(task)
    return tasks


def write_labelstudio(rs: RecordSet, path: Path, names: list[str], scores=None) -> list[Path]:
    """Write :func:`to_tasks` to ``path`` atomically."""
    return [atomic_write_bytes(path, json.dumps(to_tasks(rs, names, scores), ensure_ascii=False, indent=1).encode())]
