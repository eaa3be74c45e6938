"""``retail-data`` outputs never replace one of the command's inputs or a file of another kind, and the
checks run before any work; ``synth --size`` is bounded; exit codes are documented in ``--help``."""

from __future__ import annotations

import json
import os
import sys
import types

import pytest
from dt_helpers import add_pair, make_image, tree_hashes, voc_xml

import detect.verbs.retail_data as cli
from data_tools.store import load_dataset
from detect.verbs.retail_data import main


@pytest.fixture
def no_convert(monkeypatch):
    """Fail the test if ``convert`` starts: refusals must come before any work."""
    def boom(*a, **k):
        raise AssertionError("convert ran before the output was refused")
    monkeypatch.setattr(cli, "convert", boom)


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_convert_refuses_the_image_of_a_skipped_record(dataset, tmp_path, capsys, no_convert):
    add_pair(dataset, "broken", xml="<annotation><filename>broken.jpg</filename>")  # malformed: skipped
    before = tree_hashes(dataset)
    assert main(["convert", str(dataset), "-o", str(dataset / "images" / "broken.jpg"), "--quiet"]) == 1
    err = _err(capsys)
    assert "broken.jpg" in err and "JPEG image" in err
    assert tree_hashes(dataset) == before


def test_convert_refuses_an_existing_file_of_another_kind(dataset, tmp_path, capsys, no_convert):
    pt = tmp_path / "model.pt"
    pt.write_bytes(b"PK\x03\x04" + b"\x00" * 60)  # a zip, as torch.save writes
    assert main(["convert", str(dataset), "-o", str(pt), "--quiet"]) == 1
    assert "model.pt" in _err(capsys) and pt.read_bytes().startswith(b"PK")
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    assert main(["convert", str(dataset), "-o", str(tmp_path / "d.pkl"), "--report", str(notes), "--quiet"]) == 1
    assert "notes.json" in _err(capsys) and notes.read_text() == '{"mine": 1}'


def test_convert_refuses_a_hard_link_to_the_coco_json(tmp_path, capsys, no_convert):
    root = tmp_path / "coco"
    make_image(root / "a.jpg")
    gt = root / "gt.json"
    gt.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [],
                              "categories": [{"id": 1, "name": "x"}]}))
    (tmp_path / "elsewhere").mkdir()
    os.link(gt, tmp_path / "elsewhere" / "gt.json")
    before = gt.read_bytes()
    assert main(["convert", str(gt), "-o", str(tmp_path / "elsewhere" / "gt.json")]) == 1
    assert "input" in _err(capsys) and gt.read_bytes() == before


def test_convert_replaces_its_own_previous_dataset(dataset, tmp_path):
    out = dataset / "dataset.pkl"  # inside the source folder, as `synth` suggests
    assert main(["convert", str(dataset), "-o", str(out), "--quiet", "--report", str(tmp_path / "r.json")]) == 0
    assert main(["convert", str(dataset), "-o", str(out), "--quiet", "--report", str(tmp_path / "r.json")]) == 0
    assert len(load_dataset(out)) == 2


def _dataset_file(dataset, tmp_path):
    ds = tmp_path / "d.pkl"
    assert main(["convert", str(dataset), "-o", str(ds), "--quiet"]) == 0
    return ds


def test_split_refuses_to_replace_foreign_files(dataset, tmp_path, capsys):
    ds = _dataset_file(dataset, tmp_path)
    out = tmp_path / "split"
    out.mkdir()
    (out / "val.pkl").write_text("my notes")
    capsys.readouterr()
    assert main(["split", str(ds), "-o", str(out)]) == 1
    assert "val.pkl" in _err(capsys) and (out / "val.pkl").read_text() == "my notes"
    assert not (out / "train.pkl").exists()
    (tmp_path / "afile").write_text("x")
    assert main(["split", str(ds), "-o", str(tmp_path / "afile")]) == 1
    assert "is a file" in _err(capsys)


@pytest.mark.parametrize("folds", ["1", "-3", "1000000000"])
def test_split_folds_are_bounded(dataset, tmp_path, capsys, folds):
    ds = _dataset_file(dataset, tmp_path)
    capsys.readouterr()
    assert main(["split", str(ds), "-o", str(tmp_path / "k"), f"--folds={folds}"]) == 1
    assert "--folds must be between 2 and" in _err(capsys) and not (tmp_path / "k").exists()


def test_export_coco_refuses_the_annotations_the_dataset_came_from(tmp_path, capsys):
    root = tmp_path / "coco"
    make_image(root / "a.jpg", (40, 30))
    gt = root / "gt.json"
    gt.write_text(json.dumps({"images": [{"id": 7, "file_name": "a.jpg"}], "categories": [{"id": 3, "name": "x"}],
                              "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [1, 1, 5, 5]}]}))
    ds = tmp_path / "d.pkl"
    assert main(["convert", str(gt), "-o", str(ds), "--quiet"]) == 0
    capsys.readouterr()
    before = gt.read_bytes()
    assert main(["export-coco", str(ds), "-o", str(gt)]) == 1
    assert "converted from" in _err(capsys) and gt.read_bytes() == before
    assert main(["export-coco", str(ds), "-o", str(root / "a.jpg")]) == 1
    _err(capsys)
    assert main(["export-coco", str(ds), "-o", str(tmp_path / "gt2.json")]) == 0
    assert main(["export-coco", str(ds), "-o", str(tmp_path / "gt2.json")]) == 0  # its own output: replaced


def test_stats_plot_refuses_a_dataset_image_and_foreign_files(tmp_path, capsys):
    root = tmp_path / "ds"
    add_pair(root, "p", [("beans", 1, 1, 5, 5)], ext=".png")
    ds = tmp_path / "d.pkl"
    assert main(["convert", str(root), "-o", str(ds), "--quiet"]) == 0
    photo = root / "images" / "p.png"
    before = photo.read_bytes()
    capsys.readouterr()
    assert main(["stats", str(ds), "--plot", str(photo)]) == 1
    assert "p.png" in _err(capsys) and photo.read_bytes() == before
    other = tmp_path / "holiday.png"
    make_image(other, fmt="PNG")
    assert main(["stats", str(ds), "--plot", str(other)]) == 1
    _err(capsys)
    assert main(["stats", str(ds), "--plot", str(tmp_path / "s.png")]) == 0
    assert main(["stats", str(ds), "--plot", str(tmp_path / "s.png")]) == 0  # its own plot: replaced


def test_stats_json_printed_or_written(tmp_path, capsys):
    """``--json`` alone prints JSON (also before the dataset, the old spelling); ``--json FILE`` writes it there,
    replacing only an earlier statistics file."""
    root = tmp_path / "ds"
    add_pair(root, "p", [("beans", 1, 1, 5, 5)], ext=".png")
    ds = tmp_path / "d.pkl"
    assert main(["convert", str(root), "-o", str(ds), "--quiet"]) == 0
    capsys.readouterr()
    for argv in (["stats", str(ds), "--json"], ["stats", "--json", str(ds)]):
        assert main(argv) == 0
        assert json.loads(capsys.readouterr().out)["boxes"] == 1
    out = tmp_path / "stats.json"
    for _ in range(2):  # the second run replaces its own file
        assert main(["stats", str(ds), "--json", str(out)]) == 0
        printed = capsys.readouterr().out
        assert json.loads(out.read_text())["images"] == 1 and f"json: {out}" in printed and not printed.startswith("{")
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    assert main(["stats", str(ds), "--json", str(notes)]) == 1
    assert "notes.json" in _err(capsys) and notes.read_text() == '{"mine": 1}'
    assert main(["stats", "--json"]) == 2
    assert capsys.readouterr().err.startswith("usage: retail-data stats")


@pytest.fixture
def calls(monkeypatch) -> list:
    """Replace the generator by a recorder (these tests check the CLI, not the drawing)."""
    seen: list = []
    fake = types.ModuleType("data_tools.synth")
    fake.generate = lambda *args: seen.append(args)
    dense = types.ModuleType("data_tools.synth_dense")
    dense.generate_dense = lambda *args: seen.append(("dense", *args))
    monkeypatch.setitem(sys.modules, "data_tools.synth", fake)
    monkeypatch.setitem(sys.modules, "data_tools.synth_dense", dense)
    return seen


def test_synth_refuses_a_folder_that_is_not_a_synth_output(tmp_path, capsys, calls):
    mine = tmp_path / "my_labels"
    (mine / "images").mkdir(parents=True)
    (mine / "classes.txt").write_text("milk\nbread\n")
    assert main(["synth", "-o", str(mine), "--images", "2"]) == 1
    assert "my_labels" in _err(capsys) and calls == []
    prev = tmp_path / "prev"
    (prev / "images").mkdir(parents=True)
    (prev / "classes.txt").write_text("brand_a\nbrand_b\n")
    (prev / "dataset.pkl").write_bytes(b"")
    assert main(["synth", "-o", str(prev), "--images", "2"]) == 0 and len(calls) == 1
    (tmp_path / "f").write_text("x")
    assert main(["synth", "-o", str(tmp_path / "f")]) == 1
    _err(capsys)
    linked = tmp_path / "linked"  # a classes.txt linked to a synth output's elsewhere does not make it one
    (linked / "images").mkdir(parents=True)
    os.symlink(prev / "classes.txt", linked / "classes.txt")
    assert main(["synth", "-o", str(linked), "--images", "2"]) == 1 and len(calls) == 1
    assert "linked" in _err(capsys)


@pytest.mark.parametrize("args, message", [
    (["--size", "100000x100000"], "too large"), (["--size", "5000x100"], "too large"),
    (["--size", "0x0"], "too small"), (["--size=-5x64"], "too small"), (["--size", "64x"], "must look like"),
    (["--images", "0"], "--images"), (["--images", "10000000"], "--images"), (["--classes", "100000"], "--classes"),
])
def test_synth_bounds(tmp_path, capsys, calls, args, message):
    assert main(["synth", "-o", str(tmp_path / "s"), *args]) == 1
    assert message in _err(capsys) and not (tmp_path / "s").exists() and calls == []


def test_help_documents_the_exit_codes(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for code in ("0 ", "1 ", "2 ", "130 ", "141 "):
        assert f"\n  {code}" in out, code


def test_broken_pipe_exits_141(monkeypatch, tmp_path):
    def pipe(args):
        raise BrokenPipeError
    monkeypatch.setattr(cli, "cmd_stats", pipe)
    monkeypatch.setattr(os, "dup2", lambda *a: None)  # keep pytest's captured stdout
    assert main(["stats", str(tmp_path / "x.pkl")]) == 141


def test_inputs_unchanged_after_refusals(dataset, tmp_path, capsys):
    """A VOC XML as -o: refused before work (it exists and is not a dataset); nothing changed."""
    before = tree_hashes(dataset)
    (dataset / "annotations" / "extra.xml").write_text(voc_xml("good1.jpg"))
    assert main(["convert", str(dataset), "-o", str(dataset / "annotations" / "extra.xml"), "--quiet"]) == 1
    _err(capsys)
    assert {k: v for k, v in tree_hashes(dataset).items() if "extra" not in k} == before


def test_synth_size_one_side_is_a_square(tmp_path, calls):
    assert main(["synth", "--out", str(tmp_path / "s"), "--images", "2", "--size", "64"]) == 0
    assert calls == [(str(tmp_path / "s"), 2, 5, 0, (64, 64))]


@pytest.mark.parametrize("fmt,name", [("csv", "gt.csv"), ("cvat", "gt.xml"), ("labelstudio", "gt.json"),
                                      ("coco", "gt.json")])
def test_single_file_export_replaces_only_an_unchanged_earlier_export(dataset, tmp_path, capsys, fmt, name):
    """A hand-corrected export looks like an earlier export but is refused; unchanged, it is replaced."""
    ds = _dataset_file(dataset, tmp_path)
    out = tmp_path / "out" / name
    verb = ["export-coco", str(ds), "-o", str(out)] if fmt == "coco" else ["export", str(ds), "--format", fmt,
                                                                              "-o", str(out)]
    assert main(verb) == 0 and main(verb) == 0  # an unchanged earlier export is replaced
    capsys.readouterr()
    corrected = out.read_bytes() + b"\n"  # any change by hand
    out.write_bytes(corrected)
    assert main(verb) == 1
    err = _err(capsys)
    assert f"refusing to overwrite {out}: it looks like" in err and "changed since it was written" in err
    assert "choose another name, or delete it" in err and out.read_bytes() == corrected
    sidecar = tmp_path / "out" / f".{name}.sha256"
    sidecar.unlink()  # an export with no checksum beside it (an older version's, or copied in): refused too
    assert main(verb) == 1 and "no .gt" in _err(capsys) and out.read_bytes() == corrected
    out.unlink()
    sidecar.write_text("my own notes\n")  # a file of the user's at the checksum's name is not replaced either
    assert main(verb) == 1 and "not a checksum" in _err(capsys) and sidecar.read_text() == "my own notes\n"
    sidecar.unlink()
    assert main(verb) == 0 and out.is_file()  # deleted: exported again
