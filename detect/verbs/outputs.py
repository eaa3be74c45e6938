"""Output files of ``eval`` / ``export``: refused before any work when they would replace a user's file.

An output is refused when it is one of the command's inputs (:func:`data_tools.atomic.same_file`: symlinks,
``..`` and hard links resolved), or
when a file of another kind already sits at that path (``eval --json data.pkl``, ``export --out w.pt``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from data_tools.atomic import same_file


class OutputClash(ValueError):
    """An output path would overwrite an input or a file of another kind."""


def check_output_file(out: str | Path, inputs: Iterable[str | Path], endings: tuple[str, ...], flag: str) -> Path:
    """Return ``out`` when it is safe to (over)write with a ``flag`` output whose names end in ``endings``.

    Args:
        out: the output path as the user gave it.
        inputs: the command's input files (weights, dataset, images).
        endings: name endings of files this output may replace (e.g. ``(".json",)``); an existing file
            with another ending is a user's file of another kind and is refused.
        flag: the option that named it, for the message (``--json``).

    Raises:
        OutputClash: naming ``flag``, the path and what it would have replaced.
    """
    p = Path(out)
    for inp in inputs:
        if inp is not None and same_file(p, inp):  # resolved paths and hard links
            raise OutputClash(f"{flag} {out} is an input of this command ({inp}): choose another output path")
    if p.is_dir():
        raise OutputClash(f"{flag} {out} is a folder: give a file name")
    if p.exists() and not p.name.lower().endswith(tuple(e.lower() for e in endings)):
        raise OutputClash(f"{flag} {out} already exists and is not a {' / '.join(endings)} file: "
                          "refusing to replace it; choose another output path")
    return p
