"""`retail-detect` from the command line: train -> eval -> predict, config errors, DDP with torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from detect.cli import main

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


def _train_args(split: dict, out: Path, *extra: str) -> list[str]:
    return ["train", "--config", str(SMOKE), f"data.train={split['train']}", f"data.val={split['val']}",
            "data.image_size=64", "train.epochs=2", "train.max_steps=0", f"train.out_dir={out}", *extra]


def test_train_eval_predict_end_to_end(tiny_split, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_train_args(tiny_split, out)) == 0
    printed = capsys.readouterr().out
    assert "best val AP" in printed and str(out / "best.pt") in printed
    assert main(["eval", "--weights", str(out / "best.pt"), "--data", str(tiny_split["val"]),
                 "--json", str(tmp_path / "eval.json"), "--device", "cpu"]) == 0
    metrics = json.loads((tmp_path / "eval.json").read_text())
    best = json.loads((out / "summary.json").read_text())["best_map"]
    assert metrics["AP"] == pytest.approx(best, abs=1e-6)  # eval agrees with the trainer's val AP of best.pt
    assert set(metrics["per_class"]) == {"brand_a", "brand_b"}
    assert (tmp_path / "eval_results.json").is_file()
    images = tiny_split["root"] / "images"
    bad = tmp_path / "in" / "broken.jpg"
    bad.parent.mkdir()
    bad.write_bytes(b"not a jpeg")
    assert main(["predict", "--weights", str(out / "best.pt"), str(images), str(bad), "--out", str(tmp_path / "pred"),
                 "--conf", "0.01", "--csv", "--device", "cpu"]) == 0
    pred = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert pred["summary"]["images"] == 8 and pred["summary"]["errors"] == 1
    assert "broken.jpg" in json.dumps(pred["errors"])
    assert (tmp_path / "pred" / "predictions.csv").is_file()
    assert len(list((tmp_path / "pred" / "images").rglob("*.jpg"))) == 8


def test_resume_flag_and_config_errors(tiny_split, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_train_args(tiny_split, out, "train.epochs=1")) == 0
    assert main(_train_args(tiny_split, tmp_path / "run2", "train.epochs=2", "--resume", str(out / "last.pt"))) == 0
    capsys.readouterr()
    assert main(_train_args(tiny_split, out, "train.lrr=0.1")) == 1
    assert "unknown key 'train.lrr'; did you mean 'lr'?" in capsys.readouterr().err
    assert main(["train", "--config", str(SMOKE), f"train.out_dir={out}"]) == 1
    assert "data.train is not set" in capsys.readouterr().err
    assert main(["eval", "--weights", str(tmp_path / "missing.pt"), "--data", str(tiny_split["val"])]) == 1
    assert "checkpoint not found" in capsys.readouterr().err


@pytest.mark.slow
def test_ddp_two_cpu_processes_with_torchrun(tiny_split, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
           "-m", "detect", *_train_args(tiny_split, out, "train.epochs=1", "train.device=cpu")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["steps"] == 1  # 6 images / (2 processes x batch 4) -> 1 step
    assert "x2" in proc.stdout + proc.stderr
