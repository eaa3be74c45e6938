"""COCO evaluation with pycocotools, at up to 300 detections per image (shelves are dense).

pycocotools' ``COCOeval.summarize()`` looks up ``maxDets=100`` for most of its numbers, so with
``maxDets=[1, 10, 300]`` it prints -1 for them. :func:`summarize` reads the accumulated
precision/recall arrays itself at the configured maximum instead.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from data_tools.atomic import atomic_write_text
from data_tools.coco import to_coco
from data_tools.figures import pyplot, save_png
from data_tools.progress import progress_bar
from data_tools.records import RecordSet
from detect.data.augment import boxes_to_original
from detect.data.proposals import model_inputs


def _coco_gt(rs: RecordSet):
    from pycocotools.coco import COCO

    gt = COCO()
    gt.dataset = to_coco(rs)
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


@torch.no_grad()
def predict_dataset(model: nn.Module, loader, device: torch.device, amp: bool = False,
                    progress: bool | None = False) -> list[dict]:
    """Run ``model`` (eval mode) over ``loader``; detections in original image pixels as COCO results.

    Extra inputs the batches carry (the dataset's external proposals) go to the model with the images
    (:func:`~detect.data.proposals.model_inputs`). ``progress``: a progress bar (images) on stderr; None =
    on a terminal for long inputs (:func:`data_tools.progress.show_progress`).

    Returns:
        ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]``.
    """
    model.eval()
    results = []
    bar = progress_bar(len(loader.dataset), "eval", "img", enabled=progress)
    for images, targets in loader:
        images = images.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            outputs = model(images, **model_inputs(targets, device))
        for out, t in zip(outputs, targets):
            h, w = t["orig_size"]
            boxes = boxes_to_original(out["boxes"].cpu(), t["scale"], w, h).numpy()
            scores, labels = out["scores"].float().cpu().numpy(), out["labels"].cpu().numpy()
            for b, s, c in zip(boxes, scores, labels):
                results.append({"image_id": int(t["image_id"]), "category_id": int(c),
                                "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                                "score": float(s)})
        bar.update(len(targets))
    bar.close()
    return results


def predict_dataset_tiled(predictor, ds, chunk: int = 4, progress: bool | None = False) -> tuple[list[dict], int]:
    """Predict every image of dataset ``ds`` at full resolution through ``predictor`` (its tiling), as COCO results.

    The photos are decoded whole (not at the dataset's letterbox size), ``chunk`` at a time, so
    :class:`~detect.engine.inference.predictor.Predictor` can tile the large ones as ``predict`` does. A photo
    decoded at another size than its record says has its boxes scaled to the record's pixels.

    Returns:
        ``(results, tiled)``: COCO results as :func:`predict_dataset`'s (``image_id`` = index + 1) and the
        number of photos that were tiled.
    """
    from data_tools.images import read_image

    results, tiled = [], 0
    records = ds.rs.records
    bar = progress_bar(len(records), "eval", "img", enabled=progress)
    for start in range(0, len(records), chunk):
        idx = range(start, min(start + chunk, len(records)))
        images = [read_image(ds.image_path(i)) for i in idx]
        for i, img, r in zip(idx, images, predictor.predict_images(images)):
            rec = records[i]
            fx, fy = rec.width / img.shape[1], rec.height / img.shape[0]
            tiled += r["tiles"] > 0
            boxes = (r["boxes"] * torch.tensor([fx, fy, fx, fy])).numpy()
            for b, sc, c in zip(boxes, r["scores"].tolist(), r["labels"].tolist()):
                results.append({"image_id": i + 1, "category_id": int(c),
                                "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                                "score": float(sc)})
        bar.update(len(idx))
    bar.close()
    return results, tiled


def _mean_valid(x: np.ndarray) -> float:
    """Mean over the entries pycocotools filled in; -1.0 (its "not applicable") when there are none, e.g.
    APl on a set without large objects."""
    valid = x[x > -1]
    return float(valid.mean()) if valid.size else -1.0


def summarize(precision: np.ndarray, recall: np.ndarray, iou_thrs: np.ndarray, max_dets: list[int],
              max_det: int) -> dict[str, float]:
    """Headline numbers from COCOeval arrays ``precision [T, R, K, A, M]`` and ``recall [T, K, A, M]``.

    Returns AP, AP50, AP75, APs/APm/APl and AR (all at ``max_det`` detections), AR1, AR10.
    """
    m = max_dets.index(max_det)
    t50, t75 = int(np.argmin(abs(iou_thrs - 0.5))), int(np.argmin(abs(iou_thrs - 0.75)))
    out = {
        "AP": _mean_valid(precision[:, :, :, 0, m]),
        "AP50": _mean_valid(precision[t50, :, :, 0, m]),
        "AP75": _mean_valid(precision[t75, :, :, 0, m]),
        "APs": _mean_valid(precision[:, :, :, 1, m]),
        "APm": _mean_valid(precision[:, :, :, 2, m]),
        "APl": _mean_valid(precision[:, :, :, 3, m]),
        f"AR{max_det}": _mean_valid(recall[:, :, 0, m]),
    }
    for i, d in enumerate(max_dets):
        if d != max_det:
            out[f"AR{d}"] = _mean_valid(recall[:, :, 0, i])
    return out


def coco_evaluate(rs: RecordSet, results: list[dict], max_dets: int = 300) -> dict:
    """Evaluate COCO-format ``results`` against ``rs``.

    Returns ``{"AP", "AP50", ..., "per_class": {name: AP}, "per_class_ap50": {...}, "pr_curve":
    {"recall": [101], "precision": {name: [101]}} (IoU 0.5), "detections": len(results)}``. No detections
    gives zeros, not a crash.
    """
    from pycocotools.cocoeval import COCOeval

    names = rs.class_names
    empty = {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "APs": 0.0, "APm": 0.0, "APl": 0.0, f"AR{max_dets}": 0.0,
             "per_class": dict.fromkeys(names, 0.0), "per_class_ap50": dict.fromkeys(names, 0.0),
             "pr_curve": None, "detections": 0}
    if not results or not rs.records:
        return empty
    gt = _coco_gt(rs)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
    precision, recall = ev.eval["precision"], ev.eval["recall"]
    out = summarize(precision, recall, ev.params.iouThrs, ev.params.maxDets, max_dets)
    t50 = int(np.argmin(abs(ev.params.iouThrs - 0.5)))
    cat_ids = list(ev.params.catIds)
    out["per_class"] = {names[c - 1]: _mean_valid(precision[:, :, k, 0, -1]) for k, c in enumerate(cat_ids)}
    out["per_class_ap50"] = {names[c - 1]: _mean_valid(precision[t50, :, k, 0, -1]) for k, c in enumerate(cat_ids)}
    out["pr_curve"] = {"recall": [float(r) for r in ev.params.recThrs],
                       "precision": {names[c - 1]: [float(max(p, 0.0)) for p in precision[t50, :, k, 0, -1]]
                                     for k, c in enumerate(cat_ids)}}
    out["detections"] = len(results)
    return out


def evaluate_coco(model: nn.Module, loader, rs: RecordSet, device: torch.device, max_dets: int = 300,
                  amp: bool = False) -> tuple[dict, list[dict]]:
    """Predict ``loader`` (over ``rs``, in order) and evaluate: ``(metrics, COCO results)``."""
    results = predict_dataset(model, loader, device, amp)
    return coco_evaluate(rs, results, max_dets), results


def format_metrics(m: dict, max_dets: int = 300) -> str:
    """Headline line plus the per-class AP table."""
    def f(v: float) -> str:
        return "n/a" if v < 0 else f"{v:.3f}"

    keys = ("AP", "AP50", "AP75", "APs", "APm", "APl", f"AR{max_dets}")
    head = "  ".join(f"{k} {f(m.get(k, 0.0))}" for k in keys) + f"  (max {max_dets} detections/image)"
    rows = [head, f"{'class':<20} {'AP':>6} {'AP50':>6}"]
    for name, ap in m.get("per_class", {}).items():
        rows.append(f"{name:<20} {f(ap):>6} {f(m['per_class_ap50'].get(name, 0.0)):>6}")
    return "\n".join(rows)


def plot_pr_curves(m: dict, path: str | Path) -> Path | None:
    """PNG of precision against recall at IoU 0.5, one line per class (None when there is nothing to plot)."""
    if not m.get("pr_curve"):
        return None
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 5))
    rec = m["pr_curve"]["recall"]
    for name, prec in m["pr_curve"]["precision"].items():
        ax.plot(rec, prec, label=f"{name} ({m['per_class_ap50'].get(name, 0.0):.2f})", linewidth=1)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"PR at IoU 0.5 - AP50 {m['AP50']:.3f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    if len(m["pr_curve"]["precision"]) <= 30:
        ax.legend(fontsize=6, ncol=2, loc="lower left")
    return save_png(fig, path, dpi=110, tight=True)


def write_results(results: list[dict], path: str | Path) -> Path:
    """COCO-results JSON (atomic)."""
    return atomic_write_text(path, json.dumps(results))
