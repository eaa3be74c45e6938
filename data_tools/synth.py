"""Synthetic retail shelves: JPEG images + labelImg-style VOC XML, for demos and tests.

Layout written by :func:`generate` (what ``retail-data convert OUT_DIR`` reads)::

    OUT_DIR/classes.txt                    brand_a, brand_b, ... one per line (label order)
    OUT_DIR/images/shelf_0001.jpg
    OUT_DIR/annotations/shelf_0001.xml     <filename>shelf_0001.jpg</filename>, found in the sibling images/

Each image: a wall, 2-3 shelf boards (2 on images under 200 px high), products standing on them.
Brand ``k`` (label ``k + 1``, name ``brand_<letter>``) always looks the same in every image and every
seed: one shape (box, bottle, can, jar, pouch, carton), aspect ratio, height, colour scheme (hues spaced
by the golden angle), label pattern (stripes, band, dots, diagonal, checker, ring) and letter. Products
come in runs of 1-3 facings of a brand, vary a little in size and shade, and leave small gaps; the
first/last of a row (and the top row) may be cut by the border (box clipped, ``truncated=1``);
products less than 40 % visible are not drawn, so every drawn product is annotated. Then a lighting
gradient, a vignette and Gaussian noise. Objects are large (3-8 per row at 320 px), so even
128-160 px inputs are learnable. Deterministic: image ``i`` depends only on ``(seed, i, size, classes)``.
"""

from __future__ import annotations

import colorsys
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from data_tools.atomic import atomic_write_bytes, atomic_write_text
from data_tools.errors import InvalidInput
from data_tools.records import Record, RecordSet

SHAPES = ("box", "bottle", "can", "jar", "pouch", "carton")
PATTERNS = ("hstripes", "vband", "dots", "diagonal", "checker", "ring")
# shape -> (width / height, height as a fraction of the free row height)
_SHAPE_GEOMETRY = {"box": (0.72, 0.86), "bottle": (0.36, 0.95), "can": (0.58, 0.58),
                   "jar": (0.85, 0.55), "pouch": (0.68, 0.74), "carton": (0.46, 0.9)}
_GOLDEN = 0.381966
MIN_VISIBLE = 0.4
MIN_SIDE, MAX_SIDE = 16, 4096  # image size bounds (4096x4096: about 200 MB while drawing); the CLI checks the same


@dataclass(frozen=True)
class ShelfStyle:
    """How a shelf is stocked: row heights, facings per brand, gaps between products.

    The default is the module doc's shelf; ``data_tools.synth_dense.DENSE_STYLE`` packs many small products.
    """

    row_height: tuple[float, float] | None = None  # row height range as a fraction of the image height;
    # None: 2-3 rows (2 under 200 px high)
    runs: tuple[int, int] = (1, 4)  # facings of one brand side by side: an integer in [lo, hi)
    gap: tuple[float, float] = (0.03, 0.15)  # gap after a product as a fraction of its width
    wide_gap_p: float = 0.08  # chance of a wide gap (0.5-1.2 product widths more): an empty slot


DEFAULT_STYLE = ShelfStyle()


@dataclass(frozen=True)
class Brand:
    """How one class looks: fixed by its index alone."""

    name: str
    shape: str
    aspect: float  # width / height
    height: float  # fraction of the row's free height
    body: tuple[int, int, int]  # RGB
    label: tuple[int, int, int]
    accent: tuple[int, int, int]
    pattern: str
    text: str


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    return tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))


def class_name(k: int) -> str:
    """``brand_a`` .. ``brand_z``, then ``brand_aa``, ``brand_ab``, ..."""
    letters = ""
    k += 1
    while k:
        k, r = divmod(k - 1, 26)
        letters = chr(97 + r) + letters
    return f"brand_{letters}"


def brand_styles(classes: int) -> list[Brand]:
    """The ``classes`` brands, label ``k + 1`` <-> ``brands[k]`` (same for every seed)."""
    brands = []
    for k in range(classes):
        shape = SHAPES[k % len(SHAPES)]
        aspect, height = _SHAPE_GEOMETRY[shape]
        cycle = k // len(SHAPES)
        hue = 0.03 + k * _GOLDEN
        dark_label = k % 2 == 1
        brands.append(Brand(
            name=class_name(k), shape=shape, aspect=aspect * (1.0 + 0.12 * (cycle % 3)), height=height,
            body=_rgb(hue, 0.8, 0.85), label=(35, 35, 40) if dark_label else _rgb(hue + 0.5, 0.15, 0.97),
            accent=_rgb(hue + 0.33, 0.9, 0.75), pattern=PATTERNS[(k + cycle) % len(PATTERNS)],
            text=chr(65 + k % 26),
        ))
    return brands


# ----------------------------------------------------------------------------- drawing

def _shade(c: tuple[int, int, int], f: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, v * f))) for v in c)


def _pattern(img: np.ndarray, x0: int, y0: int, x1: int, y1: int, brand: Brand, accent, ink) -> None:
    """Fill the label area ``[x0, x1) x [y0, y1)`` (image pixels, may be off-image) with the brand's pattern."""
    H, W = img.shape[:2]
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
    if cx1 <= cx0 or cy1 <= cy0:
        return
    roi = img[cy0:cy1, cx0:cx1]  # drawing in a view clips everything to the label area
    ox, oy, w, h = x0 - cx0, y0 - cy0, x1 - x0, y1 - y0
    t = max(1, min(w, h) // 8)
    p = brand.pattern
    if p == "hstripes":
        for j in range(3):
            yy = oy + int(h * (0.2 + 0.3 * j))
            cv2.rectangle(roi, (ox, yy), (ox + w, yy + t), accent, -1)
    elif p == "vband":
        cv2.rectangle(roi, (ox + int(w * 0.12), oy), (ox + int(w * 0.32), oy + h), accent, -1)
    elif p == "dots":
        r = max(1, min(w, h) // 7)
        for j in range(2):
            for i in range(2):
                cv2.circle(roi, (ox + int(w * (0.25 + 0.5 * i)), oy + int(h * (0.25 + 0.5 * j))), r, accent, -1, cv2.LINE_AA)
    elif p == "diagonal":
        cv2.line(roi, (ox, oy + h), (ox + w, oy), accent, max(2, 2 * t), cv2.LINE_AA)
    elif p == "checker":
        for j in range(2):
            for i in range(4):
                if (i + j) % 2 == 0:
                    cv2.rectangle(roi, (ox + i * w // 4, oy + j * h // 2), (ox + (i + 1) * w // 4, oy + (j + 1) * h // 2), accent, -1)
    else:  # ring
        cv2.circle(roi, (ox + w // 2, oy + h // 2), max(2, min(w, h) * 2 // 5), accent, max(1, t), cv2.LINE_AA)
    scale = max(0.25, min(w, h) / 40.0)
    (tw, th), _ = cv2.getTextSize(brand.text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    org = (ox + (w - tw) // 2, oy + (h + th) // 2)
    cv2.putText(roi, brand.text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, ink, max(1, int(scale * 2)), cv2.LINE_AA)


def draw_product(img: np.ndarray, brand: Brand, x: int, y: int, w: int, h: int, shade: float = 1.0) -> None:
    """Draw one product filling exactly the pixels ``[x, x + w) x [y, y + h)`` at its widest/tallest (RGB, in place)."""
    body, accent = _shade(brand.body, shade), _shade(brand.accent, shade)
    label, ink = _shade(brand.label, shade), (20, 20, 20) if sum(brand.label) > 380 else (245, 245, 245)
    x2, y2, cx = x + w - 1, y + h - 1, x + w // 2
    outline = _shade(body, 0.55)
    s = brand.shape
    if s == "box":
        cv2.rectangle(img, (x, y), (x2, y2), body, -1)
        cv2.rectangle(img, (x, y), (x2, y + max(1, h // 12)), _shade(body, 1.25), -1)
        lab = (x + w // 10, y + h * 3 // 10, x + w - w // 10, y + h * 7 // 10)
    elif s == "bottle":
        nw = max(2, w * 2 // 5)
        cv2.rectangle(img, (cx - nw // 2, y), (cx + nw // 2, y + h // 10), accent, -1)  # cap
        cv2.rectangle(img, (cx - nw // 2, y + h // 10), (cx + nw // 2, y + h // 4), body, -1)  # neck
        cv2.ellipse(img, (cx, y + h * 3 // 10), (max(1, w // 2), max(1, h // 10)), 0, 180, 360, body, -1, cv2.LINE_AA)
        cv2.rectangle(img, (x, y + h * 3 // 10), (x2, y2), body, -1)
        lab = (x, y + h * 45 // 100, x + w, y + h * 8 // 10)
    elif s == "can":
        rim = max(1, h // 14)
        cv2.rectangle(img, (x, y + rim), (x2, y2 - rim), body, -1)
        cv2.ellipse(img, (cx, y + rim), (max(1, w // 2), rim), 0, 0, 360, (200, 200, 205), -1, cv2.LINE_AA)
        cv2.ellipse(img, (cx, y2 - rim), (max(1, w // 2), rim), 0, 0, 180, (150, 150, 155), -1, cv2.LINE_AA)
        lab = (x, y + h // 5, x + w, y + h * 4 // 5)
    elif s == "jar":
        lid = max(2, h // 5)
        cv2.rectangle(img, (x + w // 12, y), (x2 - w // 12, y + lid), accent, -1)
        r = max(1, w // 6)
        cv2.rectangle(img, (x, y + lid), (x2, y2 - r), body, -1)
        cv2.rectangle(img, (x + r, y2 - r), (x2 - r, y2), body, -1)
        cv2.circle(img, (x + r, y2 - r), r, body, -1, cv2.LINE_AA)
        cv2.circle(img, (x2 - r, y2 - r), r, body, -1, cv2.LINE_AA)
        lab = (x + w // 6, y + lid + h // 8, x + w - w // 6, y2 - h // 8)
    elif s == "pouch":
        pts = np.array([[x + w // 8, y], [x2 - w // 8, y], [x2, y2], [x, y2]], np.int32)
        cv2.fillPoly(img, [pts], body, cv2.LINE_AA)
        cv2.line(img, (x + w // 8, y + h // 10), (x2 - w // 8, y + h // 10), _shade(body, 0.6), max(1, h // 40))
        lab = (x + w // 6, y + h // 4, x + w - w // 6, y + h * 3 // 4)
    else:  # carton with a gable top
        top = max(2, h // 5)
        cv2.fillPoly(img, [np.array([[x, y + top], [cx, y + top // 3], [x2, y + top]], np.int32)], _shade(body, 0.8))
        cv2.rectangle(img, (cx - max(1, w // 8), y), (cx + max(1, w // 8), y + top // 3), _shade(body, 0.8), -1)
        cv2.rectangle(img, (x, y + top), (x2, y2), body, -1)
        lab = (x + w // 8, y + top + h // 10, x + w - w // 8, y2 - h // 8)
    cv2.rectangle(img, (lab[0], lab[1]), (lab[2] - 1, lab[3] - 1), label, -1)
    _pattern(img, *lab, brand, accent, ink)
    cv2.line(img, (x, y2), (x2, y2), outline, 1)


# ----------------------------------------------------------------------------- scenes

def render_shelf(rng: np.random.Generator, brands: list[Brand], width: int, height: int,
                 style: ShelfStyle = DEFAULT_STYLE) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One shelf image, stocked as ``style`` says.

    Returns ``(image [H, W, 3] uint8 RGB, boxes float32 [N, 4] xyxy record pixels, labels int64 [N] in
    1..K, truncated bool [N])``.
    """
    W, H = width, height
    wall = np.array(_rgb(rng.uniform(0.05, 0.15), rng.uniform(0.05, 0.2), rng.uniform(0.72, 0.9)), np.float32)
    img = np.empty((H, W, 3), np.uint8)
    img[:] = np.clip(wall[None, None] * np.linspace(0.85, 1.05, H, dtype=np.float32)[:, None, None], 0, 255)
    if style.row_height is None:
        n_rows = 2 if H < 200 else int(rng.integers(2, 4))
        row_h = H / (n_rows + rng.uniform(-0.12, 0.12))
    else:
        row_h = H * rng.uniform(*style.row_height)
        n_rows = int(H / row_h) + 1
    top = rng.uniform(-0.12, 0.04) * row_h
    board_c = _rgb(rng.uniform(0.05, 0.1), rng.uniform(0.3, 0.6), rng.uniform(0.3, 0.5))
    boxes, labels, truncs = [], [], []
    for r in range(n_rows + 1):
        board_y = int(round(top + (r + 1) * row_h))
        t = max(3, int(row_h * 0.07))
        if board_y - t <= 4:
            continue
        free = row_h - t - 3
        if board_y - t < H:
            _fill_row(img, rng, brands, board_y - t, free, boxes, labels, truncs, style)
        cv2.rectangle(img, (0, board_y - t), (W - 1, board_y), board_c, -1)
        cv2.line(img, (0, board_y - t), (W - 1, board_y - t), _shade(board_c, 1.4), 1)
        for _ in range(int(rng.integers(1, 4))):  # price tags: white distractors on the board edge
            px = int(rng.uniform(0, W - 12))
            cv2.rectangle(img, (px, board_y - t + 1), (px + max(6, W // 30), board_y - 1), (245, 245, 240), -1)
    img = _lighting(rng, img)
    boxes_a = np.asarray(boxes, np.float32).reshape(-1, 4)
    return img, boxes_a, np.asarray(labels, np.int64), np.asarray(truncs, bool)


def _fill_row(img, rng, brands, base_y: int, free: float, boxes, labels, truncs, style: ShelfStyle) -> None:
    """Products standing on the board whose top is ``base_y``, left to right across the image."""
    H, W = img.shape[:2]
    row_scale = rng.uniform(0.85, 1.0)
    x = -rng.uniform(0.0, 0.5) * free * 0.6
    k, run = int(rng.integers(len(brands))), 0
    while x < W:
        if run <= 0:
            k, run = int(rng.integers(len(brands))), int(rng.integers(*style.runs))
        b = brands[k]
        h = max(6, int(free * b.height * row_scale * rng.uniform(0.95, 1.05)))
        w = max(5, int(h * b.aspect * rng.uniform(0.95, 1.05)))
        xi, yi = int(round(x)), base_y - h
        x1, y1, x2, y2 = max(xi, 0), max(yi, 0), min(xi + w, W), min(yi + h, H)
        if x2 > x1 and y2 > y1 and (x2 - x1) * (y2 - y1) >= MIN_VISIBLE * w * h and min(x2 - x1, y2 - y1) >= 3:
            draw_product(img, b, xi, yi, w, h, shade=rng.uniform(0.9, 1.1))
            boxes.append((x1, y1, x2, y2))
            labels.append(k + 1)
            truncs.append((x1, y1, x2, y2) != (xi, yi, xi + w, yi + h))
        run -= 1
        gap = rng.uniform(*style.gap) * w + (rng.uniform(0.5, 1.2) * w if rng.random() < style.wide_gap_p else 0)
        x += w + max(1.0, gap)


def _lighting(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Linear lighting gradient in a random direction, a vignette and Gaussian noise (vectorised)."""
    H, W = img.shape[:2]
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    u, v = xx / max(W - 1, 1) - 0.5, yy / max(H - 1, 1) - 0.5
    a = rng.uniform(0, 2 * np.pi)
    gain = 1.0 + rng.uniform(0.1, 0.3) * (np.cos(a) * u + np.sin(a) * v) - rng.uniform(0.1, 0.3) * (u * u + v * v)
    gain *= rng.uniform(0.85, 1.1)
    out = img.astype(np.float32) * gain[:, :, None]
    out += rng.normal(0.0, rng.uniform(2.0, 6.0), size=out.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- datasets

def _size(size: tuple[int, int] | int) -> tuple[int, int]:
    w, h = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if w < MIN_SIDE or h < MIN_SIDE:
        raise InvalidInput(f"image size {w}x{h} is too small ({MIN_SIDE}x{MIN_SIDE} at least)")
    if w > MAX_SIDE or h > MAX_SIDE:
        raise InvalidInput(f"image size {w}x{h} is too large ({MAX_SIDE}x{MAX_SIDE} at most)")
    return w, h


def _render_all(out_dir: str | os.PathLike, images: int, classes: int, seed: int, size: tuple[int, int] | int,
                brands: list[Brand] | None = None, style: ShelfStyle = DEFAULT_STYLE
                ) -> tuple[list[str], list[Record]]:
    """Render and write ``images/shelf_%04d.jpg``; return the class names and records (no XML).

    ``brands``: the ``classes`` brand looks (default :func:`brand_styles`).
    """
    if images < 1 or classes < 1:
        raise InvalidInput("images and classes must be at least 1")
    W, H = _size(size)
    brands = brand_styles(classes) if brands is None else brands
    if len(brands) != classes:
        raise InvalidInput(f"{len(brands)} brand looks for {classes} classes")
    img_dir = Path(out_dir) / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(images):
        rng = np.random.default_rng([seed, i, W, H, classes])
        img, boxes, labels, trunc = render_shelf(rng, brands, W, H, style)
        name = f"shelf_{i + 1:04d}.jpg"
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        if not ok:
            raise OSError(f"cannot encode {name}")
        atomic_write_bytes(img_dir / name, buf.tobytes())
        records.append(Record(image=f"images/{name}", width=W, height=H, boxes=boxes, labels=labels,
                              truncated=trunc, source=f"synth(seed={seed}, index={i})"))
    return [b.name for b in brands], records


def generate(out_dir: str | os.PathLike, images: int = 64, classes: int = 5, seed: int = 0,
             size: tuple[int, int] | int = (320, 240), brands: list[Brand] | None = None,
             style: ShelfStyle = DEFAULT_STYLE) -> dict:
    """Write a synthetic shelf dataset (JPEG + VOC XML + classes.txt) to ``out_dir`` (layout: module doc).

    Args:
        size: ``(width, height)`` in pixels, or one int for square images.
        brands, style: the brand looks (default :func:`brand_styles`) and how shelves are stocked
            (``data_tools.synth_dense`` passes its look-alike brands and dense packing).
    Returns:
        A summary: ``out_dir``, ``images``, ``classes``, ``class_names``, ``size`` ([W, H]), ``seed``,
        ``boxes``, ``truncated``, ``per_class`` ({name: boxes}), ``images_dir``, ``annotations_dir``.
    """
    from data_tools.voc import write_voc

    out = Path(out_dir)
    names, records = _render_all(out, images, classes, seed, size, brands, style)
    for rec in records:
        write_voc(rec, names, out / "annotations" / (Path(rec.image).stem + ".xml"))
    atomic_write_text(out / "classes.txt", "".join(n + "\n" for n in names))
    counts = Counter(int(v) for rec in records for v in rec.labels)
    W, H = _size(size)
    return {
        "out_dir": str(out), "images": len(records), "classes": classes, "class_names": names,
        "size": [W, H], "seed": seed, "boxes": sum(counts.values()),
        "truncated": int(sum(int(rec.truncated.sum()) for rec in records)),
        "per_class": {n: counts.get(k + 1, 0) for k, n in enumerate(names)},
        "images_dir": str(out / "images"), "annotations_dir": str(out / "annotations"),
    }


def make_tiny_dataset(tmp_dir: str | os.PathLike, images: int = 12, classes: int = 3, seed: int = 0,
                      size: tuple[int, int] | int = (128, 128), brands: list[Brand] | None = None,
                      style: ShelfStyle = DEFAULT_STYLE) -> RecordSet:
    """Render shelves into ``tmp_dir/images`` and return their RecordSet directly (no XML written or parsed).

    The RecordSet's ``image_root`` is ``tmp_dir`` (absolute); same drawing code and images as :func:`generate`.
    """
    root = Path(tmp_dir).resolve()
    names, records = _render_all(root, images, classes, seed, size, brands, style)
    return RecordSet(names, str(root), records, {"source": "synth", "seed": seed, "size": list(_size(size))})
