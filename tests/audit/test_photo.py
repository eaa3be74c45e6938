"""One photo's audit from hand-made detections: statuses, gaps with the SKU expected there, compliance, share."""

from __future__ import annotations

import numpy as np
import pytest

from data_tools.planogram import Bay, Facing
from detect.audit.photo import audit_photo, distinct_facings

NAMES = ["acme_cola", "acme_lime", "zest_chips"]


def _shelf(rows: list[tuple[float, str]], w: float = 40.0, h: float = 70.0, step: float = 44.0, x0: float = 2.0):
    """Boxes + labels of rows given as (shelf y, layout string): one char per slot, '.' = empty slot.

    Chars: 'c' acme_cola, 'l' acme_lime, 'p' zest_chips.
    """
    code = {"c": 1, "l": 2, "p": 3}
    boxes, labels = [], []
    for y, layout in rows:
        for i, ch in enumerate(layout):
            if ch != ".":
                boxes.append([x0 + i * step, y - h, x0 + i * step + w, y])
                labels.append(code[ch])
    return np.array(boxes, np.float32), np.array(labels, np.int64)


def _bay(*rows: list[tuple[str, int]]) -> Bay:
    return Bay("b", None, tuple(tuple(Facing(s, n) for s, n in row) for row in rows))


BAY = _bay([("acme_cola", 3), ("acme_lime", 2)], [("zest_chips", 5)])


def test_plan_compliant_shelf_scores_one():
    boxes, labels = _shelf([(90, "cccll"), (190, "ppppp")])
    a = audit_photo(boxes, labels, None, NAMES, 222, 200, BAY)
    assert a["compliance"] == 1.0 and a["planned"] == 10 and a["present"] == 10 and a["gaps"] == 0
    assert [r["planned_row"] for r in a["rows"]] == [0, 1]


def test_out_of_stock_gap_misplaced_and_compliance():
    # row 0: slot 1 empty, slot 4 holds chips instead of lime; row 1: the last chips slot empty (right end)
    boxes, labels = _shelf([(90, "c.clp"), (190, "pppp.")])
    a = audit_photo(boxes, labels, None, NAMES, 222, 200, BAY)
    assert (a["present"], a["misplaced"], a["missing"], a["out_of_stock"], a["extra"]) == (7, 1, 2, 2, 0)
    assert a["compliance"] == pytest.approx(0.7)
    row0, row1 = a["rows"]
    assert [f["status"] for f in row0["facings"]] == ["present", "out_of_stock", "present", "present", "misplaced"]
    [gap] = row0["gaps"]
    assert gap["expected"] == ["acme_cola"] and gap["position"] == "between" and gap["box"][0] == 42.0
    mis = row0["facings"][4]
    assert (mis["planned"], mis["found"]) == ("acme_lime", "zest_chips")
    [gap] = row1["gaps"]
    assert gap["expected"] == ["zest_chips"] and gap["position"] == "right end"
    assert row1["compliance"] == 0.8


def test_a_wholly_empty_shelf_is_one_row_wide_gap_and_others_stay_aligned():
    boxes, labels = _shelf([(190, "ppppp")])
    a = audit_photo(boxes, labels, None, NAMES, 222, 200, BAY)
    top, bottom = a["rows"]
    assert top["detected_row"] is None and top["gaps"][0]["position"] == "whole row"
    assert top["gaps"][0]["expected"] == ["acme_cola"] * 3 + ["acme_lime"] * 2
    assert bottom["compliance"] == 1.0 and a["out_of_stock"] == 5 and a["compliance"] == 0.5


def test_a_shelf_the_plan_does_not_have_is_extra():
    boxes, labels = _shelf([(90, "cccll"), (190, "ppppp"), (290, "cc")])
    a = audit_photo(boxes, labels, None, NAMES, 222, 300, BAY)
    assert a["rows"][2]["planned_row"] is None and a["extra"] == 2 and a["compliance"] == 1.0


def test_without_plan_rows_gaps_and_share_of_shelf_by_class_and_brand():
    boxes, labels = _shelf([(90, "cc.lp")], w=40.0)
    boxes[-1, 2] += 40.0  # the chips box is twice as wide
    a = audit_photo(boxes, labels, np.full(len(labels), 0.9), NAMES, 222, 100)
    assert a["compliance"] is None and a["planned"] is None and a["gaps"] == 1
    assert a["rows"][0]["gaps"][0]["expected"] == [] and {f["status"] for f in a["rows"][0]["facings"]} == {"detected"}
    cls, brands = a["share"]["classes"], a["share"]["brands"]
    assert cls["acme_cola"] == {"facings": 2, "width": 80.0, "facings_share": 0.5, "width_share": 0.4}
    assert brands["acme"]["facings"] == 3 and brands["acme"]["width_share"] == 0.6
    assert brands["zest"] == {"facings": 1, "width": 80.0, "facings_share": 0.25, "width_share": 0.4}
    mapped = audit_photo(boxes, labels, None, NAMES, 222, 100, brands={"zest_chips": "acme"})
    assert set(mapped["share"]["brands"]) == {"acme"}


def test_no_detections():
    a = audit_photo(np.zeros((0, 4)), np.zeros(0, np.int64), None, NAMES, 100, 100, BAY)
    assert a["compliance"] == 0.0 and a["out_of_stock"] == 10 and len(a["rows"]) == 2
    assert audit_photo(np.zeros((0, 4)), np.zeros(0, np.int64), None, NAMES, 100, 100)["rows"] == []


def test_overlapping_detections_of_one_product_count_once():
    boxes, labels = _shelf([(90, "cccll"), (190, "ppppp")])
    dup = boxes[1] + np.array([2, 1, 2, 1], np.float32)  # the same cola found again as chips, lower score
    inside = np.array([boxes[3, 0] + 5, 40, boxes[3, 2] - 5, 60], np.float32)  # a label patch inside a lime
    flat = np.array([150, 190, 170, 190], np.float32)  # zero height
    boxes2 = np.concatenate([boxes, [dup, inside, flat]])
    labels2 = np.concatenate([labels, [3, 1, 2]])
    scores = np.concatenate([np.full(len(labels), 0.9), [0.5, 0.4, 0.95]])
    assert distinct_facings(boxes2, scores).tolist() == list(range(len(labels)))
    a = audit_photo(boxes2, labels2, scores, NAMES, 222, 200, BAY)
    assert a["compliance"] == 1.0 and a["extra"] == 0 and a["overlapping"] == 3
