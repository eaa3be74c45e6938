"""What every label-format reader shares: image lookup inside the root, the image check, box validation and
the mapping of class names to labels.

A reader turns its files into :class:`Item` s (one per image: the image found and checked, its boxes in
record pixels with the class name as written and where each box came from), then :func:`to_recordset`
maps the names to labels 1..K exactly like the VOC reader does (unknown names dropped with a "did you
mean" hint, other spellings fixed and reported). Problems name the file and the line (text formats) or
the field (JSON), and every bad item is dropped on its own. The checks the VOC and COCO readers share with
these (numbers, boxes, class names, the image and its size) sit below this package, in
:mod:`data_tools.records`, :mod:`data_tools.images` and :mod:`data_tools.locate`.
"""

from __future__ import annotations

import math
import os
import posixpath
import unicodedata
from dataclasses import dataclass
from dataclasses import field as dc_field

import numpy as np

from data_tools.images import check_image, orient_boxes
from data_tools.locate import IMAGE_EXTS, absolute_inside, first_level_dirs, is_absolute_name
from data_tools.records import (
    ClassMap,
    Problem,
    Record,
    RecordSet,
    box_kind,
    check_box,
    class_key,
    labelled_boxes,
    number_fault,
)
from data_tools.userfiles import UnsafeFile, file_identity, first_usable, read_limited, real_path, within

MAX_LABEL_BYTES = 1 << 30
"""Largest single annotation file read (1 GiB, as for COCO JSON); a YOLO ``.txt`` is capped lower."""
MAX_TXT_BYTES = 10 << 20
"""Largest YOLO label file (10 MiB: about 200,000 boxes on one image)."""
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test", "testing": "test"}
"""Folder / subset names that mark a split, and the name the record keeps."""
ROUNDING_SLACK = 1e-5
"""Normalised formats (YOLO fractions, Label Studio percent) write a few decimals: an edge past the border by
this fraction of the image side is rounding, not a box outside the image."""


@dataclass
class ReadOptions:
    """What the user can tell a reader.

    class_names: the label order (``--classes`` / ``--classes-from``); other classes are skipped.
    image_root: the folder image paths are relative to (``--image-root``); default per format.
    csv_columns: CSV column names, ``{"image": "image_name", ...}`` (see :mod:`data_tools.formats.csv_boxes`).
    progress: show a progress bar on large inputs.
    """

    class_names: list[str] | None = None
    image_root: str | None = None
    csv_columns: dict[str, str] | None = None
    progress: bool = True


@dataclass
class Obj:
    """One kept box: class name as written, xyxy in record pixels, flags, and where it was written."""

    name: str
    box: tuple[float, float, float, float]
    line: int | None = None
    field: str | None = None
    difficult: bool = False
    truncated: bool = False


@dataclass
class Item:
    """One image whose file was found and checked, with its boxes (names not yet mapped to labels).

    ``orientation`` / ``raw``: the EXIF orientation to apply to boxes drawn on the raw stored pixels
    (1 = none, see :func:`data_tools.images.resolve_size`) and the raw ``(width, height)``.
    """

    file: str
    image: str  # relative to the root, POSIX separators
    width: int
    height: int
    split: str = ""
    line: int | None = None
    field: str | None = None
    orientation: int = 1
    raw: tuple[int, int] = (0, 0)
    objects: list[Obj] = dc_field(default_factory=list)


def split_of(rel_path: str) -> str:
    """The split a relative image path sits in (its nearest ``train``/``val``/``test`` folder), or ``""``."""
    for part in reversed(rel_path.split("/")[:-1]):
        name = SPLIT_NAMES.get(part.lower())
        if name:
            return name
    return ""


def number(text: str | None) -> tuple[float | None, str | None]:
    """``(value, None)`` for a finite decimal number, else ``(None, reason)``."""
    if text is None or not text.strip():
        return None, "missing value"
    t = text.strip()
    fault = number_fault(t)
    if fault:
        return None, f"{fault} {t[:40]!r}"
    v = float(t)
    if not math.isfinite(v):
        return None, f"non-finite {t[:40]!r}"
    return v, None


def corners(values: dict[str, str | None], names: tuple[str, str, str, str], file: str, line: int | None,
            field_of, problems: list[Problem]) -> tuple[float, float, float, float] | None:
    """The box ``(x1, y1, x2, y2)`` from the texts ``values[names[i]]``, or None after one Problem naming the
    field (``field_of(name)``): a missing or non-numeric coordinate, or x2 <= x1 / y2 <= y1."""
    vals: dict[str, float] = {}
    for k in names:
        v, why = number(values.get(k))
        if why:
            problems.append(Problem(file, f"{why} {k}", line=line, field=field_of(k), kind="bad_coordinate"))
            return None
        vals[k] = v
    x1, y1, x2, y2 = names
    for lo, hi in ((x1, x2), (y1, y2)):
        if vals[hi] <= vals[lo]:
            kind = "swapped_box" if vals[hi] < vals[lo] else "zero_area_box"
            problems.append(Problem(file, f"{lo}={vals[lo]:g} {hi}={vals[hi]:g} ({lo} must be < {hi})", line=line,
                                    field=field_of(hi), kind=kind))
            return None
    return vals[x1], vals[y1], vals[x2], vals[y2]


def read_text(file: str, max_bytes: int, root: str | None = None, cache: dict | None = None) -> tuple[str | None, Problem | None]:
    """The UTF-8 text of a regular annotation file (BOM stripped), or ``(None, problem)``."""
    try:
        data = read_limited(file, max_bytes, root, cache)
    except UnsafeFile as e:
        return None, Problem(file, e.reason, kind=e.kind)
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        return None, Problem(file, f"not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8",
                             line=line, kind="bad_encoding")


class ImageFinder:
    """Finds the image an annotation names, never outside ``root``.

    A relative name is tried against each base folder (the annotation file's folder first), then the root
    and ``root/images``; then its base name (and, for Label Studio uploads, the base name without the
    ``1a2b3c4d-`` upload prefix) in those folders and in the root's first-level folders. An absolute name of a
    file inside the root is that file; any other absolute name, or one climbing out of the root, is reported and
    only its base name is searched, inside the root.
    """

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.cache: dict = {}
        self._subdirs: list[str] | None = None

    def subdirs(self) -> list[str]:
        if self._subdirs is None:
            self._subdirs = first_level_dirs(self.root)
        return self._subdirs

    def find(self, name: str, bases: list[str], extra_names: tuple[str, ...] = ()) -> tuple[str | None, str | None, str]:
        """``(absolute path or None, reason to report or None, kind)``; ``reason`` set with a found path means
        the name was repaired ("fixed"), with ``None`` that the image is skipped."""
        fn = unicodedata.normalize("NFC", name.strip().replace("\\", "/"))
        if not fn:
            return None, "no image name", "missing_image"
        base = posixpath.basename(fn)
        dirs = list(dict.fromkeys([*(os.path.abspath(b) for b in bases), self.root, os.path.join(self.root, "images")]))
        exact = absolute_inside(fn, self.root)
        if exact is not None and os.path.lexists(exact):  # an absolute name of a file in the root: that file or none
            path, refused = first_usable([exact], self.root, self.cache)
            return (path, None, "") if path else (None, f"image {self.rel(exact)} {refused.reason}", refused.kind)
        joined = [] if is_absolute_name(fn) else [os.path.normpath(os.path.join(d, fn)) for d in dirs]
        direct = [p for p in joined if within(p, self.root)]
        unsafe = not direct
        by_name = [os.path.join(d, n) for n in dict.fromkeys((base, *extra_names)) for d in [*dirs, *self.subdirs()]]
        cands = [p for p in dict.fromkeys(direct + by_name) if within(p, self.root)]
        path, refused = first_usable(cands, self.root, self.cache)
        if unsafe:
            if path:
                return path, f"image name {name[:80]!r} is absolute or leaves the image root; used {self.rel(path)}", "unsafe_path"
            return None, f"image name {name[:80]!r} is absolute or leaves the image root, and no {base!r} is inside it", "unsafe_path"
        if path is None and refused is not None:
            return None, f"image {self.rel(refused.path)} {refused.reason}", refused.kind
        if path is None:
            return None, f"image {fn[:120]!r} not found under {self.root} (looked next to the annotations, in images/ " \
                         "and in the first-level folders; give --image-root DIR when the images are elsewhere)", \
                "missing_image"
        return path, None, ""

    def rel(self, path: str) -> str:
        return os.path.relpath(path, self.root).replace(os.sep, "/")

    def real(self, path: str) -> str:
        return real_path(path, self.cache)


def image_item(file: str, finder: ImageFinder, path: str, declared: tuple[int, int] | None, problems: list[Problem],
               *, line: int | None = None, field: str | None = None, sized: bool = True) -> Item | None:
    """Check the image at ``path`` and reconcile the size the annotation declares with it.

    ``sized``: the format declares image sizes (a missing one is reported); YOLO does not.
    Returns the :class:`Item` (no boxes yet) or None (problem appended).
    """
    checked = check_image(file, path, declared, problems, line=line, field=field, sized=sized)
    if checked is None:
        return None
    info, width, height, orientation = checked
    rel = finder.rel(path)
    return Item(file, rel, width, height, split_of(rel), line, field, orientation, (info.raw_width, info.raw_height))


def add_box(item: Item, name: str, box: tuple[float, float, float, float], problems: list[Problem], *,
            line: int | None = None, field: str | None = None, difficult: bool = False, truncated: bool = False,
            slack: float = 0.0) -> bool:
    """Validate one xyxy box (in the annotation's pixels) and keep it on ``item``; False when it is dropped.

    The box is rotated to the displayed image when the annotation was drawn on the raw EXIF pixels, then
    clipped or dropped by the shared :func:`data_tools.records.check_box`. ``slack`` (normalised formats:
    the rounding of their fractions, in pixels): an edge past the image border by at most this much is
    put on the border without a report.
    """
    if item.orientation != 1:
        box = tuple(float(v) for v in orient_boxes(np.array([box]), item.orientation, *item.raw)[0])
    if slack:
        x1, y1, x2, y2 = box
        w, h = float(item.width), float(item.height)
        box = (0.0 if -slack <= x1 < 0 else x1, 0.0 if -slack <= y1 < 0 else y1,
               w if w < x2 <= w + slack else x2, h if h < y2 <= h + slack else y2)
    checked, reason, action = check_box(box, item.width, item.height)
    if reason:
        kind = "box_clipped" if action == "fixed" else box_kind(reason)
        problems.append(Problem(item.file, f"{item.image}: {reason}", line=line, field=field, action=action, kind=kind))
    if checked is None:
        return False
    item.objects.append(Obj(name, checked, line, field, difficult, truncated))
    return True


def class_map(items: list[Item], class_names: list[str] | None, declared: list[str] | None,
              order: list[str] | None = None) -> ClassMap:
    """The label order: the user's list, else the format's declared list (in its order), else the names found,
    sorted; ``order`` (a ``classes.txt`` beside labels that have no class list of their own) puts the names it
    lists first, in its order, and the other names found after them, sorted."""
    if class_names is not None:
        return ClassMap(class_names)
    if declared:
        return ClassMap(first_spellings(declared))
    found = ClassMap.collect(o.name for it in items for o in it.objects)
    return ClassMap(first_spellings([*order, *found.names])) if order else found


def first_spellings(names: list[str]) -> list[str]:
    """``names`` with each class once (compared as :func:`~data_tools.records.class_key`), at its first place."""
    out: dict[str, str] = {}
    for n in names:
        norm = " ".join(unicodedata.normalize("NFC", n).split())
        if norm:
            out.setdefault(class_key(norm), norm)
    return list(out.values())


CLASS_ORDER_FILE = "classes.txt"


def class_order(folder: str, problems: list[Problem] | None = None) -> tuple[list[str] | None, str | None]:
    """The class order of a ``classes.txt`` in ``folder`` (one name per line, as labelImg and ``retail-data export``
    write it), or ``(None, None)``. It is read like every label file: a regular file inside ``folder`` (a symlink
    to a file outside it, a FIFO or a device is refused). One that cannot be used is reported to ``problems``
    (``ignored``) and the names found are then sorted."""
    path = os.path.join(folder, CLASS_ORDER_FILE)
    if not os.path.lexists(path):
        return None, None
    text, problem = read_text(path, 1 << 20, folder)
    if problem is not None:
        if problems is not None:
            problems.append(Problem(path, f"{problem.reason}; its class order is not used (the classes found are "
                                    "sorted)", line=problem.line, action="ignored", kind=problem.kind))
        return None, None
    names = [s.strip() for s in text.splitlines() if s.strip() and not s.strip().startswith("#")]
    return (names, path) if names else (None, None)


def to_recordset(items: list[Item], cmap: ClassMap, root: str, problems: list[Problem], finder: ImageFinder | None = None,
                 meta: dict | None = None) -> RecordSet:
    """Map the items' class names to labels and build the RecordSet (``image_root`` = ``root``).

    A second item for one image file (two names of it by a symlink or a hard link too) is skipped and reported as
    ``duplicate_image``.
    """
    records: list[Record] = []
    seen: dict[str, Item] = {}
    for it in items:
        key = file_identity(os.path.join(root, it.image), finder.cache if finder else None)
        if key in seen:
            first = seen[key]
            where = f"{first.file}" + (f":{first.line}" if first.line else "") + (f" [{first.field}]" if first.field else "")
            problems.append(Problem(it.file, f"image {it.image} is already annotated at {where}", line=it.line,
                                    field=it.field, kind="duplicate_image"))
            continue
        seen[key] = it
        objects = ((o.name, o.box, o.difficult, o.truncated, o.line, o.field) for o in it.objects)
        records.append(Record(it.image, it.width, it.height, *labelled_boxes(cmap, objects, it.file, problems),
                              source=it.file, split=it.split))
    return RecordSet(cmap.names, os.path.abspath(root), records, dict(meta or {}))


def fmt_coord(v: float) -> str:
    """A float32 coordinate in its shortest exact decimal form (``10``, ``10.3``): reading it back gives the same float32."""
    return np.format_float_positional(np.float32(v), trim="-")


def image_files(root: str) -> list[str]:
    """Every image file under ``root`` (by extension, any case), sorted; hidden files and folders skipped."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(os.path.join(dirpath, f) for f in filenames
                   if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTS)
    return sorted(out)
