"""Audit accuracy against truth.json: gap recall/precision, misplaced recall/precision, compliance error."""

from __future__ import annotations

import json

import pytest

from data_tools.planogram import PlanogramError
from detect.audit.metrics import load_truth, score_audit, score_photo


def _truth(file="images/bay_0001.jpg", compliance=0.8, changes=()):
    return {"file": file, "compliance": compliance, "changes": list(changes)}


REMOVED_1 = {"status": "removed", "box": [100, 10, 140, 90]}
REMOVED_2 = {"status": "removed", "box": [300, 10, 340, 90]}
MISPLACED = {"status": "misplaced", "box": [200, 20, 240, 90]}


def _photo(gaps=(), misplaced=(), compliance=0.8, path="/photos/bay_0001.jpg"):
    facings = [{"status": "misplaced", "box": list(b)} for b in misplaced]
    facings.append({"status": "present", "box": [0, 10, 40, 90]})
    return {"path": path, "compliance": compliance, "rows": [{"gaps": [{"box": list(g)} for g in gaps], "facings": facings}]}


def test_exact_audit_scores_perfectly():
    s = score_photo(_photo(gaps=[[96, 10, 144, 90], [296, 10, 344, 90]], misplaced=[[201, 20, 240, 90]]),
                    _truth(changes=[REMOVED_1, REMOVED_2, MISPLACED]))
    assert (s["removed_found"], s["removed"], s["gaps_correct"], s["gaps"]) == (2, 2, 2, 2)
    assert (s["misplaced_found"], s["reported_misplaced_correct"], s["compliance_error"]) == (1, 1, 0.0)


def test_partial_gap_and_false_gap_and_wrong_misplaced():
    # gap 1 covers only a quarter of removed facing 1 (a miss); gap 2 is a false alarm on a full shelf stretch;
    # the reported misplaced box is elsewhere; compliance 0.75 vs 0.8
    s = score_photo(_photo(gaps=[[130, 10, 170, 90], [400, 10, 440, 90], [300, 10, 340, 90]],
                           misplaced=[[0, 20, 40, 90]], compliance=0.75),
                    _truth(changes=[REMOVED_1, REMOVED_2, MISPLACED]))
    assert (s["removed_found"], s["gaps_correct"], s["gaps"]) == (1, 1, 3)
    assert (s["misplaced_found"], s["reported_misplaced_correct"]) == (0, 0)
    assert s["compliance_error"] == pytest.approx(5.0)


def test_a_gap_in_another_row_does_not_count():
    s = score_photo(_photo(gaps=[[100, 150, 140, 230]]), _truth(changes=[REMOVED_1]))
    assert s["removed_found"] == 0 and s["gaps_correct"] == 0


def test_wide_gap_over_two_removed_facings_and_pooling():
    truth = {"images": [_truth(changes=[{"status": "removed", "box": [100, 10, 140, 90]},
                                        {"status": "removed", "box": [142, 10, 182, 90]}]),
                        _truth("images/bay_0002.jpg", 1.0), _truth("images/bay_0003.jpg", 1.0)]}
    photos = [_photo(gaps=[[98, 10, 184, 90]], compliance=0.9),
              _photo(gaps=[[0, 10, 50, 90]], compliance=0.95, path="bay_0002.jpg"),
              _photo(path="elsewhere.jpg")]
    m = score_audit(photos, truth)
    assert m["photos"] == 2 and m["removed"] == 2 and m["gap_recall"] == 1.0 and m["gap_precision"] == 0.5
    assert m["compliance_error_mean"] == pytest.approx(7.5) and m["compliance_error_max"] == pytest.approx(10.0)
    assert m["misplaced_recall"] is None and m["not_in_truth"] == ["elsewhere.jpg"]
    assert m["not_audited"] == ["bay_0003.jpg"]


def test_load_truth_refuses_other_files(tmp_path):
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"images": []}))
    with pytest.raises(PlanogramError, match="not a truth.json"):
        load_truth(p)
    p.write_text("{")
    with pytest.raises(PlanogramError, match=r"t.json:1: invalid JSON"):
        load_truth(p)
