"""Draw an audited photo: compliant / misplaced / extra products and the out-of-stock gaps.

Colours (BGR): present green, misplaced orange (``found (plan: planned)``), extra magenta, gaps red
(filled half-transparent, captioned with the SKUs the plan expects there, or ``gap`` without a plan).
Without a plan, products keep the class colours of ``retail-detect predict``. A header line gives the
bay and the compliance.
"""

from __future__ import annotations

import cv2
import numpy as np

from detect.verbs.predict_output import class_colors

GREEN, ORANGE, MAGENTA, RED, WHITE, BLACK = (60, 180, 60), (0, 140, 255), (200, 60, 200), (40, 40, 230), (255, 255, 255), (0, 0, 0)


def _caption(canvas: np.ndarray, text: str, x: int, y: int, color, scale: float) -> None:
    """Text on a filled background above (or, at the top border, below) the point ``(x, y)``."""
    h = canvas.shape[0]
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    ty = y - 2 if y - th - base - 2 >= 0 else min(h - 1, y + th + base + 2)
    cv2.rectangle(canvas, (x, ty - th - base), (x + tw, ty + base - 1), color, -1)
    ink = BLACK if sum(color) > 380 else WHITE
    cv2.putText(canvas, text, (x, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, 1, cv2.LINE_AA)


def _short(names: list[str]) -> str:
    """``a, a, b`` -> ``a x2, b``."""
    out: list[tuple[str, int]] = []
    for n in names:
        if out and out[-1][0] == n:
            out[-1] = (n, out[-1][1] + 1)
        else:
            out.append((n, 1))
    return ", ".join(n if k == 1 else f"{n} x{k}" for n, k in out)


def draw_audit(image: np.ndarray, photo: dict, class_names: list[str]) -> np.ndarray:
    """Overlay one photo's audit.

    Args:
        image: ``H x W x 3`` uint8 RGB (not modified).
        photo: :func:`detect.audit.photo.audit_photo` output.
        class_names: the detector's classes (colours of the plan-free drawing).

    Returns:
        ``H x W x 3`` uint8 BGR, ready for ``cv2.imencode``.
    """
    canvas = np.ascontiguousarray(image[..., ::-1])
    h, w = canvas.shape[:2]
    thick = max(1, round(max(h, w) / 640))
    scale = max(0.35, max(h, w) / 1800)
    colors = class_colors(len(class_names))
    overlay = canvas.copy()
    gaps = [g for row in photo["rows"] for g in row["gaps"]]
    for g in gaps:
        x1, y1, x2, y2 = (int(round(v)) for v in g["box"])
        cv2.rectangle(overlay, (x1, y1), (x2, y2), RED, -1)
    if gaps:
        canvas = cv2.addWeighted(overlay, 0.35, canvas, 0.65, 0.0)
    for row in photo["rows"]:
        for f in row["facings"]:
            if f["box"] is None or f["status"] in ("out_of_stock", "missing"):
                continue
            x1, y1, x2, y2 = (int(round(v)) for v in f["box"])
            st = f["status"]
            if st == "detected":
                k = class_names.index(f["found"]) + 1 if f["found"] in class_names else 0
                color, text = colors[k % len(colors)], f["found"]
            else:
                color = {"present": GREEN, "misplaced": ORANGE, "extra": MAGENTA}[st]
                text = {"present": None, "misplaced": f"{f['found']} (plan: {f['planned']})",
                        "extra": f"extra {f['found']}"}[st]
            cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thick + (st != "present"))
            if text:
                _caption(canvas, text, x1, y1, color, scale)
        for g in row["gaps"]:
            x1, y1, x2, y2 = (int(round(v)) for v in g["box"])
            cv2.rectangle(canvas, (x1, y1), (x2, y2), RED, thick)
            text = f"OOS: {_short(g['expected'])}" if g["expected"] else "gap"
            _caption(canvas, text, x1, y2 - 1 if y2 - y1 > 40 else y1, RED, scale)
    head = f"{photo['bay']}: compliance {100 * photo['compliance']:.0f}%" if photo.get("compliance") is not None \
        else f"{photo['detections']} facings, {photo['gaps']} gaps"
    _caption(canvas, head, 0, 0, WHITE, scale * 1.2)
    return canvas


__all__ = ["draw_audit"]
