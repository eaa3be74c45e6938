"""``retail-detect gallery build`` and ``gallery rebuild``: a new gallery folder, written whole or not at all.

build: every class of a dataset (or every class folder) enrolled as a SKU from ``--per-class`` references (see
:mod:`detect.verbs.gallery_sources`). rebuild: a gallery's stored reference crops re-embedded by another embedder.
Both write into a hidden folder beside ``-o`` (:class:`data_tools.staged.StagedFolder`) renamed into place at the
end; ``-o`` must be new or an empty folder (a user's folder is never written over).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from data_tools.errors import InvalidInput
from data_tools.images import ImageError
from data_tools.progress import progress_bar
from data_tools.staged import StagedFolder, holds_files
from detect.engine.inference.gallery import Gallery, GalleryError, NewReference
from detect.verbs.gallery_sources import Pick, load_candidates, read_crop, select

FLUSH_REFS = 512  # references held in memory before they are committed to the (hidden) gallery
Log = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def check_new_folder(out: str | os.PathLike, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Refuse an output gallery folder that is a file, holds files, or lies inside (or around) an input."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GalleryError(f"-o {out}: is a file; a new gallery needs a new or empty folder")
    if holds_files(out):
        raise GalleryError(f"-o {out}: the folder is not empty; a new gallery needs a new or empty folder "
                           "(nothing was written)")
    real = out.resolve()
    for p in inputs:
        q = Path(p).resolve()
        if real == q or q in real.parents or real in q.parents:
            raise GalleryError(f"-o {out}: overlaps the input {p}; choose a folder outside it")
    return out


def load_embedder(spec: str, image_size: int | None = None):
    """``imagenet`` or an embedder checkpoint, as a :class:`CropEmbedder` on the CPU/GPU."""
    from detect.engine.inference.crop_embedder import IMAGENET, CropEmbedder

    if spec != IMAGENET and not Path(spec).is_file():
        raise InvalidInput(f"--embedder {spec}: no such file (give `imagenet` or an embedder checkpoint .pt)")
    return CropEmbedder.load(spec, image_size=image_size if spec == IMAGENET else None)


def _embed_into(gallery: Gallery, embedder, picks: list[Pick], log: Log,
                crop_of: Callable[[Pick, dict], np.ndarray] = read_crop) -> tuple[int, list[str]]:
    """Embed ``picks`` (grouped by SKU, in order) into ``gallery``, committing every :data:`FLUSH_REFS`
    references at a SKU boundary. Returns ``(references added, photos skipped)``."""
    pending: dict[str, list[NewReference]] = {}
    skipped: list[str] = []
    cache: dict[str, np.ndarray] = {}
    added = 0
    batch: list[tuple[Pick, np.ndarray]] = []

    def run_batch() -> None:
        vectors = embedder.embed([c for _, c in batch])
        for (pick, crop), v in zip(batch, vectors):
            pending.setdefault(pick.sku, []).append(NewReference(crop, v, pick.source))
        batch.clear()

    def flush() -> None:
        nonlocal added
        run_batch()
        if pending:
            gallery.add(pending)
            added += sum(len(v) for v in pending.values())
            pending.clear()

    bar = progress_bar(len(picks), "embedding", unit="crops", min_items=1)
    try:
        for i, pick in enumerate(picks):
            if i and pick.sku != picks[i - 1].sku and sum(map(len, pending.values())) + len(batch) >= FLUSH_REFS:
                flush()
            try:
                batch.append((pick, crop_of(pick, cache)))
            except ImageError as e:
                log(f"warning: {e} (skipped)")
                skipped.append(pick.path)
            if len(batch) >= embedder.batch_size:
                run_batch()
            bar.update()
        flush()
    finally:
        bar.close()
    return added, skipped


def build_gallery(dataset: str, embedder_spec: str, out: str, per_class: int | None = None,
                  classes: str | None = None, image_size: int | None = None, log: Log = print) -> dict:
    """Enrol every class of ``dataset`` (module doc) into the new gallery ``out``; returns a summary dict."""
    t0 = time.perf_counter()
    check_new_folder(out, [dataset])
    if not os.path.exists(dataset):
        raise InvalidInput(f"{dataset}: no such dataset, label folder or class folder")
    candidates, kind = load_candidates(dataset, log=_stderr)
    chosen = select(candidates, per_class, classes)
    picks = [p for sku in chosen for p in chosen[sku]]
    if not picks:
        raise InvalidInput(f"{dataset}: no labelled box or photo to enrol")
    embedder = load_embedder(embedder_spec, image_size)
    log(f"building a gallery of {len(chosen)} SKUs from {len(picks)} {'crops' if kind == 'labels' else 'photos'} "
        f"of {dataset} ({kind}) with embedder {embedder.name}")
    with StagedFolder(out) as stage:
        gallery = Gallery.create(stage.path, embedder.identity())
        added, skipped = _embed_into(gallery, embedder, picks, _stderr)
        if not added:
            raise InvalidInput(f"{dataset}: none of the {len(picks)} photos could be read; nothing written")
    missing = [s for s in chosen if s not in gallery.skus]
    for sku in missing:
        _stderr(f"warning: SKU {sku!r} left out: none of its photos could be read")
    return _summary(Path(stage.final), gallery, t0, skipped, log)


def rebuild_gallery(folder: str, embedder_spec: str, out: str, image_size: int | None = None,
                    log: Log = print) -> dict:
    """Re-embed the reference crops of gallery ``folder`` with another embedder into the new gallery ``out``."""
    t0 = time.perf_counter()
    old = Gallery.open(folder)
    check_new_folder(out, [folder])
    embedder = load_embedder(embedder_spec, image_size)
    picks = [Pick(r.sku, str(old.folder / r.crop), None, r.source) for r in old.refs]
    log(f"re-embedding {len(picks)} references of {len(old.skus)} SKUs from {folder} with embedder {embedder.name}")

    def stored(pick: Pick, cache: dict) -> np.ndarray:
        try:
            return read_crop(pick, cache)
        except ImageError as e:  # a gallery's own crop missing: the gallery is damaged, not a photo to skip
            raise GalleryError(f"{folder}: reference crop unreadable ({e}); nothing written") from None

    with StagedFolder(out) as stage:
        gallery = Gallery.create(stage.path, embedder.identity())
        _embed_into(gallery, embedder, picks, _stderr, stored)
    return _summary(Path(stage.final), gallery, t0, [], log)


def _summary(folder: Path, gallery: Gallery, t0: float, skipped: list[str], log: Log) -> dict:
    seconds = time.perf_counter() - t0
    threshold = gallery.threshold
    log(f"gallery {folder}: {len(gallery.skus)} SKUs, {len(gallery.refs)} references in {seconds:.1f} s; unknown "
        f"threshold {'none (too few references to calibrate)' if threshold is None else f'{threshold:.3f}'}"
        + (f"; {len(skipped)} unreadable photos skipped" if skipped else ""))
    return {"folder": str(folder), "skus": len(gallery.skus), "references": len(gallery.refs), "seconds": seconds,
            "threshold": threshold, "skipped": skipped}
