"""The per-epoch files of a training run, written by rank 0 after each epoch: ``metrics.csv`` (one row per
epoch), ``curves.png`` (loss and val AP) and, with ``train.tensorboard``, TensorBoard scalars in ``tb/``
(one ``SummaryWriter`` for the whole run)."""

from __future__ import annotations

import math
from pathlib import Path

from data_tools.figures import pyplot, save_png
from detect.tables import write_dicts_csv


def plot_curves(history: list[dict], path: Path) -> None:
    """PNG: training loss per epoch (left) and val AP / AP50 (right)."""
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    ep = [h["epoch"] for h in history]
    for key in [k for k in history[0] if k == "loss" or k.startswith("loss_")]:
        a.plot(ep, [h.get(key, math.nan) for h in history], label=key)
    a.set_xlabel("epoch")
    a.set_title("training loss")
    if a.lines:
        a.legend(fontsize=7)
    for key in ("AP", "AP50", "top1"):  # top1: the embedder's nearest-neighbour accuracy
        pts = [(h["epoch"], h[key]) for h in history if key in h]
        if pts:
            b.plot(*zip(*pts), marker="o", label=f"val {key}")
    b.set_xlabel("epoch")
    b.set_title("validation mAP")
    b.set_ylim(0, 1)
    if b.lines:
        b.legend(fontsize=7)
    save_png(fig, path, tight=True)


class RunWriters:
    """Writes ``metrics.csv``, ``curves.png`` and TensorBoard scalars of a run folder ``out``.

    Use as a context manager (or call :meth:`close`): the TensorBoard writer stays open for the run.
    """

    def __init__(self, out: Path, tensorboard: bool = False) -> None:
        self.out = Path(out)
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed: the CSV and PNG still have everything
                SummaryWriter = None
            if SummaryWriter is not None:
                self._tb = SummaryWriter(str(self.out / "tb"))

    def epoch_end(self, history: list[dict]) -> None:
        """Rewrite the CSV and the plot from the whole ``history``; add the last row to TensorBoard."""
        write_dicts_csv([{k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()} for row in history],
                        self.out / "metrics.csv")
        plot_curves(history, self.out / "curves.png")
        if self._tb is not None:
            row = history[-1]
            for k, v in row.items():
                if isinstance(v, float) and k != "epoch":
                    self._tb.add_scalar(k, v, row["epoch"])
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> RunWriters:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
