"""Learning-rate schedule: linear warmup, then cosine / step decay / reduce-on-plateau, set every step."""

from __future__ import annotations

import math

import torch

from data_tools.errors import InvalidInput
from detect.config import TrainConfig

WARMUP_START = 0.001  # warmup starts at this fraction of the base lr
COSINE_FLOOR = 0.01  # cosine ends at this fraction of the base lr


class LRSchedule:
    """Sets ``lr = base_lr * warmup(step) * decay(step) * lr_mult`` on every param group (``lr_mult``: the
    group's key from :func:`~detect.engine.training.optim.param_groups`, 1 when absent).

    Args:
        optimizer: its groups' ``lr`` are overwritten; cfg: ``lr``, ``scheduler``, ``warmup_epochs``,
        ``milestones`` (fractions of the run), ``gamma``, ``plateau_patience``.
        steps_per_epoch, epochs: length of the run in optimizer steps; ``cfg.max_steps`` (when set and
        shorter) ends it earlier, so a run stopped by ``train.max_steps`` still warms up and anneals fully.
    Warmup lasts ``warmup_epochs`` but at most half the run (a 120-step run with 99 steps per epoch would
    otherwise spend 99 steps warming up and never decay).
    Plateau: call :meth:`observe` with each val mAP; after ``plateau_patience`` evaluations without a better
    one the lr is multiplied by ``gamma``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int, epochs: int) -> None:
        self.optimizer = optimizer
        self.base_lr = cfg.lr
        self.kind = cfg.scheduler
        if self.kind not in ("cosine", "step", "plateau", "none"):
            raise InvalidInput(f"unknown train.scheduler '{cfg.scheduler}' (use cosine, step, plateau or none)")
        self.total = max(1, steps_per_epoch * epochs)
        if cfg.max_steps:
            self.total = min(self.total, cfg.max_steps)
        self.warmup = min(int(round(cfg.warmup_epochs * steps_per_epoch)), self.total // 2)
        self.milestones = [int(m * self.total) for m in cfg.milestones]
        self.gamma, self.patience = cfg.gamma, cfg.plateau_patience
        self.plateau_factor, self.best, self.bad = 1.0, -math.inf, 0

    def factor(self, step: int, progress: float | None = None) -> float:
        """Multiplier of the base lr at optimizer step ``step`` (0-based).

        ``progress``: fraction of a time budget used so far; when given, cosine and step decay follow
        whichever of the time budget and the step count is nearer its end, so a run anneals fully by the
        end of its time budget or of its epochs, whichever comes first.
        """
        warm = 1.0
        if step < self.warmup:
            warm = WARMUP_START + (1 - WARMUP_START) * step / self.warmup
        t = min(1.0, max(0.0, (step - self.warmup) / max(1, self.total - self.warmup)))
        step_equiv = step
        if progress is not None:
            done = min(1.0, max(0.0, progress))
            t, step_equiv = max(t, done), max(step, done * self.total)
        if self.kind == "cosine":
            decay = COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * t))
        elif self.kind == "step":
            decay = self.gamma ** sum(step_equiv >= m for m in self.milestones)
        elif self.kind == "plateau":
            decay = self.plateau_factor
        else:
            decay = 1.0
        return warm * decay

    def step(self, step: int, progress: float | None = None) -> float:
        """Set the lr for optimizer step ``step`` (and time-budget ``progress``); returns it."""
        lr = self.base_lr * self.factor(step, progress)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
        return lr

    def observe(self, metric: float) -> None:
        """Feed a validation metric (higher is better) to the plateau rule."""
        if metric > self.best + 1e-4:
            self.best, self.bad = metric, 0
        else:
            self.bad += 1
            if self.kind == "plateau" and self.bad > self.patience:
                self.plateau_factor *= self.gamma
                self.bad = 0

    def state_dict(self) -> dict:
        return {"plateau_factor": self.plateau_factor, "best": self.best, "bad": self.bad}

    def load_state_dict(self, state: dict) -> None:
        self.plateau_factor, self.best, self.bad = state["plateau_factor"], state["best"], state["bad"]
