"""Audit outputs from a hand-made photo: CSV counts per row x SKU, worst-first order, HTML page, drawing."""

from __future__ import annotations

import numpy as np

from data_tools.planogram import Bay, Facing
from detect.audit.draw import draw_audit
from detect.audit.html import render_html
from detect.audit.photo import audit_photo
from detect.audit.report import csv_rows, summarize, worst_first

NAMES = ["acme_cola", "zest_chips"]
BAY = Bay("b1", None, ((Facing("acme_cola", 3), Facing("zest_chips", 2)),))


def _photo(layout: str, path: str) -> dict:
    """One row of 40 px products every 44 px: 'c' cola, 'p' chips, '.' empty."""
    boxes = [[2 + 44 * i, 20, 42 + 44 * i, 90] for i, ch in enumerate(layout) if ch != "."]
    labels = [1 if ch == "c" else 2 for ch in layout if ch != "."]
    a = audit_photo(np.array(boxes, np.float32), np.array(labels), None, NAMES, 222, 100, BAY)
    return {"path": path, "width": 222, "height": 100, **a}


def test_csv_counts_per_row_and_sku():
    rows = csv_rows([_photo("c.cpc", "x.jpg")])  # slot 1 empty, slot 4 (chips) holds a cola
    by = {r["sku"]: r for r in rows}
    assert set(by) == {"acme_cola", "zest_chips"} and all(r["row"] == 0 for r in rows)
    cola, chips = by["acme_cola"], by["zest_chips"]
    assert (cola["planned"], cola["present"], cola["missing"], cola["out_of_stock"], cola["found_misplaced"]) == (3, 2, 1, 1, 1)
    assert (chips["planned"], chips["present"], chips["misplaced"], chips["detected"]) == (2, 1, 1, 1)
    assert cola["detected"] == 3 and cola["width_px"] == 120.0 and cola["row_compliance"] == 0.6


def test_worst_first_summary_html_and_drawing():
    good, bad = _photo("cccpp", "good.jpg"), _photo("c...p", "bad.jpg")
    assert [p["path"] for p in worst_first([good, bad])] == ["bad.jpg", "good.jpg"]
    s = summarize([good, bad])
    assert (s["planned"], s["present"], s["compliance"]) == (10, 7, 0.7) and s["worst"]["path"] == "bad.jpg"
    assert s["share"]["brands"]["acme"]["facings"] == 4
    result = {"summary": s, "weights": "w.pt", "planogram": "p.yaml", "accuracy": None}
    page = render_html(result, [good, bad], [{"file": "broken.jpg", "reason": "not an image"}])
    assert page.index("bad.jpg") < page.index("good.jpg") and "broken.jpg: not an image" in page
    assert "between x 42-178: acme_cola, acme_cola, zest_chips" in page  # the gap and what belongs there
    img = np.full((100, 222, 3), 200, np.uint8)
    drawn = draw_audit(img, bad, NAMES)
    assert drawn.shape == img.shape and (drawn[50, 100] != img[50, 100]).any()  # the gap is tinted
    assert (img == 200).all()  # the input is not modified
