"""What a training run has done so far: the counters that a checkpoint saves and ``--resume`` restores."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainState:
    """Progress of one run (saved flat into every checkpoint, see :meth:`to_dict`).

    Attributes:
        epoch: epochs finished.
        step: optimizer steps taken.
        best_map: best val AP so far (-1 before the first evaluation).
        best_epoch: the epoch (1-based) ``best.pt`` holds; -1 before the first evaluation.
        bad_evals: evaluations since val AP last improved (early stopping counts these).
        nonfinite: batches skipped for a non-finite loss.
        train_seconds: training time so far, all sessions (time budgets and schedules follow it).
        history: one row per epoch (``metrics.csv``).
    """

    epoch: int = 0
    step: int = 0
    best_map: float = -1.0
    best_epoch: int = -1
    bad_evals: int = 0
    nonfinite: int = 0
    train_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> TrainState:
        """The state a checkpoint saved (its keys as written by :meth:`to_dict`)."""
        return cls(**{f.name: ckpt[f.name] for f in dataclasses.fields(cls)})

    def record_eval(self, ap: float, epoch: int) -> bool:
        """Count one evaluation of val AP ``ap`` after ``epoch`` (1-based); True when it is a new best."""
        improved = ap > self.best_map + 1e-6
        self.bad_evals = 0 if improved else self.bad_evals + 1
        if improved:
            self.best_map, self.best_epoch = ap, epoch
        return improved
