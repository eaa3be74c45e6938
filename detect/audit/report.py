"""Audit outputs: ``audit.json`` (everything), ``audit.csv`` (one row per photo x row x SKU), the run summary.

Layout of ``--out DIR``::

    DIR/audit.json        per photo: bay, counts, compliance, rows (facings with status, gaps), share of shelf;
                          the run summary, options and (with --truth) the accuracy; written last
    DIR/audit.csv         one row per photo x shelf row x SKU
    DIR/report.html       static page, photos worst first (:mod:`detect.audit.html`)
    DIR/images/<name>     the photos drawn with the audit overlays (:mod:`detect.audit.draw`)
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from data_tools.atomic import atomic_write_text
from detect.tables import write_dicts_csv

JSON_NAME = "audit.json"
CSV_NAME = "audit.csv"
FORMAT = "retail-detect-audit"
FORMAT_VERSION = 1
CSV_COLUMNS = ("image", "bay", "row", "sku", "planned", "present", "misplaced", "found_misplaced", "missing",
               "out_of_stock", "extra", "detected", "width_px", "row_compliance")


def csv_rows(photos: list[dict]) -> list[dict]:
    """One dict per photo x row x SKU (every SKU planned or detected in the row).

    ``misplaced``: slots planned for this SKU holding another product; ``found_misplaced``: this SKU
    standing in a slot planned for another; ``missing``: planned facings not found (``out_of_stock``: those
    in a gap); ``extra``: detections in no planned slot; ``width_px``: summed box width of its detections.
    """
    out = []
    for ph in photos:
        for row in ph["rows"]:
            stats: dict[str, dict] = defaultdict(lambda: dict.fromkeys(CSV_COLUMNS[4:-1], 0))
            for sku in row["planned"]:
                stats[sku]["planned"] += 1
            for f in row["facings"]:
                st, planned, found = f["status"], f["planned"], f["found"]
                if st == "present":
                    stats[planned]["present"] += 1
                elif st == "misplaced":
                    stats[planned]["misplaced"] += 1
                    stats[found]["found_misplaced"] += 1
                elif st in ("missing", "out_of_stock"):
                    stats[planned]["missing"] += 1
                    stats[planned]["out_of_stock"] += st == "out_of_stock"
                elif st == "extra":
                    stats[found]["extra"] += 1
                if found is not None:
                    stats[found]["detected"] += 1
                    stats[found]["width_px"] += f["box"][2] - f["box"][0]
            for sku in sorted(stats):
                s = stats[sku]
                s["width_px"] = round(s["width_px"], 1)
                out.append({"image": ph["path"], "bay": ph["bay"] or "", "row": row["row"], "sku": sku, **s,
                            "row_compliance": "" if row["compliance"] is None else row["compliance"]})
    return out


def write_csv(out_dir: Path, photos: list[dict]) -> Path:
    """``DIR/audit.csv`` atomically (a header only when there is nothing to list)."""
    rows = csv_rows(photos)
    path = Path(out_dir) / CSV_NAME
    if rows:
        write_dicts_csv(rows, path)
    else:
        atomic_write_text(path, ",".join(CSV_COLUMNS) + "\n")
    return path


def summarize(photos: list[dict]) -> dict:
    """Run totals: facing counts, pooled compliance (present / planned), worst photo, pooled share of shelf."""
    keys = ("planned", "present", "misplaced", "missing", "out_of_stock", "extra")
    planned = [p for p in photos if p["planned"] is not None]
    tot = {k: sum(p[k] for p in planned) for k in keys}
    worst = min(planned, key=lambda p: (p["compliance"] if p["compliance"] is not None else 2.0), default=None)
    share: dict[str, dict] = {}
    for level in ("classes", "brands"):
        count, width = defaultdict(int), defaultdict(float)
        for p in photos:
            for name, s in p["share"][level].items():
                count[name] += s["facings"]
                width[name] += s["width"]
        n, w = max(sum(count.values()), 1), max(sum(width.values()), 1e-9)
        share[level] = {k: {"facings": count[k], "width": round(width[k], 1), "facings_share": round(count[k] / n, 4),
                            "width_share": round(width[k] / w, 4)} for k in sorted(count)}
    return {
        "photos": len(photos),
        "photos_with_plan": len(planned),
        **(tot if planned else dict.fromkeys(keys)),
        "compliance": round(tot["present"] / tot["planned"], 4) if planned and tot["planned"] else None,
        "worst": None if worst is None else {"path": worst["path"], "compliance": worst["compliance"]},
        "detections": sum(p["detections"] for p in photos),
        "gaps": sum(p["gaps"] for p in photos),
        "share": share,
    }


def worst_first(photos: list[dict]) -> list[dict]:
    """Lowest compliance first; without a plan, most gaps first; then by path."""
    return sorted(photos, key=lambda p: (p["compliance"] if p["compliance"] is not None else 2.0, -p["gaps"], p["path"]))


def write_json(out_dir: Path, photos: list[dict], errors: list[dict], meta: dict) -> Path:
    """``DIR/audit.json`` atomically: ``{format, format_version, **meta, photos, errors}``."""
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta, "photos": photos, "errors": errors}
    return atomic_write_text(Path(out_dir) / JSON_NAME, json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


def _rel(path: str) -> str:
    """``path`` relative to the working folder when it lies inside it."""
    p = Path(path).resolve()
    return str(p.relative_to(Path.cwd().resolve())) if p.is_relative_to(Path.cwd().resolve()) else str(p)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def format_summary(result: dict) -> list[str]:
    """The lines ``retail-detect audit`` prints."""
    s = result["summary"]
    lines = [f"audited {s['photos']} photos ({result['skipped']} skipped, {result['tiled']} tiled)"
             + (f" against {result['planogram']}" if result["planogram"] else " without a planogram")]
    if s["photos_with_plan"]:
        worst = s["worst"]
        lines.append(f"compliance {_pct(s['compliance'])} of {s['planned']} planned facings; worst photo "
                     f"{Path(worst['path']).name} {_pct(worst['compliance'])}")
        lines.append(f"facings: present {s['present']}, missing {s['missing']} ({s['out_of_stock']} in gaps), "
                     f"misplaced {s['misplaced']}, extra {s['extra']}; gaps (out-of-stock candidates): {s['gaps']}")
    else:
        lines.append(f"{s['detections']} facings in shelf rows; gaps (out-of-stock candidates): {s['gaps']}")
    if result.get("without_plan"):
        lines.append(f"warning: {len(result['without_plan'])} photos match no bay of the plan (audited without a plan), "
                     f"e.g. {result['without_plan'][0]}")
    level = "brands" if len(s["share"]["brands"]) > 1 else "classes"  # one brand: its classes say more
    shares = sorted(s["share"][level].items(), key=lambda kv: -kv[1]["width"])
    if shares:
        lines.append(f"share of shelf by {level[:-2] if level == 'classes' else 'brand'} (facings / width): " + ", ".join(
            f"{k} {_pct(v['facings_share'])} / {_pct(v['width_share'])}" for k, v in shares))
    acc = result.get("accuracy")
    if acc:
        def f(x):
            return "n/a" if x is None else f"{x:.3f}"
        lines.append(f"vs {result['truth']} ({acc['photos']} photos): gap recall {f(acc['gap_recall'])} precision "
                     f"{f(acc['gap_precision'])} ({acc['removed']} removed facings, {acc['gaps']} gaps); misplaced recall "
                     f"{f(acc['misplaced_recall'])} precision {f(acc['misplaced_precision'])}; compliance error "
                     f"mean {acc['compliance_error_mean']} max {acc['compliance_error_max']} points")
    out = _rel(result["out_dir"])
    lines.append(f"wrote {out}/{JSON_NAME}, {CSV_NAME}, {result['html_name']}"
                 + (f" and {result['drawn']} drawn photos in {out}/images/" if result["drawn"] else ""))
    return lines


__all__ = ["CSV_NAME", "JSON_NAME", "csv_rows", "format_summary", "summarize", "worst_first", "write_csv", "write_json"]
