"""``retail-detect eval``: COCO mAP of a checkpoint on a dataset file."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from data_tools.atomic import atomic_write_text
from data_tools.errors import InvalidInput
from data_tools.outputs import check_output
from data_tools.records import merge_classes
from data_tools.sources import class_mismatch, load_any, select_split, unknown_class_warning
from data_tools.staged import StagedFolder
from detect.data import DetectionDataset, build_loader
from detect.data.proposals import check_proposals_arg, proposals_for_records
from detect.engine.inference.evaluator import (
    coco_evaluate,
    format_metrics,
    plot_pr_curves,
    predict_dataset,
    predict_dataset_tiled,
    write_results,
)
from detect.engine.inference.predictor import Predictor
from detect.engine.inference.recognize import Recognizer
from detect.engine.inference.tiling import TileOptions
from detect.engine.runtime.checkpoint import load_model
from detect.engine.runtime.device import resolve_device
from detect.engine.training.prepare import drop_unreadable
from detect.verbs.evaluate_gallery import gallery_classes, name_results


def evaluate_weights(weights: str | Path, data: str | Path, out_json: str | Path | None = None, device: str = "auto",
                     batch_size: int = 32, proposals: str | Path | None = None, max_dets: int | None = None,
                     log=print, report: str | Path | None = None, conf: float | None = None,
                     agnostic_nms: bool | None = None, gallery: str | Path | None = None,
                     embedder: str | Path | None = None, gallery_score: str = "product",
                     gallery_min_score: float | None = None, tile: str = "off", tile_size: int | None = None,
                     tile_overlap: float = 0.2) -> dict:
    """Evaluate checkpoint ``weights`` on dataset ``data`` (the training letterbox size and eval settings).

    Writes, when ``out_json`` is given: the metrics JSON there, the COCO results beside it
    (``<stem>_results.json``) and a PR-curve PNG (``<stem>_pr.png``). With ``report``: the evaluation page
    (:func:`detect.report.build.write_report`) in that folder, or in ``report2``, ... when it holds files (written
    in a hidden folder beside it and renamed at the end, so a failed run leaves no half-written report);
    ``conf`` is its confidence (None: the one that minimises count errors). A product detector (its recipe's
    ``data.class_agnostic``) is evaluated on the labels with every class merged into ``product``, as it was trained.

    With ``gallery`` (and its ``embedder``, None = the one it names) the two-stage pipeline is evaluated instead: the
    detector's boxes (its recipe's ``model.score_thresh`` and up, NMS class-agnostic unless ``agnostic_nms=False``)
    are named by the gallery and scored against the dataset's own classes, matched to the SKUs by name
    (:mod:`detect.verbs.evaluate_gallery`; ``gallery_score``: ``product`` or ``detector``; ``gallery_min_score``: the
    lowest detector score named, None = the recipe's ``model.score_thresh``).

    ``tile`` (``off`` by default: the model as trained, on the letterboxed photos), ``tile_size``, ``tile_overlap``:
    with ``auto`` or ``on`` the photos are decoded whole and predicted as ``predict`` does, large ones tiled
    (:mod:`detect.engine.inference.tiling`); a photo with external ``proposals`` is never tiled, so they keep
    the letterboxed path.
    Returns the metrics dict.
    """
    tile_opts = TileOptions(mode=tile, size=tile_size, overlap=tile_overlap)  # bad values refused before any work
    if conf is not None and not 0.0 <= conf <= 1.0:  # also refuses NaN
        raise InvalidInput(f"--conf must be in [0, 1], got {conf}")
    if out_json is not None:  # refused before any work when it would replace an input or another kind of file
        inputs = [weights, data, proposals]
        out = check_output(out_json, "metrics", inputs, flag="--json")
        check_output(out.with_name(out.stem + "_results.json"), "results", inputs, flag="--json (results)")
        check_output(out.with_name(out.stem + "_pr.png"), "plot", inputs, flag="--json (PR plot)")
    if gallery is None and embedder is not None:
        raise InvalidInput("--embedder applies to --gallery (the boxes named by a SKU gallery); give --gallery GALLERY")
    dev = resolve_device(device)
    recognizer = Recognizer.open(gallery, embedder, device=device) if gallery is not None else None
    if recognizer is not None and agnostic_nms is None:
        agnostic_nms = True  # the detector's classes are replaced by SKUs: one box per product
    model, class_names, cfg = load_model(weights)
    model.post = model.post.replace(score_thresh=cfg.eval.score_thresh, max_detections=max_dets or cfg.eval.max_detections,
                                    agnostic=agnostic_nms)  # None keeps the recipe's model.agnostic_nms
    if recognizer is not None:  # the dataset's own classes; the gallery's SKUs are matched to them by name
        rs, sku_label = gallery_classes(select_split(load_any(data, None, log), "eval", str(data), log),
                                        recognizer.skus, log)
        class_names = rs.class_names
    elif cfg.data.class_agnostic:  # a product detector: the labels' classes merged into one, as in training
        rs = merge_classes(select_split(load_any(data, None, log), "eval", str(data), log))
    else:
        rs = select_split(load_any(data, class_names, log), "eval", str(data), log)  # in the checkpoint's order
    if list(rs.class_names) != list(class_names):
        raise InvalidInput(class_mismatch(str(data), rs.class_names, class_names, f"the checkpoint {weights}",
                                          rs.meta.get("source"), split=rs.meta.get("split")))
    warning = unknown_class_warning(rs, str(data), f"the checkpoint {weights}")
    if warning:
        log(warning)
    check_proposals_arg(model, cfg.model.name, weights, proposals)
    props = proposals_for_records(proposals, rs) if proposals is not None else None
    ds = drop_unreadable(DetectionDataset(rs, cfg.data.image_size, None, False, True, proposals=props), log)
    loader = build_loader(ds, batch_size, False, 0, False, False, 0)
    # the report is written into a hidden folder beside REPORT, made before the long part (a folder that cannot
    # be written fails now) and renamed to REPORT (REPORT2, ... when it holds files) once complete
    staged = StagedFolder(report, numbered=True) if report is not None else contextlib.nullcontext()
    with staged as stage:
        model = model.to(dev)
        t0 = time.perf_counter()
        limit = max_dets or cfg.eval.max_detections
        if tile_opts.mode != "off" and props is None:  # whole photos, tiled as predict tiles them
            predictor = Predictor(model, class_names, cfg.data.image_size, device=str(dev), conf=cfg.eval.score_thresh,
                                  tile=tile_opts, batch_size=batch_size, amp=cfg.train.amp,
                                  nms_thresh=cfg.model.nms_thresh, max_detections=limit)
            results, tiled = predict_dataset_tiled(predictor, ds, progress=None)
            side = (f"{tile_opts.tile_side(cfg.data.image_size)} px tiles" if tile_opts.mode == "on" or tile_opts.size
                    else "tile side from each photo's objects")
            log(f"--tile {tile_opts.mode}: {tiled} of {len(ds)} photos tiled ({side}, overlap {tile_opts.overlap:g})")
        else:
            results = predict_dataset(model, loader, dev, cfg.train.amp, progress=None)
        if recognizer is not None:
            results = name_results(results, ds.rs, recognizer, sku_label, ds.image_path, gallery_score,
                                   cfg.model.score_thresh if gallery_min_score is None else gallery_min_score, log)
        seconds = time.perf_counter() - t0
        metrics = coco_evaluate(ds.rs, results, limit)
        named = f" named by {gallery} ({len(recognizer.skus)} SKUs)" if recognizer is not None else ""
        log(f"{weights}{named} on {data} ({len(ds)} images, {len(results)} detections)")
        log(format_metrics(metrics, limit))
        if out_json is not None:
            out = Path(out_json)
            atomic_write_text(out, json.dumps({k: v for k, v in metrics.items() if k != "pr_curve"}, indent=1))
            write_results(results, out.with_name(out.stem + "_results.json"))
            plot_pr_curves(metrics, out.with_name(out.stem + "_pr.png"))
            log(f"wrote {out}, {out.stem}_results.json and {out.stem}_pr.png")
        if report is not None:
            recipe = Path(weights).with_name("config.yaml")  # the run folder's copy of the recipe
            facts = {"checkpoint": str(weights), "recipe": str(recipe) if recipe.is_file() else None,
                     "model": f"{cfg.model.name} ({cfg.model.backbone})", "dataset": str(data),
                     "image_size": cfg.data.image_size, "device": str(dev), "eval_seconds": round(seconds, 2),
                     "ms_per_image": round(1000 * seconds / max(len(ds), 1), 1)}
            if recognizer is not None:
                facts["gallery"] = f"{gallery} ({len(recognizer.skus)} SKUs, embedder {recognizer.embedder.name})"
            from detect.report.build import write_report

            r = write_report(results, ds.rs, stage.path, metrics, facts, conf, max_dets=limit, log=log)
    if report is not None:
        _said(stage.final, r, log)
    return metrics


def _said(folder: Path, r: dict, log) -> None:
    """Say where the evaluation report is, at which confidence, with which count MAE."""
    c = r["counts"]
    log(f"report {folder / 'index.html'} at confidence {r['conf']} ({r['conf_source']}): count MAE "
        f"{c['class_mae']:.3f} per image (per class), {c['total_mae']:.3f} (total), "
        f"{100 * c['class_exact']:.1f} % of images counted exactly"
        + (f"; recommended predict --conf {r['recommended_conf']}" if r["recommended_conf"] is not None else ""))
