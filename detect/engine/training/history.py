"""Rows of ``metrics.csv`` (one per epoch) and the line each epoch prints.

An epoch stopped part-way by a budget gets a row at the stop; when the run is resumed, the rest of that
epoch is merged into it (:func:`merge_rows`), so the row covers the whole epoch as in an uninterrupted run.
"""

from __future__ import annotations

import math

_SPEED_KEYS = ("images", "seconds", "images_per_s")
_NOT_LOSSES = ("lr", "steps", "finished", *_SPEED_KEYS)


def history_row(epoch: int, step: int, row: dict) -> dict:
    """The ``metrics.csv`` row of ``epoch`` (1-based) after optimizer step ``step``: epoch, step, lr, each loss
    (``loss_<term>``), speed; ``row`` is what :func:`~detect.engine.training.trainer.train_one_epoch` returned."""
    rec = {"epoch": epoch, "step": step, "lr": row["lr"]}
    rec.update({("loss" if k == "loss" else f"loss_{k}"): v for k, v in row.items() if k not in _NOT_LOSSES})
    rec.update(images=row["images"], seconds=row["seconds"], images_per_s=row["images_per_s"])
    return rec


def merge_rows(before: dict, rest: dict, start_step: int) -> dict:
    """One row for an epoch trained in two parts: ``before`` (its row at a budget stop, which began after
    optimizer step ``start_step``) and ``rest`` (the resumed part's row). Losses are step-weighted means; the
    evaluation is the rest's (an extra one at the stop described the epoch unfinished)."""
    n1, n2 = before["step"] - start_step, rest["step"] - before["step"]
    out = {"epoch": rest["epoch"], "step": rest["step"], "lr": rest["lr"]}
    for key in [k for k in {**before, **rest} if k == "loss" or k.startswith("loss_")]:
        parts = [(v, n) for v, n in ((before.get(key), n1), (rest.get(key), n2)) if v is not None and n > 0]
        if parts:
            out[key] = sum(v * n for v, n in parts) / sum(n for _, n in parts)
    images, seconds = before["images"] + rest["images"], before["seconds"] + rest["seconds"]
    out.update(images=images, seconds=seconds, images_per_s=images / max(seconds, 1e-9))
    out.update({k: v for k, v in rest.items() if k not in out})  # the evaluation of the whole epoch, if any
    return out


def epoch_line(epoch: int, epochs: int, row: dict, metrics: dict | None, batch: int = 0, batches: int = 0) -> str:
    """``epoch 3/12: loss 1.2003  val AP 0.7888  AP50 0.9974  (5.0 img/s)`` (no AP without an evaluation);
    an epoch stopped at ``batch`` of ``batches`` says so: ``epoch 3/12 (stopped at batch 4/9): ...``."""
    where = f" (stopped at batch {batch}/{batches})" if batch else ""
    ap = f"  val AP {metrics['AP']:.4f}  AP50 {metrics['AP50']:.4f}" if metrics is not None else ""
    return (f"epoch {epoch}/{epochs}{where}: loss {row.get('loss', math.nan):.4f}{ap}  "
            f"({row['images_per_s']:.1f} img/s)")


def epochs_done(epoch: int, batch: int, batches: int) -> int | float:
    """Epochs trained: ``epoch`` finished ones plus the fraction ``batch / batches`` of the one stopped inside
    (``3`` or ``3.25``)."""
    if not batch or not batches:
        return epoch
    return round(epoch + batch / batches, 2)
