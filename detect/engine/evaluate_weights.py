"""``retail-detect eval``: COCO mAP of a checkpoint on a dataset file."""

from __future__ import annotations

import json
from pathlib import Path

from data_tools.atomic import atomic_write_text
from data_tools.store import load_dataset
from detect.data import DetectionDataset, build_loader
from detect.engine.evaluator import (
    coco_evaluate,
    format_metrics,
    plot_pr_curves,
    predict_dataset,
    write_results,
)
from detect.engine.outputs import check_output_file
from detect.engine.predictor import load_model
from detect.engine.setup import drop_unreadable, resolve_device


def evaluate_weights(weights: str | Path, data: str | Path, out_json: str | Path | None = None, device: str = "auto",
                     batch_size: int = 32, proposals: str | Path | None = None, max_dets: int | None = None,
                     log=print) -> dict:
    """Evaluate checkpoint ``weights`` on dataset ``data`` (the training letterbox size and eval settings).

    Writes, when ``out_json`` is given: the metrics JSON there, the COCO results beside it
    (``<stem>_results.json``) and a PR-curve PNG (``<stem>_pr.png``). Returns the metrics dict.
    """
    if out_json is not None:  # refused before any work when it would replace an input or another kind of file
        inputs = [weights, data, proposals]
        out = check_output_file(out_json, inputs, (".json",), "--json")
        check_output_file(out.with_name(out.stem + "_results.json"), inputs, (".json",), "--json (results)")
        check_output_file(out.with_name(out.stem + "_pr.png"), inputs, (".png",), "--json (PR plot)")
    dev = resolve_device(device)
    model, class_names, cfg = load_model(weights)
    model.post = model.post.replace(score_thresh=cfg.eval.score_thresh, max_detections=max_dets or cfg.eval.max_detections)
    rs = load_dataset(data)
    if list(rs.class_names) != list(class_names):
        raise ValueError(f"{data}: classes {rs.class_names} differ from the checkpoint's {class_names}")
    ds = drop_unreadable(DetectionDataset(rs, cfg.data.image_size, None, False, True), log)
    loader = build_loader(ds, batch_size, False, 0, False, False, 0)
    table = None
    if proposals is not None:
        from detect.models.proposals_io import load_proposals

        table = load_proposals(proposals, ds.rs, cfg.data.image_size)
    model = model.to(dev)
    results = predict_dataset(model, loader, dev, cfg.train.amp, table)
    limit = max_dets or cfg.eval.max_detections
    metrics = coco_evaluate(ds.rs, results, limit)
    log(f"{weights} on {data} ({len(ds)} images, {len(results)} detections)")
    log(format_metrics(metrics, limit))
    if out_json is not None:
        out = Path(out_json)
        atomic_write_text(out, json.dumps({k: v for k, v in metrics.items() if k != "pr_curve"}, indent=1))
        write_results(results, out.with_name(out.stem + "_results.json"))
        plot_pr_curves(metrics, out.with_name(out.stem + "_pr.png"))
        log(f"wrote {out}, {out.stem}_results.json and {out.stem}_pr.png")
    return metrics
