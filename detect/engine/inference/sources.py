"""What ``predict`` and ``audit`` read: image files named directly, found in folders (recursive), or matched by globs.

:func:`expand_sources` turns the user's arguments into :class:`Source` files, each with a unique mirror name
for the outputs, and :class:`~data_tools.records.Problem` entries for arguments that match nothing (the run goes
on). :meth:`Sources.attach_proposals` looks up each file's external proposals once (Fast R-CNN without its
RPN). :func:`load_source` reads one file into a :class:`Photo` (the image and the extra model inputs that ride
with it) and never raises: an unreadable file, or one without usable proposals, becomes a ``Problem``.
"""

from __future__ import annotations

import errno
import glob
import itertools
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_tools.images import read_image
from data_tools.records import Problem
from detect.data.proposals import FileProposals, ProposalsError, ProposalsForFiles

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
_MAGIC = set("*?[")


@dataclass
class Source:
    path: Path  # the image file
    rel: str  # mirror name for outputs (POSIX), unique within one run
    proposals: FileProposals | None = None  # its entry in an external proposals file, when one is used
    problem: Problem | None = None  # known before reading: e.g. the proposals file does not name it
    real: Path | None = None  # the resolved file (symlinks followed), set by expand_sources


@dataclass
class Sources:
    files: list[Source] = field(default_factory=list)
    dirs: list[Path] = field(default_factory=list)  # folders given as sources
    problems: list[Problem] = field(default_factory=list)  # sources that matched nothing

    def attach_proposals(self, table: ProposalsForFiles) -> None:
        """Give every file its entry of an external proposals file; a file it does not name gets a
        ``bad_proposals`` problem (reported in its turn, the run goes on)."""
        for s in self.files:
            try:
                s.proposals = table.entry_for(s.path, s.rel)
            except ProposalsError as exc:
                s.problem = Problem(str(s.path), str(exc), kind="bad_proposals")


@dataclass
class Photo:
    """One source read for prediction: the image and the extra model inputs that ride with it, or why not."""

    source: Source
    image: np.ndarray | None = None  # H x W x 3 uint8 RGB
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # "proposals": float32 [P, 4] original px
    problem: Problem | None = None  # set when the photo cannot be predicted (image is then None)


def _glob_base(pattern: str) -> Path:
    """The fixed folder prefix of a glob: ``shelves/**/*.jpg`` -> ``shelves``."""
    base = list(itertools.takewhile(lambda part: not (_MAGIC & set(part)), Path(pattern).expanduser().parts))
    return Path(*base) if base else Path(".")


def _walk_images(folder: Path, real_folder: Path) -> list[tuple[Path, Path | None]]:
    """``(path, resolved path or None)`` of every image below ``folder`` in sorted, top-down order.

    Hidden entries are skipped and symlinked folders are not entered (as ``os.walk(followlinks=False)``). A
    plain file's resolved path is ``real_folder`` joined with its relative path, so a folder of 100,000
    photos costs one ``scandir`` per folder instead of a ``realpath`` per file; a symlinked file gets None
    (its caller resolves it).
    """
    out: list[tuple[Path, Path | None]] = []

    def walk(here: Path, real: Path) -> None:
        try:
            with os.scandir(here) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:  # unreadable folder: skipped, as os.walk does
            return
        subdirs = []
        for e in entries:
            if e.name.startswith("."):
                continue
            try:
                is_dir = e.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                if not e.is_symlink():
                    subdirs.append(e.name)
            elif Path(e.name).suffix.lower() in IMAGE_EXTENSIONS:
                out.append((here / e.name, None if e.is_symlink() else real / e.name))
        for name in subdirs:
            walk(here / name, real / name)

    walk(folder, real_folder)
    return out


def expand_sources(sources: Iterable[str | Path]) -> Sources:
    """Image files from files, folders (recursive, image extensions, hidden entries skipped) and globs.

    A file named explicitly is taken whatever its extension (reading decides); folder and glob
    matches keep image extensions only. Each file appears once; mirror names (``Source.rel``) are
    the file name for files, ``folder/relative/path`` for folders, the part after the glob's fixed
    prefix for globs, made unique with ``_2``, ``_3`` suffixes.
    """
    out = Sources()
    seen: set[Path] = set()
    used: set[str] = set()

    def add(path: Path, rel: str, key: Path | None = None) -> None:
        try:
            key = key or path.resolve(strict=True)
        except (OSError, RuntimeError) as exc:  # a symlink loop or a dangling link: report it, go on
            reason = "symlink loop" if isinstance(exc, RuntimeError) or exc.errno == errno.ELOOP else exc.strerror
            out.problems.append(Problem(str(path), f"cannot read image: {reason}", kind="bad_image"))
            return
        if key in seen:
            return
        seen.add(key)
        if ".." in Path(rel).parts or Path(rel).is_absolute():  # keep mirrors under --out
            rel = path.name
        stem, suffix, k = Path(rel).with_suffix("").as_posix(), Path(rel).suffix, 2
        while rel.lower() in used:
            rel, k = f"{stem}_{k}{suffix}", k + 1
        used.add(rel.lower())
        out.files.append(Source(path, rel, real=key))

    for src in map(str, sources):
        p = Path(src).expanduser()
        if p.is_dir():
            out.dirs.append(p)
            name = p.resolve().name or "root"
            for f, real in _walk_images(p, p.resolve()):
                add(f, (Path(name) / f.relative_to(p)).as_posix(), real)
        elif p.is_file():
            add(p, p.name)
        elif _MAGIC & set(src):
            base = _glob_base(src)
            hits = sorted(Path(h) for h in glob.glob(os.path.expanduser(src), recursive=True))
            hits = [h for h in hits if h.is_file() and h.suffix.lower() in IMAGE_EXTENSIONS]
            for h in hits:
                rel = h.relative_to(base) if h.is_relative_to(base) else Path(h.name)
                add(h, rel.as_posix())
            if not hits:
                out.problems.append(Problem(src, "glob matched no image files", kind="no_match"))
        else:
            out.problems.append(Problem(src, "no such file or folder", kind="missing_source"))
    return out


def load_source(source: Source) -> Photo:
    """Read one source: a :class:`Photo` with its image and extras, or with the problem (never raises).

    An unreadable image is a ``bad_image`` problem, whatever else is wrong; then a problem the source already
    carries; then proposals that do not fit the image (``bad_proposals``).
    """
    try:
        image = read_image(source.path)
    except Exception as exc:  # noqa: BLE001 - ImageError, OSError, decoder errors: all are "skip this file"
        reason = f"{type(exc).__name__}: {exc}"
        return Photo(source, problem=Problem(str(source.path), reason, kind="bad_image"))
    if source.problem is not None:
        return Photo(source, problem=source.problem)
    extras = {}
    if source.proposals is not None:
        try:
            extras["proposals"] = source.proposals.boxes(image.shape[1], image.shape[0])
        except ProposalsError as exc:
            return Photo(source, problem=Problem(str(source.path), str(exc), kind="bad_proposals"))
    return Photo(source, image, extras)
