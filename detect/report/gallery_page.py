"""The HTML page of a gallery (``retail-detect gallery show``), in the evaluation report's look
(:mod:`detect.report.html`): a sortable table of the SKUs with each one's nearest other SKU, then every SKU's
reference thumbnails with their source, flagged where a reference is closer to another SKU than to its own."""

from __future__ import annotations

from detect.report.html import esc, gallery, page, table

GENERATOR = '<meta name="generator" content="retail-detect gallery show">'
"""Marks a page this verb wrote: only such a file may be replaced by the next ``gallery show``."""
LOOKALIKE = 0.9  # a nearest other SKU at least this similar is called a look-alike in the summary


def _facts(info: dict) -> str:
    e = info["embedder"]
    cal = info.get("calibration") or {}
    t = info["threshold"]
    rows = [("gallery", info["folder"]), ("SKUs", len(info["skus"])), ("references", info["references"]),
            ("embedder", f"{e.get('name')} ({e.get('kind')}, {e.get('dim')}-d, {e.get('image_size')} px, "
                         f"{str(e.get('sha256'))[:12]})"),
            ("unknown threshold", "none (too few references to calibrate)" if t is None else f"{t:.3f}")]
    if cal.get("error_rate") is not None:
        rows.append(("calibration", f"{cal['genuine']} genuine, {cal['impostor']} impostor scores; equal error rate "
                                    f"{cal['error_rate']:.3f}"))
    return table(["", ""], rows, cls="facts")


def _summary(info: dict) -> str:
    rows = []
    for s in info["skus"]:
        own = [r["own"] for r in s["refs"] if r["own"] is not None]
        rows.append([s["name"], len(s["refs"]), s["nearest"] or "-", s["nearest_sim"],
                     min(own) if own else None, sum(r["closer_to"] is not None for r in s["refs"])])
    note = ('<p class="note">Similarity: cosine of the embedder\'s vectors (1 = the same). <b>nearest other SKU</b>: '
            "the most similar reference of any other SKU (a look-alike when it is high: give it more, or more "
            "distinct, references). <b>weakest reference</b>: the lowest similarity of one of the SKU's references "
            "to its own other references (a wrong, blurry or odd photo stands out low). <b>closer elsewhere</b>: "
            "references more similar to another SKU than to their own. Click a header to sort.</p>")
    return note + table(["SKU", "references", "nearest other SKU", "similarity", "weakest reference",
                         "closer elsewhere"], rows, sortable=True)


def _sku_cards(s: dict) -> str:
    items, extra = [], []
    for r in s["refs"]:
        items.append({"thumb": r["src"], "link": r["src"], "caption": r["source"], "data": {"ref": r["id"]}})
        own = "n/a" if r["own"] is None else f"{r['own']:.3f}"
        tags = f'<div>own {own}, other {r["other"]:.3f}</div>' if r["other"] is not None else f"<div>own {own}</div>"
        if r["closer_to"] is not None:
            tags += f'<span class="tag">closer to {esc(r["closer_to"])}</span>'
        extra.append(tags)
    near = ""
    if s["nearest"] is not None:
        near = f" - nearest other SKU <b>{esc(s['nearest'])}</b> ({s['nearest_sim']:.3f})"
        if s["nearest_sim"] >= LOOKALIKE:
            near += ' <span class="tag">look-alike</span>'

    return (f'<h3 id="sku-{esc(s["index"])}">{esc(s["name"])} ({len(s["refs"])} references){near}</h3>'
            + gallery(items, lazy=True, extra=extra))


def render(info: dict) -> str:
    """The whole page from ``info``: ``folder``, ``embedder``, ``threshold``, ``calibration``, ``references`` and
    ``skus`` (each ``name``, ``index``, ``nearest``, ``nearest_sim``, ``refs``: ``id``, ``source``, ``src``
    (the image's URL), ``own``, ``other``, ``closer_to``)."""
    refs = "".join(_sku_cards(s) for s in info["skus"]) or '<p class="note">the gallery is empty</p>'
    sections = [("summary", "Summary", _facts(info)), ("skus", "SKUs", _summary(info)),
                ("references", "References", refs)]
    html = page("SKU gallery", info["folder"], sections)
    return html.replace("<meta charset=\"utf-8\">", "<meta charset=\"utf-8\">" + GENERATOR, 1)
