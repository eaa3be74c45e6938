"""``retail-data synth --dense``: many small packed products, look-alike brands; the default shelves unchanged."""

from __future__ import annotations

import hashlib

import numpy as np

from data_tools.store import load_dataset
from data_tools.synth import make_tiny_dataset
from data_tools.synth_dense import GROUP, dense_brand_styles, make_dense_dataset
from detect.verbs.retail_data import main

# the default generator's boxes and labels before the dense option existed (3 images, 5 classes, seed 0, 320x240)
DEFAULT_BOXES, DEFAULT_DIGEST = 26, "4e422c3f187730f413f15acbf6cd39c2100f3e1b7827ae3719d3cde0bc08c7fe"


def test_default_shelves_are_unchanged(tmp_path):
    rs = make_tiny_dataset(tmp_path, images=3, classes=5, seed=0, size=(320, 240))
    digest = hashlib.sha256(b"".join(r.boxes.tobytes() + r.labels.tobytes() for r in rs.records)).hexdigest()
    assert sum(len(r.boxes) for r in rs.records) == DEFAULT_BOXES and digest == DEFAULT_DIGEST


def test_dense_shelves_hold_many_small_packed_products_with_bottles(tmp_path):
    rs = make_dense_dataset(tmp_path, images=6, classes=12, seed=0, size=(640, 640))
    counts = [len(r.boxes) for r in rs.records]
    assert all(25 <= n <= 110 for n in counts) and np.mean(counts) >= 40, counts
    boxes = np.concatenate([r.boxes for r in rs.records])
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert np.median(np.sqrt(w * h)) < 0.12 * 640  # small: a median product is under 12 % of the photo side
    assert (w / h < 0.4).mean() > 0.3  # thin tall bottles
    labels = np.concatenate([r.labels for r in rs.records])
    assert set(labels.tolist()) == set(range(1, 13))
    for r in rs.records:  # packed, but neighbours on a board (same bottom edge) never overlap
        rows = {}
        for b in r.boxes:
            rows.setdefault(round(float(b[3])), []).append(b)
        for row in rows.values():
            xs = sorted((float(b[0]), float(b[2])) for b in row)
            assert all(x1 >= x0_prev - 1e-3 for (_, x0_prev), (x1, _) in zip(xs, xs[1:]))


def test_dense_brands_come_in_look_alike_groups():
    brands = dense_brand_styles(9)
    for g in range(0, 9, GROUP):
        group = brands[g:g + GROUP]
        assert len({(b.shape, b.aspect, b.height) for b in group}) == 1  # same silhouette
        assert len({b.pattern for b in group}) == GROUP and len({b.text for b in group}) == GROUP  # told apart by the label
    assert brands[0].body != brands[GROUP].body


def test_cli_dense_defaults_and_refusals(tmp_path, capsys):
    out = tmp_path / "dense"
    assert main(["synth", "--dense", "-o", str(out), "--images", "2", "--seed", "1"]) == 0
    text = capsys.readouterr().out
    assert "wrote 2 dense synthetic images (12 classes, 640x640)" in text and "per image" in text
    assert main(["convert", str(out), "-o", str(tmp_path / "d.pkl"), "--classes", str(out / "classes.txt"), "--quiet"]) == 0
    rs = load_dataset(tmp_path / "d.pkl")
    assert len(rs.class_names) == 12 and (rs.records[0].width, rs.records[0].height) == (640, 640)
    truth = make_dense_dataset(tmp_path / "truth", images=2, classes=12, seed=1)
    for got, want in zip(sorted(rs.records, key=lambda r: r.image), truth.records):
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_allclose(got.boxes, want.boxes)
    capsys.readouterr()
    assert main(["synth", "--dense", "--planogram", "configs/planogram_example.yaml", "-o", str(tmp_path / "p")]) == 1
    assert "--dense and --planogram" in capsys.readouterr().err


def test_two_hundred_and_more_dense_brands_are_distinct_looks():
    """Groups repeat their (shape, hue family) every CYCLE groups: past the first 60 brands the accent, pattern
    order and aspect move, so 240 brands are 240 looks even without their letter; the first 60 are as before."""
    brands = dense_brand_styles(240)
    looks = {(b.shape, b.aspect, b.height, b.body, b.label, b.accent, b.pattern) for b in brands}
    assert len(looks) == 240 and len({b.name for b in brands}) == 240
    assert (brands[0].aspect, brands[0].pattern, brands[0].accent) == (0.3, "hstripes", (140, 105, 14))
    for g in range(0, 240, GROUP):  # still look-alike groups of three
        assert len({(b.shape, b.aspect, b.height) for b in brands[g:g + GROUP]}) == 1
