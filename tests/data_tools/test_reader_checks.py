"""The checks every label reader shares (VOC, COCO and data_tools.formats): numbers, box problem kinds, class
names and the folders searched for images."""

from __future__ import annotations

import pytest

from data_tools.locate import first_level_dirs
from data_tools.records import ClassMap, Problem, box_kind, check_box, label_of, number_fault


@pytest.mark.parametrize("text, fault", [("12", None), ("-1.5e3", None), (".5", None), ("nan", "non-finite"),
                                         ("-Infinity", "non-finite"), ("0x10", "non-numeric"), ("", "non-numeric"),
                                         ("1_000", "non-numeric")])
def test_number_fault(text, fault):
    assert number_fault(text) == fault


@pytest.mark.parametrize("box, kind", [((float("nan"), 0, 5, 5), "bad_coordinate"), ((5, 0, 1, 5), "swapped_box"),
                                       ((20, 20, 30, 30), "box_outside"), ((1, 1, 1.5, 5), "zero_area_box")])
def test_box_kind_names_each_dropped_box(box, kind):
    checked, reason, action = check_box(box, 10, 10)
    assert checked is None and action == "skipped" and box_kind(reason) == kind


def test_label_of_reports_unknown_names_and_other_spellings():
    cmap, problems = ClassMap(["tomato sauce", "beans"]), []
    assert label_of(cmap, "Tomato  Sauce", "a.xml", problems, line=3, field="object[1]/name") == 1
    assert label_of(cmap, "bean", "a.xml", problems) is None
    assert label_of(cmap, "beans", "a.xml", problems) == 2
    assert problems == [
        Problem("a.xml", "class name 'Tomato  Sauce' read as 'tomato sauce'", 3, "object[1]/name", "fixed",
                "class_name_case"),
        Problem("a.xml", "unknown class 'bean' (did you mean 'beans'?)", kind="unknown_class"),
    ]


def test_first_level_dirs_skips_hidden_and_unlistable(tmp_path):
    for name in ("b", "a", ".cache"):
        (tmp_path / name).mkdir()
    (tmp_path / "file.jpg").write_bytes(b"x")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert first_level_dirs(str(tmp_path)) == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert first_level_dirs(str(tmp_path / "missing")) == []
