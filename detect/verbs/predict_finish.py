"""The end of a ``predict`` run: ``predictions.json`` (+ CSV, labels) made from its ``predictions.jsonl``.

The jsonl is read a few times, line by line, never held whole: once for the totals of the summary, once
for the images (and the CSV rows), once for the errors (and, with ``--save-labels``, once more for the
labels). A photo predicted twice (resumed after it changed on disk) counts once, by its last line.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from detect.verbs import predict_output as po
from detect.verbs.predict_labels import save_labels as write_labels
from detect.verbs.predict_stream import JSONL_NAME, read_lines


def _line_path(line: dict) -> str:
    return line["entry"]["path"] if "entry" in line else str(line["error"].get("file", ""))


@dataclass
class Totals:
    """What the summary counts over a run's lines."""

    images: int = 0
    errors: int = 0
    detections: int = 0
    tiled: int = 0
    drawn: int = 0
    named: bool = False  # some detection carries a gallery SKU (the CSV gets its columns)
    class_counts: Counter = field(default_factory=Counter)
    detector_counts: Counter = field(default_factory=Counter)

    def add(self, line: dict) -> None:
        if "error" in line:
            self.errors += 1
            return
        e = line["entry"]
        self.images += 1
        self.detections += e["num_detections"]
        self.tiled += line.get("tiles", 0) > 0
        self.class_counts.update(e["counts"])
        self.detector_counts.update(line.get("det", {}))
        if "draw_error" in line:
            self.errors += 1
        elif "drawn" in e:
            self.drawn += 1
        self.named = self.named or any("sku" in d for d in e["detections"])


class RunLines:
    """The lines of ``out/predictions.jsonl`` that count: the last one of each photo."""

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / JSONL_NAME
        last: dict[str, int] = {}
        self.totals = Totals()
        repeated = False
        for i, line in enumerate(read_lines(self.path)):
            p = _line_path(line)
            repeated = repeated or p in last
            last[p] = i
            self.totals.add(line)
        self._last = last if repeated else None  # only a resumed run that redid a changed photo needs it
        if repeated:
            self.totals = Totals()
            for line in self:
                self.totals.add(line)

    def __iter__(self) -> Iterator[dict]:
        for i, line in enumerate(read_lines(self.path)):
            if self._last is None or self._last[_line_path(line)] == i:
                yield line

    def entries(self) -> Iterator[dict]:
        return (line["entry"] for line in self if "entry" in line)

    def rels(self) -> Iterator[str]:
        return (line["rel"] for line in self if "entry" in line)

    def errors(self, first: list[dict]) -> Iterator[dict]:
        """``first`` (the sources that matched nothing), then each photo's error and failed drawing."""
        yield from first
        for line in self:
            if "error" in line:
                yield line["error"]
            elif "draw_error" in line:
                yield line["draw_error"]


def finish_run(out: Path, source_problems: list[dict], meta: dict, run: dict, *, csv: bool,
               save_labels: str | None, link_photos: bool, names: list[str], gallery: dict | None) -> dict:
    """Write ``predictions.json`` (and the CSV, the labels) from the run's lines; return the summary.

    Args:
        source_problems: the sources of this run that matched nothing (listed first under ``errors``).
        meta: the document's fields before ``summary`` (weights, class names, threshold, ...).
        run: this run's own figures: ``predicted`` (photos it predicted), ``seconds``, ``device``, and
            ``resumed`` (photos a resumed run found done; absent otherwise).
        gallery: the gallery's description (:meth:`~detect.verbs.sku_stage.SkuStage.describe`) or None.
    """
    lines = RunLines(out)
    t = lines.totals
    csv_path = po.write_csv(out, lines.entries(), named=t.named) if csv else None
    labels = (write_labels(out, save_labels, lines.entries(), lines.rels(), names, link_photos)
              if save_labels else None)
    seconds = run["seconds"]
    summary = {
        "images": t.images,
        "errors": t.errors + len(source_problems),
        "detections": t.detections,
        "class_counts": dict(sorted(t.class_counts.items())),
        "tiled_images": t.tiled,
        "drawn": t.drawn,
        "seconds": round(seconds, 3),
        "images_per_s": round(run["predicted"] / seconds, 3) if seconds > 0 else 0.0,
        "device": run["device"],
        "out_dir": str(out),
        "csv": str(csv_path) if csv_path else None,
        "labels": labels,
    }
    if "resumed" in run:
        summary["resumed"] = run["resumed"]
    if gallery is not None:
        summary["detector_counts"] = dict(sorted(t.detector_counts.items()))
        summary["gallery"] = gallery
    doc_meta = dict(meta)
    doc_meta["summary"] = dict(summary)
    if "detector_class_names" in meta:  # after the summary, where it always was
        doc_meta["detector_class_names"] = doc_meta.pop("detector_class_names")
    summary["json"] = str(po.write_json(out, lines.entries(), lines.errors(source_problems), doc_meta))
    return summary
