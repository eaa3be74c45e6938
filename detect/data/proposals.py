"""External region proposals (Fast R-CNN's original setting): read, validate, attach to the data.

File format (JSON): one object whose keys name images and whose values are lists of boxes in the
ORIGINAL image's pixels, xyxy::

    {"shelf/img_001.jpg": [[x1, y1, x2, y2], ...], "img_002.jpg": [], ...}

``retail-detect predict``'s ``predictions.json`` is read as such a file too (each image's detections
become its proposals), so another detector's output can feed the box head directly.

A key names a record when it is the record's image path relative to the dataset's ``image_root``, ends
with that path (``demo_out/shelves/images/a.jpg`` names ``images/a.jpg``), or, when unique in the
dataset, is its file name. Keys that name no record are ignored (the file may cover a larger dataset
than the split in use) unless ``strict``; records with no key get no proposals.

How it is wired: ``data.proposals: FILE`` -> :func:`proposals_for_records` gives the dataset one
``[P, 4]`` array per record; the dataset moves them with the image through augmentation and hands them
out as ``target["proposals"]`` (input-tensor pixels); the engine passes them to the model as
``model(images, targets, proposals=...)`` (:func:`model_inputs`).

On the predict path they ride with the photo too: :class:`ProposalsForFiles` finds each source file's entry
(a :class:`FileProposals`) once, when the sources are expanded; reading the photo validates it against the
photo's size into the photo's ``extras``; the predictor letterboxes them with the photo
(:func:`letterboxed_inputs`). :func:`check_proposals_arg` refuses a proposals file a model cannot use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch import Tensor

from data_tools.errors import InvalidInput, UserError
from data_tools.records import Record, RecordSet
from data_tools.userfiles import read_json
from detect.models.build import takes_proposals

MAX_PROPOSALS_BYTES = 1 << 30  # as a COCO file: ~10k photos x 300 proposals fit many times over
PREDICTIONS_FORMAT = "retail-detect-predictions"  # the "format" of predict's predictions.json


class ProposalsError(UserError, ValueError):
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
    """The proposals file as ``{key: value}`` (values not yet validated); errors name the file and the line.

    Read as every user file is (``data_tools.userfiles.read_json``): a regular file of at most
    ``MAX_PROPOSALS_BYTES``, so a FIFO or a device cannot hang the run.
    """
    path = Path(path)
    data = read_json(str(path), MAX_PROPOSALS_BYTES, ProposalsError, "a proposals file")
    if not isinstance(data, dict):
        raise ProposalsError(f"{path}: top level must be an object {{image path: [[x1, y1, x2, y2], ...]}}, "
                             f"got {type(data).__name__}")
    if data.get("format") == PREDICTIONS_FORMAT:
        return _from_predictions(data, path)
    return data


def _from_predictions(data: dict, path: Path) -> dict:
    """``predictions.json`` of ``retail-detect predict`` -> ``{image path: [[x1, y1, x2, y2], ...]}``."""
    images = data.get("images")
    if not isinstance(images, list):
        raise ProposalsError(f"{path}: predictions file without an 'images' list")
    out: dict[str, list] = {}
    for i, entry in enumerate(images):
        where = f"{path}: images[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise ProposalsError(f"{where}: expected an object with a 'path' string")
        dets = entry.get("detections")
        if not isinstance(dets, list) or not all(isinstance(d, dict) and "box" in d for d in dets):
            raise ProposalsError(f"{where}: 'detections' must be a list of objects with a 'box'")
        out[entry["path"]] = [d["box"] for d in dets]
    return out


@dataclass(frozen=True)
class FileProposals:
    """One image's entry of a proposals file, found by name; its boxes are checked once its size is known."""

    value: object  # the JSON value: a list of [x1, y1, x2, y2] in original pixels (not yet checked)
    where: str  # "FILE: key 'KEY'", for messages

    def boxes(self, width: int, height: int) -> np.ndarray:
        """float32 [P, 4] xyxy original pixels clipped to a ``width`` x ``height`` image (ProposalsError)."""
        return parse_boxes(self.value, width, height, self.where)


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

    def entry_for(self, image_path: str | Path, rel: str) -> FileProposals:
        """The entry naming one image (its path as given or ``rel``, else its unique file name).

        Raises:
            ProposalsError: no key names it.
        """
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
        return FileProposals(self.data[key], f"{self.path}: key {key!r}")

    def boxes_for(self, image_path: str | Path, rel: str, width: int, height: int) -> np.ndarray:
        """float32 [P, 4] xyxy original pixels of one image; ProposalsError when missing or malformed."""
        return self.entry_for(image_path, rel).boxes(width, height)


def _match(norm: str, by_path: dict[str, int], by_name: dict[str, list[int]]) -> list[int]:
    """Records a normalised key names: its path, the longest record path it ends with, else its unique file name."""
    parts = PurePosixPath(norm).parts
    for k in range(len(parts)):  # "a/b/c.jpg", then "b/c.jpg", "c.jpg" as record paths
        i = by_path.get("/".join(parts[k:]))
        if i is not None:
            return [i]
    return by_name.get(parts[-1], []) if parts else []


def proposals_for_records(path: str | Path, records: RecordSet | Sequence[Record], strict: bool = False
                          ) -> list[np.ndarray]:
    """Read an external proposals JSON for a dataset.

    Args:
        path: the JSON file (format in the module docstring).
        records: the RecordSet (or its ``records``) the proposals belong to.
        strict: raise on keys that name no record.

    Returns:
        Per record (same order) float32 ``[P, 4]`` xyxy in original image pixels, clipped to the image;
        ``[0, 4]`` where the file has no entry.
    """
    path = Path(path)
    recs = list(records.records if isinstance(records, RecordSet) else records)
    data = read_proposals_json(path)
    by_path, by_name = _index([r.image for r in recs])
    found: dict[int, np.ndarray] = {}
    source: dict[int, str] = {}
    for key, value in data.items():
        hits = _match(_norm(key), by_path, by_name)
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
        found[i] = parse_boxes(value, recs[i].width, recs[i].height, f"{path}: key {key!r}")
        source[i] = key
    if data and not found:
        expected = f"paths like {recs[0].image!r} or their file names" if recs else "an empty dataset"
        raise ProposalsError(f"{path}: none of its {len(data)} keys names an image of the dataset "
                             f"(first key {next(iter(data))!r}; expected {expected})")
    empty = np.zeros((0, 4), np.float32)
    return [found.get(i, empty) for i in range(len(recs))]


def model_inputs(targets: list[dict], device: torch.device | str) -> dict[str, list[Tensor]]:
    """Extra forward inputs a batch carries: ``{"proposals": B float32 [P_i, 4] on device}`` when the dataset
    has external proposals, else ``{}``. Used alike in training, evaluation and the best-checkpoint report."""
    if not targets or "proposals" not in targets[0]:
        return {}
    return {"proposals": [t["proposals"].to(device, torch.float32, non_blocking=True) for t in targets]}


def letterboxed_inputs(extras: Sequence[dict[str, np.ndarray]], scales: Sequence[float],
                       device: torch.device | str) -> dict[str, list[Tensor]]:
    """:func:`model_inputs` for the predict path: the extras each photo carries, letterboxed with it.

    Args:
        extras: per image ``{name: float32 [P, 4] xyxy in original pixels}`` (``{}`` = none), e.g. its
            external ``proposals``; every image of a batch carries the same names.
        scales: per image letterbox scale (tensor pixels per original pixel).

    Returns:
        ``{name: B float32 [P_i, 4] in tensor pixels on device}``, or ``{}`` when the images carry nothing.
    """
    names = set(extras[0]) if extras else set()
    if any(set(e) != names for e in extras):
        raise ValueError("every image of a batch must carry the same extra inputs (e.g. proposals)")
    return {name: [torch.from_numpy(np.asarray(e[name], np.float32) * np.float32(s)).to(device)
                   for e, s in zip(extras, scales)] for name in sorted(names)}


def check_proposals_arg(model: torch.nn.Module, name: str, weights: str | Path,
                        proposals: str | Path | None) -> None:
    """Refuse ``--proposals`` for a model that cannot use them, and its absence for a model without an RPN."""
    if proposals is not None and not takes_proposals(name):
        raise InvalidInput(f"--proposals is for Fast R-CNN checkpoints; {weights} is a {name} model")
    if proposals is None and getattr(model, "needs_proposals", False):
        raise InvalidInput(f"{weights} was trained on external proposals (no RPN): pass --proposals FILE.json")
