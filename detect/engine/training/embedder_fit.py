"""Training the product embedder: ``fit_embedder(cfg)`` (``retail-detect embedder train``).

Product crops (:mod:`detect.data.crops`) in class-balanced batches (``P`` classes x ``K`` crops), shelf-like
augmentation (:mod:`detect.data.crop_augment`), a proxy loss (:mod:`detect.models.embedder_loss`; its proxies
train with the model but are not part of the embedder). The backbone learns at ``lr x backbone_lr_mult``, the
pooling and projection at ``lr``, the proxies at ``lr x proxy_lr_mult``. After each epoch the val crops are
named by their nearest train crop (top-1 nearest-neighbour accuracy, :mod:`detect.engine.inference.embedder_eval`);
the best epoch is ``best.pt``. The detector trainer's pieces are reused: the run folder and its lock, the LR
schedule, EMA, :class:`TrainState`, atomic ``last.pt`` / ``best.pt``, ``metrics.csv`` and ``curves.png``.

Resume: ``last.pt`` is written after every epoch and when a budget (``train.max_steps``,
``train.time_budget_s``) stops the run inside one, with the batch reached and the RNG; a resumed run replays
that epoch's batches and augmentation draws up to there without training on them and goes on.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from data_tools.atomic import atomic_write_text
from data_tools.errors import CannotRun, InvalidInput
from detect.config.embedder import EmbedderConfig
from detect.data.crop_augment import ClassBalancedBatches, CropAugmenter, box_crops, letterboxed_batch
from detect.data.crops import CropSet, keep_classes, load_crops, split_per_class
from detect.engine.inference.crop_embedder import EMBEDDER_KIND
from detect.engine.inference.embedder_eval import crop_top1
from detect.engine.runtime.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    load_checkpoint,
    load_state_strict,
)
from detect.engine.runtime.device import resolve_device
from detect.engine.runtime.run_dir import claim_run_dir
from detect.engine.runtime.threads import apply_plan, plan_threads
from detect.engine.training.ema import ModelEMA
from detect.engine.training.history import history_row
from detect.engine.training.optim import param_groups
from detect.engine.training.resume import refuse_older_than_last
from detect.engine.training.run_checkpoints import restore_training, save_policy, save_run_checkpoints
from detect.engine.training.run_writers import RunWriters
from detect.engine.training.schedule import LRSchedule
from detect.engine.training.train_state import TrainState
from detect.models.embedder import Embedder, EmbedderSettings, build_embedder
from detect.models.embedder_loss import ProxyLoss, build_loss


def load_data(cfg: EmbedderConfig, log=print) -> tuple[CropSet, CropSet]:
    """``(train crops, val crops)``: ``data.val`` restricted to the train classes (in their order), or
    ``data.val_fraction`` of each train class held out."""
    d = cfg.data
    if d.train is None:
        raise InvalidInput("data.train is not set: pass a folder of class folders or a labelled dataset")
    train = load_crops(d.train, d.classes, d.max_crop_side, d.min_box_side, log)
    if d.val:
        val = load_crops(d.val, d.classes, d.max_crop_side, d.min_box_side, log, strict_classes=False)
        dropped = sorted(set(val.class_names) - set(train.class_names))
        val = keep_classes(val, train.class_names, d.val, strict=False)
        if dropped:
            log(f"val: {len(dropped)} classes not in the training data left out ({', '.join(dropped[:4])}"
                f"{', ...' if len(dropped) > 4 else ''})")
        val = _reindex(val, train.class_names)
    else:
        train, val = split_per_class(train, d.val_fraction, cfg.train.seed)
    if not len(val):
        raise InvalidInput("no val crop: give data.val or a data.val_fraction above 0 with 2+ crops per class")
    return train, val


def _reindex(cs: CropSet, names: list[str]) -> CropSet:
    """``cs`` labelled by the index of its class in ``names`` (every class of ``cs`` is in ``names``)."""
    index = {n: i for i, n in enumerate(names)}
    cs.labels = np.asarray([index[cs.class_names[k]] for k in cs.labels.tolist()], np.int64)
    cs.class_names = list(names)
    return cs


def build_optimizer(model: Embedder, loss: ProxyLoss, cfg: EmbedderConfig) -> torch.optim.Optimizer:
    """AdamW / Adam / SGD over the backbone (``lr_mult = backbone_lr_mult``), the pooling and projection (1) and
    the proxies (``proxy_lr_mult``, no weight decay); :class:`LRSchedule` sets ``lr = base x lr_mult``."""
    t = cfg.train
    backbone = nn.ModuleList([model.stem, model.blocks, model.head])
    head = nn.ModuleList([model.pool, model.project])
    groups = []
    for part, mult, wd in ((backbone, t.backbone_lr_mult, t.weight_decay), (head, 1.0, t.weight_decay),
                           (loss, cfg.loss.proxy_lr_mult, 0.0)):
        for g in param_groups(part, wd):
            groups.append({**g, "lr_mult": mult})
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov and t.momentum > 0)
    if t.optimizer == "adam":
        return torch.optim.Adam(groups, lr=t.lr, betas=tuple(t.betas))
    return torch.optim.AdamW(groups, lr=t.lr, betas=tuple(t.betas))


@torch.no_grad()
def warm_start(model: Embedder, loss: ProxyLoss, crops: list, labels: np.ndarray, device,
               batch_size: int = 64) -> None:
    """Start near the ImageNet baseline: ``model.project`` (``Linear(1280, dim)``) becomes the PCA of the pooled
    features of ``crops`` (weight = the top ``dim`` principal directions ``[dim, 1280]``, bias = minus the projected
    mean) and each proxy the mean vector of its class's crops (int64 ``labels [N]``)."""
    model.eval()
    feats = torch.cat([model.features(letterboxed_batch(crops[i:i + batch_size], model.settings.image_size)
                                      .to(device)).float().cpu() for i in range(0, len(crops), batch_size)])
    mean = feats.mean(0)
    _, _, v = torch.linalg.svd(feats - mean, full_matrices=False)  # v: [min(N, 1280), 1280]
    dim = model.project.out_features
    weight = torch.zeros(dim, feats.shape[1])
    weight[:min(dim, len(v))] = v[:dim]
    model.project.weight.copy_(weight.to(device))
    model.project.bias.copy_((-(weight @ mean)).to(device))
    vectors = torch.nn.functional.normalize((feats - mean) @ weight.T, dim=1)
    for k in range(loss.proxies.shape[0]):
        members = vectors[torch.from_numpy(labels == k)]
        if len(members):
            loss.proxies[k] = torch.nn.functional.normalize(members.mean(0), dim=0).to(loss.proxies.device)


def _train_mode(model: Embedder, freeze_bn: bool) -> None:
    """``model.train()``, the backbone's BatchNorm layers left in eval mode with ``freeze_bn``."""
    model.train()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()


def _settings(cfg: EmbedderConfig) -> EmbedderSettings:
    m = cfg.model
    return EmbedderSettings(kind="trained", dim=m.dim, image_size=m.image_size, gem_p=m.gem_p, dropout=m.dropout)


def _checkpoint(model, loss, optimizer, schedule, ema, state: TrainState, cfg: EmbedderConfig,
                class_names: list[str], rng: torch.Tensor) -> dict:
    """What :meth:`CropEmbedder.load` reads (``kind``, ``embedder``, ``model``, ``ema``, ``class_names``) plus
    what ``--resume`` needs (optimizer, schedule, the loss's proxies, progress, RNG, recipe)."""
    return {"format": CHECKPOINT_FORMAT, "kind": EMBEDDER_KIND, "embedder": model.settings.to_dict(),
            "model": model.state_dict(), "ema": ema.state_dict() if ema is not None else None,
            "ema_updates": ema.updates if ema is not None else 0, "class_names": list(class_names),
            "loss": loss.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
            **state.to_dict(), "rng": rng, "embedder_config": cfg.to_dict()}


def _restore(path: str, model, loss, optimizer, schedule, ema, class_names: list[str]) -> TrainState:
    ckpt = load_checkpoint(path)
    if ckpt.get("kind") != EMBEDDER_KIND or "optimizer" not in ckpt or "loss" not in ckpt:
        raise CheckpointError(f"{path}: not an embedder training checkpoint (resume from the run's last.pt)")
    if list(ckpt["class_names"]) != list(class_names):
        raise CheckpointError(f"{path}: trained on {len(ckpt['class_names'])} classes, but data.train gives "
                              f"{len(class_names)} (same data and --classes as the run, please)")
    load_state_strict(model, ckpt["model"], path)
    load_state_strict(loss, ckpt["loss"], path)
    refuse_older_than_last(path, ckpt)
    return restore_training(ckpt, path, optimizer, schedule, ema)


def _evaluate(model: Embedder, train: CropSet, val: CropSet, refs: list, queries: list, device) -> dict:
    return crop_top1(model, refs, train.labels, queries, val.labels, len(train.class_names), device)


def fit_embedder(cfg: EmbedderConfig, log=print) -> dict:
    """Train ``cfg`` into a new run folder (``train.out_dir``, ``out_dir2``, ... when taken; the checkpoint's folder
    on resume): ``config.yaml``, ``last.pt``, ``best.pt``, ``metrics.csv``, ``curves.png``, ``summary.json``.

    Returns ``{"best_top1", "best_epoch", "baseline_top1" (the ImageNet embedder's, when measured), "epochs",
    "steps", "seconds", "images_per_s", "out_dir", "last", "best", "classes", "train_crops", "val_crops",
    "stopped_by"}``.
    """
    t = cfg.train
    resume_dir = Path(t.resume).parent if t.resume else None
    out, lock = claim_run_dir(resume_dir or t.out_dir, exist_ok=t.exist_ok, resume=resume_dir is not None)
    t.out_dir = str(out)
    try:
        return _fit(cfg, out, log)
    finally:
        lock.release()


def _fit(cfg: EmbedderConfig, out: Path, log) -> dict:
    t = cfg.train
    device = resolve_device(t.device)
    plan = plan_threads(0, device.type)
    apply_plan(plan)
    log(plan.describe())
    torch.manual_seed(t.seed)
    train, val = load_data(cfg, log)
    names = train.class_names
    refs, queries = box_crops(train), box_crops(val)
    model = build_embedder(_settings(cfg), pretrained=True).to(device)
    loss = build_loss(cfg.loss.name, len(names), cfg.model.dim, cfg.loss.scale, cfg.loss.margin).to(device)
    optimizer = build_optimizer(model, loss, cfg)
    batches = ClassBalancedBatches(train.labels, t.classes_per_batch, t.per_class, t.seed)
    schedule = LRSchedule(optimizer, t, len(batches), max(t.epochs, 1))
    ema = ModelEMA(model, t.ema_decay, ramp=200.0) if t.ema else None
    augment = CropAugmenter(cfg.augment, cfg.model.image_size, t.seed)
    state, resume_rng = TrainState(), None
    if cfg.model.init == "pca" and not t.resume:
        warm_start(model, loss, refs, train.labels, device)
    if t.resume:
        state = _restore(t.resume, model, loss, optimizer, schedule, ema, names)
        resume_rng = torch.get_rng_state()
        log(f"resumed from {t.resume} at epoch {state.epoch}" + (f" batch {state.batch}" if state.batch else "")
            + f" (step {state.step})")
    atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    log(f"training embedder ({cfg.loss.name}, dim {cfg.model.dim}, {cfg.model.image_size} px) on {len(train)} crops "
        f"of {len(names)} classes ({train.kind}), {device}; val: {len(val)} crops; batches of "
        f"{batches.p} classes x {batches.k}")
    baseline = None
    if not t.resume:
        base = build_embedder(EmbedderSettings(kind="imagenet", image_size=cfg.model.image_size)).to(device)
        baseline = _evaluate(base, train, val, refs, queries, device)["top1"]
        log(f"imagenet baseline: val top-1 {baseline:.4f}")
        del base
        if len(val) < 50 or baseline >= 0.98:
            log(f"warning: {len(val)} val crops{' that the ImageNet baseline already names' if baseline >= 0.98 else ''}"
                f": val top-1 (and so best.pt) will say little; check the embedder with `retail-detect gallery-bench` "
                "on photos of another session, or give --val")
    budget_hit = False
    metrics: dict = {}
    with RunWriters(out) as writers:
        while state.epoch < t.epochs and not budget_hit:
            epoch = state.epoch
            row = _train_epoch(model, loss, optimizer, schedule, ema, augment, batches, train, state, cfg, device,
                               log, resume_rng if state.batch else None)
            rng = torch.get_rng_state()
            finished = row["finished"]
            state.epoch = epoch + finished
            budget_hit = bool((t.max_steps and state.step >= t.max_steps)
                              or (t.time_budget_s > 0 and state.train_seconds >= t.time_budget_s))
            rec = history_row(epoch + 1, state.step, row)
            evaluated = finished and (state.epoch % t.eval_every == 0 or state.epoch >= t.epochs) or budget_hit
            is_best = False
            if evaluated:
                metrics = _evaluate(ema.module if ema is not None else model, train, val, refs, queries, device)
                rec.update(metrics)
                is_best = state.record_eval(metrics["top1"], epoch + 1, finished)
            where = f" (stopped at batch {state.batch}/{len(batches)})" if state.batch else ""
            top1 = f"  val top-1 {metrics['top1']:.4f}" if evaluated else ""
            log(f"epoch {epoch + 1}/{t.epochs}{where}: loss {row.get('loss', math.nan):.4f}{top1}  "
                f"({row['images_per_s']:.1f} img/s)")
            state.history.append(rec)
            ck = _checkpoint(model, loss, optimizer, schedule, ema, state, cfg, names, rng)
            save_run_checkpoints(out, ck, save_policy(0, None, is_best))
            writers.epoch_end(state.history)
            resume_rng = None
    steps_planned = len(batches) * t.epochs
    stopped_by = None if not budget_hit or state.step >= steps_planned else (
        f"train.max_steps={t.max_steps}" if t.max_steps and state.step >= t.max_steps
        else f"train.time_budget_s={t.time_budget_s:g}")
    seconds = sum(h["seconds"] for h in state.history)
    images = sum(h["images"] for h in state.history)
    summary = {"best_top1": state.best_map, "best_epoch": state.best_epoch, "baseline_top1": baseline,
               "epochs": state.epoch, "steps": state.step, "seconds": seconds,
               "images_per_s": images / max(seconds, 1e-9), "out_dir": str(out),
               "last": _if_file(out / "last.pt"), "best": _if_file(out / "best.pt"), "classes": len(names),
               "train_crops": len(train), "val_crops": len(val), "stopped_by": stopped_by}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    return summary


def _if_file(path: Path) -> str | None:
    return str(path) if path.is_file() else None


def _train_epoch(model, loss, optimizer, schedule, ema, augment: CropAugmenter, batches: ClassBalancedBatches,
                 train: CropSet, state: TrainState, cfg: EmbedderConfig, device, log,
                 rng: torch.Tensor | None) -> dict:
    """One pass of class-balanced batches (augmented crops ``[B, 3, S, S]`` uint8 -> ``[B, dim]`` -> loss),
    stopping early at a budget; a resumed epoch replays its first ``state.batch`` batches untrained."""
    t = cfg.train
    seed = t.seed * 100_003 + state.epoch
    batches.set_epoch(state.epoch)
    augment.set_seed(seed)
    torch.manual_seed(seed)
    skip = state.batch
    _train_mode(model, t.freeze_bn)
    total = torch.zeros(())
    steps = seen = position = 0
    start = time.perf_counter()
    lr = schedule.step(state.step)
    finished = True
    for indices in batches:
        images = torch.from_numpy(np.stack([augment(train, i) for i in indices])).permute(0, 3, 1, 2)
        if position < skip:  # replay: the same augmentation draws as the first time, not trained on
            position += 1
            if position == skip and rng is not None:
                torch.set_rng_state(rng)
            continue
        used = state.train_seconds + time.perf_counter() - start
        if t.max_steps and state.step >= t.max_steps or (t.time_budget_s and used >= t.time_budget_s):
            finished = False
            break
        position += 1
        lr = schedule.step(state.step, used / t.time_budget_s if t.time_budget_s else None)
        labels = torch.from_numpy(train.labels[indices]).to(device)
        value = loss(model(images.to(device)), labels)
        if not torch.isfinite(value):
            state.nonfinite += 1
            if state.nonfinite >= 20:
                raise CannotRun(f"aborting: {state.nonfinite} non-finite losses (lower train.lr)")
            continue
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        if t.grad_clip > 0:
            nn.utils.clip_grad_norm_([*model.parameters(), *loss.parameters()], t.grad_clip)
        optimizer.step()
        if ema is not None:
            ema.update(model)
        state.step += 1
        steps += 1
        seen += len(indices)
        total += value.detach()
        if steps % t.log_every == 0:
            log(f"  epoch {state.epoch + 1} step {state.step}: loss {(total / steps).item():.4f}")
    seconds = time.perf_counter() - start
    state.train_seconds += seconds
    state.batch = 0 if finished else position
    return {"loss": (total / max(steps, 1)).item(), "lr": lr, "steps": steps, "images": seen, "seconds": seconds,
            "images_per_s": seen / max(seconds, 1e-9), "finished": finished}
