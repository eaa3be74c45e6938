"""``DIR/report.html``: a static page of the audit, photos worst first (no scripts, no external files)."""

from __future__ import annotations

from html import escape
from pathlib import Path

from data_tools.atomic import atomic_write_text
from detect.audit.report import worst_first

HTML_NAME = "report.html"
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:1.5em;margin-bottom:4px} h2{font-size:1.2em;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0} td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f4f4f4} td.l,th.l{text-align:left} .muted{color:#777}
.card{border:1px solid #ddd;border-radius:6px;padding:10px 14px;margin:14px 0}
.card img{max-width:100%;max-height:520px;display:block;margin:8px 0}
.bad{color:#c0392b;font-weight:600} .ok{color:#2e8b57;font-weight:600} .warn{color:#d35400;font-weight:600}
.key span{display:inline-block;padding:1px 6px;margin-right:6px;border-radius:3px;color:#fff}
"""


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _cls(compliance: float | None) -> str:
    if compliance is None:
        return "muted"
    return "ok" if compliance >= 0.95 else "warn" if compliance >= 0.8 else "bad"


def _table(header: list[str], rows: list[list], left: int = 1) -> str:
    th = "".join(f'<th class="l">{escape(h)}</th>' if i < left else f"<th>{escape(h)}</th>" for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f'<td class="l">{escape(str(c))}</td>' if i < left else f"<td>{escape(str(c))}</td>"
                         for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{th}</tr>{body}</table>"


def _share(share: dict) -> str:
    out = []
    for level, title in (("brands", "brand"), ("classes", "class")):
        rows = [[k, v["facings"], _pct(v["facings_share"]), f"{v['width']:.0f}", _pct(v["width_share"])]
                for k, v in sorted(share[level].items(), key=lambda kv: -kv[1]["width"])]
        if rows:
            out.append(_table([title, "facings", "share", "width px", "share"], rows))
    return "".join(out)


def _photo_card(p: dict) -> str:
    name = escape(Path(p["path"]).name)
    head = f'<b>{name}</b> <span class="muted">{escape(p["path"])}</span>'
    if p["compliance"] is not None:
        head += (f' &mdash; bay {escape(str(p["bay"]))}: compliance <span class="{_cls(p["compliance"])}">'
                 f'{_pct(p["compliance"])}</span> ({p["present"]}/{p["planned"]} facings in place; missing '
                 f'{p["missing"]}, misplaced {p["misplaced"]}, extra {p["extra"]})')
    else:
        head += f' &mdash; no plan: {p["detections"]} facings, {p["gaps"]} gaps'
    img = f'<a href="{escape(p["drawn"])}"><img src="{escape(p["drawn"])}" alt="{name}"></a>' if p.get("drawn") else ""
    rows = []
    for r in p["rows"]:
        issues = [f"{f['found']} in the slot of {f['planned']}" for f in r["facings"] if f["status"] == "misplaced"]
        issues += [f"missing {f['planned']}" for f in r["facings"] if f["status"] == "missing"]
        issues += [f"extra {f['found']}" for f in r["facings"] if f["status"] == "extra"]
        gaps = [f"{g['position']} x {g['box'][0]:.0f}-{g['box'][2]:.0f}" + (f": {', '.join(g['expected'])}" if g["expected"] else "")
                for g in r["gaps"]]
        rows.append([r["row"], len(r["planned"]) or "", len(r["detected"]), _pct(r["compliance"]) if r["planned"] else "",
                     "; ".join(gaps), "; ".join(issues)])
    table = _table(["row", "planned", "found", "compliance", "gaps (out-of-stock candidates)", "misplaced / missing / extra"],
                   rows) if rows else '<p class="muted">no products found</p>'
    return f'<div class="card">{head}{img}{table}</div>'


def render_html(result: dict, photos: list[dict], errors: list[dict]) -> str:
    """The whole page as text (see :func:`write_html`)."""
    s = result["summary"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Shelf audit</title><style>{_CSS}</style></head><body>",
             "<h1>Shelf audit</h1>",
             f'<p class="muted">weights {escape(str(result["weights"]))}; planogram {escape(str(result["planogram"] or "none"))}; '
             f'{s["photos"]} photos, {len(errors)} skipped</p>',
             '<p class="key"><span style="background:#3cb43c">in place</span><span style="background:#ff8c00">misplaced</span>'
             '<span style="background:#c83cc8">extra</span><span style="background:#e62828">gap / out of stock</span></p>']
    rows = [["photos", s["photos"]], ["photos with a plan", s["photos_with_plan"]]]
    if s["photos_with_plan"]:
        rows += [["compliance (in place / planned)", _pct(s["compliance"])], ["planned facings", s["planned"]],
                 ["in place", s["present"]], ["missing (in gaps)", f"{s['missing']} ({s['out_of_stock']})"],
                 ["misplaced", s["misplaced"]], ["extra", s["extra"]]]
    rows += [["detected facings", s["detections"]], ["gaps (out-of-stock candidates)", s["gaps"]]]
    parts += ["<h2>Summary</h2>", _table(["", ""], rows)]
    acc = result.get("accuracy")
    if acc:
        parts += [f"<h2>Accuracy against {escape(str(result['truth']))}</h2>", _table(["metric", "value"], [
            ["gap recall", acc["gap_recall"]], ["gap precision", acc["gap_precision"]],
            ["misplaced recall", acc["misplaced_recall"]], ["misplaced precision", acc["misplaced_precision"]],
            ["compliance error, mean (points)", acc["compliance_error_mean"]],
            ["compliance error, max (points)", acc["compliance_error_max"]]])]
    parts += ["<h2>Share of shelf</h2>", _share(s["share"])]
    parts.append("<h2>Photos, worst first</h2>")
    parts += [_photo_card(p) for p in worst_first(photos)]
    if errors:
        parts.append("<h2>Skipped</h2><ul>" + "".join(
            f"<li>{escape(str(e.get('file')))}: {escape(str(e.get('reason')))}</li>" for e in errors) + "</ul>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_html(out_dir: Path, result: dict, photos: list[dict], errors: list[dict]) -> Path:
    """``DIR/report.html`` atomically; image links are relative, so the folder can be moved or shared."""
    return atomic_write_text(Path(out_dir) / HTML_NAME, render_html(result, photos, errors))


__all__ = ["HTML_NAME", "render_html", "write_html"]
