"""A RecordSet written in another tool's format: one annotation file, or a folder with the images beside the labels.

Two shapes (:func:`export_records`):

- a file (``-o gt.json`` for coco / labelstudio, ``.xml`` for cvat, ``.csv`` for csv): the annotation file
  alone, its image names relative to the dataset's image root (read it back with ``--image-root ROOT``), with
  its SHA-256 in ``.NAME.sha256`` beside it so a later export replaces it only while unchanged
  (:mod:`data_tools.written`: a hand-corrected export is refused);
- a folder (anything else, and always for voc / yolo): the layout the tool opens plus ``classes.txt`` (the
  label order, which VOC, Label Studio and CSV files cannot hold themselves), with each image copied
  (``images="copy"``), hard-linked (``"link"``; copied where the file system cannot link) or left out
  (``"none"``) under ``images/``. The folder must be new or empty and must not lie inside the dataset's
  image root (a later conversion of that root would read the export too). It is written as a hidden folder
  beside it and renamed when complete (:mod:`data_tools.staged`): a failed or killed export leaves no
  half-written folder, and the rerun writes the same one.

Image names in a folder export are the records' paths without a leading ``images/`` (or ``JPEGImages/``)
folder, made unique; YOLO puts each image under ``images/<split>/`` when the record has a split. Every
file is written atomically (a temporary file renamed into place); the per-image files are flushed to disk
together at the end, not one by one. An image that cannot be read is reported and its record left out.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from data_tools.atomic import WriteError, atomic_open, atomic_write_text, flush_to_disk
from data_tools.formats import FORMATS
from data_tools.formats.common import CLASS_ORDER_FILE
from data_tools.images import MAX_IMAGE_BYTES
from data_tools.locate import IMAGE_DIR_NAMES
from data_tools.outputs import OutputRefused
from data_tools.records import Problem, RecordSet
from data_tools.staged import StagedFolder
from data_tools.userfiles import UnsafeFile, open_regular, within
from data_tools.written import record_written

IMAGE_MODES = ("copy", "link", "none")


def is_file_target(fmt: str, out: str | os.PathLike) -> bool:
    """True when ``out`` names the annotation file itself (its ending is the format's), not a folder."""
    f = FORMATS[fmt]
    return f.source == "file" and Path(out).suffix.lower() in f.suffixes


def export_names(rs: RecordSet) -> list[str]:
    """Each record's image path for a folder export: no leading image folder, unique (case-insensitively)."""
    used: set[str] = set()
    out = []
    for rec in rs.records:
        parts = [p for p in rec.image.replace("\\", "/").split("/") if p not in ("", ".")]
        if len(parts) > 1 and parts[0] in IMAGE_DIR_NAMES:
            parts = parts[1:]
        name = "/".join(parts)
        stem, suffix, k = os.path.splitext(name)[0], os.path.splitext(name)[1], 2
        while name.lower() in used:
            name, k = f"{stem}_{k}{suffix}", k + 1
        used.add(name.lower())
        out.append(name)
    return out


def check_export_folder(out: str | os.PathLike, image_root: str | None) -> None:
    """Refuse a folder that holds files, or that lies inside the dataset's image root."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise OutputRefused(f"refusing to write into {out}: it is a file (a folder export needs a new folder; "
                            "give a file name ending in the format's suffix for one annotation file)")
    if p.is_dir() and any(p.iterdir()):
        raise OutputRefused(f"refusing to write into {out}: it is not empty; choose a new folder")
    if image_root and within(os.path.realpath(p), os.path.realpath(image_root)):
        raise OutputRefused(f"refusing to write into {out}: it is inside the dataset's image folder {image_root} "
                            "(converting that folder later would read the export too); choose a folder outside it")


def export_records(rs: RecordSet, fmt: str, out: str | os.PathLike, images: str = "copy", scores=None,
                   image_files: list[str | os.PathLike] | None = None) -> dict:
    """Write ``rs`` in ``fmt`` at ``out`` (see the module doc).

    Args:
        scores: per-record score arrays ``[N_i]`` for detections (written where the format has a place).
        image_files: the image file of each record (default: ``image_root / record.image``).
    Returns ``{"out", "single_file", "records", "boxes", "images", "files", "problems"}``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (use {', '.join(FORMATS)})")
    if images not in IMAGE_MODES:
        raise ValueError(f"images must be one of {', '.join(IMAGE_MODES)}, not {images!r}")
    f, out = FORMATS[fmt], Path(out)
    if is_file_target(fmt, out):
        files = f.write(rs, out, [r.image for r in rs.records], scores)
        record_written(out)  # a later export replaces it only while unchanged (data_tools.written)
        return _result(out, True, rs, 0, files, [])
    check_export_folder(out, rs.image_root)
    with StagedFolder(out) as stage:  # a failure midway leaves no half-written folder behind
        sub, files, placed, problems = _write_folder(rs, f, stage.path, images, scores, image_files)
    files = [stage.final / Path(p).relative_to(stage.path) for p in files]
    return _result(out, False, sub, placed, files, problems)


def _write_folder(rs: RecordSet, f, out: Path, images: str, scores, image_files) -> tuple[RecordSet, list, int, list]:
    """The folder export into ``out`` (the hidden folder); returns ``(records written, files, images placed,
    problems)``."""
    names = export_names(rs)
    dests = [f"{r.split}/{n}" if f.split_dirs and r.split else n for r, n in zip(rs.records, names)]
    sources = [Path(p) for p in image_files] if image_files is not None else [Path(rs.image_root) / r.image
                                                                              for r in rs.records]
    problems: list[Problem] = []
    keep = list(range(len(rs.records)))
    if images != "none":
        keep = [i for i in keep if _place(sources[i], out / "images" / dests[i], images, problems)]
    sub = rs.subset(keep)
    dests = [dests[i] for i in keep]
    sub_scores = [scores[i] for i in keep] if scores is not None else None
    if f.layout:
        files = f.write(sub, out / f.layout, [f.name_prefix + d for d in dests], sub_scores)
        files.append(atomic_write_text(out / CLASS_ORDER_FILE, "".join(n + "\n" for n in rs.class_names)))
    else:
        files = f.write(sub, out, dests, sub_scores)
    flush_to_disk()  # the per-image files were written without a flush each
    return sub, files, len(keep) if images != "none" else 0, problems


def _result(out: Path, single: bool, rs: RecordSet, placed: int, files: list, problems: list[Problem]) -> dict:
    return {"out": str(out), "single_file": single, "records": len(rs.records),
            "boxes": sum(r.num_boxes for r in rs.records), "images": placed, "files": [str(p) for p in files],
            "problems": problems}


def _place(src: Path, dst: Path, mode: str, problems: list[Problem]) -> bool:
    """Copy or hard-link one image (only a regular file, read with the usual cap); False when it cannot be read."""
    try:
        f = open_regular(src, MAX_IMAGE_BYTES)
    except UnsafeFile as e:
        problems.append(Problem(str(src), f"image {e.reason}; left out of the export", kind=e.kind))
        return False
    with f:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if mode == "link":
            try:
                os.link(src, dst)
                return True
            except OSError:  # another file system, or links not allowed: copy instead
                pass
        try:
            with atomic_open(dst, "wb", durable=False) as out:
                shutil.copyfileobj(f, out, 1 << 20)
        except WriteError:
            raise
        except OSError as e:
            problems.append(Problem(str(src), f"cannot read image ({e.strerror}); left out of the export",
                                    kind="unreadable_image"))
            return False
    return True
