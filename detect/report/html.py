"""Static HTML pages that open from the file system: no server, no CDN, no framework.

:func:`page` wraps sections in one document with inline CSS and two small inline scripts: click a header of a
``sortable`` table to sort it, and a check after loading that counts images that failed to load (shown as a
banner and kept in ``body[data-broken-images]``, which the browser test reads). Every text that comes from
data (class names, file names) goes through :func:`esc`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1f3b57;color:#fff;padding:14px 24px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;opacity:.85}nav{padding:6px 24px;background:#e8eef4;position:sticky;top:0;z-index:2}
nav a{margin-right:14px;color:#1f3b57;text-decoration:none}main{padding:8px 24px 40px}
section{margin:22px 0}h2{font-size:18px;border-bottom:2px solid #1f3b57;padding-bottom:3px}
h3{font-size:15px;margin:14px 0 6px}table{border-collapse:collapse;background:#fff;margin:6px 0}
td,th{border:1px solid #d5dbe1;padding:3px 8px;text-align:left;white-space:nowrap}
td[data-v]{text-align:right}th{background:#eef2f6}
table.sortable th{cursor:pointer;user-select:none}table.sortable th:after{content:" \\2195";color:#9aa}
.facts td{text-align:left}.big td{font-size:16px}.num-bad{color:#b3261e}.note{color:#555;max-width:900px}
img.plot{max-width:100%;border:1px solid #ddd;background:#fff;margin:4px 8px 4px 0}
.grid{display:flex;flex-wrap:wrap;gap:8px}.card{background:#fff;border:1px solid #ddd;padding:4px;
font-size:12px;max-width:260px}.card img{display:block;max-width:100%;height:auto}.card.big{max-width:420px}
.card .cap{margin-top:3px;word-break:break-word}.tag{display:inline-block;background:#f3d7d4;color:#7a1d14;
border-radius:3px;padding:0 4px;margin:1px 2px 0 0;font-size:11px}.swatch{display:inline-block;width:14px;
height:10px;margin:0 4px 0 10px;border:1px solid #999}.rec{background:#e6f4e6;border:1px solid #9c9;
padding:8px 12px;display:inline-block}code{background:#eef2f6;padding:1px 4px}
span.legend{white-space:nowrap}#broken{display:none;background:#b3261e;color:#fff;padding:8px 24px}
"""

SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function(t){
 t.querySelectorAll('th').forEach(function(th,i){th.addEventListener('click',function(){
  var b=t.tBodies[0],rows=Array.from(b.rows),up=th.dataset.dir!=='asc';th.dataset.dir=up?'asc':'desc';
  rows.sort(function(x,y){var a=x.cells[i].dataset.v||x.cells[i].textContent,c=y.cells[i].dataset.v||y.cells[i].textContent;
   var fa=parseFloat(a),fc=parseFloat(c);var r=(isNaN(fa)||isNaN(fc))?a.localeCompare(c):fa-fc;return up?r:-r;});
  rows.forEach(function(r){b.appendChild(r);});});});});
window.addEventListener('load',function(){
 var bad=Array.from(document.images).filter(function(i){return i.complete&&i.naturalWidth===0;});
 document.body.dataset.brokenImages=String(bad.length);
 if(bad.length){var e=document.getElementById('broken');e.textContent=bad.length+' image(s) failed to load: '+
  bad.slice(0,5).map(function(i){return i.getAttribute('src');}).join(', ');e.style.display='block';}});
"""


def esc(x: object) -> str:
    """HTML-escaped ``str(x)`` (quotes too)."""
    return html.escape(str(x), quote=True)


def fmt(v: object, digits: int = 3) -> str:
    """Numbers for tables: floats with ``digits`` decimals, -1 / None / NaN as ``n/a``."""
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if math.isnan(v) or v < 0:
            return "n/a"
        return f"{v:.{digits}f}"
    return str(v)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], sortable: bool = False, cls: str = "",
          digits: int = 3) -> str:
    """A table; numeric cells carry ``data-v`` so sorting is numeric (n/a sorts as -1)."""
    classes = " ".join(c for c in ("sortable" if sortable else "", cls) if c)
    out = [f'<table class="{classes}">' if classes else "<table>", "<thead><tr>"]
    out += [f"<th>{esc(h)}</th>" for h in headers]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>")
        for v in row:
            if isinstance(v, bool) or not isinstance(v, (int, float)) and v is not None:
                out.append(f"<td>{esc(v)}</td>")
            else:
                num = -1 if v is None or (isinstance(v, float) and math.isnan(v)) else v
                out.append(f'<td data-v="{num}">{esc(fmt(v, digits))}</td>')
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def image(src: str, alt: str, cls: str = "plot", lazy: bool = False) -> str:
    loading = ' loading="lazy"' if lazy else ""
    return f'<img class="{esc(cls)}" src="{esc(src)}" alt="{esc(alt)}"{loading}>'


def gallery(items: Sequence[dict], big: bool = False, empty: str = "none", lazy: bool = False,
            extra: Sequence[str] | None = None) -> str:
    """Thumbnails (``thumb``) that link to ``link``, captioned; ``extra[i]`` is raw HTML appended to card ``i``."""
    if not items:
        return f'<p class="note">{esc(empty)}</p>'
    cards = []
    for k, it in enumerate(items):
        attrs = "".join(f' data-{esc(a)}="{esc(v)}"' for a, v in it.get("data", {}).items())
        more = extra[k] if extra is not None else ""
        cards.append(f'<div class="card{" big" if big else ""}"{attrs}><a href="{esc(it["link"])}">'
                     f'{image(it["thumb"], it["caption"], "thumb", lazy)}</a>'
                     f'<div class="cap">{esc(it["caption"])}</div>{more}</div>')
    return f'<div class="grid">{"".join(cards)}</div>'


def swatches(entries: Iterable[tuple[str, tuple[int, int, int]]]) -> str:
    """A legend: ``(label, BGR colour)`` per entry."""
    return "".join(f'<span class="legend"><span class="swatch" style="background:rgb({c[2]},{c[1]},{c[0]})">'
                   f"</span>{esc(n)}</span>" for n, c in entries)


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]], extra_script: str = "") -> str:
    """A whole document: ``sections`` are ``(anchor id, heading, body HTML)``, linked from a sticky nav bar."""
    nav = "".join(f'<a href="#{esc(a)}">{esc(h)}</a>' for a, h, _ in sections)
    body = "".join(f'<section id="{esc(a)}"><h2>{esc(h)}</h2>{b}</section>' for a, h, b in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{CSS}</style></head>'
            f'<body data-broken-images=""><header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>'
            f'<div id="broken"></div><nav>{nav}</nav><main>{body}</main>'
            f"<script>{SCRIPT}{extra_script}</script></body></html>\n")
