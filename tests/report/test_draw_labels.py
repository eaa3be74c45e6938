"""Captions on dense shelves never overprint each other; a legend appears when a caption had to shrink."""

from __future__ import annotations

import numpy as np
import torch

from detect.report import draw
from detect.report.draw import layout_labels
from detect.verbs import predict_output as po


def _dense_row(n: int = 8, width: int = 22) -> np.ndarray:
    """``n`` side-by-side boxes, each narrower than its caption, on a 200 x 120 image."""
    return np.array([[4 + i * width, 40, 4 + (i + 1) * width - 2, 100] for i in range(n)], np.float32)


def _no_overlaps(rects) -> bool:
    rects = [r for r in rects if r is not None]
    return not any(draw._overlaps(a, b) for i, a in enumerate(rects) for b in rects[i + 1:])


def test_layout_places_captions_without_overlap_inside_the_image():
    boxes = _dense_row()
    rects = layout_labels(boxes.astype(int), [(40, 12)] * len(boxes), 200, 120)
    assert sum(r is not None for r in rects) >= 6
    assert _no_overlaps(rects)
    assert all(0 <= r[0] and r[2] <= 200 and 0 <= r[1] and r[3] <= 120 for r in rects if r is not None)
    top = layout_labels(np.array([[10, 0, 60, 30]]), [(30, 10)], 200, 120)[0]
    assert top == (10, 0, 40, 10)  # no room above the box: inside its top edge


def test_predict_drawings_use_the_layout(monkeypatch):
    """What ``predict`` draws: every caption rectangle is free of the others (they overprinted before)."""
    drawn: list[tuple] = []
    real = draw._put
    monkeypatch.setattr(draw, "_put", lambda img, text, rect, *a: (drawn.append((text, rect)), real(img, text, rect, *a)))
    legends: list = []
    real_legend = draw.draw_legend
    monkeypatch.setattr(draw, "draw_legend", lambda img, entries, *a, **k: (legends.append(entries),
                                                                             real_legend(img, entries, *a, **k)))
    boxes = _dense_row(8)
    result = {"boxes": torch.from_numpy(boxes), "scores": torch.linspace(0.9, 0.4, 8),
              "labels": torch.tensor([1, 2] * 4)}
    out = po.draw_detections(np.zeros((120, 200, 3), np.uint8), result, ["brand_a", "brand_b"])
    assert out.shape == (120, 200, 3)
    assert drawn and _no_overlaps([r for _, r in drawn])
    full = [t for t, _ in drawn if t.startswith("brand")]
    assert len(full) < 8  # eight wide captions cannot all fit over eight narrow boxes ...
    assert legends == [[("brand_a", po.class_colors(2)[1]), ("brand_b", po.class_colors(2)[2])]]  # ... so a legend


def test_sparse_boxes_keep_full_captions_and_no_legend(monkeypatch):
    legends: list = []
    monkeypatch.setattr(draw, "draw_legend", lambda *a, **k: legends.append(a))
    result = {"boxes": torch.tensor([[10.0, 30.0, 90.0, 100.0], [110.0, 30.0, 190.0, 100.0]]),
              "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([1, 2])}
    img = np.zeros((120, 200, 3), np.uint8)
    full = draw.draw_boxes(img.copy(), result["boxes"].numpy(), [(0, 255, 0)] * 2, ["brand_a 0.90", "brand_b 0.80"])
    assert full == [True, True]
    po.draw_detections(img, result, ["brand_a", "brand_b"])
    assert legends == []


def test_text_colour_reads_on_dark_and_light():
    assert draw.text_color((255, 255, 255)) == (0, 0, 0)
    assert draw.text_color((200, 30, 10)) == (255, 255, 255)  # BGR dark blue
