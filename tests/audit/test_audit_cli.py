"""`retail-detect audit` end to end: a tiny detector, a tiny plan, synthetic photos with a truth file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import pytest

from data_tools.synth_planogram import generate_planogram
from detect.cli import main

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"
PLAN = """\
bays:
  - name: left
    match: "left_*"
    rows:
      - [{sku: brand_a, facings: 3}, {sku: brand_b, facings: 3}]
      - [{sku: brand_b, facings: 2}, {sku: brand_a, facings: 4}]
"""


@pytest.fixture(scope="module")
def setup(tiny_split, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("audit")
    assert main(["train", "--config", str(SMOKE), f"data.train={tiny_split['train']}", f"data.val={tiny_split['val']}",
                 "data.image_size=64", "train.epochs=1", f"train.out_dir={root / 'run'}"]) == 0
    plan = root / "plan.yaml"
    plan.write_text(PLAN)
    generate_planogram(root / "shelves", plan, images=3, classes=2, seed=0, size=(160, 120), out_of_stock=0.1, misplace=0.1)
    big = root / "big" / "left_big.jpg"  # a large photo: tiled
    big.parent.mkdir()
    img = cv2.imread(str(root / "shelves" / "images" / "left_0001.jpg"))
    cv2.imwrite(str(big), cv2.resize(img, (512, 384)))
    return {"root": root, "weights": root / "run" / "best.pt", "plan": plan, "photos": root / "shelves" / "images",
            "truth": root / "shelves" / "truth.json", "big": big}


def _audit(s: dict, out: Path, *extra: str, more: tuple[Path, ...] = ()) -> list[str]:
    return ["audit", "--weights", str(s["weights"]), str(s["photos"]), *map(str, more), "--out", str(out),
            "--conf", "0.05", "--device", "cpu", *extra]


def test_audit_with_plan_and_truth_writes_every_output(setup, tmp_path, capsys):
    out = tmp_path / "audit"
    # --tile on with 256 px tiles: only the 512 x 384 photo is larger than one tile (auto finds its products large)
    assert main(_audit(setup, out, "--planogram", str(setup["plan"]), "--truth", str(setup["truth"]), "--tile", "on",
                       "--tile-size", "256", "--overlap", "0.3", more=(setup["big"],))) == 0
    printed = capsys.readouterr().out
    assert "audited 4 photos (0 skipped, 1 tiled)" in printed and "gap recall" in printed
    doc = json.loads((out / "audit.json").read_text())
    assert doc["format"] == "retail-detect-audit" and len(doc["photos"]) == 4
    assert doc["accuracy"]["photos"] == 3 and doc["accuracy"]["not_in_truth"] == [str(setup["big"])]
    for p in doc["photos"]:
        assert p["bay"] == "left" and p["planned"] == 12 and 0.0 <= p["compliance"] <= 1.0
        assert (out / p["drawn"]).is_file()
    assert [p["tiles"] > 0 for p in doc["photos"]] == [False, False, False, True]
    assert doc["options"]["tile"] == {"mode": "on", "size": 256, "overlap": 0.3}
    assert doc["photos"][0]["tile_reason"] == "fits one tile" and doc["photos"][3]["tiles"] == 6  # 3 x 2 windows
    with open(out / "audit.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and set(rows[0]) >= {"image", "row", "sku", "planned", "present", "missing", "misplaced", "width_px"}
    planned = sum(int(r["planned"]) for r in rows if r["image"] == doc["photos"][0]["path"])
    assert planned == 12
    html = (out / "report.html").read_text()
    assert "Photos, worst first" in html and "gap recall" in html and 'src="images/' in html


def test_second_run_goes_to_a_new_folder_and_foreign_folders_are_refused(setup, tmp_path, capsys):
    out = tmp_path / "audit"
    assert main(_audit(setup, out, "--no-draw")) == 0
    first = (out / "audit.json").read_text()
    assert main(_audit(setup, out, "--no-draw")) == 0
    assert (out / "audit.json").read_text() == first and (tmp_path / "audit2" / "audit.json").is_file()
    assert "audit2/audit.json" in capsys.readouterr().out
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert main(_audit(setup, mine)) == 1
    assert "holds no earlier audit" in capsys.readouterr().err and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert main(_audit(setup, setup["photos"] / "out")) == 1
    assert "inside the input folder" in capsys.readouterr().err


def test_without_a_plan_rows_gaps_and_share_still_come_out(setup, tmp_path, capsys):
    out = tmp_path / "free"
    assert main(_audit(setup, out)) == 0
    assert "without a planogram" in capsys.readouterr().out
    doc = json.loads((out / "audit.json").read_text())
    assert all(p["compliance"] is None and "share" in p for p in doc["photos"])


def test_bad_plans_are_one_line_each(setup, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(PLAN.replace("brand_b, facings: 2", "brand_x, facings: 2"))
    assert main(_audit(setup, tmp_path / "o", "--planogram", str(bad))) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {bad}:6: unknown SKU 'brand_x' (bay 'left' row 2 item 1); the detector's classes: "
                           "brand_a, brand_b")
    bad.write_text("bays: [\n")
    assert main(_audit(setup, tmp_path / "o", "--planogram", str(bad))) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {bad}:2: malformed YAML")
    assert not (tmp_path / "o").exists()


def test_read_only_output_folder_is_one_line_naming_it_before_the_model_loads(tmp_path, capsys, monkeypatch):
    """No errno text, no absolute path, no model loaded (the weights here do not even exist)."""
    import errno
    import os

    from data_tools import atomic

    photo = tmp_path / "photos" / "left_1.jpg"
    photo.parent.mkdir()
    cv2.imwrite(str(photo), cv2.UMat(8, 8, cv2.CV_8UC3).get())

    def mkstemp(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", os.path.join(k.get("dir", "."), ".x.rdtmp-ab.tmp"))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", mkstemp)
    monkeypatch.chdir(tmp_path)
    assert main(["audit", "--weights", "missing.pt", "photos", "--out", "ro/audit", "--device", "cpu"]) == 1
    assert capsys.readouterr().err == "error: cannot write to ro/audit: permission denied\n"
