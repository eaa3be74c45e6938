"""``retail-detect predict``: checkpoint + image sources -> predictions.json (+ CSV, drawn images).

:func:`run_predict` is the whole verb as one function: expand the sources, refuse an ``--out`` that
could touch the inputs (before the model is even loaded), predict in batches, group each image's
detections into shelf rows, draw in background threads, append each photo's line to ``predictions.jsonl``
as it goes (:mod:`detect.verbs.predict_stream`: memory stays flat over 100,000 photos, a killed run keeps what
it did and ``--resume`` skips it) and finally write the CSV and ``predictions.json`` from those lines
(:mod:`detect.verbs.predict_finish`; its presence marks a finished run). With ``--ray`` the photos are
predicted by Ray Data workers (:mod:`detect.verbs.predict_ray`) and their lines written the same way. Bad
images are listed under ``errors`` and counted; they never stop the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from data_tools.errors import InvalidInput
from data_tools.outputs import check_output_folder
from data_tools.progress import progress
from detect.api import open_predictor
from detect.data.proposals import ProposalsForFiles
from detect.engine.inference.sources import Source, Sources, expand_sources
from detect.engine.inference.tiling import TileOptions
from detect.engine.runtime.run_dir import claim_run_dir
from detect.verbs.predict_finish import finish_run
from detect.verbs.predict_labels import FORMATS as LABEL_FORMATS
from detect.verbs.predict_labels import check_labels_folder
from detect.verbs.predict_photo import PhotoWork
from detect.verbs.predict_ray import ray_lines, require_ray
from detect.verbs.predict_stream import (
    JSONL_NAME,
    LineWriter,
    header,
    photo_key,
    prepare_resume,
    run_settings,
)


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
    resume: bool = False,
    ray: str | None = None,
    ray_workers: int = 1,
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
        tile_size, tile_overlap: tile side in original pixels (None = 2 x image_size) and overlap fraction.
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
        resume: continue the run in ``out_dir`` itself: photos already in its ``predictions.jsonl`` (same resolved
            path, size and mtime) are skipped, the rest predicted, ``predictions.json`` then holds all.
        ray: ``auto`` or a Ray cluster address: predict on Ray Data workers (:mod:`detect.verbs.predict_ray`).
        ray_workers: with ``ray``: model replicas (actors).

    Returns:
        Summary: ``images`` (predicted), ``errors``, ``detections``, ``class_counts``, ``tiled_images``,
        ``drawn``, ``seconds``, ``images_per_s``, ``device``, ``out_dir``, ``json``, ``csv``, ``labels``
        (what :func:`~detect.verbs.predict_labels.save_labels` returned, or None); with a gallery also
        ``detector_counts`` (the detector's own classes; ``class_counts`` then counts SKUs) and ``gallery``; with
        ``resume`` also ``resumed`` (photos found done). ``images_per_s`` counts the photos this run predicted.

    Raises:
        OutputRefused: ``out_dir`` clashes with the inputs (nothing is written).
        CannotRun: ``resume`` into a folder of another run or other settings; ``ray`` without ray installed.
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
    if ray is not None:
        require_ray()
    src = expand_sources(sources)
    inputs = _one_file_per_folder(src.files)
    check_output_folder(out_dir, inputs, src.dirs)
    protected = {s.real or s.path.resolve() for s in src.files}
    settings = run_settings(
        weights, conf=conf, image_size=image_size, tile=[opts.mode, opts.size, opts.overlap], rows=rows,
        row_gap=row_gap, draw=draw, use_ema=use_ema, agnostic_nms=agnostic_nms,
        proposals=Path(proposals) if proposals is not None else None,
        gallery=Path(gallery) if gallery is not None else None, embedder=str(embedder) if embedder else None,
        unknown_below=unknown_below,
    )
    # --resume continues in --out itself, locked before its lines are read (a live run there is refused)
    early = claim_run_dir(out_dir, resume=True) if resume else None
    try:
        done = prepare_resume(early[0], settings, log) if early else None
        # the Python API's loader (detect.api): gallery, class-agnostic NMS with it, the proposals check; with --ray
        # the workers hold the models and the driver's reads the class names and checks the options
        predictor, stage = open_predictor(
            weights, device="cpu" if ray is not None else device, conf=conf, image_size=image_size, use_ema=use_ema,
            tile=opts, batch_size=batch_size, agnostic_nms=agnostic_nms, gallery=gallery, embedder=embedder,
            unknown_below=unknown_below, proposals=proposals,
        )
        if stage is not None and agnostic_nms is None:
            agnostic_nms = True  # the detector's classes are replaced by SKUs: one box per product
        predictor_kwargs = dict(weights=weights, device=device, conf=conf, image_size=image_size, use_ema=use_ema,
                                tile=opts, batch_size=batch_size, agnostic_nms=agnostic_nms)
    except BaseException:
        if early:
            early[1].release()
        raise
    if proposals is not None and ray is None:  # each photo carries its own proposals from here on
        src.attach_proposals(ProposalsForFiles(proposals))
    # a new folder per run (runs/predict -> runs/predict2 when it holds one): no stale drawings beside new ones
    folder, lock = early or claim_run_dir(out_dir, exist_ok=exist_ok)
    with lock:
        out = check_output_folder(folder, inputs, src.dirs)
        if save_labels is not None:
            check_labels_folder(out)
        names = predictor.class_names if stage is None else stage.names
        todo = src.files if not done else [s for s in src.files if photo_key(s) not in done]
        for problem in src.problems:
            log(f"warning: skipped {problem}")
        work_kwargs = dict(rows=rows, row_gap=row_gap, out=out, draw=draw, workers=workers)
        if ray is None:
            work = PhotoWork(predictor.class_names, stage, protected=protected, **work_kwargs)
            keep = draw or stage is not None
            lines = work.lines(predictor.iter_predictions(Sources(files=todo), keep_images=keep, workers=workers))
            where = str(predictor.device)
        else:
            actor = dict(predictor=predictor_kwargs, work=work_kwargs, proposals=str(proposals) if proposals else None,
                         stage=(gallery, embedder, unknown_below, device) if gallery is not None else None)
            lines = ray_lines(ray, ray_workers, todo, actor, batch_size=max(1, batch_size) * 4)
            where = f"ray ({ray_workers} worker{'s' if ray_workers > 1 else ''}, {device})"
        predicted = 0
        with LineWriter(out / JSONL_NAME, None if done is not None else header(settings)) as writer:
            for line, warning in progress(lines, len(todo), "predict"):
                if warning:
                    log(f"warning: {warning}")
                else:
                    predicted += 1
                writer.write(line)
        meta = {
            "weights": str(weights),
            "class_names": names,
            "conf": conf,
            "image_size": predictor.image_size,
            "proposals": str(proposals) if proposals is not None else None,
            "tile": {"mode": opts.mode, "size": opts.tile_side(predictor.image_size), "overlap": opts.overlap},
        }
        if stage is not None:
            meta["detector_class_names"] = predictor.class_names
        run = {"predicted": predicted, "seconds": time.perf_counter() - t0, "device": where}
        if resume:
            run["resumed"] = len(src.files) - len(todo)
        return finish_run(out, [p.to_dict() for p in src.problems], meta, run, csv=csv, save_labels=save_labels,
                          link_photos=link_photos, names=names,
                          gallery=stage.describe() if stage is not None else None)


def _one_file_per_folder(files: list[Source]) -> list[Path]:
    """One resolved input per folder: all :func:`check_output_folder` needs (it looks at a file's folder), so
    100,000 photos cost no 100,000 path resolutions."""
    return list({real.parent: real for real in (s.real or s.path.resolve() for s in files)}.values())
