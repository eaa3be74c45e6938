"""Audit accuracy on synthetic planogram shelves, with the truth boxes (jittered) standing in for a detector.

This measures the audit logic (rows, gaps, alignment, compliance), not a detector: the goal of the issue is
gap recall and precision >= 0.9 and a compliance error <= 5 points.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data_tools.planogram import load_planogram
from data_tools.synth_planogram import generate_planogram
from detect.audit.metrics import load_truth, score_audit
from detect.audit.photo import AuditOptions, audit_photo

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "planogram_example.yaml"


def _audit_truth_boxes(truth: dict, plan, jitter: float, seed: int = 0, opts: AuditOptions | None = None) -> list[dict]:
    """Audit each truth photo with its drawn boxes moved by up to ``jitter`` x their size per side."""
    rng = np.random.default_rng(seed)
    names = truth["classes"]
    photos = []
    for e in truth["images"]:
        drawn = [f for r in e["rows"] for f in r["facings"] if f["status"] != "removed"]
        boxes = np.array([f["box"] for f in drawn], np.float64)  # [N, 4]
        wh = np.tile(boxes[:, 2:] - boxes[:, :2], 2)  # [N, 4]: w, h, w, h
        boxes += rng.uniform(-jitter, jitter, boxes.shape) * wh
        labels = np.array([names.index(f["found"]) + 1 for f in drawn])
        scores = rng.uniform(0.5, 1.0, len(drawn))
        a = audit_photo(boxes, labels, scores, names, e["width"], e["height"], plan.bay_for(e["file"]), plan.brands, opts)
        photos.append({"path": e["file"], **a})
    return photos


def test_audit_meets_the_goals_on_20_synthetic_shelves(tmp_path):
    generate_planogram(tmp_path / "s", EXAMPLE, images=20, seed=7, size=(400, 300), out_of_stock=0.1, misplace=0.05)
    truth = load_truth(tmp_path / "s" / "truth.json")
    plan = load_planogram(EXAMPLE, truth["classes"])
    m = score_audit(_audit_truth_boxes(truth, plan, jitter=0.05), truth)
    assert m["photos"] == 20 and m["removed"] == 60 and m["misplaced"] == 40
    assert m["gap_recall"] >= 0.9 and m["gap_precision"] >= 0.9
    assert m["misplaced_recall"] >= 0.9
    assert m["compliance_error_mean"] <= 5.0


def test_an_audit_that_ignores_the_gaps_fails_the_goal(tmp_path):
    """The metrics can fail: with the gap threshold above any gap, recall is 0 and the error grows."""
    generate_planogram(tmp_path / "s", EXAMPLE, images=4, seed=7, size=(400, 300), out_of_stock=0.1, misplace=0.0)
    truth = load_truth(tmp_path / "s" / "truth.json")
    plan = load_planogram(EXAMPLE, truth["classes"])
    m = score_audit(_audit_truth_boxes(truth, plan, jitter=0.0, opts=AuditOptions(min_gap=5.0)), truth)
    assert m["gap_recall"] == 0.0 and m["gap_precision"] is None and m["gaps"] == 0
