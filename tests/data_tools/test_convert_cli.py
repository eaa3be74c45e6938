"""``retail-data`` through ``main([...])``: summaries, reports, --strict, refused outputs, every verb."""

from __future__ import annotations

import json
import sys
import types

from dt_helpers import add_pair, cli_convert, temp_leftovers, tree_hashes

from data_tools.store import load_dataset
from detect.verbs.retail_data import main


def test_convert_prints_summary_and_writes_report(dataset, tmp_path, capsys):
    add_pair(dataset, "zero", [("beans", 7, 3, 7, 9), ("cake", 1, 1, 9, 9)])
    rc, rs, rep = cli_convert(dataset, tmp_path / "out")
    out = capsys.readouterr().out
    assert rc == 0 and len(rs) == 3
    assert "images: 3 (0 skipped, 0 without boxes)" in out and "boxes: 4 (1 skipped)" in out
    assert "per class: beans 1, cake 3" in out and "zero_area_box 1" in out
    assert "zero.xml:" in out and "[object[1]/bndbox/xmax]" in out
    assert rep["summary"]["problems_by_kind"] == {"zero_area_box": 1}
    [p] = rep["problems"]
    assert set(p) == {"file", "line", "field", "reason", "action", "kind"} and isinstance(p["line"], int)


def test_strict_exits_1_and_writes_no_dataset(dataset, tmp_path, capsys):
    add_pair(dataset, "zero", [("beans", 7, 3, 7, 9)])
    rc, rs, rep = cli_convert(dataset, tmp_path / "out", "--strict")
    assert rc == 1 and rs is None and rep["summary"]["problems"] == 1
    assert "--strict" in capsys.readouterr().err


def test_strict_passes_on_clean_data(dataset, tmp_path):
    rc, rs, rep = cli_convert(dataset, tmp_path / "out", "--strict")
    assert rc == 0 and len(rs) == 2 and rep["problems"] == []


def test_missing_source_exits_2_with_a_clear_message(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "nope"), "-o", str(tmp_path / "x.pkl")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: source") and "does not exist" in err and "Traceback" not in err
    assert not (tmp_path / "x.pkl").exists()


def test_folder_without_annotations_exits_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["convert", str(tmp_path / "empty"), "-o", str(tmp_path / "x.pkl")]) == 1
    assert "no annotations found" in capsys.readouterr().err


def test_refuses_to_write_over_an_input(dataset, tmp_path, capsys):
    before = tree_hashes(dataset)
    xml = dataset / "annotations" / "good1.xml"
    assert main(["convert", str(dataset), "-o", str(xml), "--quiet"]) == 1
    assert "input" in capsys.readouterr().err
    img = dataset / "images" / "good2.jpg"
    assert main(["convert", str(dataset), "-o", str(tmp_path / "d.pkl"), "--report", str(img), "--quiet"]) == 1
    assert tree_hashes(dataset) == before and not temp_leftovers(dataset)


def test_bad_classes_file_exits_2(dataset, tmp_path, capsys):
    classes = tmp_path / "c.txt"
    classes.write_text("beans\nBeans\n")
    assert main(["convert", str(dataset), "-o", str(tmp_path / "d.pkl"), "--classes", str(classes)]) == 1
    assert "differ only in case" in capsys.readouterr().err


def test_stats_split_export_verbs(dataset, tmp_path, capsys):
    for i in range(6):
        add_pair(dataset, f"x{i}", [("beans" if i % 2 else "cake", 1, 1, 9, 9)])
    ds = tmp_path / "d.pkl"
    assert main(["convert", str(dataset), "-o", str(ds), "--quiet"]) == 0
    capsys.readouterr()

    assert main(["stats", str(ds)]) == 0
    assert "images: 8  boxes: 9  classes: 2" in capsys.readouterr().out
    assert main(["stats", str(ds), "--json", "--plot", str(tmp_path / "s.png")]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["per_class"]["cake"] == {"boxes": 5, "images": 5}
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"

    assert main(["split", str(ds), "-o", str(tmp_path / "sp"), "--val", "0.25", "--seed", "3"]) == 0
    tr, va = load_dataset(tmp_path / "sp" / "train.pkl"), load_dataset(tmp_path / "sp" / "val.pkl")
    assert (len(tr), len(va)) == (6, 2) and va.meta["split"] == "val"
    assert main(["split", str(ds), "-o", str(tmp_path / "k"), "--folds", "4"]) == 0
    vals = [r.image for i in range(4) for r in load_dataset(tmp_path / "k" / f"fold{i}" / "val.pkl").records]
    assert sorted(vals) == sorted(r.image for r in load_dataset(ds).records)

    gt = tmp_path / "gt.json"
    assert main(["export-coco", str(ds), "-o", str(gt)]) == 0
    assert "8 images, 9 annotations, 2 categories" in capsys.readouterr().out
    assert main(["export-coco", str(ds), "-o", str(ds)]) == 1  # never over its input
    assert load_dataset(ds) is not None and not temp_leftovers(tmp_path)


def test_split_errors_are_user_errors(dataset, tmp_path, capsys):
    ds = tmp_path / "d.pkl"
    main(["convert", str(dataset), "-o", str(ds), "--quiet"])
    assert main(["split", str(ds), "-o", str(tmp_path / "k"), "--folds", "5"]) == 1
    assert "k-fold needs" in capsys.readouterr().err and not (tmp_path / "k").exists()
    assert main(["split", str(ds), "-o", str(tmp_path), "--val", "1.5"]) == 1
    assert main(["stats", str(tmp_path / "missing.pkl")]) == 1


def test_synth_calls_the_generator(tmp_path, monkeypatch, capsys):
    calls = []
    fake = types.ModuleType("data_tools.synth")
    fake.generate = lambda *args: calls.append(args)
    dense = types.ModuleType("data_tools.synth_dense")
    dense.generate_dense = lambda *args: calls.append(("dense", *args))
    monkeypatch.setitem(sys.modules, "data_tools.synth", fake)
    monkeypatch.setitem(sys.modules, "data_tools.synth_dense", dense)
    out = tmp_path / "syn"
    assert main(["synth", "-o", str(out), "--images", "3", "--classes", "2", "--seed", "7", "--size", "64x48"]) == 0
    assert calls == [(str(out), 3, 2, 7, (64, 48))]
    assert main(["synth", "-o", str(out), "--size", "big"]) == 1
    assert "--size must look like" in capsys.readouterr().err


def test_usage_errors_return_2(capsys):
    assert main([]) == 2
    assert main(["convert"]) == 2
    assert main(["--version"]) == 0
    assert "retail-data 0.1.0" in capsys.readouterr().out


def test_nothing_usable_exits_2_and_still_writes_the_report(tmp_path, capsys):
    root = tmp_path / "ds"
    add_pair(root, "ghost", [("beans", 1, 1, 5, 5)], image_size=False)
    out, report = tmp_path / "d.pkl", tmp_path / "r.json"
    assert main(["convert", str(root), "-o", str(out), "--report", str(report), "--quiet"]) == 1
    assert "no usable images" in capsys.readouterr().err
    assert not out.exists() and json.loads(report.read_text())["problems"][0]["kind"] == "missing_image"
