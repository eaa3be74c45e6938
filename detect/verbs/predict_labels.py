"""``predict --save-labels FORMAT``: the detections as labels a labelling tool opens, for correction (pre-labelling).

``OUT/labels/`` becomes a dataset folder of that format (:mod:`data_tools.formats.export`): the input photos
copied under ``OUT/labels/images/<mirror name>`` (so a photo edited there in place never changes the original;
``link=True``, ``predict --link``: hard-linked instead, copied where the file system cannot link) and the
detections beside them (``annotations/*.xml`` for voc, ``labels/*.txt`` + ``data.yaml`` for yolo,
``annotations.json`` / ``annotations.xml`` for coco / labelstudio / cvat). Label Studio gets them as
``predictions`` with their scores, COCO as annotations with a ``score``. ``retail-data convert OUT/labels``
reads them back as the same boxes (those of ``predictions.json``); a box that would not survive that
reading (under one pixel after clipping to the image) is left out and counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from data_tools.errors import InvalidInput
from data_tools.formats.export import check_export_folder, export_records
from data_tools.records import Record, RecordSet, check_box

LABELS_DIR = "labels"
FORMATS = ("voc", "coco", "yolo", "cvat", "labelstudio")


def check_labels_folder(out: str | Path) -> None:
    """Refuse, before predicting, a run folder whose ``labels/`` already holds files (``--exist-ok`` reruns)."""
    check_export_folder(Path(out) / LABELS_DIR, None)


def detections_recordset(entries: Iterable[dict], rels: Iterable[str], class_names: list[str]
                         ) -> tuple[RecordSet, list, int]:
    """``(RecordSet with one record per predicted image, per-record score arrays, boxes left out)``.

    ``entries``: the images of ``predictions.json`` (:func:`~detect.verbs.predict_output.image_entry`);
    ``rels``: each image's mirror name (its path below ``labels/images``). Both may be iterators (a run's
    ``predictions.jsonl`` read line by line): only the records are kept.
    """
    records, scores, dropped = [], [], 0
    for entry, rel in zip(entries, rels):
        w, h = int(entry["width"]), int(entry["height"])
        boxes, labels, conf = [], [], []
        for d in entry["detections"]:
            box, _, _ = check_box(tuple(d["box"]), w, h)
            if box is None or not 1 <= d["label"] <= len(class_names):
                dropped += 1
                continue
            boxes.append(box)
            labels.append(d["label"])
            conf.append(d["score"])
        records.append(Record(rel, w, h, np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64),
                              source=entry["path"]))
        scores.append(np.array(conf, np.float64))
    return RecordSet(list(class_names), "", records, {"source": "retail-detect predict"}), scores, dropped


def save_labels(out: str | Path, fmt: str, entries: Iterable[dict], rels: Iterable[str], class_names: list[str],
                link: bool = False) -> dict:
    """Write ``OUT/labels/`` in ``fmt`` (see the module doc); ``link``: hard-link the photos instead of copying.

    Returns ``{"dir", "format", "images", "boxes", "dropped", "problems"}``.
    """
    if fmt not in FORMATS:
        raise InvalidInput(f"--save-labels must be one of {', '.join(FORMATS)}, not {fmt!r}")
    rs, scores, dropped = detections_recordset(entries, rels, class_names)
    folder = Path(out) / LABELS_DIR
    result = export_records(rs, fmt, folder, "link" if link else "copy", scores, [r.source for r in rs.records])
    return {"dir": str(folder), "format": fmt, "images": result["records"], "boxes": result["boxes"],
            "dropped": dropped, "problems": [p.to_dict() for p in result["problems"]]}
