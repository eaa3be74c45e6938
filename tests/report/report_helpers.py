"""A synthetic "run" for the report tests: tiny shelf photos and detections with known mistakes."""

from __future__ import annotations

import numpy as np

from data_tools.records import RecordSet


def fake_results(rs: RecordSet, seed: int = 0) -> list[dict]:
    """COCO results over ``rs`` with every kind of mistake.

    Per ground-truth box: every 5th is missed, every 7th gets another class (score 0.7), the rest are found
    (score 0.5-0.99, box shifted by 1 px); every 4th image gets a duplicate of its first found box (0.35) and
    a detection on background (0.6); every box also gets a low-scoring (0.02) copy of the wrong class.
    """
    rng = np.random.default_rng(seed)
    k = rs.num_classes
    out = []
    n = 0
    for i, rec in enumerate(rs.records):
        first = None
        for b, c in zip(rec.boxes.tolist(), rec.labels.tolist()):
            n += 1
            x1, y1, x2, y2 = b
            box = [x1 + 1, y1, x2 - x1, y2 - y1]
            out.append({"image_id": i + 1, "category_id": c % k + 1, "bbox": box, "score": 0.02})
            if n % 5 == 0:
                continue
            if n % 7 == 0:
                out.append({"image_id": i + 1, "category_id": c % k + 1, "bbox": box, "score": 0.7})
                continue
            out.append({"image_id": i + 1, "category_id": c, "bbox": box, "score": float(rng.uniform(0.5, 0.99))})
            first = first or (box, c)
        if i % 4 == 0 and first is not None:
            out.append({"image_id": i + 1, "category_id": first[1], "bbox": first[0], "score": 0.35})
            out.append({"image_id": i + 1, "category_id": 1, "bbox": [0.0, 0.0, 6.0, 6.0], "score": 0.6})
    return out
