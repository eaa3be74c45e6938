"""May a command write this output? The one output policy of ``retail-data`` and ``retail-detect``.

The rule, checked before any work (a refusal is an :class:`OutputRefused`: one ``error:`` line, exit 1):

1. **Never an input.** An output file is none of the command's input files (symlinks, ``..`` and hard
   links resolved: :func:`refuse_overwrite`). An output folder is not an input folder nor inside one,
   not the folder of an input file, and holds no input (:func:`check_output_folder`).
2. **Never a user's file.** An existing file is replaced only when it is an earlier output of the same
   kind, recognised by its content (:data:`KINDS`); an empty file may be replaced. A single-file export
   (:data:`STAMPED`) must also be unchanged since it was written: its checksum is kept beside it
   (:mod:`data_tools.written`), so a hand-corrected export is never replaced. Anything else there
   (a photo, a ``.pt`` checkpoint, someone's notes, a FIFO, a folder) is refused with one line saying
   what it looks like (:func:`check_output`).
3. **Never a user's folder.** An output folder is written when it is new or empty, or when it holds an
   earlier output of the same verb: ``synth`` and ``split`` write into it, a verb with run folders (train,
   predict, audit, ``eval --report``, browse, ...) moves on to ``DIR2``, ``DIR3``, ...
   (:func:`detect.engine.runtime.run_dir.claim_run_dir`); ``export`` (folder) and ``audit`` refuse any
   other non-empty folder. ``export`` (folder), ``eval --report``, ``browse`` and ``predict --save-labels``
   write into a hidden folder beside the target and rename it when complete (:mod:`data_tools.staged`), so
   a run that fails or is killed midway leaves no half-written folder for the rerun to refuse or step past.

The kinds an output may be (:func:`check_output`'s ``kind``), recognised by their first bytes unless said:

- ``dataset``: a dataset pickle (header ``retail-detect-dataset``, or an older version's pickled
  ``data_tools`` classes, so the rebuild command that a stale file prints still works);
- ``report``: a ``convert --report`` JSON (``{"summary": ...``); ``stats``: a ``stats --json FILE`` JSON;
- ``coco``: an ``export-coco`` JSON (its ``info.description`` says ``retail-detect dataset``);
- ``plot``: a PNG that matplotlib wrote (``stats --plot``, ``eval --json``'s PR curves);
- ``cvat`` / ``labelstudio`` / ``csv``: an ``export`` file of that format (CVAT's task name
  ``retail-detect export``, Label Studio tasks ``exported_by`` ``retail-detect``, our CSV header);
- ``metrics`` / ``results``: ``eval --json``'s metrics (``{"AP": ...``) and COCO results (a list of
  ``{"image_id": ...}``); ``bench``: ``bench --json``'s results (``{"meta": {... "torchvision": ...``); ``gallery-bench``: ``gallery-bench
  --json``'s (``{"meta": {"benchmark": "gallery-bench"``);
- ``onnx``: an ONNX model PyTorch exported; ``openvino``: an OpenVINO IR ``.xml`` (``<net``), ``openvino-bin``:
  its weights, replaced only beside such an ``.xml``; ``torchscript``: a zip holding TorchScript ``code/`` (read
  from the zip's directory, never unpickled); ``export-meta``: the JSON written beside an export (earlier versions).
"""

from __future__ import annotations

import os
import stat
import sys
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

from data_tools.atomic import check_writable_dir, remove_stale_temps, same_file
from data_tools.errors import UserError
from data_tools.userfiles import describe_mode, within
from data_tools.written import changed_since_written, sidecar, sidecar_is_foreign

HEAD_BYTES = 4096
_BOM_SPACE = b"\xef\xbb\xbf \t\r\n"


def _json_obj(h: bytes) -> bool:
    return h.lstrip(_BOM_SPACE).startswith(b"{")


def _torchscript(h: bytes, path: Path) -> bool:
    if not h.startswith(b"PK\x03\x04"):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            return any("/code/" in n for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _openvino_bin(path: Path) -> bool:
    """An OpenVINO ``.bin`` is raw weights: recognised by the IR ``.xml`` of the same name beside it."""
    try:
        with open(path.with_suffix(".xml"), "rb") as f:
            head = f.read(256)
    except OSError:
        return False
    return head.lstrip(_BOM_SPACE).startswith(b"<?xml") and b"<net " in head


KINDS: dict[str, tuple[Callable[[bytes, Path], bool], str]] = {
    "dataset": (lambda h, p: b"retail-detect-dataset" in h[:256] or b"data_tools.records" in h, "a dataset file"),
    "report": (lambda h, p: _json_obj(h) and b'"summary"' in h[:64], "a convert report"),
    "stats": (lambda h, p: _json_obj(h) and b'"empty_images"' in h, "a statistics JSON written by stats"),
    "coco": (lambda h, p: _json_obj(h) and b'"retail-detect dataset' in h, "a COCO file written by export-coco"),
    "plot": (lambda h, p: h.startswith(b"\x89PNG\r\n\x1a\n") and b"Matplotlib" in h, "a plot written by matplotlib"),
    "cvat": (lambda h, p: b"<annotations>" in h and b"<name>retail-detect export</name>" in h,
             "a CVAT file written by export"),
    "labelstudio": (lambda h, p: h.lstrip(_BOM_SPACE).startswith(b"[") and b'"exported_by": "retail-detect"' in h,
                    "a Label Studio file written by export"),
    "csv": (lambda h, p: h.startswith(b"image,x1,y1,x2,y2,label,width,height\n"), "a CSV written by export"),
    "metrics": (lambda h, p: _json_obj(h) and b'"AP":' in h[:64], "a metrics JSON written by eval"),
    "results": (lambda h, p: h.lstrip(_BOM_SPACE).startswith(b"[") and (b'"image_id"' in h[:64] or h.strip() == b"[]"),
                "a COCO results JSON written by eval"),
    "bench": (lambda h, p: _json_obj(h) and b'"meta"' in h[:16] and b'"torchvision"' in h, "a bench JSON"),
    "gallery-bench": (lambda h, p: _json_obj(h) and b'"benchmark": "gallery-bench"' in h[:64], "a gallery-bench JSON"),
    "onnx": (lambda h, p: h.startswith(b"\x08") and b"\x12\x07pytorch" in h[:32], "an ONNX model exported by PyTorch"),
    "openvino": (lambda h, p: h.lstrip(_BOM_SPACE).startswith(b"<?xml") and b"<net " in h[:256], "an OpenVINO model"),
    "openvino-bin": (lambda h, p: _openvino_bin(p), "the weights of an OpenVINO model"),
    "torchscript": (_torchscript, "a TorchScript model"),
    "export-meta": (lambda h, p: _json_obj(h) and (b'"format": "onnx"' in h[:64] or b'"format": "torchscript"' in h[:64]),
                    "the JSON written beside an export"),
}

STAMPED = ("coco", "cvat", "labelstudio", "csv")
"""The single-file exports: replaced only when unchanged since written (:mod:`data_tools.written`)."""

_MAGIC = ((b"\xff\xd8\xff", "a JPEG image"), (b"\x89PNG", "a PNG image"), (b"PK\x03\x04", "a zip archive (e.g. a .pt)"),
          (b"GIF8", "a GIF image"), (b"BM", "a BMP image"), (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"),
          (b"RIFF", "a RIFF file (e.g. WebP)"), (b"\x80", "a pickle of another kind"), (b"<", "an XML/HTML file"),
          (b"{", "a JSON file"), (b"[", "a JSON file"))


class OutputRefused(UserError, ValueError):
    """An output that must not be written: it is an input, or an existing file or folder of another kind."""


def looks_like(head: bytes) -> str:
    """A short guess of what a file is from its first bytes: ``"a JPEG image"``, ``"a JSON file"``, ..."""
    if not head:
        return "an empty file"
    body = head.lstrip(_BOM_SPACE)
    return next((what for magic, what in _MAGIC if body.startswith(magic)), "a file of another kind")


def refuse_overwrite(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None], flag: str | None = None) -> None:
    """Raise :class:`OutputRefused` if ``out`` is one of ``inputs`` (symlinks, ``..`` and hard links resolved;
    ``flag``: the option that named ``out``, for the message)."""
    for p in inputs:
        if p is not None and same_file(out, p):
            raise OutputRefused(f"refusing to write {_named(out, flag)}: it is one of the input files ({p})")


def _named(out: str | os.PathLike, flag: str | None) -> str:
    return f"{flag} {os.fspath(out)}" if flag else os.fspath(out)


def check_output(out: str | os.PathLike, kind: str, inputs: Iterable[str | os.PathLike | None] = (),
                 input_dirs: Iterable[str | os.PathLike] = (), flag: str | None = None) -> Path:
    """Raise :class:`OutputRefused` unless ``out`` may be written as an output of ``kind`` (rules 1 and 2 of
    the module doc); returns ``out`` as a Path.

    Args:
        out: the output file.
        kind: one of :data:`KINDS`.
        inputs: files the command reads (None entries are skipped); ``out`` must be none of them.
        input_dirs: folders the command reads files from; an existing file of another kind in one of them
            is called an input in the message.
        flag: the option that named ``out`` (``--json``), for the message.
    """
    own, what = KINDS[kind]
    refuse_overwrite(out, list(inputs), flag)
    p = Path(out)
    out = _named(out, flag)
    if p.is_dir():
        raise OutputRefused(f"output {out} is a folder; give a file name")
    if kind in STAMPED and sidecar_is_foreign(p):
        raise OutputRefused(f"refusing to write {out}: {sidecar(p).name} beside it is not a checksum that "
                            "retail-detect wrote; remove it or choose another name")
    if not os.path.lexists(p):
        return p
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
    if kind in STAMPED and head and own(head, p):
        why = changed_since_written(p)
        if why is not None:
            raise OutputRefused(f"refusing to overwrite {out}: it looks like {what}, but {why}; "
                                "choose another name, or delete it to export again")
    if head and not own(head, p):  # an empty file holds nothing to lose
        real = os.path.realpath(p)
        for d in input_dirs:
            if within(real, os.path.realpath(d)):
                raise OutputRefused(f"refusing to overwrite {out}: it is {looks_like(head)} under the input "
                                    f"folder {os.fspath(d)}, probably one of the input files")
        raise OutputRefused(f"refusing to overwrite {out}: it is {looks_like(head)}, not {what}; "
                            "choose another name or remove it first")
    return p


def _resolve(p: str | os.PathLike) -> Path:
    return Path(p).expanduser().resolve()


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_output_folder(out_dir: str | os.PathLike, input_files: Iterable[str | os.PathLike],
                        input_dirs: Iterable[str | os.PathLike] = (), flag: str = "--out") -> Path:
    """Refuse an output folder that could overwrite or re-ingest inputs (rule 1); return it resolved.

    Refused: ``out_dir`` equal to an input file's folder; ``out_dir`` equal to or inside a folder given as
    a source (a later recursive run would read our drawings back); any input inside ``out_dir``.

    Raises:
        OutputRefused: naming ``flag``, the clash and what to do instead.
    """
    out = _resolve(out_dir)
    for d in input_dirs:
        d = _resolve(d)
        if _inside(out, d):
            raise OutputRefused(f"{flag} {out_dir} is inside the input folder {d}: choose an output folder outside it")
    for f in input_files:
        f = _resolve(f)
        if out == f.parent:
            raise OutputRefused(f"{flag} {out_dir} is the folder of input {f}: outputs would mix with inputs")
        if _inside(f, out):
            raise OutputRefused(f"input {f} is inside {flag} {out_dir}: outputs could overwrite it")
    return out


def prepare_output_folder(folder: str | os.PathLike) -> None:
    """Probe an output folder (writable, not full; a missing one is created only when written to) and
    remove temporary files an interrupted save left in it."""
    folder = check_writable_dir(folder, create=False)
    removed = remove_stale_temps(folder)
    if removed:
        n = len(removed)
        print(f"note: removed {n} temporary file{'s' if n > 1 else ''} left by an interrupted save in {folder}: "
              + ", ".join(removed[:3]) + (", ..." if n > 3 else ""), file=sys.stderr)
