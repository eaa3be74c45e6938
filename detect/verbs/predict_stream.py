"""``predictions.jsonl``: what a ``predict`` run has done so far, one line per photo, appended as it goes.

The first line is the run header ``{"format": STREAM_FORMAT, "format_version", "settings"}``: what must be the
same for ``--resume`` to continue the run (:func:`run_settings`). Every later line is one photo::

    {"key": "/abs/photo.jpg|size|mtime_ns", "rel": "mirror/name.jpg", "tiles": 0, "entry": {...}}
    {"key": ..., "rel": ..., "error": {file, reason, kind, ...}}

``entry`` is the photo's ``predictions.json`` image (:func:`detect.verbs.predict_output.image_entry`); an image
line may also carry ``draw_error`` (its drawing failed) and ``det`` (the detector's own class counts when a
gallery renamed them). Lines are written by :class:`LineWriter` (flushed every few lines, so a killed run keeps
what it predicted); :func:`read_lines` drops a truncated or unreadable line, :func:`prepare_resume` checks the
header and returns the keys of the photos already done. ``predictions.json`` is made from this file at the end
of the run (:mod:`detect.verbs.predict_finish`).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from data_tools.errors import CannotRun
from data_tools.written import file_sha256

if TYPE_CHECKING:
    from detect.engine.inference.sources import Source

JSONL_NAME = "predictions.jsonl"
STREAM_FORMAT = "retail-detect-predictions-stream"
STREAM_VERSION = 1


def add_stream_flags(p: argparse.ArgumentParser) -> None:
    """``predict``'s flags for large folders: ``--resume``, ``--ray ADDRESS``, ``--ray-workers N``."""
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out: photos already in its predictions.jsonl (same path, size and "
                        "mtime) are skipped; refused when that run used other weights or settings")
    p.add_argument("--ray", default=None, metavar="auto|ADDRESS",
                   help="predict on Ray Data workers: auto (the running cluster, else a local one) or a cluster "
                        "address; needs the ray extra (pip install -e \".[ray]\")")
    p.add_argument("--ray-workers", type=int, default=1, metavar="N",
                   help="with --ray: model replicas (Ray actors), one CPU each (default 1)")


def photo_key(source: Source) -> str | None:
    """``"resolved path|size|mtime_ns"`` of a photo (None when it cannot be stat'ed): the resume identity."""
    real = source.real or Path(source.path).resolve()
    try:
        st = os.stat(real)
    except OSError:
        return None
    return f"{real}|{st.st_size}|{st.st_mtime_ns}"


def run_settings(weights: str | Path, **options: object) -> dict:
    """What a resumed run must share with the run it continues: the weights (by content) and ``options``.

    ``options`` are the settings that change a photo's line (threshold, input size, tiling, rows, drawing,
    proposals, NMS, gallery); paths among them are resolved so that another working folder still matches.
    """
    w = Path(weights)
    settings: dict = {"weights_sha256": file_sha256(w) if w.is_file() else str(w)}
    for k, v in sorted(options.items()):
        settings[k] = str(Path(v).expanduser().resolve()) if isinstance(v, Path) else v
    return settings


def header(settings: dict) -> dict:
    """The first line of ``predictions.jsonl``."""
    return {"format": STREAM_FORMAT, "format_version": STREAM_VERSION, "settings": settings}


class LineWriter:
    """Append photo lines to ``predictions.jsonl``; flushed every ``every`` lines or ``seconds``, fsynced on close.

    ``first``: the header to write first (a new run: the file is started afresh); None appends to the file
    :func:`prepare_resume` checked.
    """

    def __init__(self, path: Path, first: dict | None, every: int = 32, seconds: float = 2.0) -> None:
        self.path = Path(path)
        self.every, self.seconds = max(1, every), seconds
        self._f: IO[str] = open(self.path, "w" if first is not None else "a", encoding="utf-8")  # noqa: SIM115
        self._n, self._t = 0, time.monotonic()
        self.lines = 0
        if first is not None:
            self.write(json.dumps(first, ensure_ascii=False))
            self.flush()

    def write(self, line: str) -> None:
        """Write one JSON line (no newline inside ``line``)."""
        self._f.write(line + "\n")
        self._n += 1
        self.lines += 1
        if self._n >= self.every or time.monotonic() - self._t >= self.seconds:
            self.flush()

    def flush(self) -> None:
        self._f.flush()
        self._n, self._t = 0, time.monotonic()

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()

    def __enter__(self) -> LineWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_header(path: Path) -> dict | None:
    """The header of a ``predictions.jsonl`` (None when missing, empty or not one of ours)."""
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline()
        doc = json.loads(first)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("format") == STREAM_FORMAT else None


def read_lines(path: Path) -> Iterator[dict]:
    """The photo lines of ``path`` in order (header skipped); a truncated or unreadable line is left out."""
    with open(path, encoding="utf-8", errors="replace") as f:
        f.readline()
        for raw in f:
            if not raw.endswith("\n"):
                return  # the last line of a killed run
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict) and ("entry" in line or "error" in line):
                yield line


def drop_partial_tail(path: Path) -> int:
    """Cut a last line without its newline (a run killed mid-write); returns the bytes removed."""
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        pos, tail = size, b""
        while pos > 0 and b"\n" not in tail:
            step = min(4096, pos)
            pos -= step
            f.seek(pos)
            tail = f.read(step) + tail
        keep = pos + tail.rfind(b"\n") + 1 if b"\n" in tail else 0
        if keep < size:
            f.truncate(keep)
        return size - keep


def _differences(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def prepare_resume(folder: Path, settings: dict, log=print) -> set[str] | None:
    """Check that ``folder`` holds a run made with ``settings``; return the keys of its photos done.

    Returns None when the folder holds no run yet (the resumed run starts it). A photo whose line was cut
    short (the run was killed while writing it) is not among the keys: it is predicted again.

    Raises:
        CannotRun: the folder holds files but no ``predictions.jsonl`` of ours, or its run used other settings.
    """
    path = folder / JSONL_NAME
    if not path.exists():
        if folder.is_dir() and any(e.name != ".lock" for e in os.scandir(folder)):
            raise CannotRun(f"--resume: {folder} holds no {JSONL_NAME} to resume (a run of an older version, or "
                            "not a predict run): run without --resume for a new folder")
        return None
    if path.stat().st_size == 0:
        return None  # killed before its header was written: nothing done
    head = read_header(path)
    if head is None:
        raise CannotRun(f"--resume: {path} is not a predictions stream of retail-detect: run without --resume")
    diff = _differences(head.get("settings", {}), settings)
    if diff:
        raise CannotRun(f"--resume: {folder} was predicted with other settings ({'; '.join(diff)}): run without "
                        "--resume for a new folder, or resume with the same weights and options")
    cut = drop_partial_tail(path)
    if cut:
        log(f"note: dropped the half-written last line of {path} ({cut} bytes); that photo is predicted again")
    return {line["key"] for line in read_lines(path) if line.get("key")}
