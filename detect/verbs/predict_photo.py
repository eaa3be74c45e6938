"""One predicted photo -> its line of ``predictions.jsonl``: the same code on this machine and on Ray workers.

:class:`PhotoWork` takes the :class:`~detect.engine.inference.predictor.Prediction` stream of a predictor
and yields ``(line, warning)`` pairs in the photos' order: the gallery names the boxes (when one is used),
detections are grouped into shelf rows, the photo's ``predictions.json`` entry is built and its drawing
written (in ``workers`` background threads; a photo's line is yielded once its drawing is on disk, so a
resumed run never skips a photo whose drawing is missing). Nothing is kept per photo once its line is out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from data_tools.records import Problem
from detect.engine.inference.predictor import Prediction
from detect.verbs import predict_output as po
from detect.verbs.predict_stream import photo_key
from detect.verbs.shelf_rows import class_counts, group_rows
from detect.verbs.sku_stage import SkuStage

Line = tuple[str, str]  # (JSON line, warning to log or "")


class PhotoWork:
    """Turn predictions into ``predictions.jsonl`` lines.

    Args:
        detector_names: the detector's class names.
        stage: the gallery stage (:mod:`detect.verbs.sku_stage`) or None; its SKUs then name the boxes.
        rows, row_gap: group detections into shelf rows (gap as a fraction of the median box height).
        out: the run folder (drawings go to ``out/images/<mirror name>``); draw: write them.
        protected: resolved input files no drawing may replace.
        workers: drawing threads (0: draw in the calling thread).
    """

    def __init__(self, detector_names: list[str], stage: SkuStage | None, rows: bool, row_gap: float,
                 out: Path, draw: bool, protected: set[Path], workers: int = 2) -> None:
        self.detector_names = list(detector_names)
        self.stage = stage
        self.names = self.detector_names if stage is None else stage.names
        self.rows, self.row_gap = rows, row_gap
        self.out, self.draw, self.protected = Path(out), draw, protected
        self.workers = max(0, workers)

    def lines(self, predictions: Iterable[Prediction]) -> Iterator[Line]:
        """One line per prediction, in order (errors at once, images once drawn)."""
        pending: list[tuple[dict, Future | None]] = []
        pool = ThreadPoolExecutor(max_workers=self.workers) if self.draw and self.workers else None
        try:
            for p in predictions:
                if p.error is not None:
                    line = {"key": photo_key(p.source), "rel": p.source.rel, "error": p.error.to_dict()}
                    yield _dump(line), f"skipped {p.error}"
                    continue
                line, image, result = self._line(p)
                p.image = None
                if not self.draw:
                    yield _dump(line), ""
                    continue
                target = self.out / line["entry"]["drawn"]
                if pool is None:
                    pending.append((line, None))
                    _draw_into(line, image, result, self.names, target, self.protected)
                else:
                    pending.append((line, pool.submit(_draw, image, result, self.names, target, self.protected)))
                yield from _drain(pending, keep=2 * self.workers)
            yield from _drain(pending, keep=0)
        finally:
            if pool is not None:
                pool.shutdown(wait=True)

    def _line(self, p: Prediction) -> tuple[dict, np.ndarray | None, dict]:
        r = p.result
        det = None
        if self.stage is not None:
            r = self.stage.apply(p.image, r, self.detector_names)
            det = class_counts(r["detector_labels"], self.detector_names)
        row_ids, row_summary = (
            group_rows(r["boxes"], r["labels"], self.names, self.row_gap) if self.rows else (None, None)
        )
        counts = class_counts(r["labels"], self.names)
        entry = po.image_entry(str(p.source.path), r["width"], r["height"], r, self.names, row_ids, row_summary,
                               counts)
        if self.draw:
            entry["drawn"] = po.drawn_path(self.out, p.source.rel).relative_to(self.out).as_posix()
        line = {"key": photo_key(p.source), "rel": p.source.rel, "tiles": int(r["tiles"]), "entry": entry}
        if det is not None:
            line["det"] = det
        return line, p.image, r


def _dump(line: dict) -> str:
    return json.dumps(line, ensure_ascii=False)


def _draw(image: np.ndarray, result: dict, names: list[str], target: Path, protected: set[Path]) -> None:
    po.write_drawn(target, po.draw_detections(image, result, names), protected)


def _draw_failed(line: dict, exc: Exception) -> None:
    line["draw_error"] = Problem(line["entry"]["path"], f"drawing failed: {type(exc).__name__}: {exc}",
                                 action="ignored", kind="draw_failed").to_dict()


def _draw_into(line: dict, image: np.ndarray, result: dict, names: list[str], target: Path,
               protected: set[Path]) -> None:
    try:
        _draw(image, result, names, target, protected)
    except Exception as exc:  # noqa: BLE001 - a failed drawing is reported, the predictions stay
        _draw_failed(line, exc)


def _drain(pending: list[tuple[dict, Future | None]], keep: int) -> Iterator[Line]:
    """Yield the oldest lines whose drawings are done until at most ``keep`` are in flight."""
    while len(pending) > keep:
        line, fut = pending.pop(0)
        if fut is not None:
            try:
                fut.result()
            except Exception as exc:  # noqa: BLE001 - a failed drawing is reported, the predictions stay
                _draw_failed(line, exc)
        yield _dump(line), ""
