"""What ``train`` says and writes about its best checkpoint at the end: the per-class table of ``best.pt``
(not of the last epoch) and, with ``train.report`` (default on), ``RUN/report/index.html`` on the val set."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch

from detect.config import Config
from detect.engine.inference.evaluator import format_metrics

REPORT_DIR = "report"


def best_checkpoint_report(out: Path, cfg: Config, val_ds, best_eval: tuple[dict, list] | None, best_epoch: int,
                           device: torch.device, log: Callable[[str], None] = print) -> dict | None:
    """Log ``best.pt``'s metrics table and write its report into ``out/report`` (replacing an earlier one).

    Args:
        out: the run folder (holding ``best.pt``).
        val_ds: the validation :class:`~detect.data.DetectionDataset` (None: nothing to do).
        best_eval: ``(metrics, COCO results)`` of the best epoch when this session evaluated it; None (a
            resumed run whose best epoch came earlier) evaluates ``best.pt`` again.
        best_epoch: the epoch ``best.pt`` holds.

    Returns:
        The report's ``metrics.json`` dict, or None when no report was written.
    """
    best = out / "best.pt"
    if val_ds is None or not best.is_file() or best_epoch <= 0:
        return None
    if best_eval is None:
        from detect.data import build_loader
        from detect.engine.runtime.checkpoint import load_model
        from detect.engine.training.trainer import evaluate

        model, _, _ = load_model(best)
        loader = build_loader(val_ds, cfg.eval.batch_size, False, 0, False, False, 0)
        best_eval = evaluate(model.to(device), loader, val_ds.rs, cfg, device)
    metrics, results = best_eval
    log(f"{best} (epoch {best_epoch}) on the val set:")
    log(format_metrics(metrics, cfg.eval.max_detections))
    if not cfg.train.report:
        return None
    from detect.report.build import write_report

    folder = out / REPORT_DIR
    if folder.is_dir() and not folder.is_symlink():  # the run folder is ours (locked): a resumed run replaces it
        shutil.rmtree(folder)
    t0 = time.perf_counter()
    facts = {"checkpoint": str(best), "recipe": str(out / "config.yaml"), "model": f"{cfg.model.name} "
             f"({cfg.model.backbone})", "dataset": str(cfg.data.val), "image_size": cfg.data.image_size,
             "device": str(device), "epoch": best_epoch}
    report = write_report(results, val_ds.rs, folder, metrics=metrics, facts=facts, max_dets=cfg.eval.max_detections,
                          log=log)
    rec = report["recommended_conf"]
    counts = report["counts"]
    log(f"report {folder / 'index.html'} ({time.perf_counter() - t0:.1f} s)"
        + (f": recommended predict --conf {rec} (count MAE {counts['class_mae']:.3f} per image)"
           if rec is not None else ""))
    return report
