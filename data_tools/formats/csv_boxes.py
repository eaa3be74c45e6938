"""One box per row CSV (the SKU-110K layout) <-> records.

Columns: ``image, x1, y1, x2, y2, label`` plus optional ``width, height`` (the image size), in pixels
(continuous coordinates, no VOC +1). Common other names are understood (``image_name``/``filename``,
``xmin``/``ymin``/``xmax``/``ymax``, ``class``, ``image_width``/``image_height``) and any can be named
with ``--csv-columns image=img,label=sku``. A file whose first row is data, as SKU-110K's are, is
read in that order: ``image,x1,y1,x2,y2,label,width,height`` (reported once). A row with the image
and empty coordinates lists an image without boxes. Tabs or semicolons are used instead of commas
when the header has them (``.tsv`` files always). Each bad row is reported with its line and column;
rows of an image that cannot be used are skipped with it. The classes are the labels found, sorted, or in
the order of a ``classes.txt`` beside the CSV.

Images are looked up from the CSV's folder (or ``--image-root``): the name as written, then in
``images/``, then by base name in the first-level folders.
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

from data_tools.atomic import atomic_write_text
from data_tools.errors import UserError
from data_tools.formats.common import (
    MAX_LABEL_BYTES,
    ImageFinder,
    Item,
    ReadOptions,
    add_box,
    class_map,
    class_order,
    corners,
    fmt_coord,
    image_item,
    number,
    read_text,
    to_recordset,
)
from data_tools.records import Problem, RecordSet

COLUMNS = ("image", "x1", "y1", "x2", "y2", "label", "width", "height")
REQUIRED = COLUMNS[:6]
ALIASES = {
    "image": ("image", "image_name", "filename", "file_name", "file", "path", "img"),
    "x1": ("x1", "xmin", "x_min", "left"), "y1": ("y1", "ymin", "y_min", "top"),
    "x2": ("x2", "xmax", "x_max", "right"), "y2": ("y2", "ymax", "y_max", "bottom"),
    "label": ("label", "class", "class_name", "category", "name"),
    "width": ("width", "image_width", "img_width"), "height": ("height", "image_height", "img_height"),
}


class CsvError(UserError, ValueError):
    """The CSV as a whole is unusable (unreadable, or its columns cannot be found)."""


MAX_CSV_LINE = 1 << 20  # characters in one line (a box row is under 1 KB)
_LINE_END = re.compile(r"\r\n|\r|\n")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def parse_columns(text: str) -> dict[str, str]:
    """``"image=img,label=sku"`` -> ``{"image": "img", "label": "sku"}`` (``--csv-columns``)."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, name = part.partition("=")
        if not sep or key.strip() not in COLUMNS or not name.strip():
            raise CsvError(f"--csv-columns: {part!r} should be KEY=COLUMN with KEY one of {', '.join(COLUMNS)}")
        out[key.strip()] = name.strip()
    return out


def read_csv_boxes(src: str, opts: ReadOptions) -> tuple[RecordSet, list[Problem]]:
    """Read a box-per-row CSV (see the module doc)."""
    file = os.fspath(src)
    text, problem = read_text(file, MAX_LABEL_BYTES)
    if problem is not None:
        raise CsvError(str(problem).removesuffix(" (skipped)"))
    problems: list[Problem] = []
    rows = csv.reader(_lines(text), delimiter=_delimiter(file, text))
    cols, data_first = _columns(file, rows, opts.csv_columns or {}, problems)
    groups: dict[str, list] = {}  # image name -> [(line, row)]
    try:
        for line, row in _numbered(rows, data_first):
            if not any(c.strip() for c in row):
                continue
            name = from_spreadsheet(row[cols["image"]].strip()) if cols["image"] < len(row) else ""
            if not name:
                problems.append(Problem(file, "row has no image name", line=line, field=_col(cols, "image"),
                                        kind="missing_image"))
                continue
            groups.setdefault(name, []).append((line, row))
    except csv.Error as e:
        problems.append(Problem(file, f"unreadable CSV ({e}); the rows after it were not read", line=rows.line_num,
                                kind="bad_line"))
    csv_dir = os.path.dirname(os.path.abspath(file))
    root = os.path.abspath(opts.image_root or csv_dir)
    finder = ImageFinder(root)
    items = [it for name, group in groups.items()
             if (it := _image(file, name, group, cols, finder, csv_dir, problems)) is not None]
    order, order_file = class_order(csv_dir, problems) if opts.class_names is None else (None, None)
    cmap = class_map(items, opts.class_names, None, order)
    meta = {"inputs": len(groups), "class_order": order_file}
    return to_recordset(items, cmap, root, problems, finder, meta), problems


def _lines(text: str, most: int = MAX_CSV_LINE):
    """The lines of ``text`` with their endings (``\\n``, ``\\r\\n`` or ``\\r``), as slices, with no copy of the
    whole text; a line longer than ``most`` characters raises ``csv.Error`` naming it (no box row is that long)."""
    start, number = 0, 1
    while start < len(text):
        m = _LINE_END.search(text, start, start + most + 2)
        if m is None:
            if len(text) - start > most:
                raise csv.Error(f"line {number} is over {most:,} characters")
            end = len(text)
        else:
            end = m.end()
        yield text[start:end]
        start, number = end, number + 1


def _numbered(rows, data_first: list | None):
    """``(line, row)`` pairs, the first data row (when there is no header) on line 1."""
    if data_first is not None:
        yield 1, data_first
    for row in rows:
        yield rows.line_num, row


def _delimiter(file: str, text: str) -> str:
    if file.lower().endswith(".tsv"):
        return "\t"
    head = text.split("\n", 1)[0]
    return max((",", "\t", ";"), key=head.count) if head else ","


def _col(cols: dict[str, int], key: str) -> str:
    return f"column {cols[key] + 1} ({key})"


def _columns(file: str, rows, given: dict[str, str], problems: list[Problem]) -> tuple[dict[str, int], list | None]:
    """Column index per key, and the first row when it is data (no header)."""
    try:
        first = next(rows, None)
    except csv.Error as e:
        raise CsvError(f"{file}:1: unreadable CSV header ({e})") from None
    if first is None:
        raise CsvError(f"{file}: empty CSV (no header, no rows)")
    head = [c.strip().lower() for c in first]
    cols = {}
    for key in COLUMNS:
        names = (given[key].lower(),) if key in given else ALIASES[key]
        hit = next((head.index(n) for n in names if n in head), None)
        if hit is not None:
            cols[key] = hit
    if all(k in cols for k in REQUIRED):
        return cols, None
    if given:
        missing = [given.get(k, k) for k in REQUIRED if k not in cols]
        raise CsvError(f"{file}:1: the header has no column {', '.join(map(repr, missing))} "
                       f"(its columns: {', '.join(c for c in first[:12])})")
    if len(first) >= 6 and all(number(c)[0] is not None for c in first[1:5]):
        problems.append(Problem(file, "no header row; columns read as " + ",".join(COLUMNS[:len(first)]), line=1,
                                action="ignored", kind="no_header"))
        return {k: i for i, k in enumerate(COLUMNS[:len(first)])}, first
    missing = [k for k in REQUIRED if k not in cols]
    raise CsvError(f"{file}:1: cannot find the column(s) {', '.join(missing)} in the header "
                   f"({', '.join(c for c in first[:12])}); name them with --csv-columns KEY=COLUMN,...")


def _image(file: str, name: str, group: list, cols: dict[str, int], finder: ImageFinder, csv_dir: str,
           problems: list[Problem]) -> Item | None:
    line0 = group[0][0]
    path, reason, kind = finder.find(name, [csv_dir])
    if reason:
        extra = f" ({len(group)} rows)" if path is None and len(group) > 1 else ""
        problems.append(Problem(file, reason + extra, line=line0, field=_col(cols, "image"),
                                action="fixed" if path else "skipped", kind=kind))
    if path is None:
        return None
    sized = "width" in cols and "height" in cols
    declared = None
    if sized:
        w, h = (number(group[0][1][cols[k]] if cols[k] < len(group[0][1]) else "")[0] for k in ("width", "height"))
        if w is not None and h is not None and w >= 1 and h >= 1 and w == int(w) and h == int(h):
            declared = (int(w), int(h))
    item = image_item(file, finder, path, declared, problems, line=line0, field=_col(cols, "image"), sized=sized)
    if item is None:
        return None
    for line, row in group:
        _row(file, line, row, cols, item, problems)
    return item


def _row(file: str, line: int, row: list[str], cols: dict[str, int], item: Item, problems: list[Problem]) -> None:
    cells = {k: (row[i].strip() if i < len(row) else "") for k, i in cols.items()}
    cells["label"] = from_spreadsheet(cells["label"])
    if not any(cells[k] for k in ("x1", "y1", "x2", "y2", "label")):
        return  # the image, listed without boxes
    xyxy = corners(cells, ("x1", "y1", "x2", "y2"), file, line, lambda k: _col(cols, k), problems)
    if xyxy is None:
        return
    if not cells["label"]:
        problems.append(Problem(file, "row has no label", line=line, field=_col(cols, "label"), kind="missing_name"))
        return
    add_box(item, cells["label"], xyxy, problems, line=line, field=_col(cols, "label"))


def spreadsheet_safe(text: str) -> str:
    """A text cell that a spreadsheet shows as text: one starting with ``= + - @``, a tab or a carriage return
    would run as a formula (``=HYPERLINK(...)``, ``=cmd|...``), so it gets a leading ``'`` (OWASP's advice);
    :func:`from_spreadsheet` takes it off when the file is read back."""
    return "'" + text if text[:1] in _FORMULA_START else text


def from_spreadsheet(text: str) -> str:
    """Undo :func:`spreadsheet_safe`."""
    return text[1:] if text[:1] == "'" and text[1:2] in _FORMULA_START and text[1:2] else text


def write_csv_boxes(rs: RecordSet, path: Path, names: list[str], scores=None) -> list[Path]:
    """Write one row per box (``image,x1,y1,x2,y2,label,width,height``); an image without boxes gets one row
    with empty coordinates."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for rec, name in zip(rs.records, names):
        size = [int(rec.width), int(rec.height)]
        if not rec.num_boxes:
            w.writerow([spreadsheet_safe(name), "", "", "", "", "", *size])
        for box, label in zip(rec.boxes, rec.labels):
            w.writerow([spreadsheet_safe(name), *(fmt_coord(v) for v in box),
                        spreadsheet_safe(rs.class_names[int(label) - 1]), *size])
    return [atomic_write_text(path, buf.getvalue())]
