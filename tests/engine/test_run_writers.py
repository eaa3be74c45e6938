"""A run's per-epoch files and its progress counters, apart from the training loop."""

from __future__ import annotations

import csv
import sys
import types

from detect.engine.training.run_writers import RunWriters
from detect.engine.training.train_state import TrainState


def _history() -> list[dict]:
    return [{"epoch": 1, "step": 4, "lr": 0.01, "loss": 2.5},
            {"epoch": 2, "step": 8, "lr": 0.005, "loss": 1.25, "AP": 0.5, "AP50": 0.75}]


def test_csv_has_every_column_and_the_plot_is_written(tmp_path) -> None:
    with RunWriters(tmp_path) as w:
        w.epoch_end(_history())
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert list(rows[0]) == ["epoch", "step", "lr", "loss", "AP", "AP50"]
    assert rows[0]["AP"] == "" and rows[1]["AP"] == "0.5" and rows[1]["lr"] == "0.005"
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_tensorboard_writer_for_the_whole_run(tmp_path, monkeypatch) -> None:
    opened, scalars = [], []

    class FakeWriter:  # stands in for torch.utils.tensorboard.SummaryWriter (tensorboard is optional)
        def __init__(self, logdir: str) -> None:
            opened.append(logdir)
            self.closed = False

        def add_scalar(self, key: str, value: float, step: int) -> None:
            scalars.append((key, value, step))

        def flush(self) -> None:
            pass

        def close(self) -> None:
            self.closed = True

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    history = _history()
    with RunWriters(tmp_path, tensorboard=True) as w:
        w.epoch_end(history[:1])
        w.epoch_end(history)
        tb = w._tb
    assert opened == [str(tmp_path / "tb")] and tb.closed
    assert ("loss", 2.5, 1) in scalars and ("AP", 0.5, 2) in scalars and ("loss", 2.5, 2) not in scalars


def test_train_state_round_trips_through_a_checkpoint_and_counts_evaluations() -> None:
    s = TrainState(epoch=3, step=30, history=[{"epoch": 1}])
    assert s.record_eval(0.4, 1) and s.best_map == 0.4 and s.best_epoch == 1 and s.bad_evals == 0
    assert not s.record_eval(0.4, 2) and s.bad_evals == 1 and s.best_epoch == 1
    assert s.record_eval(0.5, 3) and s.bad_evals == 0
    back = TrainState.from_checkpoint({**s.to_dict(), "model": {}, "rng": None})
    assert back == s
