"""Prediction outputs: ``predictions.json``, optional CSV, drawn images, all written atomically.

Layout of ``--out DIR``::

    DIR/predictions.json      one file per run: images (detections, per-class and per-row counts) + errors
    DIR/predictions.csv       optional: one row per detection
    DIR/images/<mirror name>  optional: the input drawn with boxes, class names and scores

Every file is written to a temporary file in the same folder, fsynced, then moved into place with
``os.replace``, so a killed run never leaves a half-written output. Outputs never land on an input:
:func:`data_tools.outputs.check_output_folder` refuses an ``--out`` that is (or is inside) an input folder or
that contains an input, and :func:`write_drawn` refuses any path that is an input file.
"""

from __future__ import annotations

import colorsys
import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import cv2
import numpy as np
from torch import Tensor

from data_tools.atomic import atomic_open, atomic_write_bytes, atomic_write_text  # noqa: F401 - re-exported
from data_tools.outputs import OutputRefused

JSON_NAME = "predictions.json"
CSV_NAME = "predictions.csv"
IMAGES_DIR = "images"
FORMAT = "retail-detect-predictions"
FORMAT_VERSION = 1
_WRITABLE = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


# ----------------------------------------------------------------------------- JSON / CSV


def _np(x: Tensor | np.ndarray | None, dtype, shape=(-1,)) -> np.ndarray:
    if x is None:
        return np.zeros(0, dtype=dtype).reshape(shape)
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype).reshape(shape)


def image_entry(
    path: str,
    width: int,
    height: int,
    result: dict,
    class_names: list[str],
    rows: np.ndarray | None = None,
    row_summary: list[dict] | None = None,
    counts: dict[str, int] | None = None,
) -> dict:
    """The JSON entry of one image.

    Args:
        result: ``boxes`` ``[K, 4]`` xyxy original pixels, ``scores`` ``[K]``, ``labels`` ``[K]`` in 1..C.
        rows: int64 ``[K]`` shelf row per detection, or None (``row`` is then null).
            With a gallery (:mod:`detect.verbs.sku_stage`) ``result`` also holds ``sku_similarity`` ``[K]`` and
            ``sku_alternatives``: each detection then gets ``sku``, ``sku_similarity`` and ``sku_alternatives``
            (``[{"sku", "similarity"}, ...]``).
        row_summary, counts: per-row and per-class counts (see :mod:`detect.verbs.shelf_rows`).
    """
    boxes = np.round(_np(result.get("boxes"), np.float64, (-1, 4)), 2).tolist()
    scores = np.round(_np(result.get("scores"), np.float64), 4).tolist()
    labels = _np(result.get("labels"), np.int64).tolist()
    row_list = _np(rows, np.int64).tolist() if rows is not None else [None] * len(labels)
    names = [class_names[k - 1] if 1 <= k <= len(class_names) else f"class_{k}" for k in labels]
    dets = [
        {"box": b, "score": s, "class_name": n, "label": k, "row": r}
        for b, s, n, k, r in zip(boxes, scores, names, labels, row_list)
    ]
    if "sku_similarity" in result:  # named by a gallery (detect.verbs.sku_stage): class_name is the SKU
        sims = np.round(_np(result["sku_similarity"], np.float64), 4).tolist()
        for d, sim, alts in zip(dets, sims, result["sku_alternatives"]):
            d.update({"sku": d["class_name"], "sku_similarity": sim,
                      "sku_alternatives": [{"sku": a, "similarity": round(float(v), 4)} for a, v in alts]})
    return {
        "path": str(path),
        "width": int(width),
        "height": int(height),
        "num_detections": len(dets),
        "detections": dets,
        "counts": counts if counts is not None else {},
        "rows": row_summary if row_summary is not None else [],
    }


def write_json(out_dir: str | Path, images: Iterable[dict], errors: Iterable[dict], meta: dict | None = None) -> Path:
    """Write ``DIR/predictions.json`` atomically: ``{format, format_version, **meta, images, errors}``.

    ``images`` and ``errors`` may be iterators (a run's entries streamed from its ``predictions.jsonl``): they
    are written one at a time, never held together; the text is that of ``json.dumps(doc, indent=1)``.
    """
    head = {"format": FORMAT, "format_version": FORMAT_VERSION, **(meta or {})}
    with atomic_open(Path(out_dir) / JSON_NAME, "w") as f:
        f.write("{\n")
        for key, value in head.items():
            f.write(f" {json.dumps(key, ensure_ascii=False)}: {_indented(value, 1)},\n")
        f.write(' "images": ')
        _write_list(f, images)
        f.write(',\n "errors": ')
        _write_list(f, errors)
        f.write("\n}\n")
    return Path(out_dir) / JSON_NAME


def _indented(value: object, level: int) -> str:
    """``json.dumps(value, indent=1)`` as it reads nested ``level`` deep."""
    return json.dumps(value, indent=1, ensure_ascii=False).replace("\n", "\n" + " " * level)


def _write_list(f: IO[str], items: Iterable[dict]) -> None:
    """A list one level below the top, item by item (``[]`` when empty, as ``json.dumps`` writes it)."""
    first = True
    for item in items:
        f.write("[\n  " if first else ",\n  ")
        f.write(_indented(item, 2))
        first = False
    f.write("[]" if first else "\n ]")


def write_csv(out_dir: str | Path, images: Iterable[dict], named: bool | None = None) -> Path:
    """Write ``DIR/predictions.csv`` atomically: one row per detection of the :func:`image_entry` dicts (with
    ``sku``, ``sku_similarity`` and ``sku_alternatives`` (``sku:similarity;...``) columns when a gallery named them).

    ``named``: whether any detection carries a ``sku`` (None: looked up in ``images``, then held as a list);
    given, ``images`` may be an iterator, written row by row.
    """
    if named is None:
        images = list(images)
        named = any("sku" in d for e in images for d in e["detections"])
    with atomic_open(Path(out_dir) / CSV_NAME, "w") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["image", "x1", "y1", "x2", "y2", "score", "class_name", "row"]
                   + (["sku", "sku_similarity", "sku_alternatives"] if named else []))
        for entry in images:
            for d in entry["detections"]:
                row = "" if d["row"] is None else d["row"]
                sku = [d.get("sku", ""), d.get("sku_similarity", ""),
                       ";".join(f"{a['sku']}:{a['similarity']}" for a in d.get("sku_alternatives", []))] if named else []
                w.writerow([entry["path"], *d["box"], d["score"], d["class_name"], row, *sku])
    return Path(out_dir) / CSV_NAME


# ----------------------------------------------------------------------------- drawing


def class_colors(num_classes: int) -> list[tuple[int, int, int]]:
    """A distinct BGR colour per label ``0..num_classes`` (hues spread by the golden ratio)."""
    out = []
    for k in range(num_classes + 1):
        h = (k * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.85, 0.95)
        out.append((int(b * 255), int(g * 255), int(r * 255)))
    return out


def draw_detections(image: np.ndarray, result: dict, class_names: list[str]) -> np.ndarray:
    """Draw boxes with ``class score`` captions that never overprint each other (placed by
    :func:`detect.report.draw.draw_boxes`; a caption with no room shrinks to the score or is left out, and
    a class-colour legend is added then).

    Args:
        image: ``H x W x 3`` uint8 RGB (not modified).
        result: ``boxes`` ``[K, 4]`` xyxy pixels of this image, ``scores`` ``[K]``, ``labels`` ``[K]``.

    Returns:
        ``H x W x 3`` uint8 BGR, ready for ``cv2.imencode``.
    """
    from detect.report.draw import draw_boxes, draw_legend

    canvas = np.ascontiguousarray(image[..., ::-1])
    colors = class_colors(len(class_names))
    boxes = _np(result.get("boxes"), np.float64, (-1, 4))
    scores = _np(result.get("scores"), np.float64).tolist()
    labels = _np(result.get("labels"), np.int64).tolist()
    names = [class_names[k - 1] if 1 <= k <= len(class_names) else f"class_{k}" for k in labels]
    box_colors = [colors[k % len(colors)] for k in labels]
    full = draw_boxes(canvas, boxes, box_colors, [f"{n} {s:.2f}" for n, s in zip(names, scores)],
                      short=[f"{s:.2f}" for s in scores])
    if not all(full):
        legend = dict(zip(names, box_colors))
        draw_legend(canvas, sorted(legend.items()), boxes)
    return canvas


def drawn_path(out_dir: str | Path, rel: str) -> Path:
    """``DIR/images/<rel>`` (``rel`` is the input's mirror name; unwritable extensions become .png)."""
    p = Path(out_dir) / IMAGES_DIR / rel
    return p if p.suffix.lower() in _WRITABLE else p.with_name(p.name + ".png")


def write_drawn(path: str | Path, image_bgr: np.ndarray, protected: set[Path] | None = None) -> Path:
    """Encode ``image_bgr`` by the file extension and write it atomically.

    Raises:
        OutputRefused: ``path`` is one of the ``protected`` (input) files.
        ValueError: OpenCV cannot encode the image.
    """
    path = Path(path)
    if protected and path.expanduser().resolve() in protected:
        raise OutputRefused(f"refusing to overwrite input {path}")
    ok, buf = cv2.imencode(path.suffix.lower(), image_bgr)
    if not ok:
        raise ValueError(f"cannot encode {path.suffix} image for {path}")
    return atomic_write_bytes(path, buf.tobytes())
