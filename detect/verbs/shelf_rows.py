"""Shelf rows: group one image's detections into horizontal shelf rows and count facings.

A shelf photo shows products standing in rows. Sorting the detections by vertical centre and
cutting wherever two neighbouring centres are further apart than ``gap_factor`` x the median box
height gives the rows (1-D single-linkage clustering). It needs no row count, works for one row
or many, and is one sort + one cumsum: no per-box Python loops.

Rows are numbered ``0..R-1`` from the top of the image down.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor


def _as_numpy(x: Tensor | np.ndarray, dtype) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def assign_rows(boxes: Tensor | np.ndarray, gap_factor: float = 0.5) -> np.ndarray:
    """Row index of every box.

    Args:
        boxes: ``[N, 4]`` xyxy pixels (any float type, tensor or array).
        gap_factor: a new row starts where the gap between two consecutive sorted vertical
            centres exceeds ``gap_factor * median box height``.

    Returns:
        int64 ``[N]``: row per box, ``0`` = top row; empty for ``N = 0``.
    """
    b = _as_numpy(boxes, np.float64).reshape(-1, 4)
    n = b.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    cy = (b[:, 1] + b[:, 3]) * 0.5
    heights = np.clip(b[:, 3] - b[:, 1], 0.0, None)
    threshold = gap_factor * max(float(np.median(heights)), 1e-6)
    order = np.argsort(cy, kind="stable")
    starts = np.diff(cy[order]) > threshold  # [N-1]: True where the next box opens a new row
    sorted_rows = np.concatenate([[0], np.cumsum(starts)])
    rows = np.empty(n, dtype=np.int64)
    rows[order] = sorted_rows
    return rows


def class_counts(labels: Tensor | np.ndarray, class_names: list[str]) -> dict[str, int]:
    """``{class_name: count}`` for labels ``1..K`` (classes with no detection are left out)."""
    lab = _as_numpy(labels, np.int64).reshape(-1)
    counts = np.bincount(lab, minlength=len(class_names) + 1)
    return {_name(k, class_names): int(c) for k, c in enumerate(counts.tolist()) if c > 0 and k > 0}


def row_counts(rows: np.ndarray, labels: Tensor | np.ndarray, class_names: list[str]) -> list[dict]:
    """Per-row facing counts, top row first.

    Args:
        rows: int64 ``[N]`` from :func:`assign_rows`.
        labels: int64 ``[N]`` in ``1..K``.
        class_names: ``class_names[k - 1]`` names label ``k``.

    Returns:
        ``[{"row": r, "count": n, "classes": {class_name: n}}]`` for ``r = 0..R-1``.
    """
    rows = _as_numpy(rows, np.int64).reshape(-1)
    lab = _as_numpy(labels, np.int64).reshape(-1)
    if rows.size == 0:
        return []
    num_rows = int(rows.max()) + 1
    num_labels = max(len(class_names), int(lab.max())) + 1
    table = np.zeros((num_rows, num_labels), dtype=np.int64)  # [R, K+1] facings per row and label
    np.add.at(table, (rows, lab), 1)
    out = []
    for r, counts in enumerate(table.tolist()):
        classes = {_name(k, class_names): c for k, c in enumerate(counts) if c > 0}
        out.append({"row": r, "count": int(sum(counts)), "classes": classes})
    return out


def group_rows(
    boxes: Tensor | np.ndarray, labels: Tensor | np.ndarray, class_names: list[str], gap_factor: float = 0.5
) -> tuple[np.ndarray, list[dict]]:
    """:func:`assign_rows` + :func:`row_counts` in one call: ``(rows [N], per-row counts)``."""
    rows = assign_rows(boxes, gap_factor)
    return rows, row_counts(rows, labels, class_names)


def _name(label: int, class_names: list[str]) -> str:
    return class_names[label - 1] if 1 <= label <= len(class_names) else f"class_{label}"


__all__ = ["assign_rows", "class_counts", "row_counts", "group_rows"]
