"""``retail-detect gallery show``: an HTML page of every SKU's references (:mod:`detect.report.gallery_page`).

Per reference: its best similarity to another reference of its own SKU (``own``) and to any other SKU's
(``other``); per SKU: its nearest other SKU. Images are linked by relative paths from the page to the gallery's
``refs/`` (``--embed``: inlined as data URIs, one portable file). The page is written atomically; it never
replaces a file of the gallery, nor any file but a page this verb wrote.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from data_tools.atomic import atomic_write_text
from data_tools.outputs import OutputRefused, looks_like, refuse_overwrite
from detect.engine.inference.gallery import Gallery
from detect.report.gallery_page import GENERATOR, render
from detect.verbs.gallery_edit import describe

Log = Callable[[str], None]


def neighbours(gallery: Gallery) -> tuple[list[float | None], list[tuple[str, float] | tuple[None, None]]]:
    """Per reference (row ``i``): best similarity to another row of its SKU (None: the only one) and
    ``(sku, similarity)`` of the best row of another SKU (``(None, None)``: no other SKU)."""
    n = len(gallery.refs)
    skus = [r.sku for r in gallery.refs]
    own: list[float | None] = [None] * n
    other: list = [(None, None)] * n
    if not n:
        return own, other
    sims, rows = gallery.index.nearest(gallery.vectors, min(n, 512))
    for i in range(n):
        for s, j in zip(sims[i], rows[i]):
            if j < 0 or j == i:
                continue
            if skus[j] == skus[i]:
                own[i] = float(s) if own[i] is None else own[i]
            elif other[i][0] is None:
                other[i] = (skus[j], float(s))
            if own[i] is not None and other[i][0] is not None:
                break
        if other[i][0] is None and len(set(skus)) > 1:  # beyond the neighbours looked at: brute force
            dots = gallery.vectors @ gallery.vectors[i]
            mask = np.array([k != skus[i] for k in skus])
            j = int(np.argmax(np.where(mask, dots, -np.inf)))
            other[i] = (skus[j], float(dots[j]))
    return own, other


def _check_page(out: Path, gallery: Gallery) -> None:
    """Refuse a page path inside the gallery's data, or over any file this verb did not write."""
    inputs = [gallery.folder / "manifest.json", gallery.folder / gallery.manifest["vectors"]["file"],
              *(gallery.folder / r.crop for r in gallery.refs)]
    refuse_overwrite(out, inputs, "-o")
    if out.is_dir():
        raise OutputRefused(f"-o {out}: is a folder; give a file name such as {out / 'gallery.html'}")
    if out.resolve().parent == (gallery.folder / "refs").resolve():
        raise OutputRefused(f"-o {out}: inside the gallery's refs/ folder; choose another place")
    if out.exists():
        with open(out, "rb") as f:
            head = f.read(4096)
        if head and GENERATOR.encode() not in head:
            raise OutputRefused(f"refusing to overwrite -o {out}: it is {looks_like(head)}, not a page written by "
                                "`retail-detect gallery show`; choose another name")


def _src(gallery: Gallery, crop: str, page_dir: Path, embed: bool) -> str:
    path = gallery.folder / crop
    if embed:
        return "data:image/jpeg;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    try:
        return Path(os.path.relpath(path.resolve(), page_dir.resolve())).as_posix()
    except ValueError:  # another drive (Windows): no relative path
        return path.resolve().as_uri()


def show_gallery(folder: str, out: str | None = None, embed: bool = False, log: Log = print) -> Path:
    """Write the gallery's page (default ``<GALLERY>.html`` beside the gallery folder); returns its path."""
    gallery = Gallery.open(folder)
    folder_path = Path(folder)
    page = Path(out) if out else folder_path.resolve().with_name(folder_path.resolve().name + ".html")
    _check_page(page, gallery)
    own, other = neighbours(gallery)
    row_of = {r.id: i for i, r in enumerate(gallery.refs)}
    info = describe(gallery)
    info["references"] = len(gallery.refs)
    for k, s in enumerate(info["skus"]):
        refs = []
        for r in s.pop("references"):
            i = row_of[r["id"]]
            o_sku, o_sim = other[i]
            closer = o_sku if o_sim is not None and own[i] is not None and o_sim > own[i] else None
            refs.append({**r, "src": _src(gallery, r["crop"], page.parent, embed), "own": own[i], "other": o_sim,
                         "closer_to": closer})
        best = max((r for r in refs if r["other"] is not None), key=lambda r: r["other"], default=None)
        s.update({"index": k, "refs": refs, "nearest": None if best is None else other[row_of[best["id"]]][0],
                  "nearest_sim": None if best is None else best["other"]})
    atomic_write_text(page, render(info))
    flagged = sum(r["closer_to"] is not None for s in info["skus"] for r in s["refs"])
    log(f"wrote {page}: {len(gallery.skus)} SKUs, {len(gallery.refs)} references"
        + (f", {flagged} closer to another SKU than to their own" if flagged else ""))
    return page
