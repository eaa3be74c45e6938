"""``retail-data browse``: a static page of a dataset, every image with its boxes drawn, problems first.

The way to find label mistakes before training. Per image it flags (:func:`find_problems`):

- ``duplicate_box``: two boxes with IoU >= 0.9 (same class: labelled twice; different classes: two labels on
  one product);
- ``duplicate_image``: the same file content as another image of the dataset;
- ``tiny_box``: a box under 8 x 8 pixels of area (``sqrt(w * h) < 8``);
- ``thin_box``: a box more than 8 times wider than high or higher than wide;
- ``cut_by_border``: a box touching the image border (within 1 px) or flagged ``truncated``;
- ``many_objects``: more objects than 95 % of the dataset's images, and at least 10;
- ``no_boxes`` and ``unreadable`` images.

Images with problems come first (the most severe kind first), then the rest by file name. The page filters by class
and problem kind (a few lines of plain JS) and opens from the file system. With ``--augment RECIPE.yaml``
each image also gets a few samples of that recipe's training augmentation (mosaic included) with their
transformed boxes, so a recipe can be checked by eye.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from data_tools.atomic import atomic_write_text
from data_tools.errors import InvalidInput
from data_tools.images import MAX_IMAGE_BYTES, ImageError, read_image
from data_tools.outputs import check_output_folder
from data_tools.progress import progress
from data_tools.records import Record, RecordSet
from data_tools.staged import StagedFolder
from data_tools.userfiles import UnsafeFile, hash_into
from detect.models.box_ops import iou_matrix
from detect.report.draw import draw_boxes, write_jpeg
from detect.report.html import esc, page, table
from detect.verbs.predict_output import class_colors

SEVERITY = {"unreadable": 5, "duplicate_box": 4, "duplicate_image": 4, "tiny_box": 3, "thin_box": 2,
            "no_boxes": 2, "many_objects": 1, "cut_by_border": 1}
TINY_PX, THIN_RATIO, DUP_IOU, BORDER_PX, MANY_MIN = 8.0, 8.0, 0.9, 1.0, 10
DRAW_MIN_SIDE, DRAW_MAX_SIDE = 480, 1024
MAX_SAMPLES = 16  # augmented samples per image: each is a drawing on the page
PROBLEM_COLOR = (0, 0, 230)  # BGR red: the outline of a box with a problem


@dataclass
class Issue:
    kind: str
    detail: str
    box: int | None = None  # index of the box concerned


@dataclass
class Entry:
    index: int  # in the RecordSet
    issues: list[Issue] = field(default_factory=list)

    @property
    def rank(self) -> tuple[int, int, int]:
        """Sort key, most severe first: its worst kind, then the severities of its kinds summed, then its issues."""
        kinds = {i.kind for i in self.issues}
        return (-max((SEVERITY[k] for k in kinds), default=0), -sum(SEVERITY[k] for k in kinds), -len(self.issues))


def _file_hash(path: str) -> str | None:
    """SHA-1 of an image file; None when it is not a readable regular file (a FIFO swapped in after the
    conversion must not block: its drawing then lists it as unreadable)."""
    h = hashlib.sha1(usedforsecurity=False)
    try:
        hash_into(h, path, MAX_IMAGE_BYTES)
    except (UnsafeFile, OSError):
        return None
    return h.hexdigest()


def many_threshold(rs: RecordSet) -> int:
    """Object count above which an image has ``many_objects``: the 95th percentile, at least :data:`MANY_MIN`."""
    counts = [r.num_boxes for r in rs.records]
    return max(MANY_MIN, int(math.ceil(np.percentile(counts, 95)))) if counts else MANY_MIN


def box_issues(rec: Record, names: list[str], many: int) -> list[Issue]:
    """The problems of one record's boxes (module doc)."""
    out: list[Issue] = []
    b = rec.boxes.astype(np.float64)
    if len(b) == 0:
        return [Issue("no_boxes", "no boxes")]
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    name = [names[k - 1] if 1 <= k <= len(names) else f"class_{k}" for k in rec.labels.tolist()]
    for i in np.flatnonzero(np.sqrt(np.clip(w * h, 0, None)) < TINY_PX).tolist():
        out.append(Issue("tiny_box", f"{name[i]} {w[i]:.0f}x{h[i]:.0f} px", i))
    ratio = w / np.maximum(h, 1e-6)
    for i in np.flatnonzero((ratio > THIN_RATIO) | (ratio < 1 / THIN_RATIO)).tolist():
        out.append(Issue("thin_box", f"{name[i]} {w[i]:.0f}x{h[i]:.0f} px", i))
    edge = ((b[:, 0] <= BORDER_PX) | (b[:, 1] <= BORDER_PX) | (b[:, 2] >= rec.width - BORDER_PX)
            | (b[:, 3] >= rec.height - BORDER_PX) | rec.truncated)
    for i in np.flatnonzero(edge).tolist():
        out.append(Issue("cut_by_border", name[i], i))
    if len(b) > 1:
        iou = iou_matrix(b, b)
        for i, j in zip(*np.nonzero(np.triu(iou, 1) >= DUP_IOU)):
            same = rec.labels[i] == rec.labels[j]
            what = f"{name[i]} twice" if same else f"{name[i]} and {name[j]} on one box"
            out.append(Issue("duplicate_box", f"{what} (IoU {iou[i, j]:.2f})", int(j)))
    if len(b) > many:
        out.append(Issue("many_objects", f"{len(b)} objects"))
    return out


def find_problems(rs: RecordSet, hashes: bool = True) -> list[Entry]:
    """One :class:`Entry` per record with its issues (``duplicate_image`` by file content when ``hashes``)."""
    many = many_threshold(rs)
    entries = [Entry(i, box_issues(r, rs.class_names, many)) for i, r in enumerate(rs.records)]
    if hashes:
        paths = [os.path.join(rs.image_root, r.image) for r in rs.records]
        with ThreadPoolExecutor(max_workers=4) as pool:
            digests = list(pool.map(_file_hash, paths))
        first: dict[str, int] = {}
        for i, d in enumerate(digests):
            if d is None:
                continue
            if d in first:
                entries[i].issues.append(Issue("duplicate_image", f"same file as {rs.records[first[d]].image}"))
                entries[first[d]].issues.append(Issue("duplicate_image", f"same file as {rs.records[i].image}"))
            else:
                first[d] = i
    return entries


def sort_entries(entries: list[Entry], rs: RecordSet) -> list[Entry]:
    """Most severe problems first, then by image path."""
    return sorted(entries, key=lambda e: (*e.rank, rs.records[e.index].image))


def _scaled(image: np.ndarray, enlarge: bool = True) -> tuple[np.ndarray, float]:
    """BGR copy of an RGB image with its longer side in [DRAW_MIN_SIDE (when ``enlarge``), DRAW_MAX_SIDE]."""
    side = max(image.shape[:2])
    s = min(max(side, DRAW_MIN_SIDE if enlarge else 1), DRAW_MAX_SIDE) / side
    size = (max(1, round(image.shape[1] * s)), max(1, round(image.shape[0] * s)))
    return cv2.resize(np.ascontiguousarray(image[..., ::-1]), size,
                      interpolation=cv2.INTER_LINEAR if s >= 1 else cv2.INTER_AREA), s


def draw_record(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, names: list[str],
                flagged: set[int] = frozenset(), enlarge: bool = True) -> np.ndarray:
    """Boxes (xyxy in ``image`` pixels) with class captions, scaled for reading (small images enlarged unless
    ``enlarge`` is False); ``flagged`` boxes get a red dashed outline. ``image`` is ``H x W x 3`` uint8 RGB;
    returns BGR."""
    canvas, s = _scaled(image, enlarge)
    colors = class_colors(len(names))
    b = np.asarray(boxes, np.float32).reshape(-1, 4) * s
    lab = np.asarray(labels, np.int64).reshape(-1).tolist()
    texts = [names[k - 1] if 1 <= k <= len(names) else f"class_{k}" for k in lab]
    if flagged:
        idx = sorted(flagged)
        draw_boxes(canvas, b[idx] + np.array([-3, -3, 3, 3], np.float32), [PROBLEM_COLOR] * len(idx),
                   [""] * len(idx), dashed=[True] * len(idx))
    draw_boxes(canvas, b, [colors[k % len(colors)] for k in lab], texts, short=[t[:3] for t in texts])
    return canvas


def _augmented(rs: RecordSet, recipe: str | Path, samples: int, seed: int) -> Callable[[int], list[np.ndarray]]:
    """A function giving ``samples`` drawn training samples of record ``i`` under ``recipe``'s augmentation."""
    from detect.config import load_config
    from detect.data.dataset import DetectionDataset

    cfg = load_config(recipe)
    ds = DetectionDataset(rs, cfg.data.image_size, cfg.augment, train=True, cache_images=False, seed=seed)
    ds.set_mosaic(True)

    def make(i: int) -> list[np.ndarray]:
        ds.set_seed(seed * 1_000_003 + i)  # each image's samples do not depend on which others are drawn
        out = []
        for _ in range(samples):
            img, target = ds[i]
            out.append(draw_record(img.permute(1, 2, 0).numpy(), target["boxes"].numpy(), target["labels"].numpy(),
                                   rs.class_names, enlarge=False))  # shown small: the recipe's size is plenty
        return out

    return make


def select(rs: RecordSet, classes: list[str] | None) -> list[int]:
    """Indices of the records holding any of ``classes`` (all when None); an unknown class is an error."""
    if not classes:
        return list(range(len(rs.records)))
    unknown = [c for c in classes if c not in rs.class_names]
    if unknown:
        raise InvalidInput(f"--classes: unknown class {', '.join(unknown)}; the dataset has {', '.join(rs.class_names)}")
    wanted = {rs.class_names.index(c) + 1 for c in classes}
    return [i for i, r in enumerate(rs.records) if wanted & set(r.labels.tolist())]


def browse(rs: RecordSet, out_dir: str | Path, classes: list[str] | None = None, max_images: int | None = None,
           augment: str | Path | None = None, samples: int = 3, seed: int = 0, workers: int = 4,
           log: Callable[[str], None] = print, source: str = "") -> dict:
    """Write the dataset page into a fresh folder (``out_dir``, or ``out_dir2``, ... when it holds files): built
    in a hidden folder beside it and renamed when complete (:class:`data_tools.staged.StagedFolder`), so a failed
    run leaves nothing behind. ``samples``: 1 .. :data:`MAX_SAMPLES` augmented samples per image (``augment``).

    Returns ``{"out_dir", "index", "images", "shown", "problems": {kind: images}, "unreadable"}``.
    """
    if not 1 <= samples <= MAX_SAMPLES:
        raise InvalidInput(f"--samples must be between 1 and {MAX_SAMPLES} (augmented samples drawn per image), "
                           f"not {samples}")
    check_output_folder(out_dir, [], [rs.image_root], "-o")  # drawings inside the image folder would be read as data later
    if augment is not None:
        from detect.config import load_config

        load_config(augment)  # a bad recipe fails before any work
    keep = select(rs, classes)
    sub = rs.subset(keep)
    entries = sort_entries(find_problems(sub), sub)
    if max_images is not None and max_images > 0:
        entries = entries[:max_images]
    with StagedFolder(out_dir, numbered=True) as stage:  # renamed to out_dir (or out_dir2, ...) once complete
        folder = stage.path
        aug = _augmented(sub, augment, samples, seed) if augment is not None else None
        unreadable: list[str] = []
        aug_lock = threading.Lock()

        def work(e: Entry) -> tuple[Entry, list[str]]:
            rec = sub.records[e.index]
            try:
                image = read_image(os.path.join(sub.image_root, rec.image))
            except Exception as exc:  # noqa: BLE001 - an unreadable image is listed, the rest still drawn
                e.issues.append(Issue("unreadable", str(exc)))
                return e, []
            flagged = {i.box for i in e.issues if i.box is not None}
            files = [f"images/{e.index:05d}.jpg"]
            write_jpeg(folder / files[0], draw_record(image, rec.boxes, rec.labels, sub.class_names, flagged))
            if aug is not None:
                try:
                    with aug_lock:  # one augmentation pipeline, its RNG seeded per image: one thread at a time
                        drawings = aug(e.index)
                except ImageError as exc:  # a mosaic partner that cannot be read: no samples for this image
                    log(f"warning: no augmented samples of {rec.image}: {exc}")
                    drawings = []
                for k, drawing in enumerate(drawings):
                    files.append(f"augment/{e.index:05d}_{k}.jpg")
                    write_jpeg(folder / files[-1], drawing)
            return e, files

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            done = list(progress(pool.map(work, entries), len(entries), "browse"))
        done.sort(key=lambda d: (*d[0].rank, sub.records[d[0].index].image))  # unreadable ones are known now
        for e, files in done:
            if not files:
                unreadable.append(sub.records[e.index].image)
                log(f"warning: {e.issues[-1].detail}")
        html = render(sub, done, source or str(rs.image_root), len(rs.records), classes, augment)
        atomic_write_text(folder / "index.html", html)
    folder = stage.final
    kinds = Counter(k for e, _ in done for k in {i.kind for i in e.issues})
    return {"out_dir": str(folder), "index": str(folder / "index.html"), "images": len(rs.records),
            "shown": len(done), "problems": dict(sorted(kinds.items())), "unreadable": unreadable}


FILTER_SCRIPT = """
function applyFilter(){var c=document.getElementById('cls').value,p=document.getElementById('kind').value,n=0;
 document.querySelectorAll('.card').forEach(function(e){var ok=(!c||e.dataset.classes.indexOf('|'+c+'|')>=0)&&
  (!p||(p==='any'?e.dataset.problems!=='':e.dataset.problems.indexOf('|'+p+'|')>=0));
  e.style.display=ok?'':'none';if(ok)n++;});document.getElementById('shown').textContent=n;}
document.getElementById('cls').addEventListener('change',applyFilter);
document.getElementById('kind').addEventListener('change',applyFilter);
"""


def render(rs: RecordSet, done: list[tuple[Entry, list[str]]], source: str, total: int, classes: list[str] | None,
           augment: str | Path | None) -> str:
    """The page: summary tables, filters, one card per image (drawing, problems, augmented samples)."""
    names = rs.class_names
    kinds = Counter(k for e, _ in done for k in {i.kind for i in e.issues})
    boxes = Counter(k for e, _ in done for k in rs.records[e.index].labels.tolist())
    images = Counter(k for e, _ in done for k in set(rs.records[e.index].labels.tolist()))
    summary = ('<div class="grid"><div>' + table(["problem", "images", "what it means"],
                                                 [(k, kinds.get(k, 0), _MEANING[k]) for k in SEVERITY], sortable=True)
               + "</div><div>" + table(["class", "boxes", "images"], [(n, boxes.get(k, 0), images.get(k, 0))
                                                                     for k, n in enumerate(names, 1)], sortable=True)
               + '</div></div><p class="note">Hover a problem tag for its details; red dashed outlines mark the '
                 "boxes concerned. Click a drawing to open it.</p>")
    options = "".join(f'<option value="{k}">{esc(n)}</option>' for k, n in enumerate(names, 1))
    kind_opts = '<option value="any">any problem</option>' + "".join(
        f'<option value="{k}">{k}</option>' for k in SEVERITY if kinds.get(k))
    filters = (f'<p>class <select id="cls"><option value="">all</option>{options}</select> problem '
               f'<select id="kind"><option value="">all images</option>{kind_opts}</select> '
               f'<span id="shown">{len(done)}</span> shown</p>')
    cards = []
    for e, files in done:
        rec = rs.records[e.index]
        labels = "|" + "|".join(str(k) for k in sorted(set(rec.labels.tolist()))) + "|"
        probs = "|" + "|".join(sorted({i.kind for i in e.issues})) + "|" if e.issues else ""
        by_kind: dict[str, list[str]] = {}
        for i in e.issues:
            by_kind.setdefault(i.kind, []).append(i.detail)
        tags = "".join(f'<span class="tag" title="{esc("; ".join(d))}">{esc(k)}'
                       + (f" x{len(d)}" if len(d) > 1 else "") + (f": {esc(d[0])}" if k != "cut_by_border" else "")
                       + "</span>" for k, d in sorted(by_kind.items(), key=lambda kv: -SEVERITY[kv[0]]))
        main = (f'<a href="{esc(files[0])}"><img class="thumb" src="{esc(files[0])}" alt="{esc(rec.image)}" '
                f'loading="lazy"></a>') if files else '<p class="note">unreadable</p>'
        aug = "".join(f'<a href="{esc(f)}"><img class="aug" src="{esc(f)}" alt="augmented" loading="lazy"></a>'
                      for f in files[1:])
        cards.append(f'<div class="card" data-classes="{esc(labels)}" data-problems="{esc(probs)}">{main}'
                     f'<div class="cap">{esc(rec.image)} - {rec.num_boxes} boxes</div>{tags}'
                     + (f'<div class="augrow">{aug}</div>' if aug else "") + "</div>")
    style = ("<style>.card img.thumb{width:240px}.augrow{display:flex;gap:2px;margin-top:3px}"
             ".augrow img{width:78px;height:78px}</style>")
    grid = f'{style}{filters}<div class="grid">{"".join(cards)}</div>'
    shown = f"{len(done)} of {total} images" + (f" holding {', '.join(classes)}" if classes else "")
    sub = f"{source}: {shown}, problems first" + (f"; augmentation of {augment}" if augment else "")
    sections = [("summary", "Summary", summary), ("images", "Images", grid)]
    return page("Dataset browser", sub, sections, FILTER_SCRIPT)


_MEANING = {
    "unreadable": "the image file cannot be decoded",
    "duplicate_box": f"two boxes with IoU >= {DUP_IOU} (labelled twice, or two classes on one product)",
    "duplicate_image": "the same file content as another image",
    "tiny_box": f"a box under {TINY_PX:g} x {TINY_PX:g} px of area",
    "thin_box": f"a box more than {THIN_RATIO:g} times wider than high (or higher than wide)",
    "no_boxes": "no box in the image",
    "many_objects": f"more objects than 95 % of the images (and at least {MANY_MIN})",
    "cut_by_border": "a box touching the image border or marked truncated",
}
