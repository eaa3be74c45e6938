"""Find the image an annotation file describes, without ever leaving the dataset root.

Search order for ``root/annotations/beans/X.xml`` with ``<filename>X.jpg</filename>``:

1. ``<filename>`` relative to the XML's folder (``root/annotations/beans/X.jpg``);
2. the same name in a sibling ``images/``, ``JPEGImages/`` or ``Images/`` tree with the XML's relative
   folder (``root/images/beans/X.jpg``; VOC's ``Annotations/`` + ``JPEGImages/``);
3. by stem with any image extension in those folders (``X.png``, ``X.JPG``, ...), first the stem of
   ``<filename>``, then the XML's own stem.

``<path>`` (labelImg's absolute path on the annotator's machine) is never used. An absolute
``<filename>``, or one whose ``..`` climbs out of the root, is reported and ignored; the image is then
looked up by the XML's stem inside the root only. Names are tried in NFC and NFD Unicode forms (macOS
stores NFD) and with Windows ``\\`` separators converted.

Only regular files count (:func:`data_tools.userfiles.check_file`): a FIFO, a device, a symlink loop or
a symlink that resolves outside the root is not used; when nothing usable is found, the refused file
and the reason are reported.
"""

from __future__ import annotations

import os
import posixpath
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

from data_tools.userfiles import UnsafeFile, first_usable, within

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
IMAGE_DIR_NAMES = ("images", "JPEGImages", "Images")
_WIN_ABS = re.compile(r"^[A-Za-z]:[\\/]|^[\\/]{2}")


@dataclass(frozen=True)
class Issue:
    """A path problem to report: kind, reason and what was done ("fixed" or "skipped")."""

    kind: str
    reason: str
    action: str


def is_absolute_name(name: str) -> bool:
    """Absolute on any OS: ``/x``, ``C:\\x``, ``\\\\server\\x``."""
    return name.startswith(("/", "\\")) or bool(_WIN_ABS.match(name))


def absolute_inside(name: str, root: str) -> str | None:
    """The path an absolute POSIX ``name`` names inside ``root`` (spelled with ``root`` itself, or with the root's
    resolved path), or None: an absolute name that lies in the dataset root means that exact file, not another
    of the same base name."""
    if not os.path.isabs(name):
        return None
    path = os.path.normpath(name)
    for r in dict.fromkeys([os.path.abspath(root), os.path.realpath(root)]):
        if within(path, r):
            return os.path.normpath(os.path.join(os.path.abspath(root), os.path.relpath(path, r)))
    return None


def first_level_dirs(root: str) -> list[str]:
    """The folders directly in ``root``, sorted (hidden ones, unreadable entries such as symlink loops, and
    everything when ``root`` cannot be listed, left out): where readers look for an image by its base name."""
    out = []
    try:
        for e in os.scandir(root):
            try:
                if e.is_dir() and not e.name.startswith("."):
                    out.append(e.path)
            except OSError:
                continue
    except OSError:
        pass
    return sorted(out)


def find_image(
    xml_path: str, filename: str | None, root: str, dir_cache: dict | None = None
) -> tuple[str | None, Issue | None]:
    """Locate the image for ``xml_path``. Returns ``(absolute path or None, issue to report or None)``.

    ``dir_cache``: a dict the caller keeps for one pass over a dataset, so the image folders of each
    annotation folder are looked up once.
    """
    xml_dir = os.path.dirname(os.path.abspath(xml_path))
    root = os.path.abspath(root)
    xml_stem = os.path.splitext(os.path.basename(xml_path))[0]
    fn = (filename or "").strip().replace("\\", "/")
    unsafe = None
    refused: UnsafeFile | None = None
    if fn and is_absolute_name(fn):
        unsafe = f"absolute <filename> {filename!r}"
    elif fn:
        direct = os.path.normpath(os.path.join(xml_dir, fn))
        if not within(direct, root):
            unsafe = f"<filename> {filename!r} points outside the dataset root"
        else:
            found, refused = first_usable([direct], root, dir_cache)
            if found:
                return found, None

    if dir_cache is None:
        dirs = _candidate_dirs(xml_dir, root)
    else:
        dirs = dir_cache.get((xml_dir, root))
        if dirs is None:
            dirs = dir_cache[(xml_dir, root)] = _candidate_dirs(xml_dir, root)
    names: list[str] = []
    stems: list[str] = []
    if fn and not unsafe:
        base = posixpath.basename(fn)
        names.append(base)
        stems.append(os.path.splitext(base)[0])
    stems.append(xml_stem)
    found, refused_here = first_usable(_candidates(dirs, names, stems), root, dir_cache)
    refused = refused or refused_here

    if unsafe:
        if found:
            rel = _rel(found, root)
            return found, Issue("unsafe_path", f"{unsafe}: ignored it and used {rel} (by the XML's name)", "fixed")
        return None, Issue(
            "unsafe_path", f"{unsafe}: ignored it, and no image named {xml_stem}.* was found inside the root", "skipped"
        )
    if found is None and refused is not None:
        return None, Issue(refused.kind, f"image {_rel(refused.path, root)} {refused.reason}", "skipped")
    if found is None:
        wanted = posixpath.basename(fn) if fn else f"{xml_stem}.*"
        return None, Issue(
            "missing_image",
            f"image {wanted!r} not found next to the annotation or in an images/JPEGImages folder",
            "skipped",
        )
    if not fn:
        return found, Issue("missing_filename", f"no <filename>; used {_rel(found, root)} (by the XML's name)", "fixed")
    if _nfc(os.path.basename(found)) != _nfc(posixpath.basename(fn)):
        return found, Issue("filename_mismatch", f"<filename> {filename!r} not found; used {_rel(found, root)}", "fixed")
    return found, None


def _candidate_dirs(xml_dir: str, root: str) -> list[str]:
    """The XML's folder, then sibling image trees of each ancestor folder inside the root."""
    dirs = [xml_dir]
    a = xml_dir
    while a != root and within(a, root):
        rel = os.path.relpath(xml_dir, a)
        parent = os.path.dirname(a)
        for name in IMAGE_DIR_NAMES:
            d = os.path.normpath(os.path.join(parent, name, rel))
            if d not in dirs and within(d, root) and os.path.isdir(d):
                dirs.append(d)
        if parent == a:
            break
        a = parent
    return dirs


def _candidates(dirs: list[str], names: list[str], stems: list[str]) -> Iterator[str]:
    """Paths to try, in search order: each name in each folder, then each stem with any image extension."""
    for name in names:
        for d in dirs:
            for variant in _forms(name):
                yield os.path.join(d, variant)
    exts = IMAGE_EXTS + tuple(e.upper() for e in IMAGE_EXTS)
    for stem in dict.fromkeys(stems):
        for d in dirs:
            for variant in _forms(stem):
                for ext in exts:
                    yield os.path.join(d, variant + ext)


def _forms(name: str) -> list[str]:
    return list(dict.fromkeys((name, unicodedata.normalize("NFC", name), unicodedata.normalize("NFD", name))))


def _nfc(s: str) -> str:
    return unicodedata.normalize("NFC", s)


def _rel(path: str, root: str) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/")
