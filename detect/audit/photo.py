"""Audit one photo: its detections (+ the bay's plan) -> shelf rows, facing statuses, gaps, share of shelf.

0. Facings: a product is one SKU, so overlapping detections (class-aware NMS keeps one box per class)
   are reduced to the best-scoring one (:func:`distinct_facings`); empty boxes are dropped.
1. Rows: :func:`detect.verbs.shelf_rows.assign_rows` (the same grouping ``predict`` reports), each
   row's products sorted left to right by centre.
2. Gaps: :func:`detect.audit.gaps.find_gaps` on every row (the shelf ends are the image borders).
3. With a plan: planned rows are matched to detected rows top to bottom (order-preserving, the cost of
   a pair is its alignment cost, so a shelf left wholly empty, or a row the grouping missed, does not
   shift the others), then each pair is aligned with :func:`detect.audit.align.align_row`. A planned
   row with no detected row is one row-wide gap (all its facings out of stock); a detected row that
   matches no planned row holds only ``extra`` products.
4. Share of shelf per class and per brand: facing count and linear width (sum of box widths).

The result is plain JSON-ready data (see :func:`audit_photo`); compliance is ``present / planned``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from torch import Tensor

from data_tools.planogram import Bay, brand_prefix
from detect.audit.align import AlignCosts, Op, align_row, match_sequences
from detect.audit.gaps import DEFAULT_MIN_GAP, Gap, find_gaps
from detect.models.box_ops import intersection_matrix, iou_matrix
from detect.verbs.shelf_rows import assign_rows

STATUSES = ("present", "misplaced", "out_of_stock", "missing", "extra", "detected")


@dataclass
class AuditOptions:
    min_gap: float = DEFAULT_MIN_GAP  # a gap is wider than this x the row's median product width
    row_gap: float = 0.5  # row split: gap between box centres > this x the median box height
    brand_sep: str = "_"  # brand = class name up to this separator (unless the plan maps it)
    same_iou: float = 0.5  # two detections overlapping this much (IoU) are one product ...
    same_inside: float = 0.6  # ... as is one lying this much (share of its area) inside a better one
    costs: AlignCosts = field(default_factory=AlignCosts)


@dataclass
class _Row:
    """One detected row: detection indices left to right, its gaps and alignment tokens."""

    dets: list[int]
    gaps: list[Gap]
    tokens: list[str | float]  # class name per product; per gap, the product width that fits (median widths)
    refs: list[tuple[str, int]]  # per token: ("det", detection index) or ("gap", index in gaps)
    spacing: float  # normal space between neighbours, in median widths
    widths: dict[str, float]  # median width per class in this row, in median widths

    def expected(self, plan: list[str], photo_widths: dict[str, float]) -> list[float]:
        """Expected width of each planned facing: its class in this row, else in the photo, else 1."""
        return [self.widths.get(s, photo_widths.get(s, 1.0)) for s in plan]


def _np(x, dtype, shape) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype).reshape(shape)


def _r(v) -> list[float]:
    return [round(float(c), 2) for c in v]


def _detected_rows(boxes: np.ndarray, names: list[str], width: float, opts: AuditOptions) -> list[_Row]:
    if len(boxes) == 0:
        return []
    row_of = assign_rows(boxes, opts.row_gap)
    cx = (boxes[:, 0] + boxes[:, 2]) * 0.5
    out = []
    for r in range(int(row_of.max()) + 1):
        idx = np.nonzero(row_of == r)[0]
        idx = idx[np.argsort(cx[idx], kind="stable")].tolist()
        b = boxes[idx]
        gaps = find_gaps(b, (0.0, float(width)), opts.min_gap)
        w = np.clip(b[:, 2] - b[:, 0], 0.0, None)
        median = max(float(np.median(w)), 1e-6)
        space = b[1:, 0] - np.maximum.accumulate(b[:, 2])[:-1]  # [n-1] free space between neighbours
        normal = space[(space > 0) & (space <= opts.min_gap * median)]
        spacing = float(np.median(normal)) if len(normal) else 0.0
        tokens: list[str | float] = []
        refs: list[tuple[str, int]] = []
        by_after = defaultdict(list)
        for g, gap in enumerate(gaps):
            by_after[gap.after].append(g)
        for pos in range(len(idx) + 1):
            for g in by_after[pos]:
                tokens.append(max(0.0, gaps[g].width - spacing) / median)
                refs.append(("gap", g))
            if pos < len(idx):
                tokens.append(names[idx[pos]])
                refs.append(("det", idx[pos]))
        out.append(_Row(idx, gaps, tokens, refs, spacing / median, _class_widths([names[k] for k in idx], w / median)))
    return out


def _class_widths(names: list[str], widths: np.ndarray) -> dict[str, float]:
    """Median width per class name."""
    by = defaultdict(list)
    for n, w in zip(names, widths.tolist()):
        by[n].append(w)
    return {n: float(np.median(v)) for n, v in by.items()}


def distinct_facings(boxes: np.ndarray, scores: np.ndarray, same_iou: float = 0.5, same_inside: float = 0.6) -> np.ndarray:
    """Indices of the detections that are distinct products, best score first kept (class-agnostic).

    Args:
        boxes: float ``[N, 4]`` xyxy; scores: ``[N]``.
        same_iou: a box with IoU above this with a kept box is the same product.
        same_inside: so is a box with more than this share of its area inside a kept box.

    Returns:
        int64 ``[K]`` ascending indices; boxes of zero width or height are never kept.
    """
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    area = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)  # [N]
    order = [int(i) for i in np.argsort(-np.asarray(scores, np.float64), kind="stable") if area[i] > 0]
    iou = iou_matrix(b, b)  # [N, N]
    inside = intersection_matrix(b, b) / np.where(area > 0, area, 1.0)  # [N, N]: share of box j inside box i
    kept: list[int] = []
    for i in order:
        if kept and ((iou[kept, i] > same_iou).any() or (inside[kept, i] > same_inside).any()):
            continue
        kept.append(i)
    return np.array(sorted(kept), dtype=np.int64)


def _gap_dict(gap: Gap, n_products: int, expected: list[str] | None) -> dict:
    pos = "left end" if gap.after == 0 else "right end" if gap.after == n_products else "between"
    return {"box": _r(gap.box), "ratio": gap.ratio, "facings": gap.facings, "position": pos,
            "expected": expected if expected is not None else []}


def _det_facing(status: str, k: int, names, boxes, scores, planned: str | None = None, slot: int | None = None) -> dict:
    return {"status": status, "planned": planned, "found": names[k], "box": _r(boxes[k]),
            "score": round(float(scores[k]), 4), "slot": slot, "gap": None}


def _aligned_row(row: _Row, plan: list[str], ops: list[Op], names, boxes, scores) -> tuple[list[dict], list[dict]]:
    """Facings (in left-to-right order) and gaps of a planned row aligned to a detected row."""
    expected: dict[int, list[str]] = defaultdict(list)
    facings = []
    for op in ops:
        if op.kind in ("present", "misplaced"):
            facings.append(_det_facing(op.kind, row.refs[op.token][1], names, boxes, scores, plan[op.plan], op.plan))
        elif op.kind == "extra":
            facings.append(_det_facing("extra", row.refs[op.token][1], names, boxes, scores))
        elif op.kind == "out_of_stock":
            g = row.refs[op.token][1]
            expected[g].append(plan[op.plan])
            facings.append({"status": "out_of_stock", "planned": plan[op.plan], "found": None,
                            "box": _r(row.gaps[g].box), "score": None, "slot": op.plan, "gap": g})
        else:
            facings.append({"status": "missing", "planned": plan[op.plan], "found": None, "box": None,
                            "score": None, "slot": op.plan, "gap": None})
    gaps = [_gap_dict(gap, len(row.dets), expected.get(g, [])) for g, gap in enumerate(row.gaps)]
    return facings, gaps


def _empty_row_band(k: int, pairs: list, drows: list[_Row], boxes: np.ndarray, height: float) -> tuple[float, float]:
    """Vertical band of a planned row with no detected row: between the detected rows around it."""
    above = [drows[d] for _, d in pairs[:k] if d is not None]
    below = [drows[d] for _, d in pairs[k + 1:] if d is not None]
    y1 = float(boxes[above[-1].dets, 3].max()) if above else 0.0
    y2 = float(boxes[below[0].dets, 1].min()) if below else float(height)
    return y1, max(y1, y2)


def share_of_shelf(names: list[str], widths: np.ndarray, brand: Callable[[str], str]) -> dict:
    """Facing count and linear width per class and per brand, with their shares of the photo's total.

    Args:
        names: class name per detection.
        widths: float ``[N]`` box widths in pixels.
        brand: class name -> brand.
    """
    def table(keys: list[str]) -> dict:
        count: dict[str, int] = defaultdict(int)
        width: dict[str, float] = defaultdict(float)
        for key, w in zip(keys, widths.tolist()):
            count[key] += 1
            width[key] += w
        n, total = max(len(keys), 1), max(float(widths.sum()), 1e-9)
        return {k: {"facings": count[k], "width": round(width[k], 1), "facings_share": round(count[k] / n, 4),
                    "width_share": round(width[k] / total, 4)} for k in sorted(count)}

    return {"classes": table(names), "brands": table([brand(n) for n in names])}


def audit_photo(
    boxes: Tensor | np.ndarray,
    labels: Tensor | np.ndarray,
    scores: Tensor | np.ndarray | None,
    class_names: list[str],
    width: int,
    height: int,
    bay: Bay | None = None,
    brands: dict[str, str] | None = None,
    opts: AuditOptions | None = None,
) -> dict:
    """Audit one photo's detections against its bay's plan (or without a plan).

    Args:
        boxes: float ``[N, 4]`` xyxy in the photo's pixels; labels: int ``[N]`` in ``1..K``; scores: ``[N]``
            (None = all 1, e.g. ground-truth boxes).
        class_names: ``class_names[k - 1]`` names label ``k``.
        width, height: the photo's size (the shelf ends are ``x = 0`` and ``x = width``).
        bay: the plan; None = the plan-free audit (rows, gaps, share of shelf).
        brands: class name -> brand (the plan's ``brands``); others use the prefix before ``opts.brand_sep``.

    Returns:
        ``{"bay", "planned", "present", "misplaced", "missing", "out_of_stock", "extra", "gaps",
        "compliance", "overlapping" (detections dropped as a second box on a product), "rows": [{"row", "planned_row", "detected_row", "planned", "detected", "compliance",
        "facings": [{"status", "planned", "found", "box", "score", "slot", "gap"}], "gaps": [{"box", "ratio",
        "facings", "position", "expected"}]}], "share": {"classes", "brands"}}``. ``missing`` counts every
        planned facing not found (``out_of_stock``: those of them that fall in a gap).
    """
    opts = opts or AuditOptions()
    b = _np(boxes, np.float64, (-1, 4))
    lab = _np(labels, np.int64, (-1,))
    sc = np.ones(len(b)) if scores is None else _np(scores, np.float64, (-1,))
    keep = distinct_facings(b, sc, opts.same_iou, opts.same_inside)
    suppressed = len(b) - len(keep)
    b, lab, sc = b[keep], lab[keep], sc[keep]
    names = [class_names[k - 1] if 1 <= k <= len(class_names) else f"class_{k}" for k in lab.tolist()]
    drows = _detected_rows(b, names, width, opts)

    rows: list[dict] = []
    if bay is None:
        for d, row in enumerate(drows):
            facings = [_det_facing("detected", k, names, b, sc) for k in row.dets]
            gaps = [_gap_dict(g, len(row.dets), None) for g in row.gaps]
            rows.append(_row_dict(d, None, d, [], facings, gaps))
    else:
        plans = bay.sequences()
        cache: dict[tuple[int, int], tuple[float, list[Op]]] = {}

        photo_w = _class_widths(names, np.clip(b[:, 2] - b[:, 0], 0.0, None))

        def pair(p: int, d: int) -> float:
            if (p, d) not in cache:
                row = drows[d]
                median = max(float(np.median(b[row.dets, 2] - b[row.dets, 0])), 1e-6)
                photo_rel = {n: v / median for n, v in photo_w.items()}
                cache[p, d] = align_row(plans[p], row.tokens, opts.costs, row.expected(plans[p], photo_rel), row.spacing)
            return cache[p, d][0]

        pairs = match_sequences(
            len(plans), len(drows), pair,
            lambda p: opts.costs.in_gap * len(plans[p]),
            lambda d: opts.costs.extra * len(drows[d].dets),
        )
        for k, (p, d) in enumerate(pairs):
            if p is not None and d is not None:
                pair(p, d)
                facings, gaps = _aligned_row(drows[d], plans[p], cache[p, d][1], names, b, sc)
            elif p is not None:  # a planned shelf with nothing detected on it: one row-wide gap
                y1, y2 = _empty_row_band(k, pairs, drows, b, height)
                box = [0.0, round(y1, 2), float(width), round(y2, 2)]
                gaps = [{"box": box, "ratio": None, "facings": len(plans[p]), "position": "whole row",
                         "expected": list(plans[p])}]
                facings = [{"status": "out_of_stock", "planned": s, "found": None, "box": box, "score": None,
                            "slot": i, "gap": 0} for i, s in enumerate(plans[p])]
            else:  # a detected row the plan does not have: its products are extra, its gaps not audited
                facings = [_det_facing("extra", i, names, b, sc) for i in drows[d].dets]
                gaps = []
            rows.append(_row_dict(len(rows), p, d, plans[p] if p is not None else [], facings, gaps))

    out = {"bay": bay.name if bay is not None else None, **_totals(rows, bay is not None), "overlapping": suppressed}
    out["rows"] = rows
    def brand(name: str) -> str:
        return brands[name] if brands and name in brands else brand_prefix(name, opts.brand_sep)

    out["share"] = share_of_shelf(names, np.clip(b[:, 2] - b[:, 0], 0.0, None), brand)
    return out


def _row_dict(r: int, p: int | None, d: int | None, plan: list[str], facings: list[dict], gaps: list[dict]) -> dict:
    present = sum(f["status"] == "present" for f in facings)
    return {"row": r, "planned_row": p, "detected_row": d, "planned": list(plan),
            "detected": [f["found"] for f in facings if f["found"] is not None],
            "compliance": round(present / len(plan), 4) if plan else None, "facings": facings, "gaps": gaps}


def _totals(rows: list[dict], planned: bool) -> dict:
    count = defaultdict(int)
    for row in rows:
        for f in row["facings"]:
            count[f["status"]] += 1
    n_plan = sum(len(r["planned"]) for r in rows)
    return {
        "planned": n_plan if planned else None,
        "present": count["present"] if planned else None,
        "misplaced": count["misplaced"] if planned else None,
        "missing": count["missing"] + count["out_of_stock"] if planned else None,
        "out_of_stock": count["out_of_stock"] if planned else None,
        "extra": count["extra"] if planned else None,
        "detections": sum(len(r["detected"]) for r in rows),
        "gaps": sum(len(r["gaps"]) for r in rows),
        "compliance": round(count["present"] / n_plan, 4) if planned and n_plan else None,
    }


__all__ = ["AuditOptions", "STATUSES", "audit_photo", "distinct_facings", "share_of_shelf"]
