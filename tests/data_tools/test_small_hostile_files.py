"""Small or special files that used to hang or blow up memory: YAML alias bombs, FIFOs and devices given as
planogram or truth files, huge numbers, deep JSON. Each is refused with one line naming the file (and line or
field), and each refusal happens before any expansion: the tests prove the bound, not a slow failure."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
import yaml

from data_tools.formats.common import ReadOptions
from data_tools.formats.yolo import read_yolo
from data_tools.planogram import MAX_BAY_FACINGS, MAX_FACINGS, MAX_ROWS, PlanogramError, load_planogram
from data_tools.safe_yaml import load_yaml
from data_tools.synth_planogram import TRUTH_FORMAT
from detect.audit.truth import load_truth

# 9 levels of 10 aliases each: 10^9 strings once expanded ("billion laughs"), 1 KB on disk.
BOMB = "a: &a ['lol','lol','lol','lol','lol','lol','lol','lol','lol','lol']\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 10) + "]\n" for i in range(8))


def _problems(path) -> list[str]:
    with pytest.raises(PlanogramError) as e:
        load_planogram(path)
    return e.value.problems


def test_the_loader_refuses_the_first_alias_before_building_anything():
    assert load_yaml("a: [1, 2]\nb: {c: d}\n") == {"a": [1, 2], "b": {"c": "d"}}
    with pytest.raises(yaml.MarkedYAMLError) as e:
        load_yaml("a: &x 1\nb: *x\n")
    assert e.value.problem_mark.line == 1 and "aliases (*x) are not allowed" in str(e.value)


def test_alias_bomb_planogram_is_one_short_line(tmp_path):
    p = tmp_path / "plan.yaml"
    p.write_text("bays:\n  - rows:\n      - [{sku: x}]\n" + BOMB)
    [line] = _problems(p)
    assert line.startswith(f"{p}:5: malformed YAML: YAML aliases (*a) are not allowed") and len(line) < 300


def test_alias_bomb_in_yolo_data_yaml_is_a_problem_and_the_labels_still_load(tmp_path):
    (tmp_path / "data.yaml").write_text("names: [a, b]\n" + BOMB)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "p.jpg"), np.zeros((20, 30, 3), np.uint8))
    (tmp_path / "labels" / "p.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    rs, problems = read_yolo(str(tmp_path), ReadOptions())
    bad = [p for p in problems if "aliases" in p.reason]
    assert len(bad) == 1 and bad[0].file.endswith("data.yaml") and bad[0].line == 3
    assert len(rs.records) == 1


@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_planogram_and_truth_from_a_fifo_or_a_device_are_refused_without_reading(tmp_path, special):
    if special == "fifo":
        path = tmp_path / "plan.yaml"
        os.mkfifo(path)  # opening it for reading would block forever
        kind = "FIFO"
    else:
        path, kind = special, "character device"
    assert kind in _problems(path)[0]
    with pytest.raises(PlanogramError, match=kind):
        load_truth(path)


def test_huge_facings_and_oversized_bays_are_refused(tmp_path):
    p = tmp_path / "plan.yaml"
    p.write_text("rows:\n  - [{sku: a, facings: 1000000000}]\n")
    assert f"'facings' must be a whole number from 1 to {MAX_FACINGS}, got 1000000000" in _problems(p)[0]
    p.write_text("rows:\n" + "  - [{sku: a}]\n" * (MAX_ROWS + 1))
    assert f"more than the {MAX_ROWS} a bay may have" in _problems(p)[0]
    per_row = MAX_FACINGS
    p.write_text("rows:\n" + f"  - [{{sku: a, facings: {per_row}}}]\n" * (MAX_BAY_FACINGS // per_row + 1))
    assert "planned facings, more than the" in _problems(p)[0]


def test_a_huge_value_in_a_message_is_cut(tmp_path):
    p = tmp_path / "plan.yaml"
    p.write_text("rows:\n  - ['" + "x" * 100_000 + "']\n")
    [line] = _problems(p)
    assert len(line) < 300


@pytest.mark.parametrize("content, expect", [
    (b"[" * 100_000, "nested too deeply"),
    (b'{"format": ' + b"9" * 5000 + b"}", "a number too long"),
    (b'{"format": "\xff"}', "not UTF-8"),
    (b"{", ":1: invalid JSON"),
])
def test_bad_truth_files_are_one_line_naming_the_file(tmp_path, content, expect):
    p = tmp_path / "truth.json"
    p.write_bytes(content)
    with pytest.raises(PlanogramError) as e:
        load_truth(p)
    [line] = e.value.problems
    assert line.startswith(str(p)) and expect in line and len(line) < 300


def test_truth_entries_are_checked_before_the_audit_runs(tmp_path):
    p = tmp_path / "truth.json"
    good = {"file": "a.jpg", "compliance": 0.5, "changes": [{"status": "removed", "box": [0, 0, 1, 1]}]}
    bad = dict(good, changes=[{"status": "removed", "box": [0, 0, 1]}])
    p.write_text(json.dumps({"format": TRUTH_FORMAT, "images": [good, bad]}))
    with pytest.raises(PlanogramError) as e:
        load_truth(p)
    assert e.value.problems == [f"{p} [images[1]/changes[0]/box]: must be [x1, y1, x2, y2] numbers"]
    p.write_text(json.dumps({"format": TRUTH_FORMAT, "images": [good]}))
    assert load_truth(p)["images"] == [good]
