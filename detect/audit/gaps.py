"""Empty shelf space: horizontal gaps in one shelf row, the out-of-stock candidates.

In a row that should be full, a gap is horizontal space between two neighbouring products, or between
a shelf end and the first/last product, wider than ``min_gap`` x the row's median product width. The
free space is measured against the running right edge of the boxes seen so far, so a wide box
overlapping several narrow ones never opens a false gap. The shelf ends default to the image borders.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_MIN_GAP = 0.4


@dataclass(frozen=True)
class Gap:
    """One empty stretch of a row (pixels)."""

    x1: float
    x2: float
    y1: float  # the row's top (tallest product)
    y2: float  # the row's bottom (the shelf)
    after: int  # number of the row's products (left to right) to its left: 0 = at the left shelf end
    facings: int  # how many median-width products would fill it (>= 1)
    ratio: float  # width / median product width

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def box(self) -> list[float]:
        return [self.x1, self.y1, self.x2, self.y2]


def find_gaps(
    boxes: np.ndarray, shelf: tuple[float, float], min_gap: float = DEFAULT_MIN_GAP
) -> list[Gap]:
    """Gaps of one row.

    Args:
        boxes: float ``[N, 4]`` xyxy of the row's products, sorted left to right (by centre), ``N >= 1``.
        shelf: ``(left, right)`` x of the shelf ends in pixels (usually ``(0, image width)``).
        min_gap: a gap is wider than ``min_gap`` x the median product width of the row.

    Returns:
        The gaps, left to right.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(b) == 0:
        return []
    widths = np.clip(b[:, 2] - b[:, 0], 0.0, None)
    median = max(float(np.median(widths)), 1e-6)
    y1, y2 = float(b[:, 1].min()), float(b[:, 3].max())
    right = np.maximum.accumulate(b[:, 2])  # [N]: right edge of everything up to product i
    lefts = np.concatenate([[shelf[0]], right])  # [N + 1]: free space starts here ...
    rights = np.concatenate([b[:, 0], [shelf[1]]])  # ... and ends here
    free = rights - lefts
    out = []
    for i in np.nonzero(free > min_gap * median)[0].tolist():
        ratio = float(free[i]) / median
        out.append(Gap(float(lefts[i]), float(rights[i]), y1, y2, i, max(1, round(ratio)), round(ratio, 3)))
    return out


__all__ = ["DEFAULT_MIN_GAP", "Gap", "find_gaps"]
