"""``retail-detect predict``: checkpoint + image sources -> predictions.json (+ CSV, drawn images).

:func:`run_predict` is the whole verb as one function: expand the sources, refuse an ``--out`` that
could touch the inputs (before the model is even loaded), predict in batches, group each image's
detections into shelf rows, draw in background threads, write the CSV and finally
``predictions.json`` (its presence marks a finished run). Bad images are listed under ``errors``
and counted; they never stop the run.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from data_tools.errors import InvalidInput
from data_tools.outputs import check_output_folder
from data_tools.progress import progress
from data_tools.records import Problem
from detect.api import open_predictor
from detect.data.proposals import ProposalsForFiles
from detect.engine.inference.sources import expand_sources
from detect.engine.inference.tiling import TileOptions
from detect.engine.runtime.run_dir import claim_run_dir
from detect.verbs import predict_output as po
from detect.verbs.predict_labels import FORMATS as LABEL_FORMATS
from detect.verbs.predict_labels import check_labels_folder
from detect.verbs.predict_labels import save_labels as write_labels
from detect.verbs.shelf_rows import class_counts, group_rows


def run_predict(
    weights: str | Path,
    sources: list[str],
    out_dir: str | Path = "runs/predict",
    conf: float = 0.25,
    device: str = "auto",
    csv: bool = False,
    draw: bool = True,
    tile: str = "auto",
    rows: bool = True,
    batch_size: int = 8,
    *,
    image_size: int | None = None,
    tile_size: int | None = None,
    tile_overlap: float = 0.2,
    use_ema: bool = True,
    row_gap: float = 0.5,
    workers: int = 2,
    proposals: str | Path | None = None,
    exist_ok: bool = False,
    log: Callable[[str], None] = print,
    save_labels: str | None = None,
    link_photos: bool = False,
    agnostic_nms: bool | None = None,
    gallery: str | Path | None = None,
    embedder: str | Path | None = None,
    unknown_below: float | None = None,
) -> dict:
    """Predict every image of ``sources`` and write the outputs into ``out_dir``.

    Args:
        weights: checkpoint from ``retail-detect train``.
        sources: image files, folders (recursive) and globs.
        out_dir: output folder; must not be (or be inside) an input folder, nor contain inputs. When it
            already holds files, the run writes into ``out_dir2``, ``out_dir3``, ... instead.
        conf: score threshold.
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.
        csv: also write ``predictions.csv``.
        draw: write drawn copies under ``out_dir/images/``.
        tile: ``auto`` | ``on`` | ``off`` (tiled inference for large photos).
        rows: group detections into shelf rows (``row`` per detection, per-row counts).
        batch_size: images (or tiles) per forward pass.
        image_size: model input side; None = the training size.
        tile_size, tile_overlap: tile side in original pixels (None = 2 x image_size) and overlap fraction
            (``--tile-size``, ``--overlap``; bad values raise InvalidInput naming the flag).
        use_ema: prefer the checkpoint's EMA weights.
        row_gap: row-split gap as a fraction of the median box height.
        workers: threads decoding images and drawing.
        exist_ok: write into ``out_dir`` even when it holds files (same-named outputs are replaced).
        proposals: Fast R-CNN's external proposals JSON (skips the RPN; :mod:`detect.data.proposals`): each
            photo carries its entry; a photo the file does not name is reported and skipped.
        log: where progress lines and warnings (a skipped image) go.
        agnostic_nms: class-agnostic NMS on or off (None: as trained; see :class:`Predictor`).
        save_labels: also write the detections as labels of this format under ``out_dir/labels/``
            (``voc``, ``coco``, ``yolo``, ``cvat``, ``labelstudio``; :mod:`detect.verbs.predict_labels`).
        link_photos: hard-link the photos into ``labels/images/`` instead of copying them (a photo edited there
            in place then changes the original too).
        gallery: a SKU gallery folder: every box is named by it (:mod:`detect.verbs.sku_stage`): class names become
            its SKUs (``unknown`` below the threshold) everywhere downstream; NMS is class-agnostic unless
            ``agnostic_nms=False``.
        embedder: the gallery's embedder (``imagenet`` or a checkpoint); None = the one the gallery names.
        unknown_below: similarity under which a box is ``unknown``; None = the gallery's calibrated threshold.

    Returns:
        Summary: ``images`` (predicted), ``errors``, ``detections``, ``class_counts``, ``tiled_images``,
        ``drawn``, ``seconds``, ``images_per_s``, ``device``, ``out_dir``, ``json``, ``csv``, ``labels``
        (what :func:`~detect.verbs.predict_labels.save_labels` returned, or None); with a gallery also
        ``detector_counts`` (the detector's own classes; ``class_counts`` then counts SKUs) and ``gallery``.

    Raises:
        OutputRefused: ``out_dir`` clashes with the inputs (nothing is written).
        ValueError: bad options (tile mode, overlap, device).
    """
    t0 = time.perf_counter()
    opts = TileOptions(mode=tile, size=tile_size, overlap=tile_overlap)
    if not 0.0 <= conf <= 1.0:  # also refuses NaN
        raise InvalidInput(f"--conf must be in [0, 1], got {conf}")
    if save_labels is not None and save_labels not in LABEL_FORMATS:
        raise InvalidInput(f"--save-labels must be one of {', '.join(LABEL_FORMATS)}, not {save_labels!r}")
    if link_photos and save_labels is None:
        raise InvalidInput("--link applies to --save-labels (the photos beside the labels); give --save-labels FORMAT")
    src = expand_sources(sources)
    check_output_folder(out_dir, [s.path for s in src.files], src.dirs)
    protected = {s.path.resolve() for s in src.files}
    predictor, stage = open_predictor(  # the Python API's loader (detect.api): gallery, NMS, proposals check
        weights, device=device, conf=conf, image_size=image_size, use_ema=use_ema, tile=opts,
        batch_size=batch_size, agnostic_nms=agnostic_nms, gallery=gallery, embedder=embedder,
        unknown_below=unknown_below, proposals=proposals,
    )
    if proposals is not None:  # each photo carries its own proposals from here on
        src.attach_proposals(ProposalsForFiles(proposals))
    # a new folder per run (runs/predict -> runs/predict2 when it holds one): no stale drawings beside new ones
    folder, lock = claim_run_dir(out_dir, exist_ok=exist_ok)
    with lock:
        out = check_output_folder(folder, [s.path for s in src.files], src.dirs)
        if save_labels is not None:
            check_labels_folder(out)
        names = predictor.class_names if stage is None else stage.names
        rels: list[str] = []  # mirror name of each entry (for --save-labels)

        entries: list[dict] = []
        errors: list[dict] = []
        totals: Counter = Counter()
        tiled = drawn = 0
        pending: list[tuple[str, Future]] = []
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            predictions = predictor.iter_predictions(src, keep_images=draw or stage is not None, workers=workers)
            for p in progress(predictions, len(src.files) + len(src.problems), "predict"):
                if p.error is not None:
                    log(f"warning: skipped {p.error}")
                    errors.append(p.error.to_dict())
                    continue
                r = p.result
                if stage is not None:
                    r = stage.apply(p.image, r, predictor.class_names)
                    if not draw:
                        p.image = None
                row_ids, row_summary = (
                    group_rows(r["boxes"], r["labels"], names, row_gap) if rows else (None, None)
                )
                counts = class_counts(r["labels"], names)
                totals.update(counts)
                entry = po.image_entry(
                    str(p.source.path), r["width"], r["height"], r, names, row_ids, row_summary, counts
                )
                tiled += r["tiles"] > 0
                if draw:
                    target = po.drawn_path(out, p.source.rel)
                    entry["drawn"] = target.relative_to(out).as_posix()
                    pending.append((str(p.source.path), pool.submit(_draw, p.image, r, names, target, protected)))
                    p.image = None
                    drawn += _drain(pending, errors, keep=2 * max(1, workers))
                entries.append(entry)
                rels.append(p.source.rel)
            drawn += _drain(pending, errors, keep=0)

        csv_path = po.write_csv(out, entries) if csv else None
        labels = write_labels(out, save_labels, entries, rels, names, link_photos) if save_labels else None
        seconds = time.perf_counter() - t0
        summary = {
            "images": len(entries),
            "errors": len(errors),
            "detections": sum(e["num_detections"] for e in entries),
            "class_counts": dict(sorted(totals.items())),
            "tiled_images": tiled,
            "drawn": drawn,
            "seconds": round(seconds, 3),
            "images_per_s": round(len(entries) / seconds, 3) if seconds > 0 else 0.0,
            "device": str(predictor.device),
            "out_dir": str(out),
            "csv": str(csv_path) if csv_path else None,
            "labels": labels,
        }
        if stage is not None:
            summary["detector_counts"] = dict(sorted(stage.detector_totals.items()))
            summary["gallery"] = stage.describe()
        meta = {
            "weights": str(weights),
            "class_names": names,
            "conf": conf,
            "image_size": predictor.image_size,
            "proposals": str(proposals) if proposals is not None else None,
            "tile": {"mode": opts.mode, "size": opts.tile_side(predictor.image_size), "overlap": opts.overlap},
            "summary": summary,
        }
        if stage is not None:
            meta["detector_class_names"] = predictor.class_names
        summary["json"] = str(po.write_json(out, entries, errors, meta))
        return summary


def _draw(image, result: dict, names: list[str], target: Path, protected: set[Path]) -> None:
    po.write_drawn(target, po.draw_detections(image, result, names), protected)


def _drain(pending: list[tuple[str, Future]], errors: list[dict], keep: int) -> int:
    """Wait for the oldest drawing jobs until at most ``keep`` are in flight; return how many succeeded."""
    done = 0
    while len(pending) > keep:
        path, fut = pending.pop(0)
        try:
            fut.result()
            done += 1
        except Exception as exc:  # noqa: BLE001 - a failed drawing is reported, the predictions stay
            errors.append(
                Problem(
                    path, f"drawing failed: {type(exc).__name__}: {exc}", action="ignored", kind="draw_failed"
                ).to_dict()
            )
    return done
