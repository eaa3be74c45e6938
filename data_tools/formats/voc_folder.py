"""A folder of Pascal VOC / labelImg XML files <-> records (one file per image: :mod:`data_tools.voc`).

Read: every ``*.xml`` under the folder (hidden folders skipped); the folder is the dataset root and
images are found as :mod:`data_tools.locate` describes. Two annotation files for one image file keep the
one named like the image (else the first by path). Without a class list the classes are the names
found, sorted; a ``classes.txt`` in the folder (labelImg's, or ``retail-data export``'s) puts the names it
lists first, in its order.

Write (:func:`write_voc_folder`): ``annotations/[DIR/]STEM.xml`` beside ``images/[DIR/]NAME`` (open the
images folder in labelImg and set its save folder to ``annotations/``) and ``classes.txt`` (the label order).
"""

from __future__ import annotations

import os
from pathlib import Path

from data_tools.atomic import atomic_write_text
from data_tools.errors import UserError
from data_tools.formats.common import CLASS_ORDER_FILE, ReadOptions, class_order, first_spellings
from data_tools.progress import progress
from data_tools.records import ClassMap, Problem, Record, RecordSet
from data_tools.userfiles import file_identity
from data_tools.voc import parse_voc, to_record, write_voc

PROGRESS_MIN_FILES = 500


class VocError(UserError, ValueError):
    """The folder holds no VOC annotation at all."""


def find_xml_files(src: str) -> list[str]:
    """All ``*.xml`` files under ``src`` (any case), sorted; hidden folders are skipped."""
    out = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(os.path.join(dirpath, f) for f in filenames if f.lower().endswith(".xml") and not f.startswith("."))
    return sorted(out)


def read_voc_folder(src: str, opts: ReadOptions) -> tuple[RecordSet, list[Problem]]:
    """Read every VOC file under ``src`` (see the module doc)."""
    files = find_xml_files(src)
    if not files:
        raise VocError(f"no .xml annotation files found under {src}")
    root = os.path.abspath(src)
    problems: list[Problem] = []
    anns = []
    cache: dict = {}
    for f in progress(files, len(files), "reading annotations", "file", None if opts.progress else False,
                      PROGRESS_MIN_FILES):
        ann, probs = parse_voc(f, root, cache)
        problems.extend(probs)
        if ann is not None:
            anns.append(ann)
    order, order_file = class_order(root, problems) if opts.class_names is None else (None, None)
    if opts.class_names is not None:
        cmap = ClassMap(opts.class_names)
    elif order:
        cmap = ClassMap(first_spellings([*order, *ClassMap.collect(o.name for a in anns for o in a.objects).names]))
    else:
        cmap = ClassMap.collect(o.name for a in anns for o in a.objects)
    real = [file_identity(os.path.join(root, a.image), cache) for a in anns]  # hard links: one file
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
    return RecordSet(cmap.names, root, records, {"inputs": len(files), "class_order": order_file}), problems


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _owner_rank(ann) -> tuple[bool, str]:
    """Which of several annotations of one image wins: the one named like the image, then the first path."""
    return _stem(ann.xml_path) != _stem(ann.image), ann.xml_path


def write_voc_folder(rs: RecordSet, out: Path, dests: list[str], scores=None) -> list[Path]:
    """One labelImg XML per record at ``out/annotations/DEST.xml`` (``dests``: image paths under ``out/images``)."""
    written = [atomic_write_text(out / CLASS_ORDER_FILE, "".join(n + "\n" for n in rs.class_names))]
    for rec, dest in zip(rs.records, dests):
        path = out / "annotations" / Path(dest).with_suffix(".xml")
        named = Record(dest, rec.width, rec.height, rec.boxes, rec.labels, rec.difficult, rec.truncated, rec.source)
        write_voc(named, rs.class_names, path, durable=False)
        written.append(path)
    return written
