"""A run ended by train.max_steps or train.time_budget_s says so; schedules anneal by whichever budget ends first."""

from __future__ import annotations

import torch

from detect.config import TrainConfig, config_from_dict
from detect.engine.runtime.checkpoint import load_checkpoint
from detect.engine.training.schedule import COSINE_FLOOR, LRSchedule
from detect.engine.training.trainer import fit


def tiny_run(split: dict, out, **train):
    t = {"epochs": 2, "batch_size": 3, "lr": 0.01, "warmup_epochs": 0, "out_dir": str(out), "device": "cpu", **train}
    return config_from_dict({"data": {"train": str(split["train"]), "val": str(split["val"]), "image_size": 64,
                                      "workers": 0}, "model": {"backbone_weights": "none"}, "train": t})


def test_max_steps_ending_the_run_is_reported(tiny_split, tmp_path):
    lines: list[str] = []
    result = fit(tiny_run(tiny_split, tmp_path / "a", max_steps=1), log=lines.append)
    assert result["stopped_by"] == "train.max_steps=1"
    assert "stopped early by train.max_steps=1: 1/4 steps (0.5/2 epochs)" in lines
    assert result["epochs"] == 0.5
    # the epoch stopped inside is not recorded as finished: a resumed run trains its second batch (issue 23)
    ck = load_checkpoint(tmp_path / "a" / "last.pt")
    assert (ck["epoch"], ck["batch"], ck["step"], ck["kind"]) == (0, 1, 1, "detector")
    assert [(h["epoch"], h["step"]) for h in ck["history"]] == [(1, 1)]
    assert [line for line in lines if line.startswith("epoch 1/2 (stopped at batch 1/2): ")]


def test_time_budget_ending_the_run_is_reported(tiny_split, tmp_path):
    lines: list[str] = []
    result = fit(tiny_run(tiny_split, tmp_path / "b", time_budget_s=1e-6, report=False), log=lines.append)
    assert result["stopped_by"] == "train.time_budget_s=1e-06"
    assert [line for line in lines if line.startswith("stopped early by train.time_budget_s=1e-06: ")]


def test_a_complete_run_reports_no_early_stop(tiny_split, tmp_path):
    lines: list[str] = []
    result = fit(tiny_run(tiny_split, tmp_path / "c", epochs=1, max_steps=2, time_budget_s=3600), log=lines.append)
    assert result["stopped_by"] is None and result["steps"] == 2
    assert not [line for line in lines if "stopped early" in line]


def test_cosine_anneals_by_the_epochs_when_they_end_before_the_time_budget():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = LRSchedule(opt, TrainConfig(lr=1.0, warmup_epochs=0, scheduler="cosine"), steps_per_epoch=10, epochs=2)
    assert abs(sched.factor(20, progress=0.2) - COSINE_FLOOR) < 1e-9  # steps done, 20% of the time used
    assert abs(sched.factor(10, progress=0.5) - sched.factor(10)) < 1e-9  # both half way
    assert abs(sched.factor(2, progress=1.0) - COSINE_FLOOR) < 1e-9  # time budget spent first
