"""Reading the ground truth of synthetic planogram shelves (``truth.json`` of ``retail-data synth --planogram``).

The whole file is checked before the audit runs, so a bad truth file costs one line, not a finished audit
and then a traceback: a regular file of at most :data:`MAX_TRUTH_BYTES`, UTF-8 JSON, the right ``format``,
and in every image entry the fields the scoring reads (``file``, ``compliance``, ``changes[i].status`` and
``changes[i].box``), each problem named by its JSON path.
"""

from __future__ import annotations

import math
from pathlib import Path

from data_tools.planogram import PlanogramError
from data_tools.synth_planogram import TRUTH_FORMAT
from data_tools.userfiles import read_json

MAX_TRUTH_BYTES = 64 * 1024 * 1024


class _TruthError(PlanogramError):
    def __init__(self, line: str) -> None:
        super().__init__([line])


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _entry_problem(entry: object) -> tuple[str, str] | None:
    """``(field, reason)`` of the first problem of one ``images[i]`` entry, or None."""
    if not isinstance(entry, dict):
        return "", "must be an object"
    if not isinstance(entry.get("file"), str) or not entry["file"]:
        return "/file", "must be a file name"
    if not _number(entry.get("compliance")):
        return "/compliance", "must be a number"
    changes = entry.get("changes")
    if not isinstance(changes, list):
        return "/changes", "must be a list"
    for j, change in enumerate(changes):
        if not isinstance(change, dict) or not isinstance(change.get("status"), str):
            return f"/changes[{j}]/status", "must be a text"
        box = change.get("box")
        if not isinstance(box, list) or len(box) != 4 or not all(_number(v) for v in box):
            return f"/changes[{j}]/box", "must be [x1, y1, x2, y2] numbers"
    return None


def load_truth(path: str | Path) -> dict:
    """Read and check a ``truth.json``; raises :class:`PlanogramError` with one line naming the file and field."""
    path = str(path)
    if not Path(path).exists():
        raise _TruthError(f"{path}: truth file not found")
    doc = read_json(path, MAX_TRUTH_BYTES, _TruthError, "a truth file")
    if not isinstance(doc, dict) or doc.get("format") != TRUTH_FORMAT or not isinstance(doc.get("images"), list):
        raise _TruthError(f"{path}: not a truth.json of `retail-data synth --planogram` (format {TRUTH_FORMAT})")
    for i, entry in enumerate(doc["images"]):
        problem = _entry_problem(entry)
        if problem is not None:
            raise _TruthError(f"{path} [images[{i}]{problem[0]}]: {problem[1]}")
    return doc
