"""CVAT "for images 1.1" XML <-> records.

Read: ``<annotations><image name width height [subset]><box label xtl ytl xbr ybr [rotation]>`` with
optional ``<attribute name="difficult|truncated">``. The label order is the file's ``<meta>`` label list
(task, project or job), else the names found, sorted. Coordinates are continuous pixels (no VOC +1).
A rotated box becomes its enclosing upright box (reported as fixed); polygons, points, masks and other
shapes are reported and ignored; ``subset`` becomes the record's ``split``. The XML is parsed like
VOC's (:func:`data_tools.voc.load_xml`: no DTD, no entities, no network, size cap), and each bad
image or box is reported with its line and its place (``image[3]/box[2]/xbr``).

Images are looked up from the XML's folder (or ``--image-root``): the name as written, then in
``images/``, then by base name (:class:`~data_tools.formats.common.ImageFinder`).
"""

from __future__ import annotations

import datetime
import math
import os
from pathlib import Path

from lxml import etree

from data_tools.atomic import atomic_write_bytes
from data_tools.errors import UserError
from data_tools.formats.common import (
    SPLIT_NAMES,
    ImageFinder,
    Item,
    ReadOptions,
    add_box,
    class_map,
    corners,
    fmt_coord,
    image_item,
    number,
    to_recordset,
)
from data_tools.records import Problem, RecordSet
from data_tools.voc import load_xml

MARKER = "retail-detect export"
"""The ``<meta><task><name>`` this project writes (``retail-data export`` recognises its own files by it)."""
_COORDS = ("xtl", "ytl", "xbr", "ybr")
_SHAPES = ("polygon", "polyline", "points", "mask", "ellipse", "cuboid", "skeleton", "tag")


class CvatError(UserError, ValueError):
    """The CVAT file as a whole is unusable (not XML, not CVAT for images)."""


def read_cvat(src: str, opts: ReadOptions) -> tuple[RecordSet, list[Problem]]:
    """Read one CVAT for images 1.1 XML file (see the module doc)."""
    file = os.fspath(src)
    el, problem = load_xml(file)
    if el is None:
        raise CvatError(str(problem).removesuffix(" (skipped)"))
    if el.tag != "annotations":
        raise CvatError(f"{file}:{el.sourceline}: root element is <{el.tag}>, not CVAT's <annotations>")
    if el.find("track") is not None and el.find("image") is None:
        raise CvatError(f"{file}: this is a CVAT for video export (<track> elements); export the task as "
                        "'CVAT for images 1.1'")
    xml_dir = os.path.dirname(os.path.abspath(file))
    root = os.path.abspath(opts.image_root or xml_dir)
    finder = ImageFinder(root)
    problems: list[Problem] = []
    declared = [n.text.strip() for path in ("meta/task/labels/label/name", "meta/project/labels/label/name",
                                            "meta/job/labels/label/name") for n in el.findall(path)
                if n.text and n.text.strip()]
    images = el.findall("image")
    items = [it for i, img in enumerate(images, start=1)
             if (it := _image(file, img, i, finder, xml_dir, problems)) is not None]
    cmap = class_map(items, opts.class_names, declared)
    return to_recordset(items, cmap, root, problems, finder, {"inputs": len(images)}), problems


def _image(file: str, img: etree._Element, i: int, finder: ImageFinder, xml_dir: str,
           problems: list[Problem]) -> Item | None:
    where, line = f"image[{i}]", img.sourceline
    name = img.get("name") or ""
    path, reason, kind = finder.find(name, [xml_dir])
    if reason:
        problems.append(Problem(file, reason, line=line, field=f"{where}/name", action="fixed" if path else "skipped",
                                kind=kind))
    if path is None:
        return None
    declared = None
    w, _ = number(img.get("width"))
    h, _ = number(img.get("height"))
    if w is not None and h is not None and w >= 1 and h >= 1 and w == int(w) and h == int(h):
        declared = (int(w), int(h))
    item = image_item(file, finder, path, declared, problems, line=line, field=where)
    if item is None:
        return None
    subset = (img.get("subset") or "").strip()
    if subset:
        item.split = SPLIT_NAMES.get(subset.lower(), subset.lower())
    for j, box in enumerate(img.findall("box"), start=1):
        _box(file, box, f"{where}/box[{j}]", item, problems)
    for child in img:
        if isinstance(child.tag, str) and child.tag in _SHAPES:
            problems.append(Problem(file, f"<{child.tag}> is not a box; ignored", line=child.sourceline,
                                    field=where, action="ignored", kind="not_a_box"))
    return item


def _box(file: str, box: etree._Element, where: str, item: Item, problems: list[Problem]) -> None:
    line = box.sourceline
    label = " ".join((box.get("label") or "").split())
    if not label:
        problems.append(Problem(file, "box has no label", line=line, field=f"{where}/label", kind="missing_name"))
        return
    xyxy = corners({c: box.get(c) for c in _COORDS}, _COORDS, file, line, lambda c: f"{where}/{c}", problems)
    if xyxy is None:
        return
    rotation, _ = number(box.get("rotation") or "0")
    if rotation and rotation % 360:
        xyxy = _upright(xyxy, rotation)
        problems.append(Problem(file, f"box rotated by {rotation:g} degrees read as its enclosing upright box",
                                line=line, field=f"{where}/rotation", action="fixed", kind="rotated_box"))
    flags = {a.get("name"): (a.text or "").strip().lower() in ("true", "1", "yes") for a in box.findall("attribute")}
    add_box(item, label, xyxy, problems, line=line, field=where, difficult=flags.get("difficult", False),
            truncated=flags.get("truncated", False))


def _upright(xyxy: tuple[float, float, float, float], degrees: float) -> tuple[float, float, float, float]:
    """The upright box enclosing ``xyxy`` rotated by ``degrees`` about its centre."""
    x1, y1, x2, y2 = xyxy
    cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    a = math.radians(degrees)
    dx, dy = abs(hw * math.cos(a)) + abs(hh * math.sin(a)), abs(hw * math.sin(a)) + abs(hh * math.cos(a))
    return cx - dx, cy - dy, cx + dx, cy + dy


def write_cvat(rs: RecordSet, path: Path, names: list[str], scores=None) -> list[Path]:
    """Write ``rs`` as one CVAT for images 1.1 XML at ``path``; ``names``: each record's image name as written."""
    ann = etree.Element("annotations")
    etree.SubElement(ann, "version").text = "1.1"
    task = etree.SubElement(etree.SubElement(ann, "meta"), "task")
    etree.SubElement(task, "name").text = MARKER
    etree.SubElement(task, "size").text = str(len(rs.records))
    flags = [f for f in ("difficult", "truncated") if any(getattr(r, f).any() for r in rs.records)]
    labels = etree.SubElement(task, "labels")
    for n in rs.class_names:
        lab = etree.SubElement(labels, "label")
        etree.SubElement(lab, "name").text = n
        etree.SubElement(lab, "type").text = "rectangle"
        attrs = etree.SubElement(lab, "attributes")
        for f in flags:
            a = etree.SubElement(attrs, "attribute")
            for tag, text in (("name", f), ("mutable", "False"), ("input_type", "checkbox"),
                              ("default_value", "false"), ("values", "false\ntrue")):
                etree.SubElement(a, tag).text = text
    dumped = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    etree.SubElement(ann.find("meta"), "dumped").text = dumped
    for i, (rec, name) in enumerate(zip(rs.records, names)):
        img = etree.SubElement(ann, "image", id=str(i), name=name, width=str(int(rec.width)),
                               height=str(int(rec.height)))
        if rec.split:
            img.set("subset", rec.split)
        for j, (box, label) in enumerate(zip(rec.boxes, rec.labels)):
            b = etree.SubElement(img, "box", label=rs.class_names[int(label) - 1],
                                 source="auto" if scores is not None else "manual", occluded="0",
                                 **dict(zip(("xtl", "ytl", "xbr", "ybr"), (fmt_coord(v) for v in box))), z_order="0")
            for f in flags:
                etree.SubElement(b, "attribute", name=f).text = "true" if getattr(rec, f)[j] else "false"
    etree.indent(ann, space="  ")
    data = b'<?xml version="1.0" encoding="utf-8"?>\n' + etree.tostring(ann, encoding="utf-8") + b"\n"
    return [atomic_write_bytes(path, data)]
