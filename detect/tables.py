"""Plain-text tables and CSV files of result rows, shared by ``bench``, ``tune`` and ``compare``."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from data_tools.atomic import atomic_write_text


def aligned(rows: list[list[str]], left: int = 0) -> str:
    """Rows of cells as text columns: the first ``left`` columns left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)


def write_dicts_csv(rows: list[dict], path: Path) -> None:
    """One CSV row per dict, written atomically; columns: the union of the keys in first-seen order (a row
    without a key leaves its cell empty); floats as written by ``str``."""
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(keys))
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())
