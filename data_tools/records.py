"""Records: the plain-data form of one annotated image, and a dataset of them.

Conventions (ARCHITECTURE.md, "Conventions"):
- boxes are ``xyxy`` float32 ``[N, 4]`` in absolute pixels of the original image; a VOC box
  (1-based, inclusive) ``xmin..xmax`` becomes ``xmin - 1 .. xmax`` so the whole image is ``[0, 0, W, H]``;
- labels are int64 ``[N]`` in ``1..K``; 0 is background and never stored;
- ``class_names[k - 1]`` is the name of label ``k``.

Records are stored as plain dicts (see :mod:`data_tools.store`), so this module holds only
dataclasses, conversions to/from dicts, and the validation every label reader shares (VOC, COCO and the
readers of :mod:`data_tools.formats`): numbers and boxes checked, class names mapped to labels, and
user values quoted in messages.
"""

from __future__ import annotations

import difflib
import math
import re
import reprlib
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from data_tools.errors import InvalidInput

FORMAT_VERSION = 1
NUMBER_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
"""A decimal number as label files write it (no ``nan``, ``inf``, hex or ``_`` separators)."""
_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlevel, _REPR.maxlist, _REPR.maxdict = 40, 40, 3, 5, 4


@dataclass
class Problem:
    """One thing wrong with an input: where it is, what is wrong, what we did about it."""

    file: str
    reason: str
    line: int | None = None
    field: str | None = None
    action: str = "skipped"  # "skipped" (item dropped), "fixed" (item kept after a repair), "ignored"
    kind: str = "invalid"  # short machine-readable category, e.g. "zero_area_box", "missing_image"

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
        if self.field:
            where += f" [{self.field}]"
        return f"{where}: {self.reason} ({self.action})"

    def to_dict(self) -> dict:
        return {
            "file": self.file,
            "line": self.line,
            "field": self.field,
            "reason": self.reason,
            "action": self.action,
            "kind": self.kind,
        }


@dataclass
class Record:
    """One annotated image.

    Attributes:
        image: image path relative to the dataset's ``image_root`` (POSIX separators).
        width, height: image size in pixels, after EXIF orientation.
        boxes: float32 ``[N, 4]`` xyxy in pixels.
        labels: int64 ``[N]`` in ``1..K``.
        difficult, truncated: bool ``[N]`` flags from the annotation.
        source: annotation file the record came from (for error messages).
        split: the subset the source put the image in (``"train"``, ``"val"``, ``"test"``; a YOLO export's
            sub-folder, CVAT's ``subset``), or ``""`` when the source had none.
    """

    image: str
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    difficult: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))
    truncated: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))
    source: str = ""
    split: str = ""

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        n = len(self.boxes)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(n)
        self.difficult = np.asarray(self.difficult if len(self.difficult) else np.zeros(n), bool).reshape(n)
        self.truncated = np.asarray(self.truncated if len(self.truncated) else np.zeros(n), bool).reshape(n)

    @property
    def num_boxes(self) -> int:
        return len(self.boxes)

    def to_dict(self) -> dict:
        """Plain-data form; ``split`` is stored only when set (files without splits read in older versions)."""
        d = {
            "image": self.image,
            "width": int(self.width),
            "height": int(self.height),
            "boxes": self.boxes.copy(),
            "labels": self.labels.copy(),
            "difficult": self.difficult.copy(),
            "truncated": self.truncated.copy(),
            "source": self.source,
        }
        if self.split:
            d["split"] = self.split
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Record:
        return cls(**d)


@dataclass
class RecordSet:
    """A dataset: records plus the class map and the folder their image paths are relative to."""

    class_names: list[str]
    image_root: str
    records: list[Record]
    meta: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.records)

    def subset(self, indices) -> RecordSet:
        """A new RecordSet with the records at ``indices`` (same class map and image root)."""
        return RecordSet(list(self.class_names), self.image_root, [self.records[i] for i in indices], dict(self.meta))


def check_box(
    xyxy: tuple[float, float, float, float], width: int, height: int
) -> tuple[tuple[float, float, float, float] | None, str | None, str]:
    """Validate one box in record pixels against the image size.

    Returns ``(box, reason, action)``: ``box`` is the (possibly clipped) box, or ``None`` when it must be
    dropped; ``reason`` says what was wrong (``None`` if nothing); ``action`` is "fixed" or "skipped".
    """
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        return None, "non-finite coordinate", "skipped"
    if x2 < x1 or y2 < y1:
        return None, f"swapped coordinates (xmin>xmax or ymin>ymax): {x1:g},{y1:g},{x2:g},{y2:g}", "skipped"
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        return None, f"box wholly outside the {width}x{height} image: {x1:g},{y1:g},{x2:g},{y2:g}", "skipped"
    cx1, cy1, cx2, cy2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))
    if cx2 - cx1 < 1.0 or cy2 - cy1 < 1.0:
        return None, f"zero-area box (width {x2 - x1:g}, height {y2 - y1:g})", "skipped"
    if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
        return (cx1, cy1, cx2, cy2), "box partly outside the image, clipped", "fixed"
    return (x1, y1, x2, y2), None, "ignored"


def clean_name(raw: str) -> str:
    """A class name as it is kept: Unicode NFC, control characters (``\\x00``-``\\x1f``, ``\\x7f``-``\\x9f``, which
    break XML exports and reach the terminal) and runs of whitespace turned into one space, stripped."""
    text = unicodedata.normalize("NFC", raw)
    if any(unicodedata.category(ch) == "Cc" for ch in text):
        text = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text)
    return " ".join(text.split())


def box_kind(reason: str) -> str:
    """The problem kind of a :func:`check_box` reason for a dropped box."""
    for key, kind in (("non-finite", "bad_coordinate"), ("swapped", "swapped_box"), ("wholly outside", "box_outside")):
        if key in reason:
            return kind
    return "zero_area_box"


def number_fault(text: str) -> str | None:
    """What is wrong with the stripped text of a number: ``"non-finite"`` (``nan``, ``-inf``, ...),
    ``"non-numeric"``, or None when it is a decimal number (which may still overflow to infinity)."""
    if text.lower().lstrip("+-") in ("nan", "inf", "infinity"):
        return "non-finite"
    return None if NUMBER_RE.match(text) else "non-numeric"


def short(value) -> str:
    """A bounded ``repr`` of a value from a user's file, for messages (deep or huge values are elided)."""
    return _REPR.repr(value)


def class_key(name: str) -> str:
    """The form class names are compared in: :func:`clean_name`, case-folded.

    ``" Tomato  Sauce"`` and ``"tomato sauce"`` have the same key.
    """
    return clean_name(name).casefold()


class ClassMap:
    """Canonical class names (label ``k`` is ``names[k - 1]``) and the lookup from any spelling to a label."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names: list[str] = []
        self._label: dict[str, int] = {}
        for raw in names:
            name = clean_name(raw)
            key = class_key(name)
            if not key:
                raise InvalidInput("empty class name in the class list")
            if key in self._label:
                first = self.names[self._label[key] - 1]
                raise InvalidInput(f"class list names {first!r} and {name!r}, which differ only in case/spacing")
            self.names.append(name)
            self._label[key] = len(self.names)

    @classmethod
    def collect(cls, observed: Iterable[str]) -> ClassMap:
        """Build a map from the names seen in annotations: one class per key, sorted by canonical name.

        The canonical spelling of a key is its most frequent spelling (ties: the smallest string), so the
        result does not depend on the order the files were read in.
        """
        spellings: dict[str, Counter] = {}
        for raw in observed:
            name = clean_name(raw)
            if name:
                spellings.setdefault(class_key(name), Counter())[name] += 1
        canon = [min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for c in spellings.values()]
        return cls(sorted(canon, key=lambda n: (class_key(n), n)))

    def __len__(self) -> int:
        return len(self.names)

    def lookup(self, name: str) -> tuple[int | None, str | None]:
        """``(label, canonical name)`` for any spelling of a known class, ``(None, None)`` otherwise."""
        label = self._label.get(class_key(name))
        return (label, self.names[label - 1]) if label else (None, None)


def label_of(cmap: ClassMap, name: str, file: str, problems: list[Problem], *, line: int | None = None,
             field: str | None = None) -> int | None:
    """The label of the class ``name`` (as written in ``file``), or None for a class not in ``cmap``.

    An unknown name is reported (``unknown_class``, with a "did you mean" hint) and its box is dropped; a
    known class written in another case or spacing is reported as fixed (``class_name_case``).
    """
    label, canon = cmap.lookup(name)
    if label is None:
        near = difflib.get_close_matches(name, cmap.names, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        problems.append(Problem(file, f"unknown class {name!r}{hint}", line=line, field=field, kind="unknown_class"))
        return None
    if canon != " ".join(name.split()):
        problems.append(Problem(file, f"class name {name!r} read as {canon!r}", line=line, field=field,
                                action="fixed", kind="class_name_case"))
    return label


def labelled_boxes(cmap: ClassMap, objects: Iterable[tuple], file: str, problems: list[Problem]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The boxes of one image with their class names mapped to labels (:func:`label_of`; unknown ones dropped).

    ``objects``: ``(name, xyxy, difficult, truncated, line, field)`` per box as read from ``file``.
    Returns ``boxes`` float32 [N, 4], ``labels`` int64 [N], ``difficult`` and ``truncated`` bool [N].
    """
    boxes, labels, difficult, truncated = [], [], [], []
    for name, box, diff, trunc, line, field_ in objects:
        label = label_of(cmap, name, file, problems, line=line, field=field_)
        if label is None:
            continue
        boxes.append(box)
        labels.append(label)
        difficult.append(diff)
        truncated.append(trunc)
    return (np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64), np.array(difficult, bool),
            np.array(truncated, bool))


PRODUCT_CLASS = "product"
"""The one class of a class-agnostic (product) detector: every facing, whatever its brand."""


def merge_classes(rs: RecordSet, name: str = PRODUCT_CLASS) -> RecordSet:
    """A new RecordSet with every class merged into one named ``name``: class_names ``[name]`` and every label 1.

    Boxes, flags, image paths and meta are kept (copied, so ``rs`` is left as it was); the meta records the
    classes that were merged (``merged_classes``), for messages and reports.
    """
    records = [Record(r.image, r.width, r.height, r.boxes.copy(), np.ones(len(r.boxes), np.int64),
                      r.difficult.copy(), r.truncated.copy(), r.source, r.split) for r in rs.records]
    meta = dict(rs.meta)
    meta["merged_classes"] = list(rs.class_names)
    return RecordSet([name], rs.image_root, records, meta)
