"""Issue 24, item 1: the product detector switch ``data.class_agnostic`` (every class merged into ``product``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from data_tools.records import PRODUCT_CLASS, merge_classes
from data_tools.store import load_dataset
from data_tools.synth import make_tiny_dataset
from detect.cli import main
from detect.config import ConfigError, config_from_dict, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SMOKE = CONFIGS / "smoke.yaml"


def test_merge_classes_keeps_boxes_and_leaves_the_input_alone(tmp_path):
    rs = make_tiny_dataset(tmp_path, images=3, classes=3, seed=1, size=(96, 80))
    before = [(r.boxes.copy(), r.labels.copy()) for r in rs.records]
    assert len({int(k) for r in rs.records for k in r.labels}) > 1  # the fixture has several classes
    merged = merge_classes(rs)
    assert merged.class_names == [PRODUCT_CLASS] == ["product"] and merged is not rs
    assert merged.image_root == rs.image_root and len(merged) == len(rs)
    for m, r, (boxes, labels) in zip(merged.records, rs.records, before):
        assert m.labels.dtype == np.int64 and m.labels.tolist() == [1] * len(r.boxes)
        np.testing.assert_array_equal(m.boxes, r.boxes)
        assert (m.image, m.width, m.height, m.split) == (r.image, r.width, r.height, r.split)
        np.testing.assert_array_equal(r.boxes, boxes)  # the input is not mutated
        np.testing.assert_array_equal(r.labels, labels)
        assert m.boxes is not r.boxes
    assert rs.class_names == ["brand_a", "brand_b", "brand_c"]
    assert merged.meta["merged_classes"] == rs.class_names and "merged_classes" not in rs.meta


def test_config_accepts_the_switch_and_old_configs_load_without_it():
    assert config_from_dict({}).data.class_agnostic is False  # old recipes and checkpoints: unchanged
    assert config_from_dict({"data": {"train": "t.pkl"}}, ["data.class_agnostic=true"]).data.class_agnostic is True
    with pytest.raises(ConfigError, match="data.class_agnostic: expected true/false"):
        config_from_dict({}, ["data.class_agnostic=maybe"])
    product, dense = load_config(CONFIGS / "product.yaml"), load_config(CONFIGS / "dense.yaml")
    assert product.data.class_agnostic is True and dense.data.class_agnostic is False
    p, d = product.to_dict(), dense.to_dict()
    p["data"].pop("class_agnostic"), d["data"].pop("class_agnostic")
    p["train"].pop("out_dir"), d["train"].pop("out_dir")
    assert p == d  # the dense recipe otherwise


def test_product_detector_trains_evaluates_and_predicts_as_one_class(tiny_split, tmp_path, capsys):
    from detect.engine.runtime.checkpoint import load_model

    out = tmp_path / "run"
    assert main(["train", "--config", str(SMOKE), f"data.train={tiny_split['train']}", f"data.val={tiny_split['val']}",
                 "data.image_size=64", "train.epochs=2", "train.max_steps=0", f"train.out_dir={out}",
                 "data.class_agnostic=true"]) == 0
    assert "2 classes merged into one, 'product'" in capsys.readouterr().out
    _, class_names, cfg = load_model(out / "best.pt")
    assert class_names == ["product"] and cfg.data.class_agnostic is True
    val = load_dataset(tiny_split["val"])
    assert val.class_names == ["brand_a", "brand_b"]  # eval's labels name two brands: merged as in training
    assert main(["eval", "--weights", str(out / "best.pt"), "--data", str(tiny_split["val"]), "--device", "cpu",
                 "--json", str(tmp_path / "eval.json"), "--report", str(tmp_path / "rep")]) == 0
    metrics = json.loads((tmp_path / "eval.json").read_text())
    assert set(metrics["per_class"]) == {"product"}
    best = json.loads((out / "summary.json").read_text())["best_map"]
    assert metrics["AP"] == pytest.approx(best, abs=1e-6)  # the trainer's val AP, on the merged val labels
    rows = list(csv.DictReader((tmp_path / "rep" / "per_class.csv").open()))
    assert [r["class"] for r in rows] == ["product"]
    assert int(rows[0]["gt"]) == sum(r.num_boxes for r in val.records)  # every box of every brand, counted once
    report = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert report["counts"]["total_mae"] >= 0
    assert main(["predict", "--weights", str(out / "best.pt"), str(tiny_split["root"] / "images"), "--out",
                 str(tmp_path / "pred"), "--conf", "0.0", "--device", "cpu"]) == 0
    pred = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert pred["class_names"] == ["product"]
