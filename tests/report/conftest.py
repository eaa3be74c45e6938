"""A report of a synthetic run, written once for the report tests."""

from __future__ import annotations

import pytest
from report_helpers import fake_results

from data_tools.synth import make_tiny_dataset
from detect.report.build import write_report


@pytest.fixture(scope="session")
def synthetic_report(tmp_path_factory) -> dict:
    """``{"dir", "report", "rs", "results"}``: 8 synthetic shelves (3 classes, one named ``<b>&co``) with
    detections that make every kind of mistake, reported into ``dir``."""
    root = tmp_path_factory.mktemp("report_run")
    rs = make_tiny_dataset(root / "data", images=8, classes=3, seed=0, size=(160, 128))
    rs.class_names[2] = "<b>&co"  # data text must be escaped on the page
    results = fake_results(rs)
    report = write_report(results, rs, root / "report", facts={"checkpoint": "runs/x/best.pt"}, log=lambda s: None)
    return {"dir": root / "report", "report": report, "rs": rs, "results": results}
