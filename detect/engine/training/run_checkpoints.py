"""A run's checkpoints: what one holds, restoring it for ``--resume``, and the save policy.

Save policy (``train.save_period``): after every epoch (and at a budget stop inside one) ``last.pt`` is written
atomically (it is what ``--resume`` continues exactly); ``best.pt`` and, every ``save_period`` epochs,
``epoch_N.pt`` are hard links to that same file when they hold the same state, replaced atomically. So an
epoch writes one checkpoint, and a run keeps ``last.pt`` plus what differs from it (``best.pt`` of an
earlier epoch, the periodic ``epoch_N.pt``). Where hard links are not possible the file is copied.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import secrets
import shutil
import stat
from pathlib import Path

import torch

from data_tools.atomic import TEMP_MARK, atomic_open, write_error
from detect.config import Config, absolute_data_paths
from detect.engine.runtime.checkpoint import (
    CHECKPOINT_FORMAT,
    DETECTOR_KIND,
    CheckpointError,
    load_checkpoint,
    load_state_strict,
    require_keys,
    save_checkpoint,
    unwrap,
)
from detect.engine.training.resume import refuse_older_than_last
from detect.engine.training.train_state import TrainState

CHECKPOINT_NAMES = ("last.pt", "best.pt")
"""The checkpoints every run keeps; ``epoch_N.pt`` are added by ``train.save_period``."""


def checkpoint_state(model, optimizer, schedule, ema, state: TrainState, cfg: Config, class_names,
                     rng: torch.Tensor) -> dict:
    """Everything ``--resume`` needs (``rng``: the torch RNG right after the last optimizer step, which a
    run stopped inside an epoch continues from). Data paths are stored absolute (:func:`absolute_data_paths`)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "kind": DETECTOR_KIND,
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "ema_updates": ema.updates if ema is not None else 0,
        **state.to_dict(),
        "rng": rng,
        "config": absolute_data_paths(cfg.to_dict()),
        "class_names": list(class_names),
    }


def restore(path: str, model, optimizer, schedule, ema, class_names: list[str]) -> tuple[TrainState, torch.Tensor]:
    """Load a training checkpoint into the model, optimizer, schedule and EMA; returns ``(progress, torch RNG
    state)`` (the RNG is set too)."""
    ckpt = load_checkpoint(path)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a retail-detect training checkpoint")
    if ckpt.get("kind", DETECTOR_KIND) != DETECTOR_KIND:
        raise CheckpointError(f"{path}: a checkpoint of kind {ckpt.get('kind')!r}; `train --resume` continues a "
                              "detector's run")
    require_keys(ckpt, path, ("model", "optimizer", "schedule", "class_names", "rng", *TrainState.required_keys()))
    if list(ckpt["class_names"]) != list(class_names):
        raise CheckpointError(f"{path}: trained on {len(ckpt['class_names'])} classes ({_names(ckpt['class_names'])}), "
                              f"but data.train has {len(class_names)} ({_names(class_names)})")
    refuse_older_than_last(path, ckpt)
    load_state_strict(unwrap(model), ckpt["model"], path)
    return restore_training(ckpt, path, optimizer, schedule, ema), ckpt["rng"]


def restore_training(ckpt: dict, path: str, optimizer, schedule, ema) -> TrainState:
    """Put a loaded training checkpoint's optimizer, schedule, EMA and torch RNG back (the model's weights are the
    caller's); returns its progress. Shared by the detector's and the embedder's resume."""
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: its optimizer state does not fit this recipe ({exc})") from None
    schedule.load_state_dict(ckpt["schedule"])
    if ema is not None and ckpt.get("ema") is not None:
        ema.load_state_dict(ckpt["ema"], ckpt["ema_updates"])
    torch.set_rng_state(ckpt["rng"])
    return TrainState.from_checkpoint(ckpt)


def _names(names: list[str], n: int = 6) -> str:
    return ", ".join(map(str, names[:n])) + (", ..." if len(names) > n else "")


@dataclasses.dataclass(frozen=True)
class SavePlan:
    """Which checkpoints one save writes: ``best`` (also ``best.pt``), ``period_epoch`` (also
    ``epoch_<N>.pt``; 0: none)."""

    best: bool
    period_epoch: int = 0


def save_policy(save_period: int, epoch_finished: int | None, best: bool) -> SavePlan:
    """The :class:`SavePlan` after an epoch (``epoch_finished``, 1-based; None at a stop inside one)."""
    periodic = bool(save_period and epoch_finished and epoch_finished % save_period == 0)
    return SavePlan(best=best, period_epoch=epoch_finished if periodic else 0)


def save_run_checkpoints(out: Path, ck: dict, plan: SavePlan) -> None:
    """Write ``last.pt`` (serialised once) and, as ``plan`` says, ``best.pt`` / ``epoch_N.pt`` as links to it.

    Raises:
        WriteError: one line naming the file (``no space left writing runs/x/last.pt (previous last.pt kept)``).
    """
    last = save_checkpoint(out / "last.pt", ck)
    if plan.best:
        link_or_copy(last, out / "best.pt")
    if plan.period_epoch:
        link_or_copy(last, out / f"epoch_{plan.period_epoch}.pt")


def link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` the same content as ``src`` atomically: a hard link through a temp name, else a copy.

    A later atomic replace of ``src`` gives it a new file, so ``dst`` keeps what it holds now.
    """
    existed = dst.exists()
    tmp = dst.with_name(f".{dst.name}.{TEMP_MARK}{secrets.token_hex(4)}.tmp")
    try:
        os.link(src, tmp)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EACCES):
            raise write_error(e, dst, existed) from e
        with open(src, "rb") as f, atomic_open(dst, "wb") as g:  # no hard links here: copy
            shutil.copyfileobj(f, g, 1 << 20)
        return
    try:
        os.replace(tmp, dst)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise write_error(e, dst, existed) from e


def checkpoint_bytes(folder: Path) -> int:
    """Disk space the ``*.pt`` files of a run folder take (hard links counted once; allocated blocks)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.endswith(".pt"):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        blocks = getattr(st, "st_blocks", None)
        total += blocks * 512 if blocks is not None else st.st_size
    return total


def human_bytes(n: int) -> str:
    """``61,234,567`` -> ``"58.4 MB"`` (binary units, as ``du -h``)."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover
