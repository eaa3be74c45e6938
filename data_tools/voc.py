"""One Pascal VOC / labelImg XML file <-> one :class:`~data_tools.records.Record`.

Reading is hardened: anything but a regular file (FIFO, device, symlink loop, symlink leaving the
dataset root), files over :data:`MAX_XML_BYTES`, empty files, DOCTYPE / entity declarations (XXE,
billion laughs), malformed XML and undecodable text are refused with a :class:`Problem` naming the
file and line. Inside a good file each bad object is dropped or repaired on its own and reported with
its line and field (``object[2]/bndbox/xmax``, objects counted from 1), so the good objects still load.

VOC pixel rule (ARCHITECTURE.md, "Conventions"): VOC coordinates are 1-based inclusive; a record box is
``(xmin - 1, ymin - 1, xmax, ymax)``. :func:`write_voc` inverts it, so write -> read is exact. A VOC
box with ``xmin == xmax`` (labelImg's click without a drag) is a zero-area box and is dropped.
"""

from __future__ import annotations

import codecs
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from lxml import etree

from data_tools.atomic import atomic_write_bytes
from data_tools.images import check_image, orient_boxes
from data_tools.locate import find_image
from data_tools.records import ClassMap, Problem, Record, box_kind, check_box, labelled_boxes, number_fault
from data_tools.userfiles import UnsafeFile, read_limited

MAX_XML_BYTES = 10 * 1024 * 1024
_DTD_RE = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_DECL_RE = re.compile(rb"^\s*<\?xml[^>]*\?>")
_COORDS = ("xmin", "ymin", "xmax", "ymax")


@dataclass
class VocObject:
    """One kept ``<object>``: its class name as written, and its validated box in record pixels."""

    name: str
    box: tuple[float, float, float, float]
    difficult: bool
    truncated: bool
    index: int  # 1-based position among the file's <object> elements
    name_line: int | None


@dataclass
class VocAnnotation:
    """A parsed VOC file whose image was found and checked; class names are not yet mapped to labels."""

    xml_path: str
    image: str  # relative to the dataset root, POSIX separators
    width: int
    height: int
    objects: list[VocObject] = field(default_factory=list)


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False, no_network=True, dtd_validation=False, load_dtd=False, huge_tree=False
    )


def load_xml(
    path: str | os.PathLike, root: str | os.PathLike | None = None, cache: dict | None = None
) -> tuple[etree._Element | None, Problem | None]:
    """Parse one XML file safely. Returns ``(root element, None)`` or ``(None, problem)``.

    ``root``: the dataset folder; an XML that is a symlink resolving outside it is refused. FIFOs,
    devices, symlink loops and files over :data:`MAX_XML_BYTES` are refused without being read.
    ``cache``: a dict kept for one pass over a dataset (see ``userfiles.real_path``).
    """
    file = os.fspath(path)
    try:
        data = read_limited(file, MAX_XML_BYTES, root, cache)
    except UnsafeFile as e:
        return None, Problem(file, e.reason, kind=e.kind)
    if not data.lstrip(b"\xef\xbb\xbf \t\r\n"):
        return None, Problem(file, "empty file", kind="empty_file")
    scan = data.decode("utf-16", "replace").encode("utf-8") if data[:2] in (b"\xff\xfe", b"\xfe\xff") else data
    m = _DTD_RE.search(scan)
    if m:
        line = scan.count(b"\n", 0, m.start()) + 1
        return None, _dtd_problem(file, m.group(1).decode().upper(), line)
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as e:
        root = _retry_python_codec(data, e)
        if root is None:
            return None, _syntax_problem(file, e)
    except ValueError as e:  # lxml refuses some inputs outright
        return None, Problem(file, f"not parseable as XML: {e}", kind="malformed_xml")
    info = root.getroottree().docinfo
    if info.doctype or info.internalDTD is not None:
        return None, _dtd_problem(file, "DOCTYPE", 1)
    return root, None


def _dtd_problem(file: str, what: str, line: int) -> Problem:
    return Problem(
        file, f"<!{what}> declarations are refused (external entities / entity expansion are unsafe)",
        line=line, kind="dtd_refused",
    )


def _syntax_problem(file: str, e: etree.XMLSyntaxError) -> Problem:
    msg = (e.msg or str(e)).split("\n")[0].split(", line ")[0]
    low = msg.lower()
    if "encoding" in low or "utf-8" in low or "char 0x" in low:
        return Problem(
            file, f"wrong text encoding: {msg}; save it as UTF-8 or declare its real encoding",
            line=e.lineno, kind="bad_encoding",
        )
    return Problem(file, f"malformed XML: {msg}", line=e.lineno, kind="malformed_xml")


def _retry_python_codec(data: bytes, e: etree.XMLSyntaxError) -> etree._Element | None:
    """libxml2 lacks some encoding aliases (``latin-1``); decode those with Python's codec instead."""
    m = re.match(r"Unsupported encoding: ([\w.:-]+)", e.msg or "")
    if not m:
        return None
    try:
        text = data.decode(codecs.lookup(m.group(1)).name)
    except (LookupError, UnicodeDecodeError):
        return None
    body = _DECL_RE.sub(b"", text.encode("utf-8"), count=1)
    try:
        return etree.fromstring(body, _parser())
    except etree.XMLSyntaxError:
        return None


def parse_voc(
    xml_path: str | os.PathLike, root: str | os.PathLike | None = None, dir_cache: dict | None = None
) -> tuple[VocAnnotation | None, list[Problem]]:
    """Parse a VOC file, find and check its image, validate its boxes.

    Args:
        xml_path: the annotation file.
        root: dataset root; images must lie inside it and ``VocAnnotation.image`` is relative to it
            (default: the folder above the XML's folder).
        dir_cache: a dict kept by the caller for one pass over a dataset (see ``locate.find_image``).
    Returns ``(annotation or None when the whole file is skipped, problems)``.
    """
    file = os.fspath(xml_path)
    root_dir = os.path.abspath(root if root is not None else os.path.dirname(os.path.dirname(os.path.abspath(file))))
    el, problem = load_xml(file, root_dir if root is not None else None, dir_cache)
    if el is None:
        return None, [problem]
    if el.tag != "annotation":
        return None, [Problem(file, f"root element is <{el.tag}>, not <annotation>", line=el.sourceline, kind="not_voc")]
    problems: list[Problem] = []
    fn_el = el.find("filename")
    image_path, issue = find_image(file, fn_el.text if fn_el is not None else None, root_dir, dir_cache)
    where = fn_el.sourceline if fn_el is not None else el.sourceline
    if issue:
        problems.append(Problem(file, issue.reason, line=where, field="filename", action=issue.action, kind=issue.kind))
    if image_path is None:
        return None, problems
    declared, size_line = _read_size(el)
    checked = check_image(file, image_path, declared, problems, line=where, field="filename",
                          size_at=(size_line, "size"))
    if checked is None:
        return None, problems
    info, width, height, orientation = checked
    ann = VocAnnotation(file, os.path.relpath(image_path, root_dir).replace(os.sep, "/"), width, height)
    raw = (info.raw_width, info.raw_height)
    for i, obj_el in enumerate(el.findall("object"), start=1):
        obj = _read_object(file, obj_el, i, width, height, orientation, raw, problems)
        if obj is not None:
            ann.objects.append(obj)
    return ann, problems


def _read_size(el: etree._Element) -> tuple[tuple[int, int] | None, int | None]:
    size = el.find("size")
    if size is None:
        return None, el.sourceline
    dims = []
    for tag in ("width", "height"):
        try:
            v = float((size.findtext(tag) or "").strip())
        except ValueError:
            return None, size.sourceline
        if not math.isfinite(v) or v < 1 or v != int(v):
            return None, size.sourceline
        dims.append(int(v))
    return (dims[0], dims[1]), size.sourceline


def _read_object(
    file: str, obj: etree._Element, i: int, width: int, height: int,
    orientation: int, raw: tuple[int, int], problems: list[Problem],
) -> VocObject | None:
    """One ``<object>`` -> :class:`VocObject`, or ``None`` (problem appended) when it must be dropped."""
    tag = f"object[{i}]"
    name_el = obj.find("name")
    name = " ".join((name_el.text or "").split()) if name_el is not None else ""
    if not name:
        problems.append(Problem(file, "object has no class <name>", line=obj.sourceline, field=f"{tag}/name", kind="missing_name"))
        return None
    bnd = obj.find("bndbox")
    if bnd is None:
        problems.append(Problem(file, "object has no <bndbox>", line=obj.sourceline, field=f"{tag}/bndbox", kind="missing_box"))
        return None
    vals: dict[str, float] = {}
    lines: dict[str, int | None] = {}
    for c in _COORDS:
        c_el = bnd.find(c)
        lines[c] = c_el.sourceline if c_el is not None else bnd.sourceline
        text = (c_el.text or "").strip() if c_el is not None else None
        bad = _coord_error(c, text)
        if bad:
            problems.append(Problem(file, bad[1], line=lines[c], field=f"{tag}/bndbox/{c}", kind=bad[0]))
            return None
        vals[c] = float(text)
    for lo, hi in (("xmin", "xmax"), ("ymin", "ymax")):
        if vals[hi] <= vals[lo]:
            kind = "swapped_box" if vals[hi] < vals[lo] else "zero_area_box"
            what = "swapped" if kind == "swapped_box" else "zero-area box:"
            problems.append(Problem(
                file, f"{what} {lo}={vals[lo]:g} {hi}={vals[hi]:g} (VOC needs {lo} < {hi})",
                line=lines[hi], field=f"{tag}/bndbox/{hi}", kind=kind,
            ))
            return None
    box = (vals["xmin"] - 1, vals["ymin"] - 1, vals["xmax"], vals["ymax"])
    if orientation != 1:
        box = tuple(float(v) for v in orient_boxes(np.array([box]), orientation, *raw)[0])
    checked, reason, action = check_box(box, width, height)
    if reason:
        coord = _offending_coord(box, width, height) if orientation == 1 else None
        kind = "box_clipped" if action == "fixed" else box_kind(reason)
        problems.append(Problem(
            file, reason, line=lines[coord] if coord else bnd.sourceline,
            field=f"{tag}/bndbox" + (f"/{coord}" if coord else ""), action=action, kind=kind,
        ))
        if checked is None:
            return None
    difficult = _flag(file, obj, "difficult", tag, problems)
    truncated = _flag(file, obj, "truncated", tag, problems)
    return VocObject(name, checked, difficult, truncated, i, name_el.sourceline)


def _coord_error(name: str, text: str | None) -> tuple[str, str] | None:
    if text is None:
        return "missing_coordinate", f"missing <{name}>"
    fault = number_fault(text)
    return ("bad_coordinate", f"{fault} {name} {text!r}") if fault else None


def _offending_coord(box, width: int, height: int) -> str | None:
    x1, y1, x2, y2 = box
    for c, bad in zip(_COORDS, (x1 < 0, y1 < 0, x2 > width, y2 > height)):
        if bad:
            return c
    return None


def _flag(file: str, obj: etree._Element, tag: str, where: str, problems: list[Problem]) -> bool:
    """``<difficult>`` / ``<truncated>``: missing means 0; anything but an integer is reported and read as 0."""
    el = obj.find(tag)
    text = (el.text or "").strip() if el is not None else ""
    if not text:
        return False
    try:
        return int(float(text)) != 0
    except ValueError:
        problems.append(Problem(
            file, f"<{tag}> is {text!r}, not 0/1; read as 0", line=el.sourceline,
            field=f"{where}/{tag}", action="fixed", kind="bad_flag",
        ))
        return False


def to_record(ann: VocAnnotation, class_map: ClassMap) -> tuple[Record, list[Problem]]:
    """Map an annotation's class names to labels. Unknown names drop their object; other spellings are fixed."""
    problems: list[Problem] = []
    objects = ((o.name, o.box, o.difficult, o.truncated, o.name_line, f"object[{o.index}]/name") for o in ann.objects)
    boxes = labelled_boxes(class_map, objects, ann.xml_path, problems)
    return Record(ann.image, ann.width, ann.height, *boxes, source=ann.xml_path), problems


def read_voc(
    xml_path: str | os.PathLike, class_names: list[str] | None = None, root: str | os.PathLike | None = None
) -> tuple[Record | None, list[Problem]]:
    """Read one VOC file into a :class:`Record` (``None`` if the file is skipped) plus its problems.

    Args:
        class_names: the class list (label ``k`` = ``class_names[k - 1]``); names are matched
            case-insensitively. ``None``: the file's own names, sorted, become the class list.
        root: dataset root (see :func:`parse_voc`).
    """
    ann, problems = parse_voc(xml_path, root)
    if ann is None:
        return None, problems
    cmap = ClassMap(class_names) if class_names is not None else ClassMap.collect(o.name for o in ann.objects)
    rec, more = to_record(ann, cmap)
    return rec, problems + more


def _fmt(v: float) -> str:
    v = float(v)
    return str(int(v)) if v.is_integer() else repr(v)


def write_voc(record: Record, class_names: list[str], path: str | os.PathLike, filename: str | None = None,
              durable: bool = True) -> None:
    """Write ``record`` as a labelImg-style VOC XML file, atomically (inverse of :func:`read_voc`).

    Args:
        class_names: label ``k`` is written as ``class_names[k - 1]``.
        path: the XML file to write (its folder is created if needed).
        filename: ``<filename>`` to write; default: the base name of ``record.image``.
        durable: see :func:`data_tools.atomic.atomic_open` (a bulk export flushes once at the end).
    """
    ann = etree.Element("annotation")

    def sub(parent, tag: str, text) -> etree._Element:
        e = etree.SubElement(parent, tag)
        e.text = str(text)
        return e

    image = Path(record.image)
    sub(ann, "folder", image.parent.name)
    sub(ann, "filename", filename or image.name)
    sub(ann, "path", record.image)
    sub(etree.SubElement(ann, "source"), "database", "Unknown")
    size = etree.SubElement(ann, "size")
    sub(size, "width", int(record.width))
    sub(size, "height", int(record.height))
    sub(size, "depth", 3)
    sub(ann, "segmented", 0)
    for box, label, diff, trunc in zip(record.boxes, record.labels, record.difficult, record.truncated):
        if not 1 <= int(label) <= len(class_names):
            raise ValueError(f"label {int(label)} outside 1..{len(class_names)} in record {record.image}")
        obj = etree.SubElement(ann, "object")
        sub(obj, "name", class_names[int(label) - 1])
        sub(obj, "pose", "Unspecified")
        sub(obj, "truncated", int(bool(trunc)))
        sub(obj, "difficult", int(bool(diff)))
        bnd = etree.SubElement(obj, "bndbox")
        x1, y1, x2, y2 = (float(v) for v in box)
        for tag, v in zip(_COORDS, (x1 + 1.0, y1 + 1.0, x2, y2)):
            sub(bnd, tag, _fmt(v))
    etree.indent(ann, space="\t")
    data = etree.tostring(ann, encoding="utf-8") + b"\n"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data, durable)
