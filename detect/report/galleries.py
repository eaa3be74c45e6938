"""Galleries of what the detector gets wrong: false positives, missed objects and wrong-class boxes as crops with
context, and the worst images drawn whole with ground truth and detections in different styles.

Full drawings (``images/img_NNNNN.jpg``, one per image that appears in a gallery): ground-truth boxes dashed,
detections solid, coloured by outcome (:data:`OUTCOME_COLORS`; a box taken by a wrong-class detection is
dashed in the wrong-class colour). Crops (``crops/<kind>_NNN.jpg``): the box and
half its size of context on each side, from the same scaled image, with only that error drawn. Every crop
links to its image's full drawing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from data_tools.images import read_image
from data_tools.records import RecordSet
from detect.report.draw import draw_boxes, write_jpeg
from detect.report.matching import BACKGROUND, CONFUSED, DUPLICATE, MISSED, TP, WRONG_CLASS, DatasetMatch

# BGR colours of the outcomes (the page's legend repeats them)
OUTCOME_COLORS = {
    "tp": (60, 170, 40),  # green: a correct detection
    "background": (40, 40, 230),  # red: a detection on background
    "duplicate": (200, 60, 200),  # purple: a second detection of a found object
    "wrong_class": (0, 140, 255),  # orange: the object is found with the wrong class
    "missed": (0, 215, 255),  # yellow, dashed: an object nothing found
    "found": (200, 200, 200),  # light grey, dashed: a ground-truth box that was found
}
_PRED_KIND = {TP: "tp", WRONG_CLASS: "wrong_class", DUPLICATE: "duplicate", BACKGROUND: "background"}
DRAW_MIN_SIDE, DRAW_MAX_SIDE = 640, 1280  # full drawings: longer side scaled into this range
CROP_SIDE = 160  # crops: longer side in pixels


@dataclass
class Item:
    """One gallery entry: its thumbnail, the page it links to (paths relative to the report folder), caption."""

    thumb: str
    link: str
    caption: str
    image: str  # the dataset's image path

    def to_dict(self) -> dict:
        return {"thumb": self.thumb, "link": self.link, "caption": self.caption, "image": self.image}


def drawing_scale(width: int, height: int) -> float:
    """Scale of a full drawing: small images enlarged to :data:`DRAW_MIN_SIDE`, large ones shrunk to the max."""
    side = max(width, height)
    return min(max(side, DRAW_MIN_SIDE), DRAW_MAX_SIDE) / side


def _name(k: int, names: list[str]) -> str:
    return names[k - 1] if 1 <= k <= len(names) else f"class_{k}"


def image_errors(dm: DatasetMatch) -> np.ndarray:
    """int64 ``[N, 4]`` per image: false positives (background + duplicate), wrong-class, missed, total."""
    out = np.zeros((len(dm.matches), 4), np.int64)
    for i, m in enumerate(dm.matches):
        fp = int(np.isin(m.pred_kind, (BACKGROUND, DUPLICATE)).sum())
        wc = int((m.pred_kind == WRONG_CLASS).sum())
        miss = int((m.gt_kind == MISSED).sum())
        out[i] = (fp, wc, miss, fp + wc + miss)
    return out


def draw_full(image: np.ndarray, rec, dets, match, names: list[str]) -> tuple[np.ndarray, float]:
    """Whole image, scaled by :func:`drawing_scale`: ground truth dashed, detections solid, by outcome.

    Args:
        image: ``H x W x 3`` uint8 RGB (not modified).
        rec: the image's :class:`~data_tools.records.Record`; dets / match: its detections at the report's
            confidence and their :class:`~detect.report.matching.ImageMatch`.

    Returns:
        ``(drawing H' x W' x 3 uint8 BGR, scale)``.
    """
    s = drawing_scale(image.shape[1], image.shape[0])
    size = (max(1, round(image.shape[1] * s)), max(1, round(image.shape[0] * s)))
    canvas = cv2.resize(np.ascontiguousarray(image[..., ::-1]), size,
                        interpolation=cv2.INTER_LINEAR if s >= 1 else cv2.INTER_AREA)
    boxes, colors, texts, short, dashed = [], [], [], [], []
    for p in range(len(dets.scores)):  # detections first (by score), then ground truth
        kind = _PRED_KIND[int(match.pred_kind[p])]
        boxes.append(dets.boxes[p] * s)
        colors.append(OUTCOME_COLORS[kind])
        texts.append(f"{_name(int(dets.labels[p]), names)} {dets.scores[p]:.2f}")
        short.append(f"{dets.scores[p]:.2f}")
        dashed.append(False)
    for g in range(rec.num_boxes):
        kind = {MISSED: "missed", CONFUSED: "wrong_class"}.get(int(match.gt_kind[g]), "found")
        boxes.append(rec.boxes[g] * s)
        colors.append(OUTCOME_COLORS[kind])
        texts.append(f"GT {_name(int(rec.labels[g]), names)}" if kind != "found" else "")
        short.append("")
        dashed.append(True)
    draw_boxes(canvas, np.asarray(boxes, np.float32).reshape(-1, 4), colors, texts, short, dashed,
               thick=max(2, round(max(canvas.shape[:2]) / 320)))
    return canvas, s


def _crop(clean: np.ndarray, boxes: list[tuple[np.ndarray, tuple, str, bool]]) -> np.ndarray:
    """The region around ``boxes`` (``(xyxy in clean's pixels, colour, caption, dashed)``) with half a box of
    context on each side, those boxes drawn, scaled so its longer side is :data:`CROP_SIDE`."""
    h, w = clean.shape[:2]
    b = np.asarray([x[0] for x in boxes], np.float32).reshape(-1, 4)
    x1, y1 = b[:, 0].min(), b[:, 1].min()
    x2, y2 = b[:, 2].max(), b[:, 3].max()
    mx, my = max(0.5 * (x2 - x1), 12.0), max(0.5 * (y2 - y1), 12.0)
    cx1, cy1 = int(max(0, x1 - mx)), int(max(0, y1 - my))
    cx2, cy2 = int(min(w, x2 + mx + 1)), int(min(h, y2 + my + 1))
    crop = np.ascontiguousarray(clean[cy1:cy2, cx1:cx2])
    f = CROP_SIDE / max(crop.shape[:2])
    crop = cv2.resize(crop, (max(1, round(crop.shape[1] * f)), max(1, round(crop.shape[0] * f))),
                      interpolation=cv2.INTER_LINEAR if f >= 1 else cv2.INTER_AREA)
    shifted = (b - np.array([cx1, cy1, cx1, cy1], np.float32)) * f
    draw_boxes(crop, shifted, [x[1] for x in boxes], ["" for _ in boxes], None, [x[3] for x in boxes], thick=2)
    return crop


def build_galleries(rs: RecordSet, dm: DatasetMatch, out_dir: str | Path, per_gallery: int = 48, worst: int = 12,
                    log: Callable[[str], None] = print) -> dict:
    """Write the crops and full drawings under ``out_dir``; return the galleries.

    False positives and wrong-class boxes are shown most confident first, missed objects largest first, the
    worst images by their number of errors (false positives + wrong class + missed), at most ``per_gallery``
    (``worst``) each. An image that cannot be read is reported with ``log`` and left out.

    Returns:
        ``{"false_positives" | "wrong_class" | "missed" | "worst": [Item.to_dict()], "totals": {kind: n}}``.
    """
    out = Path(out_dir)
    names = rs.class_names
    fps, wrong, missed = [], [], []
    for i, (d, m) in enumerate(zip(dm.dets, dm.matches)):
        for p in np.flatnonzero(np.isin(m.pred_kind, (BACKGROUND, DUPLICATE))).tolist():
            fps.append((-float(d.scores[p]), i, p))
        for p in np.flatnonzero(m.pred_kind == WRONG_CLASS).tolist():
            wrong.append((-float(d.scores[p]), i, p))
        boxes = rs.records[i].boxes
        for g in np.flatnonzero(m.gt_kind == MISSED).tolist():
            area = float((boxes[g, 2] - boxes[g, 0]) * (boxes[g, 3] - boxes[g, 1]))
            missed.append((-area, i, g))
    fps, wrong, missed = (sorted(x)[:per_gallery] for x in (fps, wrong, missed))
    errors = image_errors(dm)
    worst_ids = [int(i) for i in np.lexsort((np.arange(len(errors)), -errors[:, 3])) if errors[i, 3] > 0][:worst]
    needed = sorted({i for _, i, _ in fps + wrong + missed} | set(worst_ids))

    links: dict[int, str] = {}
    clean: dict[int, tuple[np.ndarray, float]] = {}
    for i in needed:
        rec = rs.records[i]
        path = Path(rs.image_root) / rec.image
        try:
            image = read_image(path)
        except Exception as exc:  # noqa: BLE001 - one unreadable image leaves the rest of the report intact
            log(f"warning: report leaves out {path}: {exc}")
            continue
        drawing, s = draw_full(image, rec, dm.dets[i], dm.matches[i], names)
        links[i] = f"images/img_{i:05d}.jpg"
        write_jpeg(out / links[i], drawing)
        size = (drawing.shape[1], drawing.shape[0])
        clean[i] = (cv2.resize(np.ascontiguousarray(image[..., ::-1]), size,
                               interpolation=cv2.INTER_LINEAR if s >= 1 else cv2.INTER_AREA), s)

    def crop_item(kind: str, n: int, i: int, boxes: list, caption: str) -> Item | None:
        if i not in clean:
            return None
        img, s = clean[i]
        thumb = f"crops/{kind}_{n:03d}.jpg"
        write_jpeg(out / thumb, _crop(img, [(b * s, c, t, d) for b, c, t, d in boxes]))
        return Item(thumb, links[i], caption, rs.records[i].image)

    gal: dict[str, list] = {"false_positives": [], "wrong_class": [], "missed": [], "worst": []}
    for n, (neg, i, p) in enumerate(fps):
        d, m = dm.dets[i], dm.matches[i]
        kind = _PRED_KIND[int(m.pred_kind[p])]
        cap = f"{_name(int(d.labels[p]), names)} {-neg:.2f}" + (" (duplicate)" if kind == "duplicate" else "")
        gal["false_positives"].append(crop_item("fp", n, i, [(d.boxes[p], OUTCOME_COLORS[kind], "", False)], cap))
    for n, (neg, i, p) in enumerate(wrong):
        d, m = dm.dets[i], dm.matches[i]
        g = int(m.pred_gt[p])
        rec = rs.records[i]
        cap = f"{_name(int(d.labels[p]), names)} {-neg:.2f}, is {_name(int(rec.labels[g]), names)}"
        gal["wrong_class"].append(crop_item("wrong", n, i, [(rec.boxes[g], OUTCOME_COLORS["wrong_class"], "", True),
                                                             (d.boxes[p], OUTCOME_COLORS["wrong_class"], "", False)],
                                            cap))
    for n, (_, i, g) in enumerate(missed):
        rec = rs.records[i]
        gal["missed"].append(crop_item("missed", n, i, [(rec.boxes[g], OUTCOME_COLORS["missed"], "", True)],
                                       _name(int(rec.labels[g]), names)))
    for i in worst_ids:
        if i in links:
            fp, wc, miss, _ = errors[i].tolist()
            gal["worst"].append(Item(links[i], links[i], f"{Path(rs.records[i].image).name}: {fp} false positive(s), "
                                     f"{wc} wrong class, {miss} missed", rs.records[i].image))
    result = {k: [x.to_dict() for x in v if x is not None] for k, v in gal.items()}
    tot = errors.sum(0).tolist() if len(errors) else [0, 0, 0, 0]
    result["totals"] = {"false_positives": tot[0], "wrong_class": tot[1], "missed": tot[2]}
    return result
