"""The demo trains a step budget; when its --minutes limit ends training first, it says so."""

from __future__ import annotations

import pytest

from detect.tools.demo import DEMO_EPOCHS, demo_config, run_demo


def test_demo_recipe_is_a_step_budget_with_a_time_limit(tmp_path):
    t = demo_config(tmp_path, 10.0, "cpu", tmp_path / "t.pkl", tmp_path / "v.pkl")["train"]
    assert (t["epochs"], t["time_budget_s"]) == (DEMO_EPOCHS, 600.0)
    assert demo_config(tmp_path, 0.0, "cpu", tmp_path / "t.pkl", tmp_path / "v.pkl")["train"]["time_budget_s"] == 0.0


def test_demo_reports_when_its_time_limit_ended_training(tmp_path):
    lines: list[str] = []
    result = run_demo(tmp_path / "demo", images=10, minutes=1e-5, device="cpu", log=lines.append)
    assert result["stopped_by"] == "train.time_budget_s=0.0006"
    assert "stopped early by train.time_budget_s=0.0006: 0/12 steps (0/12 epochs)" in lines  # 8 images: 1 step/epoch; none trained
    notes = [line for line in lines if line.startswith("note: the 1e-05-minute limit ended training after 0/12 epochs")]
    assert len(notes) == 1 and "--minutes" in notes[0]
    best = tmp_path / "demo" / "train" / "best.pt"  # fit's on_finish hook: best.pt's table and its report
    assert f"{best} (epoch 1) on the val set:" in lines and (best.parent / "report" / "index.html").is_file()


def test_demo_refuses_a_negative_limit(tmp_path):
    with pytest.raises(ValueError, match="--minutes"):
        run_demo(tmp_path / "demo", minutes=-1, device="cpu")
