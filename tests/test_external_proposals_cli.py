"""Fast R-CNN's original setting from the command line: train, eval and predict on external proposals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from data_tools.store import load_dataset
from detect.cli import main

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "fast_rcnn.yaml"


def _gt_proposals(split: dict, path: Path) -> Path:
    """Proposals = the ground-truth boxes (original pixels), keyed by the records' relative image paths."""
    table = {}
    for name in ("train", "val"):
        for r in load_dataset(split[name]).records:
            table[r.image] = [[float(v) for v in box] for box in r.boxes]
    path.write_text(json.dumps(table))
    return path


def test_train_eval_predict_on_external_proposals(tiny_split, tmp_path, capsys):
    props = _gt_proposals(tiny_split, tmp_path / "props.json")
    out = tmp_path / "run"
    args = ["train", "--config", str(RECIPE), f"data.train={tiny_split['train']}", f"data.val={tiny_split['val']}",
            "data.image_size=64", "data.workers=0", "train.batch_size=3", "train.epochs=1", "train.ema=false",
            f"data.proposals={props}", f"train.out_dir={out}"]  # the recipe's flips and affines move them too
    assert main(args) == 0
    assert "best val AP" in capsys.readouterr().out

    # The checkpoint has no RPN: predicting without proposals is a clear error, not a crash.
    images = tiny_split["root"] / "images"
    assert main(["predict", "--weights", str(out / "best.pt"), str(images), "--out", str(tmp_path / "p0"),
                 "--device", "cpu"]) == 1
    assert "trained on external proposals" in capsys.readouterr().err

    assert main(["eval", "--weights", str(out / "best.pt"), "--data", str(tiny_split["val"]), "--proposals",
                 str(props), "--json", str(tmp_path / "eval.json"), "--device", "cpu"]) == 0
    best = json.loads((out / "summary.json").read_text())["best_map"]
    assert json.loads((tmp_path / "eval.json").read_text())["AP"] == pytest.approx(best, abs=1e-6)

    # An image the proposals file does not name is reported and skipped; the others are predicted.
    extra = tmp_path / "more" / "not_in_file.jpg"
    extra.parent.mkdir()
    shutil.copy(next(images.rglob("*.jpg")), extra)
    pred_dir = tmp_path / "pred"
    assert main(["predict", "--weights", str(out / "best.pt"), str(images), str(extra), "--out", str(pred_dir),
                 "--proposals", str(props), "--conf", "0.0", "--device", "cpu", "--no-draw"]) == 0
    pred = json.loads((pred_dir / "predictions.json").read_text())
    assert pred["summary"]["images"] == 8 and pred["summary"]["errors"] == 1
    assert "not_in_file.jpg" in json.dumps(pred["errors"]) and "no proposals" in json.dumps(pred["errors"])
    assert pred["proposals"] == str(props)
    assert sum(e["num_detections"] for e in pred["images"]) > 0


def test_proposals_file_errors_name_the_file_and_key(tiny_split, tmp_path, capsys):
    from detect.data.proposals import ProposalsError, ProposalsForFiles

    bad = tmp_path / "bad.json"
    bad.write_text('{"a.jpg": [[10, 10, 5, 20]]}')
    with pytest.raises(ProposalsError) as bad_box:  # a box with x2 < x1 is refused
        ProposalsForFiles(bad).boxes_for("x/a.jpg", "a.jpg", 100, 100)
    assert "bad.json" in str(bad_box.value) and "'a.jpg'" in str(bad_box.value) and "x2 > x1" in str(bad_box.value)
    broken = tmp_path / "broken.json"
    broken.write_text('{"a.jpg": [[1, 2, 3, 4]],\n oops}')
    with pytest.raises(ProposalsError) as bad_json:  # invalid JSON is refused
        ProposalsForFiles(broken)
    assert "broken.json:2: invalid JSON" in str(bad_json.value)
