"""Annotations on disk (any format of :mod:`data_tools.formats`) -> RecordSet + problems + summary.

Every bad file, image or box is skipped or repaired on its own and reported as a
:class:`~data_tools.records.Problem`; only a missing or empty source, or an unusable class list,
stops the conversion (:class:`ConvertError`).
"""

from __future__ import annotations

import datetime
import json
import os
import time
from collections import Counter

from data_tools import __version__
from data_tools.atomic import atomic_write_text
from data_tools.errors import UserError
from data_tools.formats import FORMATS, detect_format, source_for
from data_tools.formats.common import ReadOptions
from data_tools.records import ClassMap, Problem, RecordSet
from data_tools.userfiles import UnsafeFile, check_file, read_limited

MAX_CLASSES_BYTES = 16 << 20
BOX_KINDS = {"zero_area_box", "swapped_box", "box_outside", "bad_coordinate", "missing_coordinate", "missing_box",
             "unknown_class", "missing_name", "bad_class_id", "bad_line", "duplicate_box"}
"""Problem kinds that always concern one box (a skipped one is counted in ``boxes_skipped``)."""


class ConvertError(UserError, ValueError):
    """The conversion cannot start or produce anything (missing source, bad class list, ...)."""


def read_class_file(path: str | os.PathLike) -> list[str]:
    """Class names, one per line (blank lines and ``#`` comments skipped), in label order 1..K."""
    try:
        lines = read_limited(path, MAX_CLASSES_BYTES).decode("utf-8-sig").splitlines()
    except UnsafeFile as e:
        if e.kind == "missing_file":
            raise ConvertError(f"classes file {os.fspath(path)} not found") from None
        raise ConvertError(f"classes file {e}") from None
    except UnicodeDecodeError as e:
        raise ConvertError(f"cannot read classes file {os.fspath(path)}: {e}") from None
    names = [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]
    if not names:
        raise ConvertError(f"classes file {os.fspath(path)} names no classes")
    try:
        return ClassMap(names).names
    except ValueError as e:
        raise ConvertError(f"classes file {os.fspath(path)}: {e}") from None


def convert(
    src: str | os.PathLike, fmt: str = "auto", classes_file: str | os.PathLike | None = None, progress: bool = True,
    *, class_names: list[str] | None = None, image_root: str | os.PathLike | None = None,
    csv_columns: dict[str, str] | None = None,
) -> tuple[RecordSet, list[Problem], dict]:
    """Convert ``src`` into a RecordSet whose ``image_root`` is the absolute folder its image paths are relative to.

    Args:
        src: a VOC or YOLO folder, a COCO / Label Studio JSON, a CVAT XML or a CSV file (or a folder holding
            one of those files); see :mod:`data_tools.formats`.
        fmt: ``"auto"`` (detected, see :func:`data_tools.formats.detect_format`) or a name of
            :data:`data_tools.formats.FORMATS`.
        classes_file: class names one per line (label order); objects of other classes are skipped.
        class_names: the same as a list (``--classes-from OTHER.pkl``); not together with ``classes_file``.
            Without either the classes are the format's own list (COCO categories, YOLO names, CVAT labels)
            or the sorted names found (VOC, Label Studio, CSV).
        image_root: the folder image names are relative to (coco, cvat, labelstudio, csv).
        csv_columns: CSV column names (``{"image": "image_name", ...}``).
        progress: show a tqdm bar on large inputs.
    Returns ``(records, problems, summary)``; see :func:`summarize` for the summary's keys.
    """
    t0 = time.perf_counter()
    src = os.fspath(src)
    if not os.path.lexists(src):
        raise ConvertError(f"source {src} does not exist")
    if fmt != "auto" and fmt not in FORMATS:
        raise ConvertError(f"unknown format {fmt!r} (use auto, {', '.join(FORMATS)})")
    if not os.path.isdir(src):
        _check_source_file(src)
    if classes_file is not None and class_names is not None:
        raise ConvertError("give the class list once: a classes file or a dataset's classes, not both")
    detected = fmt == "auto"
    if detected:
        fmt, path, why = detect_format(src)
    else:
        path, why = source_for(src, fmt), "given"
    if image_root is not None and FORMATS[fmt].source == "folder":
        raise ConvertError(f"--image-root is for coco, cvat, labelstudio and csv files; a {fmt} folder's images are "
                           "found inside it")
    if image_root is not None and not os.path.isdir(image_root):
        raise ConvertError(f"--image-root {os.fspath(image_root)} is not a folder")
    if path != src and not os.path.isdir(path):
        _check_source_file(path)
    names = read_class_file(classes_file) if classes_file else (list(class_names) if class_names is not None else None)
    opts = ReadOptions(names, os.fspath(image_root) if image_root is not None else None, csv_columns, progress)
    rs, problems = FORMATS[fmt].read(path, opts)
    inputs = rs.meta.pop("inputs", len(rs.records))
    rs.meta.update({
        "source": os.path.abspath(src), "format": fmt, "detected": why if detected else None,
        "annotation_file": os.path.abspath(path) if path != src else None, "tool_version": __version__,
        "classes_file": os.path.abspath(classes_file) if classes_file else None,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    })
    summary = summarize(rs, problems, inputs, time.perf_counter() - t0)
    rs.meta["problems"] = summary["problems"]
    return rs, problems, summary


def _check_source_file(src: str) -> None:
    """A source that is not a folder must be a regular file (not a FIFO, a device or a symlink loop)."""
    try:
        check_file(src)
    except UnsafeFile as e:
        raise ConvertError(f"source {e}") from None


def summarize(rs: RecordSet, problems: list[Problem], inputs: int, seconds: float) -> dict:
    """Counts for the CLI and the report.

    Keys: ``source``, ``format``, ``detected`` (why the format was chosen, None when given), ``inputs``
    (VOC files, COCO / CVAT image entries, Label Studio tasks, YOLO / CSV images), ``images`` (kept),
    ``images_skipped``, ``empty_images``, ``boxes``, ``boxes_skipped``, ``classes``, ``per_class``
    (name -> boxes), ``splits`` (split -> images; empty when the source has none), ``problems``,
    ``problems_by_kind``, ``problems_by_action``, ``seconds``.
    """
    counts = Counter()
    for r in rs.records:
        counts.update(r.labels.tolist())
    box_level = ("object[", "annotations[")  # VOC / COCO fields; the other formats' box problems go by kind
    return {
        "source": rs.meta.get("source"),
        "format": rs.meta.get("format"),
        "detected": rs.meta.get("detected"),
        "inputs": inputs,
        "images": len(rs.records),
        "images_skipped": max(inputs - len(rs.records), 0),
        "empty_images": sum(1 for r in rs.records if r.num_boxes == 0),
        "boxes": sum(r.num_boxes for r in rs.records),
        "boxes_skipped": sum(1 for p in problems if p.action == "skipped"
                             and ((p.field or "").startswith(box_level) or p.kind in BOX_KINDS)),
        "classes": rs.num_classes,
        "per_class": {n: counts.get(k, 0) for k, n in enumerate(rs.class_names, 1)},
        "splits": dict(sorted(Counter(r.split for r in rs.records if r.split).items())),
        "problems": len(problems),
        "problems_by_kind": dict(sorted(Counter(p.kind for p in problems).items())),
        "problems_by_action": dict(sorted(Counter(p.action for p in problems).items())),
        "seconds": round(seconds, 3),
    }


def blocking(problems: list[Problem]) -> list[Problem]:
    """The problems that fail ``--strict``: anything skipped or fixed (not the merely "ignored")."""
    return [p for p in problems if p.action in ("skipped", "fixed")]


def write_report(path: str | os.PathLike, summary: dict, problems: list[Problem]) -> None:
    """Write the machine-readable report (summary + every problem) atomically as JSON."""
    doc = {"summary": summary, "problems": [p.to_dict() for p in problems]}
    atomic_write_text(path, json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
