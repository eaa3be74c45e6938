"""The report folder of a synthetic run: every section's files, numbers that agree, a safe page."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
from PIL import Image

from detect.report.build import compute_report


def _refs(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"#]+)"', html)


def test_report_files_and_references(synthetic_report):
    d = synthetic_report["dir"]
    html = (d / "index.html").read_text()
    refs = _refs(html)
    assert {"metrics.json", "per_class.csv", "confusion.png", "sweep.png", "pr_curves.png",
            "pr_per_class.png"} <= set(refs)
    for ref in refs:  # every image and link of the page is there and decodes
        assert (d / ref).is_file(), ref
        if ref.endswith((".png", ".jpg")):
            with Image.open(d / ref) as im:
                im.load()
                assert min(im.size) > 8
    r = synthetic_report["report"]
    g = r["galleries"]
    assert g["false_positives"] and g["wrong_class"] and g["missed"] and g["worst"]
    assert all(item["link"].startswith("images/") for item in g["missed"])
    for section in ("Per class", "Count accuracy", "PR curves", "Confusion matrix", "Worst images"):
        assert section in html
    assert f"--conf {r['recommended_conf']}" in html
    assert "<b>&co" not in html and "&lt;b&gt;&amp;co" in html  # class names are escaped


def test_metrics_json_and_csv_agree_with_the_matching(synthetic_report):
    d, rs = synthetic_report["dir"], synthetic_report["rs"]
    m = json.loads((d / "metrics.json").read_text())
    assert m["format"] == "retail-detect-report" and m["conf_source"] == "recommended"
    cm = np.array(m["confusion"]["matrix"])
    gt_per_class = np.bincount(np.concatenate([r.labels for r in rs.records]) - 1, minlength=3)
    assert cm[:3].sum(1).tolist() == gt_per_class.tolist()
    rows = list(csv.DictReader((d / "per_class.csv").open()))
    assert [r["class"] for r in rows] == rs.class_names
    for row, pc in zip(rows, m["per_class"]):
        assert int(row["tp"]) == pc["tp"] and int(row["gt"]) == pc["gt"] and int(row["tp"]) + int(row["fn"]) == pc["gt"]
    assert sum(pc["tp"] for pc in m["per_class"]) == m["at_conf"]["tp"] == int(np.trace(cm[:3, :3]))
    least = min(s["class_mae"] for s in m["sweep"])
    ties = [s for s in m["sweep"] if s["class_mae"] == least]
    rec = next(s for s in m["sweep"] if s["conf"] == m["recommended_conf"])
    assert rec["class_mae"] == least and rec["f1"] == max(s["f1"] for s in ties)
    assert m["counts"]["class_mae"] == least  # the report's counts are taken at the recommended confidence
    assert len(m["image_errors"]) == len(rs.records)
    assert m["headline"]["AP50"] > 0 and m["facts"]["checkpoint"] == "runs/x/best.pt"


def test_a_given_confidence_is_used(synthetic_report):
    r, _ = compute_report(synthetic_report["results"], synthetic_report["rs"], conf=0.9)
    assert r["conf"] == 0.9 and r["conf_source"] == "given"
    assert r["at_conf"]["tp"] < synthetic_report["report"]["at_conf"]["tp"]


def test_no_detections_still_gives_a_page(tmp_path, synthetic_report):
    from detect.report.build import write_report

    r = write_report([], synthetic_report["rs"], tmp_path / "empty", log=lambda s: None)
    assert r["recommended_conf"] is None and r["at_conf"]["tp"] == 0
    html = (tmp_path / "empty" / "index.html").read_text()
    assert "nothing to recommend" in html
    for ref in _refs(html):
        assert (tmp_path / "empty" / ref).is_file(), ref
