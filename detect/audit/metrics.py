"""Audit accuracy against the ground truth of synthetic planogram shelves (``truth.json``).

Photos are paired with truth entries by file name. Per photo:

- gap recall: share of removed facings (truth) that a reported gap covers: the gap spans at least
  ``cover`` of the facing's width and of its height;
- gap precision: share of reported gaps that are mostly empty slots: the removed facings they cover
  (as above) fill at least ``cover`` of the gap's width;
- misplaced recall / precision: truth misplaced facings and reported ``misplaced`` facings paired by box
  IoU >= ``iou``;
- compliance error: ``|reported - true compliance|`` in percentage points (true compliance = share of
  planned facings neither removed nor misplaced).

Counts are pooled over all photos (recall = all hits / all truth items).
"""

from __future__ import annotations

from pathlib import Path

from data_tools.synth_planogram import TRUTH_FORMAT
from detect.audit.truth import load_truth
from detect.models.box_ops import iou_matrix


def _overlap(a: list[float], b: list[float], axis: int) -> float:
    return max(0.0, min(a[axis + 2], b[axis + 2]) - max(a[axis], b[axis]))


def _covers(gap: list[float], facing: list[float], cover: float) -> bool:
    fw, fh = facing[2] - facing[0], facing[3] - facing[1]
    return _overlap(gap, facing, 0) >= cover * fw and _overlap(gap, facing, 1) >= cover * fh


def _ratio(hits: int, n: int) -> float | None:
    return round(hits / n, 4) if n else None


def score_photo(photo: dict, truth: dict, cover: float = 0.5, iou: float = 0.5) -> dict:
    """Hits and counts of one audited photo (:func:`detect.audit.photo.audit_photo` + ``path``) vs its truth entry."""
    removed = [c["box"] for c in truth["changes"] if c["status"] == "removed"]
    misplaced = [c["box"] for c in truth["changes"] if c["status"] == "misplaced"]
    gaps = [g["box"] for row in photo["rows"] for g in row["gaps"]]
    found = [f["box"] for row in photo["rows"] for f in row["facings"] if f["status"] == "misplaced"]
    gap_hits = sum(any(_covers(g, f, cover) for g in gaps) for f in removed)
    gap_ok = sum(
        sum(_overlap(g, f, 0) for f in removed if _covers(g, f, cover)) >= cover * (g[2] - g[0]) for g in gaps
    )
    paired = iou_matrix(misplaced, found) >= iou  # [truth, reported]
    mis_hits, mis_ok = int(paired.any(1).sum()), int(paired.any(0).sum())
    comp = photo.get("compliance")
    return {
        "path": photo["path"], "removed": len(removed), "removed_found": gap_hits, "gaps": len(gaps),
        "gaps_correct": gap_ok, "misplaced": len(misplaced), "misplaced_found": mis_hits,
        "reported_misplaced": len(found), "reported_misplaced_correct": mis_ok,
        "compliance": comp, "true_compliance": truth["compliance"],
        "compliance_error": None if comp is None else round(abs(comp - truth["compliance"]) * 100, 2),
    }


def score_audit(photos: list[dict], truth: dict, cover: float = 0.5, iou: float = 0.5) -> dict:
    """Pooled accuracy of audited photos against a truth document (see the module doc).

    Returns:
        ``gap_recall``, ``gap_precision``, ``misplaced_recall``, ``misplaced_precision`` (None when there is
        nothing to count), ``compliance_error_mean`` / ``_max`` (points), the pooled counts, ``photos``
        (paired), ``not_in_truth`` (audited photos without a truth entry), ``not_audited`` (truth entries
        without a photo) and ``per_photo``.
    """
    index: dict[str, dict] = {}
    for entry in truth["images"]:
        index.setdefault(Path(entry["file"]).name, entry)
    per_photo, not_in_truth, seen = [], [], set()
    for ph in photos:
        name = Path(ph["path"]).name
        if name not in index:
            not_in_truth.append(ph["path"])
            continue
        seen.add(name)
        per_photo.append(score_photo(ph, index[name], cover, iou))

    def total(key: str) -> int:
        return sum(p[key] for p in per_photo)

    errors = [p["compliance_error"] for p in per_photo if p["compliance_error"] is not None]
    return {
        "photos": len(per_photo),
        "gap_recall": _ratio(total("removed_found"), total("removed")),
        "gap_precision": _ratio(total("gaps_correct"), total("gaps")),
        "misplaced_recall": _ratio(total("misplaced_found"), total("misplaced")),
        "misplaced_precision": _ratio(total("reported_misplaced_correct"), total("reported_misplaced")),
        "compliance_error_mean": round(sum(errors) / len(errors), 2) if errors else None,
        "compliance_error_max": max(errors) if errors else None,
        "removed": total("removed"), "gaps": total("gaps"), "misplaced": total("misplaced"),
        "reported_misplaced": total("reported_misplaced"),
        "not_in_truth": not_in_truth,
        "not_audited": sorted(n for n in index if n not in seen),
        "per_photo": per_photo,
    }


__all__ = ["TRUTH_FORMAT", "load_truth", "score_audit", "score_photo"]
