"""The evaluation report's ``index.html`` from the ``metrics.json`` dict of :func:`detect.report.build.write_report`."""

from __future__ import annotations

from detect.report.galleries import OUTCOME_COLORS
from detect.report.html import esc, fmt, gallery, image, page, swatches, table

FACT_LABELS = (("checkpoint", "checkpoint"), ("recipe", "recipe"), ("model", "model"), ("dataset", "dataset"),
               ("images", "images"), ("image_size", "image size"), ("device", "device"),
               ("eval_seconds", "eval time (s)"), ("ms_per_image", "ms / image"), ("epoch", "epoch"),
               ("report_seconds", "report time (s)"), ("created", "created"))
LEGEND = (("correct", "tp"), ("false positive (background)", "background"), ("duplicate", "duplicate"),
          ("wrong class (its true box dashed)", "wrong_class"), ("missed (dashed)", "missed"),
          ("ground truth found (dashed)", "found"))


def _headline(r: dict) -> str:
    h = r["headline"]
    keys = [k for k in h if k not in ("detections", "max_detections")]
    at = r["at_conf"]
    c = r["counts"]
    head = table([*keys, "detections"], [[*(h[k] for k in keys), h["detections"]]], cls="big")
    facts = r.get("facts", {})
    rows = [(label, facts[key]) for key, label in FACT_LABELS if facts.get(key) is not None]
    rows += [(k, v) for k, v in facts.items() if k not in dict(FACT_LABELS)]
    summary = table(["at the report's confidence", "value"], [
        ("confidence (" + r["conf_source"] + ")", r["conf"]), ("IoU", r["iou"]),
        ("precision", at["precision"]), ("recall", at["recall"]), ("F1", at["f1"]),
        ("false positives on background / duplicates", at["background"]), ("wrong class", at["wrong_class"]),
        ("missed objects", at["missed"]), ("count MAE per image (per class)", c["class_mae"]),
        ("count MAE per image (total)", c["total_mae"])], cls="facts")
    return (f"<h3>COCO metrics (max {esc(h['max_detections'])} detections per image)</h3>{head}"
            f'<div class="grid"><div>{table(["run", ""], rows, cls="facts")}</div><div>{summary}</div></div>')


def _per_class(r: dict) -> str:
    cols = ["class", "AP", "AP50", "GT", "TP", "FP", "FN", "precision", "recall", "wrong class", "background FP",
            "missed", "count MAE", "exact count"]
    keys = ["class", "AP", "AP50", "gt", "tp", "fp", "fn", "precision", "recall", "wrong_class", "background",
            "missed", "count_mae", "count_exact"]
    rows = [[row[k] for k in keys] for row in r["per_class"]]
    return (f'<p class="note">At confidence {esc(r["conf"])} and IoU {esc(r["iou"])}. Click a header to sort. '
            "FP = background + duplicate + wrong-class detections of this class; FN = its missed + wrongly classed "
            "objects. Count MAE and exact count: over the images where the class is present or predicted. "
            'Also in <a href="per_class.csv">per_class.csv</a>.</p>' + table(cols, rows, sortable=True))


def _plots(r: dict) -> str:
    f = r["files"]
    parts = []
    if f.get("pr_all"):
        parts.append(image(f["pr_all"], "PR curves, all classes"))
    if f.get("pr_per_class"):
        parts.append(image(f["pr_per_class"], "PR curves per class"))
    return "".join(parts) or '<p class="note">no detections: no PR curve</p>'


def _confusion(r: dict) -> str:
    note = ("Rows: true class; columns: predicted class; the last row and column are background: false positives on "
            "background (and duplicates) in the bottom row, missed objects in the right column. IoU "
            f"{esc(r['iou'])}, confidence {esc(r['conf'])}. The matrix is in metrics.json.")
    return f'<p class="note">{note}</p>' + image(r["files"]["confusion"], "confusion matrix")


def _galleries(r: dict) -> str:
    g = r["galleries"]
    t = g["totals"]
    legend = swatches((name, OUTCOME_COLORS[k]) for name, k in LEGEND)
    out = [f'<p class="note">Boxes: detections solid, ground truth dashed. {legend}</p>']
    specs = (("false_positives", "False positives", "most confident first"),
             ("wrong_class", "Wrong class", "most confident first; dashed: the true box"),
             ("missed", "Missed objects", "largest first"))
    for key, title, order in specs:
        shown = len(g[key])
        out.append(f"<h3>{esc(title)}: {esc(t[key])} ({esc(order)}; {shown} shown)</h3>")
        out.append(gallery(g[key], empty="none at this confidence"))
    out.append(f"<h3>Worst images ({len(g['worst'])}, most errors first)</h3>")
    out.append(gallery(g["worst"], big=True, empty="no image with errors"))
    return "".join(out)


def _counts(r: dict) -> str:
    c = r["counts"]
    rec = r["recommended_conf"]
    best = next((s for s in r["sweep"] if s["conf"] == rec), None)
    if best is not None:
        box = (f'<p class="rec">Recommended: <code>retail-detect predict --conf {esc(rec)}</code> - the confidence '
               f"with the fewest miscounted facings: {fmt(best['class_mae'])} per image per class "
               f"({fmt(best['class_exact'] * 100, 1)} % of images counted exactly), total count MAE "
               f"{fmt(best['total_mae'])}, F1 {fmt(best['f1'])}.")
        total = next((s for s in r["sweep"] if s["conf"] == r.get("recommended_conf_total")), None)
        if total is not None and total["conf"] != rec:
            box += (f"<br>If only the number of products matters, whatever their class: <code>--conf "
                    f"{esc(total['conf'])}</code> (total count MAE {fmt(total['total_mae'])}, "
                    f"{fmt(total['total_exact'] * 100, 1)} % of images exact).")
        box += "</p>"
    else:
        box = '<p class="note">no detections: nothing to recommend</p>'
    at = table(["at confidence " + str(r["conf"]), "MAE", "exact"], [
        ("per image, summed over classes", c["class_mae"], c["class_exact"]),
        ("per image, all products", c["total_mae"], c["total_exact"]),
        (f"per shelf row ({c['rows']} rows)", c["row_mae"], c["row_exact"])])
    sweep = table(["conf", "precision", "recall", "F1", "count MAE (class)", "exact (class)", "count MAE (total)",
                   "exact (total)", "TP", "FP", "FN"],
                  [[s["conf"], s["precision"], s["recall"], s["f1"], s["class_mae"], s["class_exact"], s["total_mae"],
                    s["total_exact"], s["tp"], s["fp"], s["fn"]] for s in r["sweep"]], sortable=True)
    plot = image(r["files"]["sweep"], "confidence sweep") if r["files"].get("sweep") else ""
    note = ('<p class="note">Count error of an image: |predicted - true| per class, summed (a cola counted as chips '
            "is two miscounts); total: |predicted - true| of all products; per shelf row: ground truth and detections "
            "grouped into rows together. Per-class count MAE is in the per-class table.</p>")
    return f"{box}{note}{at}<h3>Confidence sweep</h3>{plot}{sweep}"


def render(r: dict) -> str:
    """The whole page (see :func:`detect.report.html.page`)."""
    facts = r.get("facts", {})
    sub = " - ".join(str(facts[k]) for k in ("checkpoint", "dataset") if facts.get(k)) or "evaluation report"
    sections = [("summary", "Summary", _headline(r)), ("classes", "Per class", _per_class(r)),
                ("counts", "Count accuracy", _counts(r)), ("pr", "PR curves", _plots(r)),
                ("confusion", "Confusion matrix", _confusion(r)), ("errors", "Errors", _galleries(r)),
                ("files", "Files", '<p><a href="metrics.json">metrics.json</a> - <a href="per_class.csv">'
                                    "per_class.csv</a></p>")]
    return page("Evaluation report", sub, sections)
