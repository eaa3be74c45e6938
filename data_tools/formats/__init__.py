"""Label formats: one module per format (reader + writer) and this registry (name -> reader, writer, detector).

========== ====== ============================================ ==========================================
format     source file written into a folder export           tools
========== ====== ============================================ ==========================================
voc        folder ``annotations/*.xml`` + ``images/``            labelImg, CVAT, Roboflow (Pascal VOC)
coco       file   ``annotations.json`` + ``images/``             CVAT, Roboflow, Label Studio, detectron2
yolo       folder ``data.yaml``, ``labels/*.txt`` + ``images/``   Ultralytics, Roboflow, labelImg (YOLO)
cvat       file   ``annotations.xml`` + ``images/``              CVAT ("CVAT for images 1.1")
labelstudio file  ``annotations.json`` + ``images/``             Label Studio (JSON export / task import)
csv        file   ``annotations.csv`` + ``images/``              SKU-110K, spreadsheets
========== ====== ============================================ ==========================================

Every reader has the signature ``read(path, ReadOptions) -> (RecordSet, [Problem])`` and every writer
``write(rs, target, names, scores=None) -> [written paths]``; :func:`detect_format` tells the format of a
path (a file, or a folder holding one annotation file of a file format).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from data_tools.coco import read_coco, write_coco
from data_tools.errors import UserError
from data_tools.formats.common import ReadOptions
from data_tools.formats.csv_boxes import read_csv_boxes, write_csv_boxes
from data_tools.formats.cvat import read_cvat, write_cvat
from data_tools.formats.labelstudio import read_labelstudio, write_labelstudio
from data_tools.formats.voc_folder import find_xml_files, read_voc_folder, write_voc_folder
from data_tools.formats.yolo import is_yolo_folder, read_yolo, write_yolo
from data_tools.records import Problem, RecordSet
from data_tools.userfiles import UnsafeFile, open_regular

HEAD_BYTES = 64 * 1024
_XML_ROOT = re.compile(rb"<\s*([A-Za-z_][\w.-]*)[\s/>]")
_JSON_SUFFIXES = (".json",)


class FormatError(UserError, ValueError):
    """The format of a path cannot be told, or the path does not fit the format asked for."""


@dataclass(frozen=True)
class Format:
    """One label format.

    source: ``"folder"`` (a tree of files) or ``"file"`` (one annotation file).
    suffixes: endings of the annotation file (file formats).
    layout: the annotation file's name in a folder export (file formats).
    name_prefix: what image names start with in that file (Label Studio's local-files paths are below the
        export folder, so ``images/``; the others name images below ``images/``).
    split_dirs: a folder export puts images in ``images/<split>/`` (YOLO's layout).
    """

    name: str
    source: str
    read: Callable[[str, ReadOptions], tuple[RecordSet, list[Problem]]]
    write: Callable[..., list[Path]]
    tools: str
    suffixes: tuple[str, ...] = ()
    layout: str = ""
    name_prefix: str = ""
    split_dirs: bool = False


def _read_coco(path: str, opts: ReadOptions) -> tuple[RecordSet, list[Problem]]:
    return read_coco(path, opts.class_names, opts.image_root)


def _write_coco(rs: RecordSet, path: Path, names: list[str], scores=None) -> list[Path]:
    write_coco(rs, path, names, scores)
    return [path]


FORMATS: dict[str, Format] = {
    "voc": Format("voc", "folder", read_voc_folder, write_voc_folder, "labelImg, CVAT, Roboflow (Pascal VOC)"),
    "coco": Format("coco", "file", _read_coco, _write_coco, "CVAT, Roboflow, Label Studio, detectron2",
                   (".json",), "annotations.json"),
    "yolo": Format("yolo", "folder", read_yolo, write_yolo, "Ultralytics, Roboflow, labelImg (YOLO mode)",
                   split_dirs=True),
    "cvat": Format("cvat", "file", read_cvat, write_cvat, "CVAT (CVAT for images 1.1)", (".xml",), "annotations.xml"),
    "labelstudio": Format("labelstudio", "file", read_labelstudio, write_labelstudio,
                          "Label Studio (JSON export, task import)", (".json",), "annotations.json", "images/"),
    "csv": Format("csv", "file", read_csv_boxes, write_csv_boxes, "SKU-110K, spreadsheets", (".csv", ".tsv"),
                  "annotations.csv"),
}
NAMES = tuple(FORMATS)


def _head(path: str) -> bytes:
    try:
        with open_regular(path, 1 << 40) as f:
            return f.read(HEAD_BYTES)
    except UnsafeFile as e:
        raise FormatError(f"source {e}") from None


def _strip_prolog(head: bytes) -> bytes:
    """XML without its BOM, declaration and leading comments."""
    head = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    while head.startswith((b"<?", b"<!--")):
        end = head.find(b"?>" if head.startswith(b"<?") else b"-->")
        if end < 0:
            return b""
        head = head[end + (2 if head.startswith(b"<?") else 3):].lstrip()
    return head


def file_format(path: str) -> tuple[str | None, str]:
    """``(format, why)`` of one annotation file from its ending and first bytes; ``(None, why not)`` otherwise."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix in (".csv", ".tsv"):
        return "csv", f"a {suffix} file"
    if suffix in (".yaml", ".yml"):
        return "yolo", "a YOLO data.yaml"
    if suffix == ".xml":
        m = _XML_ROOT.match(_strip_prolog(_head(path)))
        tag = m.group(1).decode("ascii", "replace") if m else None
        if tag == "annotations":
            return "cvat", "an XML file with CVAT's <annotations> root"
        if tag == "annotation":
            return None, "a single VOC file: give the folder of the VOC files"
        return None, f"an XML file whose root is <{tag}>, neither CVAT's <annotations> nor VOC's <annotation>"
    if suffix in _JSON_SUFFIXES:
        head = _head(path).lstrip(b"\xef\xbb\xbf \t\r\n")
        if head.startswith(b"[") or (head.startswith(b"{") and re.search(rb'"data"\s*:', head)
                                     and not re.search(rb'"images"\s*:', head)):
            return "labelstudio", "a JSON list of tasks (Label Studio)"
        if head.startswith(b"{"):
            return "coco", "a JSON object (COCO)"
        return None, "a .json file that is neither a COCO object nor a Label Studio task list"
    if suffix == ".pkl":
        return None, "a dataset file already (no conversion needed)"
    return None, f"a {suffix or 'suffix-less'} file: not a known annotation file"


def detect_format(src: str) -> tuple[str, str, str]:
    """``(format, path to read, why)`` for a source path. Raises :class:`FormatError` when it cannot tell.

    A folder is YOLO when it has ``data.yaml``, VOC when it holds ``.xml`` files (CVAT when its only top-level
    XML has CVAT's root), YOLO when it has a ``labels/`` folder of ``.txt`` files, and otherwise the format of
    its one COCO / Label Studio JSON, CVAT XML or CSV file (at the top or in ``annotations/``).
    """
    if not os.path.isdir(src):
        if not os.path.lexists(src):
            raise FormatError(f"source {src} does not exist")
        fmt, why = file_format(src)
        if fmt is None:
            raise FormatError(f"cannot tell the label format of {src}: {why}")
        return fmt, src, why
    if any(os.path.isfile(os.path.join(src, n)) for n in ("data.yaml", "data.yml")):
        return "yolo", src, "a folder with data.yaml"
    tops = _annotation_files(src)
    cvat = [f for f in tops if f.lower().endswith(".xml") and file_format(f)[0] == "cvat"]
    if len(cvat) == 1 and len([f for f in tops if f.lower().endswith(".xml")]) == 1:
        return "cvat", cvat[0], f"a folder with one CVAT XML ({os.path.basename(cvat[0])})"
    if find_xml_files(src):
        return "voc", src, "a folder of .xml files (Pascal VOC)"
    if is_yolo_folder(src):
        return "yolo", src, "a folder with a labels/ folder, or images with .txt labels beside them (YOLO)"
    known = [(f, file_format(f)) for f in tops]
    known = [(f, fmt, why) for f, (fmt, why) in known if fmt in ("coco", "labelstudio", "csv")]
    if len(known) == 1:
        f, fmt, why = known[0]
        return fmt, f, f"{why} in the folder ({os.path.relpath(f, src)})"
    if known:
        raise FormatError(f"{src} holds several annotation files ({', '.join(os.path.relpath(f, src) for f, _, _ in known[:5])}): "
                          "give the one to convert")
    raise FormatError(f"no annotations found in {src}: expected VOC .xml files, a YOLO data.yaml or labels/ folder, "
                      "or one COCO / Label Studio .json, CVAT .xml or .csv file")


def _annotation_files(folder: str) -> list[str]:
    """Candidate single annotation files: ``.json`` / ``.xml`` / ``.csv`` / ``.tsv`` at the top of ``folder`` or in
    its ``annotations/`` folder."""
    out = []
    for d in (folder, os.path.join(folder, "annotations")):
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        out += [os.path.join(d, n) for n in names if not n.startswith(".") and os.path.splitext(n)[1].lower()
                in (".json", ".xml", ".csv", ".tsv") and os.path.isfile(os.path.join(d, n))]
    return out


def source_for(src: str, fmt: str) -> str:
    """The path the reader of ``fmt`` reads for ``src``: the folder itself (folder formats), the file itself,
    or a folder's one annotation file of that format."""
    f = FORMATS[fmt]
    if f.source == "folder":
        if not os.path.isdir(src) and not (fmt == "yolo" and os.path.splitext(src)[1].lower() in (".yaml", ".yml")):
            raise FormatError(f"--format {fmt} needs a folder, and {src} is a file")
        return src
    if not os.path.isdir(src):
        return src
    hits = [p for p in _annotation_files(src) if os.path.splitext(p)[1].lower() in f.suffixes
            and file_format(p)[0] == fmt]
    if len(hits) != 1:
        what = "no" if not hits else f"{len(hits)}"
        raise FormatError(f"--format {fmt} needs one {'/'.join(f.suffixes)} file, and the folder {src} holds {what} "
                          f"such file{'s' if len(hits) != 1 else ''}; give the file")
    return hits[0]
