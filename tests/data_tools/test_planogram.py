"""Planogram files: the documented example loads; each kind of bad plan is one line naming file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_tools.planogram import PlanogramError, load_planogram

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "planogram_example.yaml"
CLASSES = ["brand_a", "brand_b", "brand_c", "brand_d", "brand_e"]


def _plan(tmp_path: Path, text: str, name: str = "plan.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _error(path: Path, classes=CLASSES) -> list[str]:
    with pytest.raises(PlanogramError) as e:
        load_planogram(path, classes)
    return e.value.problems


def test_example_plan_loads_and_matches_photos_by_name():
    plan = load_planogram(EXAMPLE, CLASSES)
    assert [b.name for b in plan.bays] == ["bay1", "bay2"]
    bay1 = plan.bays[0]
    assert bay1.sequence(0) == ["brand_a"] * 3 + ["brand_b"] * 4 + ["brand_c"] * 4
    assert len(bay1.rows) == 3 and bay1.facings == sum(len(s) for s in bay1.sequences())
    assert plan.bay_for("photos/bay2_0007.jpg").name == "bay2"
    assert plan.bay_for("other.jpg") is None  # both bays have a pattern: no default
    assert plan.brand_of("brand_c") == "zest" and plan.brand_of("cola_zero") == "cola"


def test_single_plan_shorthand_json_and_default_bay(tmp_path):
    doc = {"rows": [[{"sku": "brand_a", "facings": 2}], [{"sku": "brand_b"}]]}
    plan = load_planogram(_plan(tmp_path, json.dumps(doc, indent=1), "plan.json"), CLASSES)
    assert plan.bays[0].sequences() == [["brand_a", "brand_a"], ["brand_b"]]  # facings default to 1
    assert plan.bay_for("anything.jpg") is plan.bays[0]
    two = _plan(tmp_path, "bays:\n - {name: x, match: 'x_*', rows: [[{sku: brand_a}]]}\n - {name: all, rows: [[{sku: brand_b}]]}\n")
    plan = load_planogram(two, CLASSES)
    assert plan.bay_for("x_01.png").name == "x" and plan.bay_for("y.png").name == "all"


def test_unknown_sku_names_its_line_and_the_nearest_class(tmp_path):
    p = _plan(tmp_path, "bays:\n  - name: b1\n    rows:\n      - [{sku: brand_a, facings: 2}]\n"
                        "      - [{sku: brand_a}, {sku: brnd_b, facings: 1}]\n")
    [line] = _error(p)
    assert line.startswith(f"{p}:5: unknown SKU 'brnd_b' (bay 'b1' row 2 item 2)")
    assert "did you mean 'brand_b'?" in line and "brand_a, brand_b" in line


def test_empty_row_bad_facings_and_unknown_key_each_one_line(tmp_path):
    p = _plan(tmp_path, "bays:\n  - name: b1\n    rows:\n      - []\n      - [{sku: brand_a, facings: 0}]\n"
                        "      - [{sku: brand_a, facing: 2}]\n")
    problems = _error(p)
    assert len(problems) == 3
    assert problems[0] == f"{p}:4: bay 'b1' row 1 is empty: list at least one {{sku: NAME, facings: N}}"
    assert problems[1].startswith(f"{p}:5: bay 'b1' row 2 item 1 ('brand_a'): 'facings' must be a whole number from 1 to 1000")
    assert problems[2].startswith(f"{p}:6: bay 'b1' row 3 item 1: unknown key 'facing'; did you mean 'facings'?")


def test_malformed_yaml_and_json_name_the_line(tmp_path):
    [line] = _error(_plan(tmp_path, "bays:\n  - name: b1\n    rows: [[{sku: brand_a}]\n"))
    assert line.startswith(f"{tmp_path / 'plan.yaml'}:") and "malformed YAML" in line
    [line] = _error(_plan(tmp_path, '{"rows": [\n [{"sku": "brand_a"},]\n]}', "plan.json"))
    assert line.startswith(f"{tmp_path / 'plan.json'}:2: malformed JSON")
    [line] = _error(_plan(tmp_path, "bays:\n  - name: b1\n    name: b2\n    rows: [[{sku: brand_a}]]\n"))
    assert line.startswith(f"{tmp_path / 'plan.yaml'}:3: malformed YAML: duplicate key 'name'")


def test_structural_problems(tmp_path):
    assert "the planogram is empty" in _error(_plan(tmp_path, ""))[0]
    assert "no 'bays:'" in _error(_plan(tmp_path, "rowz: []\n"))[0]
    [line] = _error(_plan(tmp_path, "bays:\n  - name: b1\n    rows: []\n"))
    assert line.startswith(f"{tmp_path / 'plan.yaml'}:3: bay 'b1': 'rows' must be a non-empty list")
    two_defaults = "bays:\n  - {name: a, rows: [[{sku: brand_a}]]}\n  - {name: b, rows: [[{sku: brand_a}]]}\n"
    assert "only one bay can be the default" in _error(_plan(tmp_path, two_defaults))[0]
    brands = "brands: {brand_z: acme}\nrows: [[{sku: brand_a}]]\n"
    [line] = _error(_plan(tmp_path, brands))
    assert line.startswith(f"{tmp_path / 'plan.yaml'}:1: brands: unknown class 'brand_z'")


def test_missing_file_is_one_line(tmp_path):
    assert _error(tmp_path / "nope.yaml") == [f"{tmp_path / 'nope.yaml'}: planogram file not found"]
