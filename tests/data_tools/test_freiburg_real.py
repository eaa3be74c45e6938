"""On the real Freiburg groceries data (``<repo>/../shared/data/freiburg``); skipped when it is absent."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from data_tools.convert import convert

FREIBURG = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "freiburg"
pytestmark = pytest.mark.skipif(not FREIBURG.exists(), reason="real data ../shared/data/freiburg not present")


def test_freiburg_converts_fast_and_reports_the_zero_width_box():
    t0 = time.perf_counter()
    rs, problems, summary = convert(FREIBURG, progress=False)
    seconds = time.perf_counter() - t0
    assert len(rs) == 1998 and rs.num_classes == 25 and summary["images_skipped"] == 0
    assert rs.class_names[:3] == ["beans", "cake", "candy"] and "tomato_sauce" in rs.class_names
    assert all(r.width == 224 and r.height == 224 for r in rs.records)
    fish = [p for p in problems if p.file.endswith("FISH0041.xml")]
    assert len(fish) == 1 and fish[0].kind == "zero_area_box"
    assert fish[0].line == 34 and fish[0].field == "object[2]/bndbox/xmax"
    assert seconds < 30, f"convert took {seconds:.1f} s"
