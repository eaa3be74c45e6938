"""`retail-detect tune` (grid, k-fold, skip finished runs) and `retail-detect compare` (every registered detector)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from detect.cli import main
from detect.models.build import DETECTORS, NAMES, PEER_PREFIX
from detect.tools.tune import combo_name, parse_grid

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["data.image_size=64", "data.workers=0", "train.batch_size=4", "train.max_steps=0"]


def test_parse_grid_and_names():
    grid = parse_grid(["train.lr=0.1,0.01", "train.optimizer=sgd,adamw", "model.frozen_bn=true"])
    assert grid == {"train.lr": [0.1, 0.01], "train.optimizer": ["sgd", "adamw"], "model.frozen_bn": [True]}
    assert combo_name({"train.lr": 0.01, "train.momentum": 0.9}) == "lr=0.01_momentum=0.9"


def test_tune_ranks_and_skips_finished_runs(tiny_split, tmp_path, capsys):
    """The default lane's tune: two combinations on the given val set (k-fold: the slow test below)."""
    out = tmp_path / "tune"
    args = ["tune", "--config", str(ROOT / "configs" / "smoke.yaml"), "--grid", "train.lr=0.01,0.001",
            "--epochs", "1", "--out", str(out), f"data.train={tiny_split['train']}", f"data.val={tiny_split['val']}",
            *SMALL]
    assert main(args) == 0
    assert "2 combinations x 1 fold(s) = 2 runs; 0 already finished" in capsys.readouterr().out
    rows = list(csv.DictReader((out / "tune_results.csv").open()))
    assert [r["rank"] for r in rows] == ["1", "2"] and {r["train.lr"] for r in rows} == {"0.01", "0.001"}
    assert float(rows[0]["AP"]) >= float(rows[1]["AP"]) and all(r["runs"] == "1" for r in rows)
    assert main(args) == 0
    assert "2 already finished" in capsys.readouterr().out


@pytest.mark.slow
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


@pytest.mark.slow
def test_compare_with_peers_at_equal_steps(tiny_split, tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["compare", "--train", str(tiny_split["train"]), "--val", str(tiny_split["val"]), "--steps", "2",
            "--peers", "--out", str(out), "--device", "cpu", "--configs", str(ROOT / "configs"),
            *SMALL, "train.ema=false", "train.eval_every=100"]
    assert main(args) == 0
    result = json.loads((out / "compare.json").read_text())
    rows = {r["model"]: r for r in result["rows"]}
    peer_of = {name: PEER_PREFIX + spec.peers[0] for name, spec in DETECTORS.items()}  # every registered head
    assert list(rows) == [row for name, peer in peer_of.items() for row in (name, peer)]
    for name, r in rows.items():
        assert r["steps"] == 2, name  # equal work: the same number of optimizer steps for every detector
        assert r["latency_ms_b1"] > 0 and r["train_img_s"] > 0
    for name, peer in peer_of.items():
        ours = rows[name]
        assert rows[peer]["peer_of"] == name and ours["peer"] == peer
        assert ours["train_speed_ratio"] == round(ours["train_img_s"] / rows[peer]["train_img_s"], 3)
    assert result["meta"]["steps"] == 2 and result["meta"]["peers_recipe"] == "torchvision"
    peer_cfg = yaml.safe_load((out / "tv_fcos" / "config.yaml").read_text())
    assert peer_cfg["train"]["optimizer"] == "sgd" and peer_cfg["train"]["lr"] == 0.02  # torchvision's recipe
    assert peer_cfg["data"]["image_size"] == 64 and peer_cfg["train"]["batch_size"] == 4  # same size and batch
    assert (out / "compare.png").stat().st_size > 1000 and (out / "compare.csv").is_file()
    printed = capsys.readouterr().out
    assert "ours / peer" in printed and all(f"{name} / {peer}" in printed for name, peer in peer_of.items())
    first = NAMES[0]
    assert main(args[:-2] + ["--models", first, "--budget-minutes", "0.02"]) == 0  # a second comparison
    again = json.loads((tmp_path / "cmp2" / "compare.json").read_text())
    assert [r["model"] for r in again["rows"]] == [first, peer_of[first]] and again["meta"]["budget_minutes"] == 0.02
    assert json.loads((out / "compare.json").read_text()) == result  # the first one is kept


def test_compare_finds_the_repository_recipes_from_another_folder(tmp_path, monkeypatch):
    """Run from outside the checkout (no ./configs), compare falls back to the repository's configs/."""
    from detect.tools.compare import recipe_path

    monkeypatch.chdir(tmp_path)
    repo_configs = Path(__file__).resolve().parents[1] / "configs"
    assert recipe_path("ssd", None) == repo_configs / "ssd.yaml"
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "ssd.yaml").write_text("model:\n  name: ssd\n")
    assert recipe_path("ssd", None) == Path("configs") / "ssd.yaml"  # ./configs first
    with pytest.raises(FileNotFoundError, match="nope.yaml not found"):
        recipe_path("nope", None)
