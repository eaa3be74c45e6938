"""``retail-detect audit``: checkpoint + photos (+ planogram) -> audit.json, audit.csv, report.html, drawn photos.

:func:`run_audit` is the whole verb: read the plan (and the truth) first, so a bad file fails before the
model loads; pick the output folder (a new or empty one; an earlier audit's folder ``DIR`` moves on to
``DIR2``, ``DIR3``, ...; any other non-empty folder is refused, as is a folder of the photos); predict
with :class:`detect.engine.inference.predictor.Predictor` (large photos are tiled); audit each photo
(:func:`detect.audit.photo.audit_photo`); draw; write the CSV and HTML, then ``audit.json`` last.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from data_tools.atomic import check_writable_dir
from data_tools.outputs import OutputRefused, check_output_folder
from data_tools.planogram import load_planogram
from data_tools.records import Problem
from detect.api import open_predictor
from detect.audit import report
from detect.audit.draw import draw_audit
from detect.audit.gaps import DEFAULT_MIN_GAP
from detect.audit.html import HTML_NAME, write_html
from detect.audit.metrics import score_audit
from detect.audit.photo import AuditOptions, audit_photo
from detect.audit.truth import load_truth
from detect.engine.inference.sources import expand_sources
from detect.engine.inference.tiling import TileOptions
from detect.verbs import predict_output as po


def _usable(folder: Path) -> bool:
    return not folder.exists() or (folder.is_dir() and not any(folder.iterdir()))


def fresh_out_dir(out_dir: str | Path) -> Path:
    """The folder to write into: ``out_dir`` if new or empty; after an earlier audit there, ``DIR2``, ``DIR3``, ...

    Raises:
        OutputRefused: ``out_dir`` is a file, or a non-empty folder without an earlier ``audit.json``.
    """
    out = Path(out_dir)
    if _usable(out):
        return out
    if not out.is_dir():
        raise OutputRefused(f"--out {out_dir} is a file: give a folder")
    if not (out / report.JSON_NAME).is_file():
        raise OutputRefused(f"--out {out_dir} is not empty and holds no earlier audit ({report.JSON_NAME}): "
                            "choose a new or empty folder")
    for k in range(2, 10_000):
        cand = out.with_name(f"{out.name}{k}")
        if _usable(cand):
            return cand
    raise OutputRefused(f"no free folder {out}2 .. {out}9999")


def run_audit(
    weights: str | Path,
    sources: list[str],
    out_dir: str | Path = "runs/audit",
    planogram: str | Path | None = None,
    conf: float = 0.15,
    device: str = "auto",
    tile: str = "auto",
    truth: str | Path | None = None,
    min_gap: float = DEFAULT_MIN_GAP,
    row_gap: float = 0.5,
    brand_sep: str = "_",
    draw: bool = True,
    batch_size: int = 8,
    workers: int = 2,
    image_size: int | None = None,
    log: Callable[[str], None] = print,
    gallery: str | Path | None = None,
    embedder: str | Path | None = None,
    unknown_below: float | None = None,
    tile_size: int | None = None,
    tile_overlap: float = 0.2,
) -> dict:
    """Audit every photo of ``sources`` (``log``: where warnings such as a skipped photo go).

    Args:
        weights: checkpoint from ``retail-detect train``.
        sources: image files, folders (recursive) and globs.
        out_dir: output folder (see :func:`fresh_out_dir`; never a folder of the photos).
        planogram: plan file (:mod:`data_tools.planogram`); None = rows, gaps and share of shelf only.
        conf: detection score threshold.
        tile: ``auto`` | ``on`` | ``off``: tiled inference for photos much larger than the model input.
        tile_size, tile_overlap: tile side in photo pixels (None = 2 x the model input) and overlap fraction.
        truth: ``truth.json`` of ``retail-data synth --planogram``: also measure the audit's accuracy.
        min_gap: a gap is wider than this x the row's median product width.
        row_gap: shelf-row split (see :func:`detect.verbs.shelf_rows.assign_rows`).
        brand_sep: brand = class name up to this separator, unless the plan's ``brands`` maps it.
        draw: write the drawn photos.
        gallery, embedder, unknown_below: name every box by this SKU gallery (:mod:`detect.verbs.sku_stage`): the
            audit is then by SKU (plan classes are gallery SKUs; ``unknown`` below the threshold).

    Returns:
        ``summary`` (:func:`detect.audit.report.summarize`), ``accuracy`` (or None), ``skipped``, ``tiled``,
        ``drawn``, ``without_plan``, ``out_dir``, ``json``, ``csv``, ``html``, ``seconds``.

    Raises:
        PlanogramError: bad plan or truth file (one line per problem); OutputRefused: unusable ``out_dir``.
    """
    t0 = time.perf_counter()
    tile_opts = TileOptions(mode=tile, size=tile_size, overlap=tile_overlap)  # bad values refused before any work
    plan = load_planogram(planogram) if planogram is not None else None
    truth_doc = load_truth(truth) if truth is not None else None
    opts = AuditOptions(min_gap=min_gap, row_gap=row_gap, brand_sep=brand_sep)
    src = expand_sources(sources)
    out = fresh_out_dir(out_dir)  # kept as the user named it: messages say runs/audit, not /home/.../runs/audit
    check_output_folder(out, [s.path for s in src.files], src.dirs)
    check_writable_dir(out, create=False)  # a read-only or full disk: one line naming it, before the model loads
    protected = {s.path.resolve() for s in src.files}
    predictor, stage = open_predictor(weights, device=device, conf=conf, image_size=image_size,
                                      tile=tile_opts, batch_size=batch_size, gallery=gallery,
                                      embedder=embedder, unknown_below=unknown_below)
    names = predictor.class_names if stage is None else stage.names
    if plan is not None:
        plan.check_classes(names)

    photos: list[dict] = []
    errors: list[dict] = []
    without_plan: list[str] = []
    tiled = drawn = 0
    for p in predictor.iter_predictions(src, keep_images=draw or stage is not None, workers=workers):
        if p.error is not None:
            log(f"warning: skipped {p.error}")
            errors.append(p.error.to_dict())
            continue
        r = p.result if stage is None else stage.apply(p.image, p.result, predictor.class_names)
        bay = plan.bay_for(p.source.path) if plan is not None else None
        if plan is not None and bay is None:
            without_plan.append(str(p.source.path))
        entry = {"path": str(p.source.path), "width": r["width"], "height": r["height"], "tiles": r["tiles"],
                 "tile_reason": r["tile_reason"]}
        entry.update(audit_photo(r["boxes"], r["labels"], r["scores"], names, r["width"], r["height"], bay,
                                 plan.brands if plan is not None else None, opts))
        tiled += r["tiles"] > 0
        if draw:
            target = po.drawn_path(out, p.source.rel)
            try:
                po.write_drawn(target, draw_audit(p.image, entry, names), protected)
                entry["drawn"] = target.relative_to(out).as_posix()
                drawn += 1
            except (ValueError, OSError) as exc:
                errors.append(Problem(str(p.source.path), f"drawing failed: {exc}", action="ignored",
                                      kind="draw_failed").to_dict())
            p.image = None
        photos.append(entry)

    result = {
        "weights": str(weights), "planogram": str(planogram) if planogram is not None else None,
        "truth": str(truth) if truth is not None else None, "class_names": names, "conf": conf,
        "options": {"min_gap": min_gap, "row_gap": row_gap, "brand_sep": brand_sep,
                    "tile": tile_opts.describe(predictor.image_size),
                    "image_size": predictor.image_size},
        "summary": report.summarize(photos),
        "accuracy": score_audit(photos, truth_doc) if truth_doc is not None else None,
        "skipped": len(errors), "tiled": tiled, "drawn": drawn, "without_plan": without_plan,
        "out_dir": str(out), "html_name": HTML_NAME,
    }
    if stage is not None:
        result["gallery"] = stage.describe()
        result["detector_counts"] = dict(sorted(stage.detector_totals.items()))
    check_writable_dir(out)
    result["csv"] = str(report.write_csv(out, photos))
    result["html"] = str(write_html(out, result, photos, errors))
    result["seconds"] = round(time.perf_counter() - t0, 2)
    result["json"] = str(report.write_json(out, photos, errors, {k: v for k, v in result.items() if k != "html_name"}))
    return result


__all__ = ["fresh_out_dir", "run_audit"]
