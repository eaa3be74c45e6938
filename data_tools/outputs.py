"""May ``retail-data`` write this output path? Never over an input, never over a file of another kind.

An output may replace only an earlier output of the same kind, recognised by its first bytes:

- ``dataset``: a dataset pickle (the header names ``retail-detect-dataset``, or an older version's
  pickled ``data_tools`` classes, so the rebuild command that a stale file prints still works);
- ``report``: a ``convert --report`` JSON (``{"summary": ...``);
- ``coco``: an ``export-coco`` JSON (its ``info.description`` says ``retail-detect dataset``);
- ``plot``: a PNG that matplotlib wrote (``stats --plot``);
- ``cvat`` / ``labelstudio`` / ``csv``: an ``export`` file of that format (CVAT's task name
  ``retail-detect export``, Label Studio tasks ``exported_by`` ``retail-detect``, our CSV header).

Anything else that exists there (a photo, a ``.pt`` checkpoint, someone's notes, a FIFO) is refused
with one line saying what it looks like; an empty file may be replaced. :func:`check_output` also refuses the command's inputs
(resolved paths and hard links, see :func:`data_tools.atomic.refuse_overwrite`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from data_tools.atomic import refuse_overwrite
from data_tools.userfiles import describe_mode, within

HEAD_BYTES = 4096
_BOM_SPACE = b"\xef\xbb\xbf \t\r\n"

_OWN = {
    "dataset": (lambda h: b"retail-detect-dataset" in h[:256] or b"data_tools.records" in h, "a dataset file"),
    "report": (lambda h: h.lstrip(_BOM_SPACE).startswith(b"{") and b'"summary"' in h[:64], "a convert report"),
    "coco": (lambda h: h.lstrip(_BOM_SPACE).startswith(b"{") and b'"retail-detect dataset' in h,
             "a COCO file written by export-coco"),
    "plot": (lambda h: h.startswith(b"\x89PNG\r\n\x1a\n") and b"Matplotlib" in h, "a plot written by stats"),
    "cvat": (lambda h: b"<annotations>" in h and b"<name>retail-detect export</name>" in h,
             "a CVAT file written by export"),
    "labelstudio": (lambda h: h.lstrip(_BOM_SPACE).startswith(b"[") and b'"exported_by": "retail-detect"' in h,
                    "a Label Studio file written by export"),
    "csv": (lambda h: h.startswith(b"image,x1,y1,x2,y2,label,width,height\n"), "a CSV written by export"),
}

_MAGIC = ((b"\xff\xd8\xff", "a JPEG image"), (b"\x89PNG", "a PNG image"), (b"PK\x03\x04", "a zip archive (e.g. a .pt)"),
          (b"GIF8", "a GIF image"), (b"BM", "a BMP image"), (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"),
          (b"RIFF", "a RIFF file (e.g. WebP)"), (b"\x80", "a pickle of another kind"), (b"<", "an XML/HTML file"),
          (b"{", "a JSON file"), (b"[", "a JSON file"))


class OutputRefused(ValueError):
    """The output path must not be written (it is an input, or an existing file of another kind)."""


def looks_like(head: bytes) -> str:
    """A short guess of what a file is from its first bytes: ``"a JPEG image"``, ``"a JSON file"``, ..."""
    if not head:
        return "an empty file"
    body = head.lstrip(_BOM_SPACE)
    return next((what for magic, what in _MAGIC if body.startswith(magic)), "a file of another kind")


def check_output(out: str | os.PathLike, kind: str, inputs: Iterable[str | os.PathLike] = (),
                 input_dirs: Iterable[str | os.PathLike] = ()) -> None:
    """Raise :class:`OutputRefused` unless ``out`` may be written as an output of ``kind`` (see the module doc).

    Args:
        out: the output file.
        kind: ``"dataset"``, ``"report"``, ``"coco"``, ``"plot"``, ``"cvat"``, ``"labelstudio"`` or ``"csv"``.
        inputs: files the command reads; ``out`` must be none of them.
        input_dirs: folders the command reads files from; an existing file of another kind in one of them
            is called an input in the message.
    """
    own, what = _OWN[kind]
    try:
        refuse_overwrite(out, list(inputs))
    except ValueError as e:
        raise OutputRefused(str(e)) from None
    p = Path(out)
    if p.is_dir():
        raise OutputRefused(f"output {out} is a folder; give a file name")
    if not os.path.lexists(p):
        return
    try:
        st = os.stat(p)
    except OSError:
        raise OutputRefused(f"refusing to write {out}: it is a symlink that cannot be followed") from None
    if not stat.S_ISREG(st.st_mode):
        raise OutputRefused(f"refusing to write {out}: it is {describe_mode(st.st_mode)}")
    try:
        with open(p, "rb") as f:
            head = f.read(HEAD_BYTES)
    except OSError as e:
        raise OutputRefused(f"refusing to write {out}: it exists and cannot be read ({e.strerror})") from None
    if head and not own(head):  # an empty file holds nothing to lose
        real = os.path.realpath(p)
        for d in input_dirs:
            if within(real, os.path.realpath(d)):
                raise OutputRefused(f"refusing to overwrite {out}: it is {looks_like(head)} under the input "
                                    f"folder {os.fspath(d)}, probably one of the input files")
        raise OutputRefused(f"refusing to overwrite {out}: it is {looks_like(head)}, not {what}; "
                            "choose another name or remove it first")
