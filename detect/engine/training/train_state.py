"""What a training run has done so far: the counters that a checkpoint saves and ``--resume`` restores."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# fields older checkpoints lack, and the value that reads them as they were meant (None: see from_checkpoint)
_ADDED_LATER: dict[str, Any] = {"batch": 0, "patience_map": None}


@dataclass
class TrainState:
    """Progress of one run (saved flat into every checkpoint, see :meth:`to_dict`).

    Attributes:
        epoch: epochs finished.
        step: optimizer steps taken.
        batch: batches of epoch ``epoch + 1`` already trained when a budget (``train.max_steps``,
            ``train.time_budget_s``) stopped the run inside it; 0 at an epoch boundary. A resumed run
            replays the loader to this position and trains on from there.
        best_map: best val AP so far (-1 before the first evaluation); ``best.pt`` holds it.
        best_epoch: the epoch (1-based) ``best.pt`` holds; -1 before the first evaluation.
        patience_map: best val AP of the scheduled evaluations (every ``train.eval_every`` epochs), the
            one early stopping compares with; an extra evaluation at a budget stop does not move it, so a
            resumed run stops early exactly when an uninterrupted one does.
        bad_evals: scheduled evaluations since val AP last beat ``patience_map`` (early stopping counts these).
        nonfinite: batches skipped for a non-finite loss.
        train_seconds: training time so far, all sessions (time budgets and schedules follow it).
        history: one row per epoch (``metrics.csv``); a row of an epoch stopped part-way is completed by the
            resumed run.
    """

    epoch: int = 0
    step: int = 0
    batch: int = 0
    best_map: float = -1.0
    best_epoch: int = -1
    patience_map: float = -1.0
    bad_evals: int = 0
    nonfinite: int = 0
    train_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def required_keys(cls) -> tuple[str, ...]:
        """The keys every training checkpoint has (older ones lack the fields added since)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name not in _ADDED_LATER)

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> TrainState:
        """The state a checkpoint saved (its keys as written by :meth:`to_dict`; an older checkpoint's
        missing ``batch`` is 0 and its ``patience_map`` its ``best_map``)."""
        values = {name: ckpt[name] for name in cls.required_keys()}
        values["batch"] = int(ckpt.get("batch", 0))
        patience = ckpt.get("patience_map")
        values["patience_map"] = float(values["best_map"] if patience is None else patience)
        return cls(**values)

    def record_eval(self, ap: float, epoch: int, scheduled: bool = True) -> bool:
        """Count one evaluation of val AP ``ap`` in ``epoch`` (1-based); True when it is a new best.

        ``scheduled``: an evaluation every run makes (``train.eval_every``, the last epoch); False for the
        extra one at a budget stop, which may give ``best.pt`` but leaves early stopping's count alone.
        """
        improved = ap > self.best_map + 1e-6
        if improved:
            self.best_map, self.best_epoch = ap, epoch
        if scheduled:
            better = ap > self.patience_map + 1e-6
            self.bad_evals = 0 if better else self.bad_evals + 1
            if better:
                self.patience_map = ap
        return improved
