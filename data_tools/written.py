"""What this project wrote: a checksum beside each single-file export, so a rerun replaces only an unchanged one.

An export file (``export -o gt.csv``, ``export-coco -o gt.json``, a CVAT XML or Label Studio JSON) is the
kind of file people open and correct by hand. A later export to the same name may replace it only when it is
still exactly what we wrote: :func:`record_written` keeps its SHA-256 in a hidden file beside it,
``.NAME.sha256`` (the ``sha256sum`` format, ``HEX  NAME``; ``sha256sum -c .gt.csv.sha256`` checks it), and
:func:`changed_since_written` compares. A file with no checksum beside it (edited, copied in, or written by an
older version) counts as changed: refused, never lost.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from data_tools.atomic import atomic_write_text
from data_tools.userfiles import UnsafeFile, hash_into, open_regular

MAX_SIDECAR_BYTES = 64 * 1024
MAX_HASHED_BYTES = 1 << 40  # the export itself: no practical cap, it is streamed
_LINE = re.compile(r"^([0-9a-f]{64})  (.+)\n?$")


def sidecar(path: str | os.PathLike) -> Path:
    """The checksum file of ``path``: ``.NAME.sha256`` beside it."""
    p = Path(path)
    return p.with_name(f".{p.name}.sha256")


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a regular file, read in 1 MiB pieces (raises :class:`UnsafeFile` for anything else)."""
    h = hashlib.sha256()
    hash_into(h, path, MAX_HASHED_BYTES)
    return h.hexdigest()


def _recorded(path: Path) -> str | None:
    """The checksum recorded for ``path``, or None when there is no sidecar of ours for it."""
    try:
        with open_regular(sidecar(path), MAX_SIDECAR_BYTES) as f:
            text = f.read().decode("ascii")
    except (UnsafeFile, OSError, UnicodeDecodeError):
        return None
    m = _LINE.match(text)
    return m.group(1) if m and m.group(2) == path.name else None


def sidecar_is_foreign(path: str | os.PathLike) -> bool:
    """True when ``.NAME.sha256`` exists but is not a checksum line for ``NAME`` (someone's own file)."""
    s = sidecar(path)
    return os.path.lexists(s) and _recorded(Path(path)) is None


def changed_since_written(path: str | os.PathLike) -> str | None:
    """Why ``path`` may not be replaced (``"it was changed since ..."``), or None when it is what we wrote."""
    p = Path(path)
    want = _recorded(p)
    if want is None:
        return f"there is no {sidecar(p).name} beside it to show it is unchanged since it was written"
    try:
        got = file_sha256(p)
    except (UnsafeFile, OSError) as e:
        return f"it cannot be read to check it ({e})"
    return None if got == want else "it was changed since it was written (corrected by hand?)"


def record_written(path: str | os.PathLike) -> Path:
    """Write ``.NAME.sha256`` beside the export ``path`` just written; returns the sidecar's path."""
    p = Path(path)
    return atomic_write_text(sidecar(p), f"{file_sha256(p)}  {p.name}\n")
