"""External region proposals (Fast R-CNN's original setting): read, validate, map to tensor pixels.

File format (JSON): one object whose keys name images and whose values are lists of boxes in the
ORIGINAL image's pixels, xyxy::

    {"shelf/img_001.jpg": [[x1, y1, x2, y2], ...], "img_002.jpg": [], ...}

A key is a record's image path relative to the dataset's ``image_root`` or, when unique in the
dataset, just its file name. Keys that match no record are ignored (the file may cover a larger
dataset than the split in use) unless ``strict``; records with no key get no proposals.

How it is meant to be wired (trainer / predictor / evaluator)::

    table = load_proposals(cfg.model.fast_rcnn.proposals, rs, image_size=cfg.data.image_size)
    for images, targets in loader:                       # targets carry "image_id" (1-based in rs)
        props = batch_proposals(targets, table, images.device)
        out = model(images, targets, proposals=props)     # training: losses without RPN terms
        dets = model(images, proposals=props)             # eval: detections

Proposals are in letterboxed tensor pixels (original * ``image_size / max(W, H)``, the dataset's
letterbox), so geometric augmentation (flip, affine, crop, mosaic) must be off when training on
external proposals, unless the dataset transforms them together with the boxes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch import Tensor

from data_tools.records import Record, RecordSet


class ProposalsError(ValueError):
    """The proposals file is unreadable or malformed; the message names the file and the key."""


def _norm(key: str) -> str:
    key = key.replace("\\", "/")
    while key.startswith("./"):
        key = key[2:]
    return key


def _index(paths: Sequence[str]) -> tuple[dict[str, int], dict[str, list[int]]]:
    """Positions of ``paths`` by normalised path, and by file name (a name may occur several times)."""
    by_path = {_norm(p): i for i, p in enumerate(paths)}
    by_name: dict[str, list[int]] = {}
    for i, p in enumerate(paths):
        by_name.setdefault(PurePosixPath(_norm(p)).name, []).append(i)
    return by_path, by_name


def parse_boxes(value: object, width: int, height: int, where: str) -> np.ndarray:
    """JSON value -> float32 [P, 4] clipped to a ``width`` x ``height`` image; raises ProposalsError naming ``where``."""
    if not isinstance(value, list):
        raise ProposalsError(f"{where}: expected a list of [x1, y1, x2, y2] boxes, got {type(value).__name__}")
    out = np.zeros((len(value), 4), np.float32)
    for j, box in enumerate(value):
        if (not isinstance(box, list) or len(box) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)):
            raise ProposalsError(f"{where}: box {j}: expected 4 numbers [x1, y1, x2, y2], got {box!r}")
        x1, y1, x2, y2 = (float(v) for v in box)
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            raise ProposalsError(f"{where}: box {j}: non-finite coordinate in {box!r}")
        if x2 <= x1 or y2 <= y1:
            raise ProposalsError(f"{where}: box {j}: needs x2 > x1 and y2 > y1 (xyxy pixels), got {box!r}")
        cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
        cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
        if cx2 <= cx1 or cy2 <= cy1:
            raise ProposalsError(f"{where}: box {j}: {box!r} lies outside the {width}x{height} image "
                                 "(boxes are in original image pixels)")
        out[j] = (cx1, cy1, cx2, cy2)
    return out


def read_proposals_json(path: str | Path) -> dict:
    """The proposals file as ``{key: value}`` (values not yet validated); errors name the file and the line."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProposalsError(f"proposals file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProposalsError(f"{path}: cannot read proposals: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ProposalsError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ProposalsError(f"{path}: top level must be an object {{image path: [[x1, y1, x2, y2], ...]}}, "
                             f"got {type(data).__name__}")
    return data


class ProposalsForFiles:
    """External proposals for ``retail-detect predict``: looked up by image file rather than dataset record.

    A key matches an image given as ``SOURCE`` when it equals the path as given, its path relative to the
    folder or glob it came from, or (when unique in the file) its file name.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.data = read_proposals_json(self.path)
        self._keys = list(self.data)
        self._by_path, self._by_name = _index(self._keys)

    def boxes_for(self, image_path: str | Path, rel: str, width: int, height: int) -> np.ndarray:
        """float32 [P, 4] xyxy original pixels of one image; ProposalsError when missing or malformed."""
        for candidate in (str(image_path), rel):
            i = self._by_path.get(_norm(candidate))
            if i is not None:
                break
        else:
            hits = self._by_name.get(Path(image_path).name, [])
            if len(hits) != 1:
                why = "no key names it" if not hits else f"its file name matches {len(hits)} keys"
                raise ProposalsError(f"{self.path}: no proposals for {image_path} ({why}; keys are image paths "
                                     "as given, relative to their folder, or file names)")
            i = hits[0]
        key = self._keys[i]
        return parse_boxes(self.data[key], width, height, f"{self.path}: key {key!r}")


def load_proposals(
    path: str | Path,
    records: RecordSet | Sequence[Record],
    image_size: int | None = None,
    strict: bool = False,
) -> dict[int, np.ndarray]:
    """Read an external proposals JSON for a dataset.

    Args:
        path: the JSON file (format in the module docstring).
        records: the RecordSet (or its ``records``) the proposals belong to.
        image_size: the letterbox size S of the input tensors; boxes are scaled by S / max(W, H).
            None keeps original image pixels.
        strict: raise on keys that match no record.

    Returns:
        ``image_id -> float32 [P, 4]`` xyxy for every record (``image_id`` = 1-based index in
        ``records``, as in the dataset's targets); [0, 4] where the file has no entry.
    """
    path = Path(path)
    recs = list(records.records if isinstance(records, RecordSet) else records)
    data = read_proposals_json(path)
    by_path, by_name = _index([r.image for r in recs])
    found: dict[int, np.ndarray] = {}
    source: dict[int, str] = {}
    for key, value in data.items():
        norm = _norm(key)
        i = by_path.get(norm)
        if i is None:
            hits = by_name.get(PurePosixPath(norm).name, []) if "/" not in norm else []
            if len(hits) > 1:
                names = ", ".join(recs[h].image for h in hits[:3])
                raise ProposalsError(f"{path}: key {key!r}: file name matches {len(hits)} images ({names}); "
                                     "use the path relative to the image root")
            if not hits:
                if strict:
                    raise ProposalsError(f"{path}: key {key!r}: no such image in the dataset")
                continue
            i = hits[0]
        if i in found:
            raise ProposalsError(f"{path}: keys {source[i]!r} and {key!r} name the same image {recs[i].image!r}")
        boxes = parse_boxes(value, recs[i].width, recs[i].height, f"{path}: key {key!r}")
        if image_size is not None:
            boxes = boxes * np.float32(image_size / max(recs[i].width, recs[i].height))
        found[i], source[i] = boxes, key
    if data and not found:
        expected = f"paths like {recs[0].image!r} or their file names" if recs else "an empty dataset"
        raise ProposalsError(f"{path}: none of its {len(data)} keys names an image of the dataset "
                             f"(first key {next(iter(data))!r}; expected {expected})")
    empty = np.zeros((0, 4), np.float32)
    return {i + 1: found.get(i, empty) for i in range(len(recs))}


def batch_proposals(
    targets: list[dict], table: dict[int, np.ndarray], device: torch.device | str
) -> list[Tensor]:
    """Proposals of a collated batch: per target (by its ``image_id``) a float32 [P, 4] tensor on ``device``."""
    out = []
    for t in targets:
        image_id = int(t["image_id"])
        if image_id not in table:
            raise ProposalsError(f"no proposals for image_id {image_id}: load_proposals was given another dataset")
        out.append(torch.as_tensor(table[image_id], dtype=torch.float32).to(device))
    return out
