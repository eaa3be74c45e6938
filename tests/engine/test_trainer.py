"""Trainer plumbing: exact resume, non-finite losses, early stopping, outputs, schedules, L1, checkpoints."""

from __future__ import annotations

import csv
import io
import pickle

import pytest
import torch

from detect.config import TrainConfig, config_from_dict
from detect.engine.runtime.checkpoint import load_checkpoint, save_checkpoint
from detect.engine.training import trainer
from detect.engine.training.optim import build_optimizer, l1_penalty
from detect.engine.training.schedule import LRSchedule
from detect.engine.training.trainer import fit


def tiny_config(split: dict, out, **train) -> object:
    t = {"epochs": 2, "batch_size": 3, "optimizer": "sgd", "lr": 0.01, "warmup_epochs": 0, "scheduler": "none",
         "ema": True, "out_dir": str(out), "report": False, **train}
    return config_from_dict({
        "data": {"train": str(split["train"]), "val": str(split["val"]), "image_size": 64, "workers": 0},
        "model": {"name": "ssd", "dropout": 0.1},
        "augment": {"hflip": 0.5, "color_jitter": 0.5},
        "train": t,
    })


def _quiet(*_args) -> None:
    pass


@pytest.mark.slow  # three fits; resuming itself is in the default lane (tests/test_runs_cli.py)
def test_resume_continues_exactly(tiny_split, tmp_path):
    straight = tiny_config(tiny_split, tmp_path / "a", epochs=3)
    fit(straight, log=_quiet)
    first = tiny_config(tiny_split, tmp_path / "b", epochs=3, max_steps=2)  # 2 steps = 1 epoch of 6 images
    assert fit(first, log=_quiet)["epochs"] == 1
    resumed = tiny_config(tiny_split, tmp_path / "elsewhere", epochs=3, resume=str(tmp_path / "b" / "last.pt"))
    assert fit(resumed, log=_quiet)["out_dir"] == str(tmp_path / "b")  # a resumed run continues in its own folder
    assert not (tmp_path / "elsewhere").exists()
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert a["step"] == b["step"] == 6
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for key, value in a["ema"].items():
        assert torch.equal(value, b["ema"][key]), key
    assert [round(h["loss"], 6) for h in a["history"]] == [round(h["loss"], 6) for h in b["history"]]


@pytest.mark.slow  # three fits; the recorded stop position is in the default lane (tests/engine/test_budget_stop.py)
def test_resume_inside_an_epoch_continues_exactly(tiny_split, tmp_path):
    """Stopped by train.max_steps inside an epoch (2 of its 3 batches), then resumed with the limit lifted: the
    rest of that epoch is trained, and the weights, EMA and metrics rows equal an uninterrupted run's (issue 23)."""
    straight = fit(tiny_config(tiny_split, tmp_path / "a", epochs=2, batch_size=2), log=_quiet)
    assert fit(tiny_config(tiny_split, tmp_path / "b", epochs=2, batch_size=2, max_steps=2), log=_quiet)["epochs"] \
        == pytest.approx(0.67)
    lines: list[str] = []
    resumed = fit(tiny_config(tiny_split, tmp_path / "b", epochs=2, batch_size=2,
                              resume=str(tmp_path / "b" / "last.pt")), log=lines.append)
    assert [line for line in lines if line.startswith("resumed from") and "in epoch 1 after batch 2/3 (step 2)" in line]
    assert resumed["steps"] == straight["steps"] == 6 and resumed["session_steps"] == 4
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert (b["epoch"], b["batch"], b["step"]) == (2, 0, 6)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for key, value in a["ema"].items():
        assert torch.equal(value, b["ema"][key]), key
    assert [(h["epoch"], h["step"], round(h["loss"], 5)) for h in a["history"]] == \
        [(h["epoch"], h["step"], round(h["loss"], 5)) for h in b["history"]]


def test_outputs_and_metrics_csv(tiny_split, tmp_path):
    out = tmp_path / "run"
    result = fit(tiny_config(tiny_split, out), log=_quiet)
    for name in ("last.pt", "best.pt", "metrics.csv", "curves.png", "config.yaml", "summary.json", "val_results.json"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader(io.StringIO((out / "metrics.csv").read_text())))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"loss", "loss_cls", "loss_box", "AP", "AP50", "images_per_s"} <= set(rows[0])
    ckpt = load_checkpoint(out / "best.pt")
    assert ckpt["class_names"] == ["brand_a", "brand_b"] and ckpt["config"]["model"]["name"] == "ssd"
    assert float(rows[-1]["AP"]) == pytest.approx(result["metrics"]["AP"], rel=1e-5)  # the CSV holds the final eval


def test_nonfinite_loss_is_skipped_then_aborts(tiny_split, tmp_path, monkeypatch):
    real = trainer.l1_penalty
    calls = {"n": 0}

    def poisoned(model, strength):
        calls["n"] += 1
        return torch.tensor(float("nan")) if calls["n"] == 1 else real(model, strength)

    monkeypatch.setattr(trainer, "l1_penalty", poisoned)
    result = fit(tiny_config(tiny_split, tmp_path / "a", epochs=1), log=_quiet)
    assert result["steps"] == 1  # the first of two batches was skipped
    monkeypatch.setattr(trainer, "l1_penalty", lambda m, s: torch.tensor(float("inf")))
    with pytest.raises(RuntimeError, match="non-finite"):
        fit(tiny_config(tiny_split, tmp_path / "b", epochs=3, max_nonfinite=3), log=_quiet)


def test_early_stopping_stops_after_patience(tiny_split, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer, "evaluate", lambda *a, **k: (dict.fromkeys(("AP", "AP50", "AP75", "APs", "APm", "APl"), 0.5), []))
    result = fit(tiny_config(tiny_split, tmp_path / "a", epochs=10, early_stop_patience=2), log=_quiet)
    assert result["epochs"] == 3 and result["best_epoch"] == 1


def test_lr_schedules():
    model = torch.nn.Linear(2, 2)
    cfg = TrainConfig(lr=1.0, warmup_epochs=1, scheduler="cosine")
    s = LRSchedule(build_optimizer(model, cfg), cfg, steps_per_epoch=10, epochs=10)
    assert s.factor(0) < 0.01 and s.factor(10) == pytest.approx(1.0) and s.factor(99) < 0.02
    step = TrainConfig(lr=1.0, warmup_epochs=0, scheduler="step", milestones=(0.5,), gamma=0.1)
    s = LRSchedule(build_optimizer(model, step), step, 10, 10)
    assert s.factor(49) == 1.0 and s.factor(50) == pytest.approx(0.1)
    plateau = TrainConfig(lr=1.0, warmup_epochs=0, scheduler="plateau", plateau_patience=1, gamma=0.5)
    s = LRSchedule(build_optimizer(model, plateau), plateau, 10, 10)
    for ap in (0.5, 0.4, 0.4):
        s.observe(ap)
    assert s.factor(5) == 0.5


def test_schedule_ends_at_max_steps():
    """A run stopped by train.max_steps warms up and anneals within those steps (the compare setting:
    120 steps of 99-step epochs once spent 99 steps warming up and never decayed)."""
    model = torch.nn.Linear(2, 2)
    cfg = TrainConfig(lr=1.0, warmup_epochs=1, scheduler="cosine", max_steps=120)
    s = LRSchedule(build_optimizer(model, cfg), cfg, steps_per_epoch=99, epochs=2)
    assert s.total == 120 and s.warmup == 60
    assert s.factor(60) == pytest.approx(1.0) and s.factor(119) < 0.02
    step = TrainConfig(lr=1.0, warmup_epochs=0, scheduler="step", milestones=(0.5,), gamma=0.1, max_steps=40)
    s = LRSchedule(build_optimizer(model, step), step, 10, 10)
    assert s.factor(19) == 1.0 and s.factor(20) == pytest.approx(0.1)
    long_run = TrainConfig(lr=1.0, warmup_epochs=1, scheduler="cosine", max_steps=1000)
    s = LRSchedule(build_optimizer(model, long_run), long_run, 10, 10)
    assert s.total == 100 and s.warmup == 10


def test_weight_decay_groups_and_l1():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = build_optimizer(model, TrainConfig(weight_decay=0.1))
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    assert opt.param_groups[0]["weight_decay"] == 0.1 and opt.param_groups[1]["weight_decay"] == 0.0
    assert decayed == {id(model[0].weight)}
    assert l1_penalty(model, 0.0) is None
    assert l1_penalty(model, 2.0).item() == pytest.approx(2.0 * model[0].weight.abs().sum().item())


def test_head_lr_mult_scales_the_new_layers_only():
    """train.head_lr_mult: the backbone's (pretrained) parameters keep the scheduled lr, neck and heads get it
    times the multiplier, decayed or not; with 1 the two groups of earlier checkpoints stay."""

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
            self.head = torch.nn.Linear(4, 2)

    model = Net()
    cfg = TrainConfig(lr=0.1, warmup_epochs=0, scheduler="none", weight_decay=0.1, head_lr_mult=4.0)
    opt = build_optimizer(model, cfg)
    LRSchedule(opt, cfg, 10, 1).step(3)
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}
    assert lr_of[id(model.backbone[0].weight)] == (pytest.approx(0.1), 0.1)
    assert lr_of[id(model.backbone[1].weight)] == (pytest.approx(0.1), 0.0)
    assert lr_of[id(model.head.weight)] == (pytest.approx(0.4), 0.1)
    assert lr_of[id(model.head.bias)] == (pytest.approx(0.4), 0.0)
    assert len(lr_of) == len(list(model.parameters()))
    assert len(build_optimizer(model, TrainConfig()).param_groups) == 2


class _Payload:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoint_is_atomic_and_refuses_pickle_payloads(tmp_path, monkeypatch):
    path = tmp_path / "w.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}})
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        save_checkpoint(path, {"model": {"w": torch.zeros(2)}})
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["w.pt"]
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"model": _Payload()}))
    with pytest.raises(ValueError, match="refused"):
        load_checkpoint(evil)
