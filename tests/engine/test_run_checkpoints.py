"""The save policy (one checkpoint serialised per epoch; best.pt and epoch_N.pt share it while equal), the
disk size a run reports, and the bookkeeping that makes a resume inside an epoch exact (issue 23)."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from detect.config import config_from_dict
from detect.engine.runtime import checkpoint as ck
from detect.engine.training import run_checkpoints
from detect.engine.training.history import merge_rows
from detect.engine.training.run_checkpoints import checkpoint_bytes, human_bytes, link_or_copy
from detect.engine.training.train_state import TrainState
from detect.engine.training.trainer import fit


def _run(split: dict, out, **train):
    t = {"epochs": 2, "batch_size": 3, "lr": 0.01, "warmup_epochs": 0, "scheduler": "none", "out_dir": str(out),
         "device": "cpu", "report": False, **train}
    return config_from_dict({"data": {"train": str(split["train"]), "image_size": 64, "workers": 0},
                             "model": {"backbone_weights": "none"}, "train": t})


def test_one_checkpoint_is_serialised_per_epoch(tiny_split, tmp_path, monkeypatch):
    """Without data.val every epoch is the best: best.pt is last.pt's file under a second name, not a
    second 58 MB write (save_period 0: nothing else is kept)."""
    saves: list[str] = []
    real = torch.save
    monkeypatch.setattr(ck.torch, "save", lambda obj, f, *a, **k: (saves.append(f.name), real(obj, f, *a, **k)))
    result = fit(_run(tiny_split, tmp_path / "a"), log=lambda *_: None)
    assert len(saves) == 2  # two epochs, one serialisation each
    out = tmp_path / "a"
    assert sorted(p.name for p in out.glob("*.pt")) == ["best.pt", "last.pt"]
    assert os.path.samefile(out / "best.pt", out / "last.pt")
    assert result["checkpoint_bytes"] == checkpoint_bytes(out) > 0
    assert checkpoint_bytes(out) < 1.5 * (out / "last.pt").stat().st_size + 8192  # the shared file counted once


def test_save_period_keeps_every_nth_epoch(tiny_split, tmp_path):
    out = tmp_path / "p"
    fit(_run(tiny_split, out, epochs=3, save_period=2), log=lambda *_: None)
    assert sorted(p.name for p in out.glob("*.pt")) == ["best.pt", "epoch_2.pt", "last.pt"]
    assert torch.load(out / "epoch_2.pt", weights_only=True)["epoch"] == 2
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 3
    assert not os.path.samefile(out / "epoch_2.pt", out / "last.pt")


def test_link_or_copy_copies_where_hard_links_fail(tmp_path, monkeypatch):
    src, dst = tmp_path / "last.pt", tmp_path / "best.pt"
    src.write_bytes(b"one")
    dst.write_bytes(b"old")

    def no_links(a, b):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(run_checkpoints.os, "link", no_links)
    link_or_copy(src, dst)
    assert dst.read_bytes() == b"one" and not os.path.samefile(src, dst)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]


def test_human_bytes():
    assert [human_bytes(n) for n in (512, 61_234_567, 3 << 30)] == ["512 B", "58.4 MB", "3.0 GB"]


def test_an_extra_evaluation_at_a_stop_moves_best_but_not_early_stopping():
    s = TrainState()
    assert s.record_eval(0.5, 1)
    assert s.record_eval(0.9, 2, scheduled=False) and s.best_map == 0.9 and s.best_epoch == 2
    assert (s.patience_map, s.bad_evals) == (0.5, 0)
    assert not s.record_eval(0.6, 2) and s.bad_evals == 0 and s.patience_map == 0.6  # as without the extra one


def test_checkpoints_from_before_resume_inside_epochs_still_load():
    old = {k: v for k, v in TrainState(epoch=3, step=9, best_map=0.4, best_epoch=2).to_dict().items()
           if k not in ("batch", "patience_map")}
    s = TrainState.from_checkpoint(old)
    assert (s.epoch, s.batch, s.patience_map) == (3, 0, 0.4)


def test_rows_of_an_epoch_trained_in_two_parts_merge_into_one():
    before = {"epoch": 2, "step": 12, "lr": 0.1, "loss": 2.0, "loss_cls": 1.0, "images": 8, "seconds": 2.0,
              "images_per_s": 4.0, "AP": 0.3}
    rest = {"epoch": 2, "step": 16, "lr": 0.05, "loss": 1.0, "loss_cls": 0.5, "images": 16, "seconds": 2.0,
            "images_per_s": 8.0}
    row = merge_rows(before, rest, start_step=10)  # 2 steps before the stop, 4 after
    assert row["loss"] == pytest.approx((2 * 2.0 + 4 * 1.0) / 6) and row["loss_cls"] == pytest.approx(4 / 6)
    assert (row["epoch"], row["step"], row["lr"], row["images"], row["images_per_s"]) == (2, 16, 0.05, 24, 6.0)
    assert "AP" not in row  # the stop's evaluation saw the epoch unfinished
