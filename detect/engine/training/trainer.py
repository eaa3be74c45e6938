"""Training: ``fit(cfg)`` runs epochs of :func:`train_one_epoch` and :func:`evaluate`, with checkpoints,
early stopping, resume and DDP.

Determinism and exact resume: at the start of epoch ``e`` the torch RNG, the shuffle generator and (with
``data.workers: 0``) the augmentation RNGs are re-seeded from ``(train.seed, e)``; ``last.pt`` is written
at the end of every epoch and when a budget (``train.max_steps``, ``train.time_budget_s``) stops the run
inside one, with the batch reached and the torch RNG after the last step. A resumed run re-seeds that
epoch, replays the loader up to that batch without training on it (same order, same augmentation draws),
restores the RNG and trains on. So resuming from ``last.pt`` after any stop trains exactly what an
uninterrupted run does (on the CPU; persistent loader workers keep their own augmentation streams). An
extra evaluation at a budget stop may give ``best.pt`` but feeds neither early stopping nor the plateau
schedule, which see only the scheduled evaluations.

What a caller says or writes about the finished run (``train``'s table of ``best.pt`` and its report) is its
``on_finish`` hook (:class:`FitEnd`), so the engine knows nothing of the report.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from torch import nn
from tqdm import tqdm

from data_tools.atomic import atomic_write_text
from data_tools.errors import CannotRun
from data_tools.progress import is_tty
from detect.config import Config, absolute_data_paths
from detect.data import DetectionDataset
from detect.data.proposals import model_inputs
from detect.engine.inference.evaluator import evaluate_coco, plot_pr_curves, write_results
from detect.engine.runtime.checkpoint import unwrap
from detect.engine.runtime.device import Dist, init_distributed
from detect.engine.runtime.run_dir import RunLock, claim_run_dir
from detect.engine.training.ema import ModelEMA
from detect.engine.training.history import epoch_line, epochs_done, history_row, merge_rows
from detect.engine.training.optim import build_optimizer, l1_penalty
from detect.engine.training.prepare import build_datasets
from detect.engine.training.run_checkpoints import (
    checkpoint_bytes,
    checkpoint_state,
    restore,
    save_policy,
    save_run_checkpoints,
)
from detect.engine.training.run_writers import RunWriters
from detect.engine.training.schedule import LRSchedule
from detect.engine.training.train_state import TrainState
from detect.models.build import build_model
from detect.models.detector import postprocess_settings


def _seed_epoch(cfg: Config, epoch: int, loader, dataset) -> None:
    seed = cfg.train.seed * 100_003 + epoch
    torch.manual_seed(seed)
    if loader.generator is not None:
        loader.generator.manual_seed(seed)
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    if loader.num_workers == 0:
        dataset.set_seed(seed)


def train_one_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, schedule: LRSchedule,
                    state: TrainState, cfg: Config, device: torch.device, ema: ModelEMA | None, d: Dist,
                    log=print, skip: int = 0, rng: torch.Tensor | None = None) -> dict[str, float]:
    """One pass over ``loader`` (stopping early at ``train.max_steps`` or the time budget); updates
    ``state.step``, ``state.batch`` (0 when the pass finished, else the batches done), ``state.nonfinite``
    and ``state.train_seconds``.

    ``skip``: batches of this epoch trained before a stop; they are drawn again (the same order and
    augmentation draws as the first time) but not trained on; then the torch RNG is set to ``rng`` (its state
    after the last of them), so the pass continues exactly where it stopped.

    ``images`` uint8 ``[B, 3, S, S]``; targets as :class:`~detect.data.DetectionDataset` gives them.

    Returns mean losses (``loss`` and each term), ``lr``, ``steps``, ``images``, ``seconds``, ``images_per_s``
    and ``finished`` (the whole pass was trained).
    """
    model.train()
    t = cfg.train
    amp = t.amp and device.type == "cuda"
    sums: dict[str, torch.Tensor] = {}
    steps = images_seen = 0
    start = time.perf_counter()
    batches = iter(loader)
    position = 0
    for _ in range(skip):  # replay: the sampler order and augmentation RNGs advance as they did
        if next(batches, None) is None:
            break
        position += 1
    if rng is not None:
        torch.set_rng_state(rng)
    bar = tqdm(batches, desc=f"epoch {state.epoch + 1}/{t.epochs}", leave=False, total=len(loader),
               initial=position, disable=not (d.main and is_tty()))

    def progress() -> float | None:  # fraction of the time budget used (the schedule follows it)
        if t.time_budget_s <= 0:
            return None
        return (state.train_seconds + time.perf_counter() - start) / t.time_budget_s

    lr = schedule.step(state.step, progress())
    finished = True
    for images, targets in bar:
        used = progress()
        if t.max_steps and state.step >= t.max_steps or (used is not None and used >= 1.0):
            finished = False
            break
        position += 1
        lr = schedule.step(state.step, progress())
        images = images.to(device, non_blocking=True)
        extra = model_inputs(targets, device)  # e.g. the dataset's external proposals
        targets = [{"boxes": x["boxes"].to(device, non_blocking=True), "labels": x["labels"].to(device, non_blocking=True)}
                   for x in targets]
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            losses = model(images, targets, **extra)
        loss = sum(losses.values())
        penalty = l1_penalty(unwrap(model), t.l1)
        if penalty is not None:
            loss = loss + penalty
            losses = {**losses, "l1": penalty}
        if not torch.isfinite(loss).item():
            state.nonfinite += 1
            optimizer.zero_grad(set_to_none=True)
            log(f"warning: non-finite loss at step {state.step} ({state.nonfinite}/{t.max_nonfinite}); batch skipped")
            if state.nonfinite >= t.max_nonfinite:
                raise CannotRun(f"aborting: {state.nonfinite} non-finite losses (lower train.lr or check the data)")
            continue
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        optimizer.step()
        if ema is not None:
            ema.update(unwrap(model))
        state.step += 1
        steps += 1
        images_seen += images.shape[0]
        for k, v in {"loss": loss, **losses}.items():
            sums[k] = sums.get(k, 0.0) + v.detach().float()
        if d.main and (steps % t.log_every == 0):
            means = {k: f"{(v / steps).item():.3f}" for k, v in sums.items()}
            if is_tty():
                bar.set_postfix(means)
            else:
                log(f"  epoch {state.epoch + 1} step {state.step}: " + " ".join(f"{k} {v}" for k, v in means.items()))
    seconds = time.perf_counter() - start
    state.train_seconds += seconds
    state.batch = 0 if finished else position
    out = {k: (v / max(steps, 1)).item() for k, v in sums.items()}
    out.update(lr=lr, steps=steps, images=images_seen * d.world, seconds=seconds,
               images_per_s=images_seen * d.world / max(seconds, 1e-9), finished=finished)
    return out


def evaluate(model: nn.Module, loader, rs, cfg: Config, device: torch.device) -> tuple[dict, list[dict]]:
    """COCO metrics of ``model`` on ``loader`` (at ``eval.max_detections`` and ``eval.score_thresh``)."""
    m = unwrap(model)
    with postprocess_settings(m, score_thresh=cfg.eval.score_thresh, max_detections=cfg.eval.max_detections):
        return evaluate_coco(m, loader, rs, device, cfg.eval.max_detections, cfg.train.amp)


def _claim_out_dir(cfg: Config, d: Dist) -> tuple[Path, RunLock | None]:
    """Rank 0 claims the run folder (``runs/x`` -> ``runs/x2`` when taken; see :mod:`run_dir`); all ranks
    learn its name. ``cfg.train.out_dir`` is set to it, so checkpoints record where the run lives."""
    t = cfg.train
    lock = None
    folder = [t.out_dir]
    if d.main:
        resume_dir = Path(t.resume).parent if t.resume else None
        path, lock = claim_run_dir(resume_dir or t.out_dir, exist_ok=t.exist_ok, resume=resume_dir is not None)
        folder = [str(path)]
    if d.enabled:
        dist.broadcast_object_list(folder, src=0)
    t.out_dir = folder[0]
    return Path(folder[0]), lock


@dataclasses.dataclass(frozen=True)
class FitEnd:
    """What a finished fit hands its ``on_finish`` hook: on rank 0 only, the run folder still locked, before
    ``summary.json`` is written.

    Attributes:
        out: the run folder (holding ``best.pt`` once an epoch was trained).
        cfg: the recipe trained.
        val_ds: the validation :class:`~detect.data.DetectionDataset`, or None without ``data.val``.
        best_eval: ``(metrics, COCO results)`` of the best epoch when this session evaluated it; None when it
            came from an earlier session (a resumed run) or nothing was evaluated.
        best_epoch: the epoch ``best.pt`` holds (0: none).
        device: the device trained on.
    """

    out: Path
    cfg: Config
    val_ds: DetectionDataset | None
    best_eval: tuple[dict, list[dict]] | None
    best_epoch: int
    device: torch.device


FitHook = Callable[[FitEnd, Callable[[str], None]], object]
"""``on_finish(end, log)``: called once at the end of :func:`fit` on rank 0, with fit's ``log``."""


def fit(cfg: Config, log=print, on_finish: FitHook | None = None) -> dict:
    """Train ``cfg`` (see the module doc). Writes into a new run folder (``train.out_dir``, or ``out_dir2``,
    ... when that holds a run; the checkpoint's folder on resume): {config.yaml, last.pt, best.pt,
    [epoch_N.pt,] metrics.csv, curves.png, val_results.json, pr_curve.png, summary.json}.

    Returns ``{"metrics": last val metrics, "best_map", "best_epoch", "epochs", "steps", "session_steps",
    "seconds", "images_per_s", "out_dir", "last", "best", "checkpoint_bytes", "class_names", "stopped_by"}``:
    ``epochs`` counts a part-trained last epoch as a fraction (``0.5``); ``session_steps``, ``seconds`` and
    ``images_per_s`` are this process's part (a resumed run's, not the whole run's); ``last`` / ``best`` are
    None when not written; ``checkpoint_bytes``: disk space of the run's ``*.pt`` (see :mod:`run_checkpoints`).
    ``on_finish(FitEnd, log)`` runs last on rank 0 (``train`` passes
    :func:`detect.report.train_report.best_checkpoint_report`: ``best.pt``'s table and report).
    """
    d, device = init_distributed(cfg.train.device)
    out, lock = _claim_out_dir(cfg, d)
    try:
        return _fit(cfg, d, device, out, log, on_finish)
    finally:
        if lock is not None:
            lock.release()


def _fit(cfg: Config, d: Dist, device: torch.device, out: Path, log, on_finish: FitHook | None) -> dict:
    t = cfg.train
    if t.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(t.seed)
    train_ds, train_loader, val_ds, val_loader, class_names = build_datasets(cfg, d, log)
    model = build_model(cfg.model, len(class_names), cfg.data.image_size).to(device)
    if device.type == "cuda" and t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, t)
    schedule = LRSchedule(optimizer, t, len(train_loader), t.epochs)
    ema = ModelEMA(model, t.ema_decay) if t.ema else None
    state, resume_rng = TrainState(), None
    if t.resume:
        state, resume_rng = restore(t.resume, model, optimizer, schedule, ema, class_names)
        where = (f"in epoch {state.epoch + 1} after batch {state.batch}/{len(train_loader)}" if state.batch
                 else f"at epoch {state.epoch}")
        log(f"resumed from {t.resume} {where} (step {state.step})")
        if state.epoch >= t.epochs:
            log(f"nothing to train: {t.resume} is already at epoch {state.epoch} of train.epochs={t.epochs} "
                f"(raise train.epochs to continue)")
    if d.main:
        atomic_write_text(out / "config.yaml", yaml.safe_dump(absolute_data_paths(cfg.to_dict()), sort_keys=False))
    runner = _wrap(model, cfg, device, d)
    log(f"training {cfg.model.name} ({cfg.model.backbone}) on {len(train_ds)} images, {len(class_names)} classes, "
        f"{device}{f' x{d.world}' if d.enabled else ''}; val: {len(val_ds) if val_ds else 0} images")
    metrics: dict = {}
    best_eval = None  # (metrics, results) of the best epoch evaluated in this session
    session = {"seconds": 0.0, "images": 0, "steps": 0}  # what this process trained (a resumed run: its part)
    stop = budget_hit = False
    with RunWriters(out, t.tensorboard and d.main) as writers:
        while state.epoch < t.epochs and not stop:
            epoch = state.epoch  # 0-based epoch being trained
            if t.unfreeze_epoch >= 0 and epoch >= t.unfreeze_epoch and unwrap(model).backbone.frozen_stages:
                unwrap(model).backbone.unfreeze()
                runner = _wrap(model, cfg, device, d)
                log(f"epoch {epoch + 1}: backbone unfrozen")
            if cfg.augment.mosaic > 0:
                train_ds.set_mosaic(epoch < t.epochs - cfg.augment.mosaic_off_epochs)
            _seed_epoch(cfg, epoch, train_loader, train_ds)
            start_step = _step_before(state.history, epoch + 1)  # where this epoch's row began
            row = train_one_epoch(runner, train_loader, optimizer, schedule, state, cfg, device, ema, d, log,
                                  skip=state.batch, rng=resume_rng if state.batch else None)
            rng = torch.get_rng_state()  # after the last step: where a run stopped inside this epoch goes on
            for key in session:
                session[key] += row[key]
            finished = row["finished"]
            state.epoch = epoch + finished
            budget_hit = bool((t.max_steps and state.step >= t.max_steps)
                              or (t.time_budget_s > 0 and state.train_seconds >= t.time_budget_s))
            rec = history_row(epoch + 1, state.step, row)
            if state.history and state.history[-1]["epoch"] == epoch + 1:  # the rest of an epoch stopped inside
                rec = merge_rows(state.history.pop(), rec, start_step)
            # scheduled evaluations drive early stopping and the plateau schedule; one at a budget stop does not
            scheduled = finished and (state.epoch % t.eval_every == 0 or state.epoch >= t.epochs)
            evaluated = val_loader is not None and d.main and (scheduled or budget_hit)
            is_best = val_loader is None
            if evaluated:
                metrics, results = evaluate(ema.module if ema is not None else model, val_loader, val_ds.rs, cfg,
                                            device)
                rec.update({k: v for k, v in metrics.items() if isinstance(v, float)})
                if scheduled:
                    schedule.observe(metrics["AP"])
                if state.record_eval(metrics["AP"], epoch + 1, scheduled):
                    best_eval, is_best = (metrics, results), True
                stop = bool(t.early_stop_patience and state.bad_evals >= t.early_stop_patience)
            if d.main:
                log(epoch_line(epoch + 1, t.epochs, row, metrics if evaluated else None, state.batch,
                               len(train_loader)))
            state.history.append(rec)
            if d.main:
                ck = checkpoint_state(model, optimizer, schedule, ema, state, cfg, class_names, rng)
                save_run_checkpoints(out, ck, save_policy(t.save_period, state.epoch if finished else None, is_best))
                if is_best and val_loader is not None:
                    write_results(results, out / "val_results.json")
                    plot_pr_curves(metrics, out / "pr_curve.png")
                writers.epoch_end(state.history)
            stop = _agree(stop or budget_hit, d)
            if stop and t.early_stop_patience and state.bad_evals >= t.early_stop_patience:
                log(f"early stop: no better val AP for {state.bad_evals} evaluations (best {state.best_map:.4f} "
                    f"at epoch {state.best_epoch})")
    planned = len(train_loader) * t.epochs
    epochs = epochs_done(state.epoch, state.batch, len(train_loader))
    stopped_by = None if not budget_hit or state.step >= planned else (
        f"train.max_steps={t.max_steps}" if t.max_steps and state.step >= t.max_steps
        else f"train.time_budget_s={t.time_budget_s:g}")
    if stopped_by and d.main:
        log(f"stopped early by {stopped_by}: {state.step}/{planned} steps ({epochs}/{t.epochs} epochs)")
    if d.main and on_finish is not None:
        on_finish(FitEnd(out, cfg, val_ds, best_eval, state.best_epoch, device), log)
    summary = {"metrics": metrics, "best_map": state.best_map, "best_epoch": state.best_epoch,
               "epochs": epochs, "steps": state.step, "session_steps": session["steps"],
               "seconds": session["seconds"], "images_per_s": session["images"] / max(session["seconds"], 1e-9),
               "out_dir": str(out), "last": _if_exists(out / "last.pt"), "best": _if_exists(out / "best.pt"),
               "checkpoint_bytes": checkpoint_bytes(out) if d.main else 0,
               "class_names": class_names, "stopped_by": stopped_by}
    if d.main:
        atomic_write_text(out / "summary.json", json.dumps({k: v for k, v in summary.items() if k != "metrics"}
                                                           | {"metrics": _floats(metrics)}, indent=1))
    if d.enabled:
        dist.barrier()
        dist.destroy_process_group()
    return summary


def _step_before(history: list[dict], epoch: int) -> int:
    """The optimizer step at which ``epoch`` (1-based) began: the last step of the rows before it."""
    return max((h["step"] for h in history if h["epoch"] < epoch), default=0)


def _if_exists(path: Path) -> str | None:
    return str(path) if path.is_file() else None


def _floats(m: dict) -> dict:
    return {k: v for k, v in m.items() if isinstance(v, (float, int, dict)) and k != "pr_curve"}


def _wrap(model: nn.Module, cfg: Config, device: torch.device, d: Dist) -> nn.Module:
    """DDP (when distributed) and torch.compile (on CUDA when asked) around the plain model."""
    runner = model
    if d.enabled:
        from torch.nn.parallel import DistributedDataParallel

        runner = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                         find_unused_parameters=False)
    if cfg.train.compile and device.type == "cuda":
        runner = torch.compile(runner)
    return runner


def _agree(flag: bool, d: Dist) -> bool:
    """Every process stops when rank 0 says so."""
    if not d.enabled:
        return flag
    box = [flag]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])
