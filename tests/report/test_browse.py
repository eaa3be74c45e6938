"""``retail-data browse``: planted label mistakes come first, class filter, augmented samples, fresh folders."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_tools.records import Record, RecordSet
from data_tools.store import save_dataset
from data_tools.synth import make_tiny_dataset
from detect.report.browse import browse, find_problems
from detect.verbs.retail_data import main as data_main

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "yolo.yaml"


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> RecordSet:
    """6 synthetic shelves; image 1 has a box labelled twice, image 2 a tiny box, image 5 is a copy of image 0."""
    root = tmp_path_factory.mktemp("browse")
    rs = make_tiny_dataset(root, images=5, classes=2, seed=1, size=(96, 80))
    r1 = rs.records[1]
    r1.boxes = np.concatenate([r1.boxes, r1.boxes[:1] + 0.1]).astype(np.float32)
    r1.labels = np.concatenate([r1.labels, r1.labels[:1]])
    r1.difficult = np.zeros(len(r1.labels), bool)
    r1.truncated = np.zeros(len(r1.labels), bool)
    r2 = rs.records[2]
    r2.boxes[0] = [40, 40, 44, 45]
    copy = Path(rs.image_root) / "images" / "copy.jpg"
    shutil.copy(Path(rs.image_root) / rs.records[0].image, copy)
    r0 = rs.records[0]
    rs.records.append(Record("images/copy.jpg", r0.width, r0.height, r0.boxes, r0.labels))
    return rs


def test_problems_are_found(planted):
    entries = find_problems(planted)
    kinds = [{i.kind for i in e.issues} for e in entries]
    assert "duplicate_box" in kinds[1] and "tiny_box" in kinds[2]
    assert "duplicate_image" in kinds[0] and "duplicate_image" in kinds[5]
    assert not {"duplicate_box", "tiny_box", "duplicate_image"} & (kinds[3] | kinds[4])


def test_page_problems_first_filters_and_augmentation(planted, tmp_path):
    r = browse(planted, tmp_path / "b", augment=RECIPE, samples=2, log=lambda s: None)
    d = Path(r["out_dir"])
    html = (d / "index.html").read_text()
    cards = re.findall(r'<div class="card" data-classes="([^"]*)" data-problems="([^"]*)"', html)
    assert len(cards) == 6
    order = re.findall(r'<div class="cap">([^<]+) - ', html)
    assert set(order[:3]) == {planted.records[i].image for i in (0, 1, 5)}  # the duplicates, most severe
    assert order[3] == planted.records[2].image  # then the tiny box
    for src in re.findall(r'src="([^"]+)"', html):
        with Image.open(d / src) as im:
            assert im.size[0] >= 96
    augmented = sorted((d / "augment").iterdir())
    assert len(augmented) == 12
    with Image.open(augmented[0]) as im:
        assert im.size == (320, 320)  # the recipe's image size, not enlarged
    assert r["problems"]["duplicate_box"] == 1 and r["problems"]["tiny_box"] == 1
    assert browse(planted, tmp_path / "b", max_images=2, log=lambda s: None)["out_dir"] == str(tmp_path / "b2")


def test_class_filter_and_bad_input(planted, tmp_path):
    only_b = browse(planted, tmp_path / "c", classes=["brand_b"], log=lambda s: None)
    assert only_b["shown"] == sum(2 in r.labels for r in planted.records)
    with pytest.raises(ValueError, match="unknown class nope; the dataset has brand_a, brand_b"):
        browse(planted, tmp_path / "d", classes=["nope"])
    with pytest.raises(ValueError, match="inside the input folder"):
        browse(planted, Path(planted.image_root) / "out")
    assert not (tmp_path / "d").exists()


def test_cli(planted, tmp_path, capsys):
    pkl = tmp_path / "ds.pkl"
    save_dataset(planted, pkl)
    assert data_main(["browse", str(pkl), "-o", str(tmp_path / "page"), "--max", "3"]) == 0
    out = capsys.readouterr().out
    assert "3 of 6 images drawn" in out and "duplicate_box 1" in out
    assert (tmp_path / "page" / "index.html").is_file()
    assert data_main(["browse", str(pkl), "-o", str(tmp_path / "x"), "--classes", "zzz"]) == 1
    assert "unknown class zzz" in capsys.readouterr().err
    proc = subprocess.run([sys.executable, "-m", "detect.verbs.retail_data", "browse", "--help"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert proc.returncode == 0 and "--augment" in proc.stdout  # `python -m detect.verbs.retail_data` runs the CLI


def test_unreadable_image_is_listed_and_the_rest_drawn(planted, tmp_path):
    bad = Path(planted.image_root) / "images" / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    rs = RecordSet(planted.class_names, planted.image_root,
                   [*planted.records[:2], Record("images/broken.jpg", 96, 80, planted.records[0].boxes,
                                                 planted.records[0].labels)])
    said: list[str] = []
    r = browse(rs, tmp_path / "u", log=said.append)
    assert r["unreadable"] == ["images/broken.jpg"] and r["shown"] == 3
    assert len(said) == 1 and "broken.jpg" in said[0]
    html = (Path(r["out_dir"]) / "index.html").read_text()
    assert re.findall(r'<div class="cap">([^<]+) - ', html)[0] == "images/broken.jpg"  # first on the page
    assert len(list((Path(r["out_dir"]) / "images").iterdir())) == 2


def test_a_browse_that_fails_midway_leaves_nothing_and_the_rerun_writes_the_same_folder(planted, tmp_path,
                                                                                       monkeypatch):
    import errno

    from data_tools.atomic import WriteError
    from detect.report import browse as browse_mod

    def full(*a, **k):
        raise WriteError(errno.ENOSPC, "no space left writing index.html")

    with monkeypatch.context() as m:
        m.setattr(browse_mod, "render", full)  # every drawing written, then the disk is full
        with pytest.raises(WriteError):
            browse(planted, tmp_path / "page", log=lambda s: None)
    assert sorted(tmp_path.iterdir()) == []  # no half-written page, no hidden leftovers
    r = browse(planted, tmp_path / "page", log=lambda s: None)
    assert r["out_dir"] == str(tmp_path / "page") and (tmp_path / "page" / "index.html").is_file()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    r = browse(planted, mine, log=lambda s: None)
    assert r["out_dir"] == str(tmp_path / "mine2") and [p.name for p in mine.iterdir()] == ["notes.txt"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_an_image_replaced_by_a_fifo_is_listed_not_waited_for(planted, tmp_path):
    """The duplicate-image hash opens only regular files: a FIFO would block forever on open()."""
    root = tmp_path / "root"
    shutil.copytree(planted.image_root, root)
    fifo = root / planted.records[1].image
    fifo.unlink()
    os.mkfifo(fifo)
    rs = RecordSet(planted.class_names, str(root), list(planted.records))
    said: list[str] = []
    r = browse(rs, tmp_path / "f", log=said.append)
    assert r["unreadable"] == [planted.records[1].image] and r["shown"] == len(rs.records)
    assert any("FIFO" in s for s in said)


def test_samples_are_bounded(planted, tmp_path, capsys):
    from detect.report.browse import MAX_SAMPLES

    with pytest.raises(ValueError, match=f"between 1 and {MAX_SAMPLES}"):
        browse(planted, tmp_path / "s", augment=RECIPE, samples=1_000_000)
    pkl = tmp_path / "ds.pkl"
    save_dataset(planted, pkl)
    assert data_main(["browse", str(pkl), "-o", str(tmp_path / "s"), "--samples", "1000000"]) == 1
    assert f"--samples must be between 1 and {MAX_SAMPLES}, not 1000000" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
