"""`retail-data synth --planogram`: shelves drawn from a plan, exact removed/misplaced counts, truth.json, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_tools.planogram import PlanogramError
from data_tools.synth_planogram import generate_planogram
from data_tools.voc import read_voc
from detect.verbs.retail_data import main as data_main

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "planogram_example.yaml"


def _gen(out: Path, **kw):
    args = {"images": 3, "seed": 0, "size": (320, 240), "out_of_stock": 0.1, "misplace": 0.05} | kw
    return generate_planogram(out, EXAMPLE, **args)


def test_truth_matches_the_plan_and_the_voc_boxes(tmp_path):
    s = _gen(tmp_path / "a")
    truth = json.loads((tmp_path / "a" / "truth.json").read_text())
    assert [e["file"] for e in truth["images"]] == ["images/bay1_0001.jpg", "images/bay2_0002.jpg", "images/bay1_0003.jpg"]
    e = truth["images"][0]
    assert (e["planned"], e["removed"], e["misplaced"]) == (31, 3, 2)  # 11 + 8 + 12 facings; round(3.1), round(1.55)
    assert e["compliance"] == pytest.approx((31 - 3 - 2) / 31, abs=1e-4)
    assert [[f["planned"] for f in r["facings"]] for r in e["rows"]][0] == ["brand_a"] * 3 + ["brand_b"] * 4 + ["brand_c"] * 4
    for c in e["changes"]:
        assert (c["found"] is None) == (c["status"] == "removed") and c["found"] != c["planned"]
    rec, _ = read_voc(tmp_path / "a" / "annotations" / "bay1_0001.xml", class_names=truth["classes"])
    drawn = [f for r in e["rows"] for f in r["facings"] if f["status"] != "removed"]
    assert rec.num_boxes == len(drawn) == 31 - 3
    assert sorted(map(tuple, rec.boxes.tolist())) == sorted(tuple(float(v) for v in f["box"]) for f in drawn)
    assert s["removed"] == sum(x["removed"] for x in truth["images"])


def test_deterministic_per_seed(tmp_path):
    _gen(tmp_path / "a")
    _gen(tmp_path / "b")
    _gen(tmp_path / "c", seed=1)
    a, b, c = (tmp_path / d / "images" / "bay1_0001.jpg" for d in "abc")
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    ta, tb = ((tmp_path / d / "truth.json").read_text() for d in "ab")
    assert ta == tb


def test_refuses_a_non_empty_folder_and_bad_fractions(tmp_path):
    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(ValueError, match="not an empty folder"):
        _gen(tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "keep"
    with pytest.raises(ValueError, match="at most 1"):
        _gen(tmp_path / "x", out_of_stock=0.7, misplace=0.5)


def test_plan_skus_must_be_synthetic_classes(tmp_path):
    with pytest.raises(PlanogramError, match=r"planogram_example.yaml:\d+: unknown SKU 'brand_e'.*--classes 4"):
        _gen(tmp_path / "a", classes=4)


def test_cli_flags(tmp_path, capsys):
    out = tmp_path / "plano"
    assert data_main(["synth", "-o", str(out), "--planogram", str(EXAMPLE), "--images", "2", "--size", "320x240",
                      "--out-of-stock", "0.1", "--misplace", "0.05"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 2 planogram shelves" in printed and "61 planned, 6 removed (out of stock), 4 misplaced" in printed
    assert (out / "truth.json").is_file() and (out / "classes.txt").is_file()
    assert data_main(["synth", "-o", str(tmp_path / "n"), "--out-of-stock", "0.1"]) == 1
    assert "--out-of-stock and --misplace need --planogram" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("rows:\n  - [{sku: brand_a, facings: 2}]\n  - []\n  - [{sku: nope}]\n")
    assert data_main(["synth", "-o", str(tmp_path / "b"), "--planogram", str(bad)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: {bad}:3: bay 'plan' row 2 is empty: list at least one {{sku: NAME, facings: N}}"]
    bad.write_text("rows:\n  - [{sku: brand_a, facings: 2}]\n  - [{sku: nope}]\n")
    assert data_main(["synth", "-o", str(tmp_path / "b"), "--planogram", str(bad)]) == 1
    [err] = capsys.readouterr().err.splitlines()
    assert err.startswith(f"error: {bad}:3: unknown SKU 'nope' (bay 'plan' row 2 item 1); the synthetic classes")
    assert not (tmp_path / "b").exists()
