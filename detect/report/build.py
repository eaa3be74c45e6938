"""``write_report``: COCO results of a model on a dataset -> ``DIR/index.html`` + ``metrics.json`` +
``per_class.csv`` + figures, crops and drawings beside them.

The one entry for ``retail-detect eval --report DIR`` and the report ``train`` writes for its best checkpoint.
It takes the detections, not the model, so it never runs the network again: COCO metrics
(:func:`detect.engine.inference.evaluator.coco_evaluate`, unless given), matching at IoU 0.5
(:mod:`detect.report.matching`), count accuracy and the confidence sweep (:mod:`detect.report.counts`),
figures (:mod:`detect.report.plots`), galleries (:mod:`detect.report.galleries`), the page
(:mod:`detect.report.report_page`). Every file is written atomically; ``index.html`` is written last.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable
from pathlib import Path

from data_tools.atomic import atomic_write_text
from data_tools.records import RecordSet
from detect.engine.inference.evaluator import coco_evaluate, plot_pr_curves
from detect.report.counts import (
    SWEEP,
    confidence_sweep,
    count_errors,
    count_matrix,
    recommend_conf,
    row_errors,
)
from detect.report.galleries import build_galleries, image_errors
from detect.report.matching import DatasetMatch, detections_per_image, match_dataset, per_class_outcomes
from detect.report.plots import plot_confusion, plot_pr_per_class, plot_sweep

FORMAT = "retail-detect-report"
FORMAT_VERSION = 1
HEADLINE = ("AP", "AP50", "AP75", "APs", "APm", "APl")
CSV_COLUMNS = ("class", "AP", "AP50", "gt", "det", "tp", "fp", "fn", "precision", "recall", "wrong_class",
               "background", "missed", "count_mae", "count_exact")
DEFAULT_CONF = 0.25  # used when the sweep has nothing to recommend (no detections)


def per_class_rows(names: list[str], metrics: dict, confusion, count: dict) -> list[dict]:
    """One row per class: AP, AP50, outcomes at IoU 0.5 (:func:`per_class_outcomes`), precision, recall,
    count MAE and exact-count rate (over the images where the class is present or predicted)."""
    o = per_class_outcomes(confusion)
    rows = []
    for k, name in enumerate(names):
        tp, det, gt = int(o["tp"][k]), int(o["det"][k]), int(o["gt"][k])
        rows.append({"class": name, "AP": metrics.get("per_class", {}).get(name, 0.0),
                     "AP50": metrics.get("per_class_ap50", {}).get(name, 0.0), "gt": gt, "det": det, "tp": tp,
                     "fp": int(o["fp"][k]), "fn": int(o["fn"][k]),
                     "precision": tp / det if det else None, "recall": tp / gt if gt else None,
                     "wrong_class": int(o["wrong_class"][k]), "background": int(o["background"][k]),
                     "missed": int(o["missed"][k]), "count_mae": count["per_class_mae"][k],
                     "count_exact": count["per_class_exact"][k]})
    return rows


def per_class_csv(rows: list[dict]) -> str:
    """``per_class.csv``: one row per class, :data:`CSV_COLUMNS` (empty cells for n/a)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in rows:
        w.writerow(["" if r[c] is None else (f"{r[c]:.6g}" if isinstance(r[c], float) else r[c]) for c in CSV_COLUMNS])
    return buf.getvalue()


def compute_report(results: list[dict], rs: RecordSet, metrics: dict | None = None, conf: float | None = None,
                   iou: float = 0.5, max_dets: int = 300, thresholds=SWEEP) -> tuple[dict, DatasetMatch]:
    """Every number of the report (what ``metrics.json`` holds, less ``facts`` / ``galleries`` / ``files``).

    Args:
        results: COCO results (``image_id`` = 1-based index into ``rs.records``, ``bbox`` xywh original pixels).
        metrics: :func:`coco_evaluate` of the same results, when already computed.
        conf: confidence for the TP/FP/FN table, confusion matrix, galleries and counts; None = the sweep's
            recommendation.

    Returns:
        ``(report dict, DatasetMatch at that confidence)``.
    """
    metrics = metrics if metrics is not None else coco_evaluate(rs, results, max_dets)
    dets = detections_per_image(results, len(rs.records))
    sweep = confidence_sweep(rs, dets, thresholds, iou)
    best, best_total = recommend_conf(sweep), recommend_conf(sweep, "total_mae")
    recommended = best["conf"] if best is not None and results else None
    used = float(conf) if conf is not None else recommended if recommended is not None else DEFAULT_CONF
    dm = match_dataset(rs, dets, used, iou)
    true = count_matrix([r.labels for r in rs.records], rs.num_classes)
    pred = count_matrix([d.labels for d in dm.dets], rs.num_classes)
    count = count_errors(true, pred)
    rows = row_errors([r.boxes for r in rs.records], [d.boxes for d in dm.dets])
    o = per_class_outcomes(dm.confusion)
    tp, det, gt = int(o["tp"].sum()), int(o["det"].sum()), int(o["gt"].sum())
    p, r = (tp / det if det else 0.0), (tp / gt if gt else 0.0)
    errors = image_errors(dm)
    ar_key = f"AR{max_dets}"
    report = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "headline": {**{k: metrics.get(k, 0.0) for k in HEADLINE}, ar_key: metrics.get(ar_key, 0.0),
                     "detections": metrics.get("detections", len(results)), "max_detections": max_dets},
        "conf": used, "iou": iou,
        "conf_source": "given" if conf is not None else "recommended" if recommended is not None else "default",
        "recommended_conf": recommended,
        "recommended_conf_total": best_total["conf"] if best_total is not None and results else None,
        "at_conf": {"tp": tp, "fp": det - tp, "fn": gt - tp, "precision": p, "recall": r,
                    "f1": 2 * p * r / (p + r) if p + r else 0.0, "wrong_class": int(o["wrong_class"].sum()),
                    "background": int(o["background"].sum()), "missed": int(o["missed"].sum())},
        "counts": {**{k: v for k, v in count.items() if not k.startswith("per_class")}, **rows},
        "per_class": per_class_rows(rs.class_names, metrics, dm.confusion, count),
        "confusion": {"labels": [*rs.class_names, "background"], "rows": "true class", "columns": "predicted class",
                      "matrix": dm.confusion.tolist()},
        "sweep": sweep,
        "image_errors": [{"image": rs.records[i].image, "false_positives": int(e[0]), "wrong_class": int(e[1]),
                          "missed": int(e[2]), "count_error": int(abs(pred[i] - true[i]).sum())}
                         for i, e in enumerate(errors.tolist())],
    }
    return report, dm


def write_report(results: list[dict], rs: RecordSet, out_dir: str | Path, metrics: dict | None = None,
                 facts: dict | None = None, conf: float | None = None, iou: float = 0.5, max_dets: int = 300,
                 per_gallery: int = 48, worst: int = 12, log: Callable[[str], None] = print) -> dict:
    """Write the evaluation report of ``results`` on ``rs`` into ``out_dir`` (the caller chooses a fresh folder).

    Args:
        results, metrics, conf, iou, max_dets: see :func:`compute_report`.
        facts: run facts shown at the top (checkpoint, recipe, dataset, image size, device, eval seconds, ...).
        per_gallery, worst: how many crops per gallery and how many worst images to show.

    Returns:
        The ``metrics.json`` dict.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = metrics if metrics is not None else coco_evaluate(rs, results, max_dets)
    report, dm = compute_report(results, rs, metrics, conf, iou, max_dets)
    files = {"pr_all": plot_pr_curves(metrics, out / "pr_curves.png"),
             "pr_per_class": plot_pr_per_class(metrics, out / "pr_per_class.png"),
             "confusion": plot_confusion(dm.confusion, rs.class_names, out / "confusion.png", report["conf"], iou),
             "sweep": plot_sweep(report["sweep"], out / "sweep.png", report["recommended_conf"])}
    report["files"] = {k: Path(v).name if v is not None else None for k, v in files.items()}
    report["galleries"] = build_galleries(rs, dm, out, per_gallery, worst, log)
    report["facts"] = {"images": len(rs.records), **(facts or {})}
    atomic_write_text(out / "per_class.csv", per_class_csv(report["per_class"]))
    from detect.report.report_page import render

    report["facts"]["report_seconds"] = round(time.perf_counter() - t0, 2)  # all but the page itself
    atomic_write_text(out / "metrics.json", json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    atomic_write_text(out / "index.html", render(report))
    return report
