"""Annotations on disk (a folder of VOC XML, or a COCO JSON file) -> RecordSet + problems + summary.

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

from tqdm import tqdm

from data_tools import __version__
from data_tools.atomic import atomic_write_text
from data_tools.coco import read_coco
from data_tools.records import ClassMap, Problem, RecordSet
from data_tools.userfiles import UnsafeFile, check_file, read_limited, real_path
from data_tools.voc import parse_voc, to_record

PROGRESS_MIN_FILES = 500
MAX_CLASSES_BYTES = 16 << 20


class ConvertError(ValueError):
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


def find_xml_files(src: str) -> list[str]:
    """All ``*.xml`` files under ``src`` (any case), sorted; hidden folders are skipped."""
    out = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(os.path.join(dirpath, f) for f in filenames if f.lower().endswith(".xml") and not f.startswith("."))
    return sorted(out)


def detect_format(src: str) -> str:
    """``"coco"`` for a ``.json`` file, ``"voc"`` for a folder."""
    if os.path.isdir(src):
        return "voc"
    _check_source_file(src)
    if src.lower().endswith(".json"):
        return "coco"
    raise ConvertError(f"{src} is a file but not a COCO .json; give a folder of VOC .xml files or a COCO .json")


def _check_source_file(src: str) -> None:
    """A source that is not a folder must be a regular file (not a FIFO, a device or a symlink loop)."""
    try:
        check_file(src)
    except UnsafeFile as e:
        raise ConvertError(f"source {e}") from None


def convert(
    src: str | os.PathLike, fmt: str = "auto", classes_file: str | os.PathLike | None = None, progress: bool = True
) -> tuple[RecordSet, list[Problem], dict]:
    """Convert ``src`` into a RecordSet whose ``image_root`` is the absolute source folder.

    Args:
        src: a folder searched recursively for VOC ``*.xml``, or a COCO ``.json`` file.
        fmt: ``"auto"``, ``"voc"`` or ``"coco"``.
        classes_file: class names one per line (label order); objects of other classes are skipped.
            Without it the classes are the sorted names found (VOC) or the file's categories (COCO).
        progress: show a tqdm bar on large inputs.
    Returns ``(records, problems, summary)``; see :func:`summarize` for the summary's keys.
    """
    t0 = time.perf_counter()
    src = os.fspath(src)
    if not os.path.lexists(src):
        raise ConvertError(f"source {src} does not exist")
    if fmt not in ("auto", "voc", "coco"):
        raise ConvertError(f"unknown format {fmt!r} (use auto, voc or coco)")
    fmt = detect_format(src) if fmt == "auto" else fmt
    class_names = read_class_file(classes_file) if classes_file else None
    if fmt == "coco":
        if os.path.isdir(src):
            raise ConvertError(f"--format coco needs a .json file, and {src} is a folder")
        _check_source_file(src)
        rs, problems = read_coco(src, class_names)
    else:
        if not os.path.isdir(src):
            raise ConvertError(f"--format voc needs a folder of .xml files, and {src} is a file")
        rs, problems = _convert_voc(src, class_names, progress)
    inputs = rs.meta.pop("inputs", len(rs.records))
    rs.meta.update({
        "source": os.path.abspath(src), "format": fmt, "tool_version": __version__,
        "classes_file": os.path.abspath(classes_file) if classes_file else None,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    })
    summary = summarize(rs, problems, inputs, time.perf_counter() - t0)
    rs.meta["problems"] = summary["problems"]
    return rs, problems, summary


def _convert_voc(src: str, class_names: list[str] | None, progress: bool) -> tuple[RecordSet, list[Problem]]:
    files = find_xml_files(src)
    if not files:
        raise ConvertError(f"no .xml annotation files found under {src}")
    root = os.path.abspath(src)
    problems: list[Problem] = []
    anns = []
    cache: dict = {}
    bar = tqdm(files, desc="reading annotations", unit="file", disable=not progress or len(files) < PROGRESS_MIN_FILES)
    for f in bar:
        ann, probs = parse_voc(f, root, cache)
        problems.extend(probs)
        if ann is not None:
            anns.append(ann)
    cmap = ClassMap(class_names) if class_names is not None else ClassMap.collect(
        o.name for a in anns for o in a.objects
    )
    # Two annotation files for one image file (symlinks resolved): keep the one named like the image,
    # else the first by path.
    real = [real_path(os.path.join(root, a.image), cache) for a in anns]
    owner: dict = {}
    for key, ann in zip(real, anns):
        if key not in owner or _owner_rank(ann) < _owner_rank(owner[key]):
            owner[key] = ann
    records = []
    for key, ann in zip(real, anns):
        if owner[key] is not ann:
            problems.append(Problem(ann.xml_path, f"image {ann.image} is already annotated by {owner[key].xml_path}",
                                    field="filename", kind="duplicate_image"))
            continue
        rec, probs = to_record(ann, cmap)
        problems.extend(probs)
        records.append(rec)
    return RecordSet(cmap.names, root, records, {"inputs": len(files)}), problems


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _owner_rank(ann) -> tuple[bool, str]:
    """Which of several annotations of one image wins: the one named like the image, then the first path."""
    return _stem(ann.xml_path) != _stem(ann.image), ann.xml_path


def summarize(rs: RecordSet, problems: list[Problem], inputs: int, seconds: float) -> dict:
    """Counts for the CLI and the report.

    Keys: ``source``, ``format``, ``inputs`` (annotation files / COCO image entries), ``images`` (kept),
    ``images_skipped``, ``empty_images``, ``boxes``, ``boxes_skipped``, ``classes``, ``per_class``
    (name -> boxes), ``problems``, ``problems_by_kind``, ``problems_by_action``, ``seconds``.
    """
    counts = Counter()
    for r in rs.records:
        counts.update(r.labels.tolist())
    box_level = ("object[", "annotations[")
    return {
        "source": rs.meta.get("source"),
        "format": rs.meta.get("format"),
        "inputs": inputs,
        "images": len(rs.records),
        "images_skipped": max(inputs - len(rs.records), 0),
        "empty_images": sum(1 for r in rs.records if r.num_boxes == 0),
        "boxes": sum(r.num_boxes for r in rs.records),
        "boxes_skipped": sum(1 for p in problems if p.action == "skipped" and (p.field or "").startswith(box_level)),
        "classes": rs.num_classes,
        "per_class": {n: counts.get(k, 0) for k, n in enumerate(rs.class_names, 1)},
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
