"""`retail-detect tune` (grid, k-fold, skip finished runs) and `retail-detect compare` (three detectors)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from detect.cli import main
from detect.tune import combo_name, parse_grid

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["data.image_size=64", "data.workers=0", "train.batch_size=4", "train.max_steps=0"]


def test_parse_grid_and_names():
    grid = parse_grid(["train.lr=0.1,0.01", "train.optimizer=sgd,adamw", "model.frozen_bn=true"])
    assert grid == {"train.lr": [0.1, 0.01], "train.optimizer": ["sgd", "adamw"], "model.frozen_bn": [True]}
    assert combo_name({"train.lr": 0.01, "train.momentum": 0.9}) == "lr=0.01_momentum=0.9"


def test_tune_kfold_ranks_and_skips_finished_runs(tiny_split, tmp_path, capsys):
    out = tmp_path / "tune"
    args = ["tune", "--config", str(ROOT / "configs" / "smoke.yaml"), "--grid", "train.lr=0.01,0.001",
            "--folds", "2", "--epochs", "1", "--out", str(out), f"data.train={tiny_split['train']}", *SMALL]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "2 combinations x 2 fold(s) = 4 runs; 0 already finished" in printed
    rows = list(csv.DictReader((out / "tune_results.csv").open()))
    assert [r["rank"] for r in rows] == ["1", "2"] and {r["train.lr"] for r in rows} == {"0.01", "0.001"}
    assert float(rows[0]["AP"]) >= float(rows[1]["AP"]) and all(r["runs"] == "2" for r in rows)
    assert (out / "lr=0.01" / "fold1" / "best.pt").is_file()
    assert main(args) == 0
    assert "4 already finished" in capsys.readouterr().out


def test_compare_trains_all_three_on_one_split(tiny_split, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--train", str(tiny_split["train"]), "--val", str(tiny_split["val"]),
                 "--budget-minutes", "0.05", "--out", str(out), "--device", "cpu", "--configs", str(ROOT / "configs"),
                 *SMALL, "train.ema=false", "train.eval_every=100"]) == 0
    result = json.loads((out / "compare.json").read_text())
    assert [r["model"] for r in result["rows"]] == ["ssd", "fast_rcnn", "yolo"]
    for r in result["rows"]:
        assert 0.0 <= r["AP"] <= 1.0 and r["latency_ms_b1"] > 0 and r["train_img_s"] > 0 and r["epochs"] >= 1
    assert (out / "compare.png").stat().st_size > 1000 and (out / "compare.csv").is_file()
    assert "ms/img b1" in capsys.readouterr().out
