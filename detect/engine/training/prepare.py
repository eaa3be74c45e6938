"""What a training run needs before its first step: its datasets and loaders (the device and process group are
:mod:`detect.engine.runtime.device`)."""

from __future__ import annotations

import os

import torch

from data_tools.errors import InvalidInput
from data_tools.records import RecordSet, merge_classes
from data_tools.sources import class_mismatch, load_any, select_split
from detect.config import Config
from detect.data import DetectionDataset, build_loader
from detect.data.proposals import proposals_for_records
from detect.engine.runtime.device import Dist, resolve_device
from detect.engine.runtime.threads import apply_plan, plan_threads


def load_split(path: str | None, what: str, required: bool, class_names: list[str] | None = None,
               log=print) -> RecordSet | None:
    """Load ``data.<what>``: a dataset ``.pkl``, or a label folder / file converted (and cached) on the fly
    (:mod:`data_tools.sources`), in the order of ``class_names`` when given. A dataset whose labels came
    split (a YOLO export's ``train/`` and ``val/`` folders) gives ``data.train`` its ``train`` images and
    ``data.val`` its ``val`` images. A clear error when it is required and missing."""
    if path is None:
        if required:
            raise InvalidInput(f"data.{what} is not set: pass data.{what}=DATASET.pkl (made by `retail-data split`) "
                             "or a label folder / file (VOC, COCO, YOLO, CVAT, Label Studio, CSV)")
        return None
    return select_split(load_any(path, class_names, log), what, f"data.{what}={path}", log)


def drop_unreadable(ds: DetectionDataset, log=print) -> DetectionDataset:
    """Report every image that cannot be read (path and reason) and drop its record from the dataset."""
    bad = ds.check_images()
    if not bad:
        return ds
    for _, err in bad[:20]:
        log(f"warning: skipping unreadable image: {err}")
    if len(bad) > 20:
        log(f"warning: ... and {len(bad) - 20} more unreadable images")
    keep = sorted(set(range(len(ds))) - {i for i, _ in bad})
    if not keep:
        raise InvalidInput("no readable image left in the dataset")
    return ds.subset(keep)


def build_datasets(cfg: Config, d: Dist, log=print):
    """``(train_ds, train_loader, val_ds | None, val_loader | None, class_names)`` for ``cfg``; with
    ``data.class_agnostic`` the training and validation labels are merged into one class, ``product``
    (:func:`~data_tools.records.merge_classes`), after the validation classes are checked against the training ones.

    Also sets this process's threads: ``data.workers`` (-1 = automatic) and PyTorch's intra-op threads
    come from :func:`~detect.engine.runtime.threads.plan_threads` (the cores free on this machine), logged in one line.
    """
    say = log if d.main else (lambda *_: None)
    train_rs = load_split(cfg.data.train, "train", required=True, log=say)
    val_rs = load_split(cfg.data.val, "val", required=False, class_names=train_rs.class_names, log=say)
    if val_rs is not None and list(val_rs.class_names) != list(train_rs.class_names):
        raise InvalidInput(class_mismatch(f"data.val={cfg.data.val}", val_rs.class_names, train_rs.class_names,
                                          f"data.train={cfg.data.train}", val_rs.meta.get("source"),
                                          path=str(cfg.data.val), split=val_rs.meta.get("split")))
    if not train_rs.records:
        raise InvalidInput(f"{cfg.data.train}: the training set has no images")
    if cfg.data.class_agnostic:  # a product detector: every class merged into one, `product`
        say(f"data.class_agnostic: {len(train_rs.class_names)} classes merged into one, 'product'")
        train_rs = merge_classes(train_rs)
        val_rs = merge_classes(val_rs) if val_rs is not None else None
    pin = cfg.data.pin_memory and torch.cuda.is_available()
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if d.enabled else 1
    plan = plan_threads(cfg.data.workers, resolve_device(cfg.train.device).type, processes=local_world)
    apply_plan(plan)
    if d.main:
        log(plan.describe())
    props = cfg.data.proposals  # external region proposals (Fast R-CNN without its RPN), moved with the images
    train_ds = drop_unreadable(DetectionDataset(train_rs, cfg.data.image_size, cfg.augment, True, cfg.data.cache_images,
                                                seed=cfg.train.seed,
                                                proposals=proposals_for_records(props, train_rs) if props else None), log)
    train_loader = build_loader(train_ds, cfg.train.batch_size, True, plan.workers, pin, d.enabled, cfg.train.seed)
    val_ds = val_loader = None
    if val_rs is not None and val_rs.records:
        val_ds = drop_unreadable(DetectionDataset(val_rs, cfg.data.image_size, None, False, cfg.data.cache_images,
                                                  proposals=proposals_for_records(props, val_rs) if props else None), log)
        val_loader = build_loader(val_ds, cfg.eval.batch_size, False, min(plan.workers, 2), pin, False, 0)
    return train_ds, train_loader, val_ds, val_loader, list(train_rs.class_names)
