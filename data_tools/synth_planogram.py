"""Synthetic planogram shelves: photos drawn from a plan, with a known share of facings removed or misplaced.

Ground truth for ``retail-detect audit``. Layout written by :func:`generate_planogram` (what
``retail-data convert OUT_DIR`` reads, plus the truth)::

    OUT_DIR/classes.txt                 brand_a, brand_b, ... (label order, as data_tools.synth)
    OUT_DIR/images/<bay>_0001.jpg       photo i shows bay i mod (number of bays)
    OUT_DIR/annotations/<bay>_0001.xml  VOC boxes of every product drawn
    OUT_DIR/truth.json                  per photo: every planned slot (present / removed / misplaced) and its box

Each photo draws the bay's rows top to bottom, each row's planned facings left to right, scaled so the
row fills the shelf width (2-10 % spacing). Then exactly ``round(out_of_stock * N)`` of the N planned
facings are left out (the empty slot stays: an out-of-stock gap) and ``round(misplace * N)`` others are
replaced by another SKU of the plan (a misplaced facing, drawn at its own width). Products, lighting and
noise are :mod:`data_tools.synth`'s, so a detector trained on ``retail-data synth`` shelves knows the
brands. Deterministic: photo ``i`` depends only on ``(seed, i, size, classes)`` and the plan.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np

from data_tools.atomic import atomic_write_bytes, atomic_write_text
from data_tools.errors import InvalidInput
from data_tools.outputs import OutputRefused
from data_tools.records import Record
from data_tools.synth import _lighting, _rgb, _shade, _size, brand_styles, class_name, draw_product

TRUTH_NAME = "truth.json"
TRUTH_FORMAT = "retail-detect-planogram-truth"
MIN_PRODUCT_PX = 4


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "bay"


def _check_names(plan, images: int) -> list[str]:
    """Photo file names; each must lead back to its own bay under the plan's matching rule."""
    from data_tools.planogram import PlanogramError

    names, problems = [], []
    for i in range(images):
        bay = plan.bays[i % len(plan.bays)]
        name = f"{_safe(bay.name)}_{i + 1:04d}.jpg"
        if plan.bay_for(name) is not bay and i < len(plan.bays):
            where = f"{plan.path}:{bay.line}" if bay.line else plan.path
            problems.append(
                f"{where}: bay '{bay.name}': the synthetic photos are named like '{name}', which the plan gives "
                f"to bay '{getattr(plan.bay_for(name), 'name', None)}'; use a match pattern like "
                f"'{_safe(bay.name)}_*'"
            )
        names.append(name)
    if problems:
        raise PlanogramError(problems)
    return names


def _changes(rng: np.random.Generator, plan_seq: list[list[str]], out_of_stock: float, misplace: float,
             pool: list[str]) -> dict[tuple[int, int], tuple[str, str | None]]:
    """``{(row, slot): ("removed", None) | ("misplaced", found_sku)}`` with exact counts."""
    slots = [(r, j) for r, row in enumerate(plan_seq) for j in range(len(row))]
    n_oos, n_mis = round(out_of_stock * len(slots)), round(misplace * len(slots))
    order = rng.permutation(len(slots)).tolist()
    out: dict[tuple[int, int], tuple[str, str | None]] = {slots[k]: ("removed", None) for k in order[:n_oos]}
    for k in order[n_oos:n_oos + n_mis]:
        r, j = slots[k]
        others = [s for s in pool if s != plan_seq[r][j]]
        if others:
            out[r, j] = ("misplaced", others[int(rng.integers(len(others)))])
    return out


def render_planogram_shelf(
    rng: np.random.Generator, brands: dict, plan_seq: list[list[str]], width: int, height: int,
    changes: dict[tuple[int, int], tuple[str, str | None]],
) -> tuple[np.ndarray, list[dict], list[int]]:
    """Draw one bay.

    Args:
        brands: SKU -> :class:`data_tools.synth.Brand`.
        plan_seq: planned rows top to bottom, one SKU per facing.
        changes: from :func:`_changes`.

    Returns:
        ``(image H x W x 3 uint8 RGB, rows, underfilled row indices)``; ``rows[r]`` is
        ``{"row", "shelf_y", "facings": [{"slot", "planned", "status", "found", "box"}]}``, boxes xyxy pixels
        (for a removed facing: where it would stand).
    """
    W, H = width, height
    wall = np.array(_rgb(rng.uniform(0.05, 0.15), rng.uniform(0.05, 0.2), rng.uniform(0.72, 0.9)), np.float32)
    img = np.empty((H, W, 3), np.uint8)
    img[:] = np.clip(wall[None, None] * np.linspace(0.85, 1.05, H, dtype=np.float32)[:, None, None], 0, 255)
    board_c = _rgb(rng.uniform(0.05, 0.1), rng.uniform(0.3, 0.6), rng.uniform(0.3, 0.5))
    top, bottom = rng.uniform(0.01, 0.04) * H, rng.uniform(0.0, 0.02) * H
    row_h = (H - top - bottom) / len(plan_seq)
    t = max(3, int(row_h * 0.07))
    rows, underfilled = [], []
    for r, seq in enumerate(plan_seq):
        board_y = int(round(top + (r + 1) * row_h))
        base_y, free = board_y - t, row_h - t - 3
        facings, full = _fill_row(img, rng, brands, seq, r, changes, base_y, free)
        rows.append({"row": r, "shelf_y": base_y, "facings": facings})
        if not full:
            underfilled.append(r)
        cv2.rectangle(img, (0, base_y), (W - 1, board_y), board_c, -1)
        cv2.line(img, (0, base_y), (W - 1, base_y), _shade(board_c, 1.4), 1)
        for _ in range(int(rng.integers(1, 4))):  # price tags on the board edge
            px = int(rng.uniform(0, W - 12))
            cv2.rectangle(img, (px, base_y + 1), (px + max(6, W // 30), board_y - 1), (245, 245, 240), -1)
    return _lighting(rng, img), rows, underfilled


def _fill_row(img, rng, brands, seq, r, changes, base_y: int, free: float) -> tuple[list[dict], bool]:
    """Lay one planned row across the width; draw all but the removed facings. Returns (facings, filled).

    The products are scaled so the row spans the width; one too tall for the shelf at that scale shrinks
    alone, and the width it gives up is spread over the spaces (``filled`` is False when that adds more
    than a fifth of the median product width to each space: the plan is too short for the photo's width).
    """
    W = img.shape[1]
    actual = [changes.get((r, j), ("present", None)) for j in range(len(seq))]
    shown = [brands[found] if kind == "misplaced" else brands[sku] for sku, (kind, found) in zip(seq, actual)]
    h = np.array([free * b.height * rng.uniform(0.97, 1.03) for b in shown])
    w = np.array([hj * b.aspect * rng.uniform(0.97, 1.03) for hj, b in zip(h, shown)])
    space = w[:-1] * rng.uniform(0.02, 0.10, size=len(w) - 1)
    edges = rng.uniform(0.003, 0.015, size=2) * W
    fit = (W - edges.sum()) / (w.sum() + space.sum())
    shrink = np.minimum(1.0, free / (h * fit))  # [N]: products taller than the shelf at this scale
    w, h, space = w * fit * shrink, h * fit * shrink, space * fit
    if w.min() < MIN_PRODUCT_PX:
        raise InvalidInput(f"row {r + 1} has {len(seq)} facings: too many to draw {W} px wide (products under "
                         f"{MIN_PRODUCT_PX} px); give a larger --size")
    left = W - edges.sum() - w.sum() - space.sum()  # width given up by shrunk products
    if len(space):
        space += left / len(space)
    x = edges[0] + (0.0 if len(space) else left / 2)
    out = []
    for j, (sku, (kind, found), b) in enumerate(zip(seq, actual, shown)):
        wi, hi, xi = max(1, int(round(w[j]))), max(1, int(round(h[j]))), int(round(x))
        if kind != "removed":
            draw_product(img, b, xi, base_y - hi, wi, hi, shade=rng.uniform(0.9, 1.1))
        out.append({"slot": j, "planned": sku, "status": kind, "found": found if kind == "misplaced" else
                    (None if kind == "removed" else sku), "box": [xi, base_y - hi, xi + wi, base_y]})
        x += w[j] + (space[j] if j < len(space) else 0.0)
    return out, left / max(len(space), 1) <= 0.2 * float(np.median(w))


def generate_planogram(
    out_dir: str | Path, planogram: str | Path, images: int = 20, classes: int = 5, seed: int = 0,
    size: tuple[int, int] | int = (400, 300), out_of_stock: float = 0.0, misplace: float = 0.0,
) -> dict:
    """Write synthetic planogram shelves (JPEG + VOC XML + classes.txt + truth.json) into a new folder.

    Args:
        planogram: plan file; its SKUs must be synthetic class names (``brand_a`` .. for ``classes``).
        out_of_stock, misplace: fractions of each photo's planned facings removed / replaced.

    Returns:
        Summary: ``out_dir``, ``images``, ``classes``, ``size``, ``seed``, ``planned``, ``removed``,
        ``misplaced``, ``boxes``, ``underfilled`` (photos with a row too short to fill the width), ``truth``.

    Raises:
        PlanogramError: a bad plan (one ``FILE:LINE`` line per problem). InvalidInput: bad options, a row too
        dense for the image width. OutputRefused: a non-empty ``out_dir``.
    """
    from data_tools.planogram import load_planogram
    from data_tools.voc import write_voc

    for name, v in (("--out-of-stock", out_of_stock), ("--misplace", misplace)):
        if not 0.0 <= v <= 1.0:
            raise InvalidInput(f"{name} must be a fraction in [0, 1], got {v}")
    if out_of_stock + misplace > 1.0:
        raise InvalidInput(f"--out-of-stock + --misplace must be at most 1, got {out_of_stock + misplace}")
    if images < 1 or classes < 1:
        raise InvalidInput("images and classes must be at least 1")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputRefused(f"{out} exists and is not an empty folder: synth --planogram writes into a new folder")
    W, H = _size(size)
    names = [class_name(k) for k in range(classes)]
    plan = load_planogram(planogram, names, what=f"the synthetic classes (--classes {classes})")
    files = _check_names(plan, images)
    styles = dict(zip(names, brand_styles(classes)))
    truth, totals = [], {"planned": 0, "removed": 0, "misplaced": 0, "boxes": 0, "underfilled": 0}
    for i, file in enumerate(files):
        bay = plan.bays[i % len(plan.bays)]
        seq = bay.sequences()
        rng = np.random.default_rng([seed, i, W, H, classes])
        changes = _changes(rng, seq, out_of_stock, misplace, sorted({s for row in seq for s in row}))
        img, rows, underfilled = render_planogram_shelf(rng, styles, seq, W, H, changes)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        if not ok:
            raise OSError(f"cannot encode {file}")
        atomic_write_bytes(out / "images" / file, buf.tobytes())
        drawn = [f for row in rows for f in row["facings"] if f["status"] != "removed"]
        rec = Record(image=f"images/{file}", width=W, height=H, boxes=[f["box"] for f in drawn],
                     labels=[names.index(f["found"]) + 1 for f in drawn], source=f"synth-planogram(seed={seed}, index={i})")
        write_voc(rec, names, out / "annotations" / (Path(file).stem + ".xml"))
        entry = _truth_entry(rec.image, bay.name, W, H, rows, underfilled)
        truth.append(entry)
        for key in ("planned", "removed", "misplaced"):
            totals[key] += entry[key]
        totals["boxes"] += len(drawn)
        totals["underfilled"] += bool(underfilled)
    atomic_write_text(out / "classes.txt", "".join(n + "\n" for n in names))
    doc = {"format": TRUTH_FORMAT, "format_version": 1, "planogram": str(planogram), "seed": seed, "size": [W, H],
           "classes": names, "out_of_stock": out_of_stock, "misplace": misplace, "images": truth}
    atomic_write_text(out / TRUTH_NAME, json.dumps(doc, indent=1) + "\n")
    return {"out_dir": str(out), "images": images, "classes": classes, "size": [W, H], "seed": seed, **totals,
            "truth": str(out / TRUTH_NAME)}


def _truth_entry(file: str, bay: str, W: int, H: int, rows: list[dict], underfilled: list[int]) -> dict:
    planned = sum(len(r["facings"]) for r in rows)
    changes = [{"row": r["row"], **f} for r in rows for f in r["facings"] if f["status"] != "present"]
    removed = sum(c["status"] == "removed" for c in changes)
    misplaced = len(changes) - removed
    return {"file": file, "bay": bay, "width": W, "height": H, "planned": planned, "removed": removed,
            "misplaced": misplaced, "compliance": round((planned - removed - misplaced) / max(planned, 1), 4),
            "underfilled_rows": underfilled, "changes": changes, "rows": rows}


def run_synth_planogram(out_dir: str, planogram: str, images: int, classes: int, seed: int,
                        size: tuple[int, int], out_of_stock: float, misplace: float) -> int:
    """``retail-data synth --planogram``: generate and print the summary; returns the exit code.

    A bad plan raises :class:`~data_tools.planogram.PlanogramError` (the CLI prints one ``error: FILE:LINE: ...``
    line per problem).
    """
    s = generate_planogram(out_dir, planogram, images, classes, seed, size, out_of_stock, misplace)
    print(f"wrote {s['images']} planogram shelves ({planogram}, {size[0]}x{size[1]}) to {out_dir}")
    print(f"facings: {s['planned']} planned, {s['removed']} removed (out of stock), {s['misplaced']} misplaced; "
          f"boxes: {s['boxes']}")
    if s["underfilled"]:
        print(f"warning: {s['underfilled']} photos have a row with too few facings to fill the width "
              f"(centred, leaving space at the ends)")
    print(f"truth: {s['truth']}")
    print(f"next: retail-data convert {out_dir} -o {Path(out_dir) / 'dataset.pkl'}")
    return 0


__all__ = ["TRUTH_FORMAT", "TRUTH_NAME", "generate_planogram", "render_planogram_shelf", "run_synth_planogram"]
