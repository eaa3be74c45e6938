"""What ``train`` says and writes about its best checkpoint at the end: the per-class table of ``best.pt``
(not of the last epoch) and, with ``train.report`` (default on), ``RUN/report/index.html`` on the val set.

:func:`best_checkpoint_report` is the ``on_finish`` hook that the verbs which train (``retail-detect train``,
``tune``, ``compare``, ``demo``) pass to :func:`~detect.engine.training.trainer.fit`."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable

from detect.data import build_loader
from detect.engine.inference.evaluator import format_metrics
from detect.engine.runtime.checkpoint import load_model
from detect.engine.training.trainer import FitEnd, evaluate
from detect.report.build import write_report

REPORT_DIR = "report"


def best_checkpoint_report(end: FitEnd, log: Callable[[str], None] = print) -> dict | None:
    """Log ``best.pt``'s metrics table and write its report into ``end.out/report`` (replacing an earlier one).

    Args:
        end: the finished run (:class:`~detect.engine.training.trainer.FitEnd`); nothing to do without a
            validation set or a ``best.pt``. ``end.best_eval`` None (a resumed run whose best epoch came
            earlier) evaluates ``best.pt`` again.
        log: where the table and the report's line go.

    Returns:
        The report's ``metrics.json`` dict, or None when no report was written.
    """
    out, cfg, val_ds, best_eval, best_epoch = end.out, end.cfg, end.val_ds, end.best_eval, end.best_epoch
    best = out / "best.pt"
    if val_ds is None or not best.is_file() or best_epoch <= 0:
        return None
    if best_eval is None:
        model, _, _ = load_model(best)
        loader = build_loader(val_ds, cfg.eval.batch_size, False, 0, False, False, 0)
        best_eval = evaluate(model.to(end.device), loader, val_ds.rs, cfg, end.device)
    metrics, results = best_eval
    log(f"{best} (epoch {best_epoch}) on the val set:")
    log(format_metrics(metrics, cfg.eval.max_detections))
    if not cfg.train.report:
        return None
    folder = out / REPORT_DIR
    if folder.is_dir() and not folder.is_symlink():  # the run folder is ours (locked): a resumed run replaces it
        shutil.rmtree(folder)
    t0 = time.perf_counter()
    facts = {"checkpoint": str(best), "recipe": str(out / "config.yaml"), "model": f"{cfg.model.name} "
             f"({cfg.model.backbone})", "dataset": str(cfg.data.val), "image_size": cfg.data.image_size,
             "device": str(end.device), "epoch": best_epoch}
    report = write_report(results, val_ds.rs, folder, metrics=metrics, facts=facts, max_dets=cfg.eval.max_detections,
                          log=log)
    rec = report["recommended_conf"]
    counts = report["counts"]
    log(f"report {folder / 'index.html'} ({time.perf_counter() - t0:.1f} s)"
        + (f": recommended predict --conf {rec} (count MAE {counts['class_mae']:.3f} per image)"
           if rec is not None else ""))
    return report
