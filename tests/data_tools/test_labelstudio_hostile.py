"""Bad Label Studio exports: each bad task or result is reported with its place
(``[2]/annotations[0]/result[1]/value/x``), good ones are kept, unusable files are one clear line."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from dt_helpers import cli_convert, make_image, problems_of, run_cli

from data_tools.formats.common import ReadOptions
from data_tools.formats.labelstudio import LabelStudioError, read_labelstudio


def _rect(x, y, w, h, label="cola", **extra):
    return {"type": "rectanglelabels", "original_width": 40, "original_height": 20,
            "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [label], **extra}}


def _write(root, tasks, name="export.json"):
    for n in ("a.jpg", "b.jpg", "c.jpg"):
        make_image(root / "images" / n, (40, 20))
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(json.dumps(tasks))
    return root / name


def test_bad_tasks_and_results_are_reported_and_good_ones_kept(tmp_path):
    tasks = [
        {"data": {"image": "/data/upload/7/1a2b3c4d-a.jpg"}, "annotations": [
            {"was_cancelled": True, "result": [_rect(0, 0, 50, 50)]},
            {"result": [_rect(25, 25, 50, 50), _rect("10", 0, 5, 5), _rect(0, 0, 0, 5),
                        {"type": "choices", "value": {"choices": ["ok"]}}, _rect(0, 0, 10, 10, label="fanta"),
                        _rect(50, 50, 10, 10, rotation=90)]}]},
        {"data": {"image": "http://example.com/shelves/b.jpg?sig=1"}, "predictions": [{"result": [_rect(0, 0, 100, 100)]}]},
        {"data": {"image": "/data/local-files/?d=images/c.jpg"}},
        {"data": {"text": "no image"}, "annotations": [{"result": []}]},
        {"data": {"image": "/data/upload/7/nothere.jpg"}, "annotations": [{"result": []}]},
        "not a task",
    ]
    _write(tmp_path / "ls", tasks)
    rc, rs, rep = cli_convert(tmp_path / "ls", tmp_path / "out")
    rows = {(p["field"], p["kind"]): p for p in problems_of(rep, "export.json")}
    assert set(rows) == {
        ("[0]/annotations[1]/result[1]/value/x", "bad_coordinate"),
        ("[0]/annotations[1]/result[2]/value/width", "zero_area_box"),
        ("[0]/annotations[1]/result[3]", "not_a_box"),
        ("[0]/annotations[1]/result[5]/value/rotation", "rotated_box"),
        ("[2]", "unlabelled_task"), ("[3]/data/image", "missing_image"), ("[4]/data/image", "missing_image"),
        ("[5]", "bad_task")}
    by = {os.path.basename(r.image): r for r in rs.records}
    assert set(by) == {"a.jpg", "b.jpg"}  # the upload prefix is stripped; the URL is found by its file name
    # percent of 40x20; the last one is 4x2 px at (20, 10) turned 90 degrees about that corner
    np.testing.assert_allclose(by["a.jpg"].boxes, [[10, 5, 30, 15], [0, 0, 4, 2], [18, 10, 20, 14]], atol=1e-4)
    np.testing.assert_allclose(by["b.jpg"].boxes, [[0, 0, 40, 20]])  # from the prediction (no annotation)
    assert rc == 0 and rs.class_names == ["cola", "fanta"]
    rs, problems = read_labelstudio(str(tmp_path / "ls" / "export.json"), ReadOptions(class_names=["cola"]))
    [p] = [p for p in problems if p.kind == "unknown_class"]
    assert p.field == "[0]/annotations[1]/result[4]" and "'fanta'" in p.reason


def test_json_min_export(tmp_path):
    tasks = [{"image": "/data/local-files/?d=images/a.jpg", "label": [
        {"x": 25, "y": 25, "width": 50, "height": 50, "rectanglelabels": ["cola"], "original_width": 40,
         "original_height": 20}]}]
    rs, problems = read_labelstudio(str(_write(tmp_path / "m", tasks)), ReadOptions())
    assert not problems and rs.records[0].boxes.tolist() == [[10, 5, 30, 15]]


@pytest.mark.parametrize("text,match", [
    ('[{"data": 1,}]', r"export\.json:1: invalid JSON"),
    ('{"images": []}', "not a Label Studio export"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
], ids=["bad-json", "coco-not-tasks", "deep-nesting"])
def test_unusable_files_are_one_clear_line(tmp_path, text, match):
    (tmp_path / "export.json").write_text(text)
    with pytest.raises(LabelStudioError, match=match):
        read_labelstudio(str(tmp_path / "export.json"), ReadOptions())


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_fifo_export_is_refused_without_hanging(tmp_path):
    os.mkfifo(tmp_path / "export.json")
    r = run_cli("convert", str(tmp_path / "export.json"), "-o", str(tmp_path / "d.pkl"), "--format", "labelstudio",
                timeout=30)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "FIFO" in r.stderr


def test_a_400_digit_coordinate_or_rotation_is_a_problem_not_a_traceback(tmp_path):
    huge = 10 ** 400
    tasks = [{"data": {"image": "images/a.jpg"}, "annotations": [{"result": [
        _rect(huge, 0, 5, 5), _rect(0, 0, 5, 5, rotation=huge), _rect(10, 10, 20, 20)]}]}]
    rs, problems = read_labelstudio(str(_write(tmp_path / "ls", tasks)), ReadOptions())
    kinds = {(p.field, p.kind) for p in problems}
    assert ("[0]/annotations[0]/result[0]/value/x", "bad_coordinate") in kinds
    assert len(rs.records) == 1 and rs.records[0].num_boxes == 2  # the huge rotation is read as none
