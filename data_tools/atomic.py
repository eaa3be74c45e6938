"""Atomic output files: a reader never sees a half-written file, and outputs never clobber inputs.

Every writer in :mod:`data_tools` (dataset pickle, COCO JSON, VOC XML, reports, plots) goes through
:func:`atomic_open`: it writes a temporary file in the destination folder, flushes and fsyncs it,
then ``os.replace``-s it over the destination (atomic on POSIX and Windows). If anything fails the
temporary file is removed and the destination is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary file next to ``path`` for writing; on success it atomically becomes ``path``.

    Args:
        path: destination file; its folder is created when missing.
        mode: ``"wb"`` or ``"w"`` (text, then ``encoding`` defaults to UTF-8).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open supports modes 'wb' and 'w', not {mode!r}")
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        kwargs = {} if mode == "wb" else {"encoding": encoding or "utf-8", "newline": ""}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def refuse_overwrite(out: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> None:
    """Raise ``ValueError`` if ``out`` is one of ``inputs`` (same file, symlinks and ``..`` resolved)."""
    out_p = Path(out).resolve()
    for p in inputs:
        if Path(p).resolve() == out_p:
            raise ValueError(f"refusing to write {out}: it is one of the input files")


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where folders cannot be opened."""
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
