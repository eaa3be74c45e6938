"""Readable box drawings on dense shelves: labels placed so they never overprint, and a class-colour legend.

:func:`layout_labels` places each caption (highest score first) at the first free spot of: above the box,
inside its top edge, below it, inside its bottom edge (left-aligned, then right-aligned), kept inside the
image. :func:`draw_boxes` uses it; a caption that finds no free spot is tried in its short form (e.g. the
score alone) and otherwise left out, and then :func:`draw_legend` adds a class-colour legend in the
emptiest corner, so every box can still be read by its colour.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from data_tools.atomic import atomic_write_bytes

FONT = cv2.FONT_HERSHEY_SIMPLEX
Rect = tuple[int, int, int, int]  # x1, y1, x2, y2 (exclusive) in pixels


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _candidates(box: Sequence[int], w: int, h: int, width: int, height: int) -> list[Rect]:
    """Caption rectangles of size ``w x h`` around ``box`` in order of preference, shifted into the image."""
    x1, y1, x2, y2 = box
    spots = []
    for x in (x1, x2 - w):
        for y in (y1 - h, y1, y2, y2 - h):  # above, inside top, below, inside bottom
            cx = int(min(max(x, 0), max(width - w, 0)))
            cy = int(min(max(y, 0), max(height - h, 0)))
            spots.append((cx, cy, cx + w, cy + h))
    return list(dict.fromkeys(spots))


def layout_labels(boxes: np.ndarray, sizes: Sequence[tuple[int, int]], width: int, height: int,
                  placed: list[Rect] | None = None) -> list[Rect | None]:
    """Non-overlapping caption rectangles, in the order given (put the most important box first).

    Args:
        boxes: int ``[N, 4]`` xyxy pixels.
        sizes: ``(w, h)`` of each caption in pixels.
        width, height: the image size.
        placed: rectangles already taken (updated in place).

    Returns:
        Per box its caption rectangle, or None where every candidate spot would overlap a placed caption.
    """
    taken = placed if placed is not None else []
    out: list[Rect | None] = []
    for box, (w, h) in zip(np.asarray(boxes).reshape(-1, 4).tolist(), sizes):
        spot = next((r for r in _candidates(box, w, h, width, height) if not any(_overlaps(r, t) for t in taken)),
                    None)
        if spot is not None:
            taken.append(spot)
        out.append(spot)
    return out


def text_color(bgr: Sequence[int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``bgr``."""
    b, g, r = bgr
    return (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 140 else (255, 255, 255)


def _dashed_rect(img: np.ndarray, p1: tuple[int, int], p2: tuple[int, int], color, thick: int, dash: int) -> None:
    x1, y1 = p1
    x2, y2 = p2
    for a, b, fixed, horizontal in ((x1, x2, y1, True), (x1, x2, y2, True), (y1, y2, x1, False), (y1, y2, x2, False)):
        for s in range(a, b, 2 * dash):
            e = min(s + dash, b)
            q1, q2 = ((s, fixed), (e, fixed)) if horizontal else ((fixed, s), (fixed, e))
            cv2.line(img, q1, q2, color, thick, cv2.LINE_AA)


def style(height: int, width: int) -> tuple[int, float]:
    """``(line thickness, font scale)`` for an image of this size."""
    side = max(height, width)
    return max(1, round(side / 640)), max(0.4, side / 1600)


def _put(img: np.ndarray, text: str, rect: Rect, color, font_scale: float, base: int) -> None:
    cv2.rectangle(img, rect[:2], (rect[2] - 1, rect[3] - 1), color, -1)
    cv2.putText(img, text, (rect[0] + 1, rect[3] - base - 1), FONT, font_scale, text_color(color), 1, cv2.LINE_AA)


def draw_boxes(img: np.ndarray, boxes: np.ndarray, colors: Sequence[tuple[int, int, int]],
               texts: Sequence[str], short: Sequence[str] | None = None, dashed: Sequence[bool] | None = None,
               thick: int | None = None, font_scale: float | None = None,
               placed: list[Rect] | None = None) -> list[bool]:
    """Draw boxes and non-overlapping captions onto ``img`` (``H x W x 3`` uint8 BGR, modified in place).

    Args:
        boxes: float ``[N, 4]`` xyxy pixels, most important first (captions are placed in this order).
        colors: BGR per box; texts: caption per box ("" for none); short: a shorter caption tried when the full
            one finds no room; dashed: per box, a dashed outline (e.g. ground truth) instead of a solid one.
        placed: caption rectangles already on the image (updated in place).

    Returns:
        Per box, whether its full caption was drawn (False: shortened or left out).
    """
    h, w = img.shape[:2]
    t0, f0 = style(h, w)
    thick, font_scale = thick or t0, font_scale or f0
    b = np.round(np.asarray(boxes, np.float64).reshape(-1, 4)).astype(int)
    n = len(b)
    dashed = dashed if dashed is not None else [False] * n
    for (x1, y1, x2, y2), c, d in zip(b.tolist(), colors, dashed):
        if d:
            _dashed_rect(img, (x1, y1), (x2, y2), c, thick, max(3, 3 * thick))
        else:
            cv2.rectangle(img, (x1, y1), (x2, y2), c, thick)
    taken = placed if placed is not None else []
    full: list[bool] = []
    for i in range(n):
        done = False
        for j, text in enumerate([texts[i], short[i] if short is not None else ""]):
            if not text:
                continue
            (tw, th), base = cv2.getTextSize(text, FONT, font_scale, 1)
            rect = layout_labels(b[i : i + 1], [(tw + 2, th + base + 2)], w, h, taken)[0]
            if rect is not None:
                _put(img, text, rect, colors[i], font_scale, base)
                done = j == 0
                break
        full.append(done or not texts[i])
    return full


def draw_legend(img: np.ndarray, entries: Sequence[tuple[str, tuple[int, int, int]]],
                boxes: np.ndarray | None = None, font_scale: float | None = None) -> None:
    """A class-colour legend (swatch + name per entry) in the corner that covers the fewest box pixels."""
    if not entries:
        return
    h, w = img.shape[:2]
    font_scale = font_scale or style(h, w)[1]
    (_, th), base = cv2.getTextSize("Ag", FONT, font_scale, 1)
    line = th + base + 3
    fit = max(1, (h - 4) // line)
    rows = list(entries[:fit]) if len(entries) <= fit else [*entries[: fit - 1], (f"+{len(entries) - fit + 1} more",
                                                                                    (128, 128, 128))]
    tw = max(cv2.getTextSize(name, FONT, font_scale, 1)[0][0] for name, _ in rows)
    pw, ph = min(w, tw + line + 6), min(h, line * len(rows) + 4)
    cover = np.zeros((h, w), np.int32)
    for x1, y1, x2, y2 in np.round(np.asarray(boxes if boxes is not None else [], np.float64).reshape(-1, 4)).astype(int):
        cover[max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)] += 1
    corners = [(w - pw, 0), (0, 0), (w - pw, h - ph), (0, h - ph)]
    x0, y0 = min(corners, key=lambda c: int(cover[c[1] : c[1] + ph, c[0] : c[0] + pw].sum()))
    panel = img[y0 : y0 + ph, x0 : x0 + pw]
    panel[:] = (panel.astype(np.float32) * 0.25 + 255 * 0.75).astype(np.uint8)
    for k, (name, color) in enumerate(rows):
        y = y0 + 2 + k * line
        cv2.rectangle(img, (x0 + 3, y + 2), (x0 + 2 + line - 4, y + line - 3), color, -1)
        cv2.putText(img, name, (x0 + line + 2, y + th + 1), FONT, font_scale, (0, 0, 0), 1, cv2.LINE_AA)


def write_jpeg(path: str | Path, image_bgr: np.ndarray, quality: int = 85) -> Path:
    """Write ``image_bgr`` as a JPEG of ``quality`` atomically (report drawings: about 40 % of the default's size)."""
    ok, buf = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"cannot encode a JPEG for {path}")
    return atomic_write_bytes(path, buf.tobytes())
