"""Predictor: a trained checkpoint -> detections in original image pixels, for arrays or files.

``Predictor(weights)`` rebuilds the model from the checkpoint's config and class names (EMA weights
preferred), then

- :meth:`Predictor.predict_images` letterboxes a list of ``H x W x 3`` uint8 RGB arrays to ``S``,
  runs them as ``[B, 3, S, S]`` uint8 batches on the device and maps boxes back to original pixels
  (``original = tensor / scale``). Images much larger than ``S`` are tiled
  (:mod:`detect.engine.inference.tiling`); their tiles share the same batches.
- :meth:`Predictor.predict_paths` does the same for files, folders (recursive) and globs, decoding
  the next batch in background threads while the current one runs (sources: :mod:`detect.engine.inference.sources`).
  A file that cannot be read is yielded as a :class:`~data_tools.records.Problem` (path + reason) and the
  run goes on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from data_tools.errors import InvalidInput
from data_tools.records import Problem
from detect.data.augment import letterbox
from detect.data.proposals import ProposalsError, ProposalsForFiles
from detect.engine.inference.sources import Source, Sources, expand_sources, read_source
from detect.engine.inference.tiling import TileOptions, merge_crops, plan_crops, should_tile
from detect.engine.runtime.checkpoint import load_model
from detect.engine.runtime.device import resolve_device
from detect.models.build import takes_proposals


@dataclass
class Prediction:
    source: Source
    result: dict | None = None  # see Predictor.predict_images
    error: Problem | None = None
    image: np.ndarray | None = None  # H x W x 3 uint8 RGB when keep_images=True


class Predictor:
    """Checkpoint -> detections in original image pixels.

    Args:
        weights: checkpoint path (``model``, ``config``, ``class_names``, optional ``ema``).
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.
        conf: detections scoring below this are dropped.
        image_size: model input side ``S``; None = the training ``data.image_size``.
        use_ema: use the EMA weights when the checkpoint has them.
        tile: ``auto`` | ``on`` | ``off`` or a :class:`TileOptions`.
        batch_size: crops per forward pass.
        amp: bf16 autocast on CUDA; None = the training ``train.amp``.
        proposals: Fast R-CNN only: external proposals JSON (``{image path or file name: [[x1, y1, x2, y2],
            ...]}`` in original pixels) used instead of the RPN; an image without an entry is reported, not run.
        agnostic_nms: one NMS over all classes (True) or per class (False); None = the recipe's
            ``model.agnostic_nms``.
    """

    def __init__(
        self,
        weights: str | Path,
        device: str = "auto",
        conf: float = 0.25,
        image_size: int | None = None,
        use_ema: bool = True,
        tile: str | TileOptions = "auto",
        batch_size: int = 8,
        amp: bool | None = None,
        proposals: str | Path | None = None,
        agnostic_nms: bool | None = None,
    ) -> None:
        model, class_names, cfg = load_model(weights, use_ema, score_thresh=conf)
        if agnostic_nms is not None:  # class-agnostic NMS (dense shelves) whatever the recipe said
            model.post = model.post.replace(agnostic=agnostic_nms)
        size, m = image_size or cfg.data.image_size, cfg.model
        amp = cfg.train.amp if amp is None else amp
        self._setup(
            model, class_names, size, device, conf, tile, batch_size, amp, m.nms_thresh, m.max_detections
        )
        self.config = cfg
        check_proposals_arg(model, m.name, weights, proposals)
        if proposals is not None:
            self.proposals = ProposalsForFiles(proposals)

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        class_names: list[str],
        image_size: int,
        device: str = "auto",
        conf: float = 0.25,
        tile: str | TileOptions = "auto",
        batch_size: int = 8,
        amp: bool = False,
        nms_thresh: float = 0.5,
        max_detections: int = 300,
    ) -> Predictor:
        """A predictor around an in-memory model that follows the eval contract."""
        self = cls.__new__(cls)
        self._setup(
            model, class_names, image_size, device, conf, tile, batch_size, amp, nms_thresh, max_detections
        )
        self.config = None
        return self

    def _setup(
        self, model, class_names, image_size, device, conf, tile, batch_size, amp, nms_thresh, max_detections
    ):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)  # matches the NHWC upload
        self.class_names = list(class_names)
        self.image_size = int(image_size)
        self.conf = float(conf)
        self.tile = tile if isinstance(tile, TileOptions) else TileOptions(mode=tile)
        self.batch_size = max(1, int(batch_size))
        self.amp = bool(amp) and self.device.type == "cuda"
        self.nms_thresh = float(nms_thresh)
        post = getattr(model, "post", None)
        self.agnostic = bool(post.agnostic) if post is not None else False  # tiles merge the same way
        self.max_detections = int(max_detections)
        self._worked = False  # set once a batch succeeded: later failures are bad inputs, not a bad model
        self.proposals = None  # ProposalsForFiles: Fast R-CNN's external proposals, looked up per image file

    # --------------------------------------------------------------- arrays

    @torch.inference_mode()
    def _predict_crops(
        self, crops: Sequence[np.ndarray], proposals: Sequence[np.ndarray] | None = None
    ) -> list[dict[str, Tensor]]:
        """Letterbox + batch + forward; boxes ``[K, 4]`` in each crop's own pixels, on the device.

        ``proposals``: per crop float32 [P, 4] xyxy in its pixels (Fast R-CNN without its RPN), or None.
        """
        s = self.image_size
        out: list[dict[str, Tensor]] = []
        for i in range(0, len(crops), self.batch_size):
            chunk = crops[i : i + self.batch_size]
            boxed = [letterbox(c, s) for c in chunk]  # (S x S x 3 uint8, scale: tensor px / original px)
            batch = torch.from_numpy(np.stack([b[0] for b in boxed]))  # [B, S, S, 3] uint8
            if self.device.type == "cuda":
                batch = batch.pin_memory()
            images = batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2)  # [B, 3, S, S] NHWC memory
            extra = {}
            if proposals is not None:  # original pixels -> letterboxed tensor pixels, as the boxes
                extra["proposals"] = [
                    torch.from_numpy(np.asarray(p, np.float32) * np.float32(b[1])).to(self.device)
                    for p, b in zip(proposals[i : i + self.batch_size], boxed)
                ]
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
                dets = self.model(images, **extra)
            for crop, (_, scale, *_), d in zip(chunk, boxed, dets):
                keep = d["scores"] >= self.conf
                boxes = d["boxes"][keep].float() / float(scale)
                h, w = crop.shape[:2]
                boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
                boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
                out.append(
                    {"boxes": boxes, "scores": d["scores"][keep].float(), "labels": d["labels"][keep].long()}
                )
        return out

    def predict_images(
        self, images: Sequence[np.ndarray], proposals: Sequence[np.ndarray] | None = None
    ) -> list[dict]:
        """Detect objects in a list of images.

        Args:
            images: ``H x W x 3`` uint8 RGB arrays (sizes may differ).
            proposals: Fast R-CNN only: per image float32 ``[P, 4]`` xyxy in original pixels, used instead
                of the RPN (images are then never tiled).

        Returns:
            One dict per image: ``boxes`` float32 ``[K, 4]`` xyxy in original pixels, ``scores``
            float32 ``[K]``, ``labels`` int64 ``[K]`` in ``1..C`` (CPU tensors, sorted by score),
            ``width``, ``height`` (int), ``tiles`` (number of tiles, 0 = not tiled).
        """
        crops: list[np.ndarray] = []
        plans = []  # per image: (first crop, number of crops, windows or None)
        for img in images:
            if not (isinstance(img, np.ndarray) and img.shape[2:] == (3,) and img.dtype == np.uint8):
                raise ValueError(f"expected an H x W x 3 uint8 RGB array, got {getattr(img, 'shape', img)}")
            h, w = img.shape[:2]
            if proposals is None and should_tile(h, w, self.image_size, self.tile):
                c, windows = plan_crops(img, self.image_size, self.tile)
                plans.append((len(crops), len(c), windows))
                crops += c
            else:
                plans.append((len(crops), 1, None))
                crops.append(img)
        if proposals is not None and len(proposals) != len(images):
            raise ValueError(f"got proposals for {len(proposals)} images but {len(images)} images")
        raw = self._predict_crops(crops, proposals)
        results = []
        for img, (start, n, windows) in zip(images, plans):
            if windows is None:
                r = raw[start]
                order = r["scores"].argsort(descending=True)
                r = {k: v[order] for k, v in r.items()}
            else:
                r = merge_crops(
                    raw[start : start + n],
                    windows,
                    img.shape[:2],
                    self.image_size,
                    self.tile,
                    self.nms_thresh,
                    self.max_detections,
                    self.agnostic,
                )
            r = {k: v.cpu() for k, v in r.items()}
            tiles = 0 if windows is None else n - int(self.tile.full_image)
            results.append({**r, "width": int(img.shape[1]), "height": int(img.shape[0]), "tiles": tiles})
        return results

    # --------------------------------------------------------------- files

    def iter_predictions(
        self, sources: Iterable[str | Path] | Sources, keep_images: bool = False, workers: int = 2
    ) -> Iterator[Prediction]:
        """Predict every image of ``sources`` (files, folders, globs) in order.

        Unmatched sources and unreadable images come out as ``Prediction(error=Problem)``; the run
        goes on. The next batch is decoded by ``workers`` threads while the current one runs.
        """
        src = sources if isinstance(sources, Sources) else expand_sources(sources)
        for p in src.problems:
            yield Prediction(Source(Path(p.file), p.file), error=p)
        files = src.files
        chunks = [files[i : i + self.batch_size] for i in range(0, len(files), self.batch_size)]
        if not chunks:
            return
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            pending = [pool.submit(read_source, s.path) for s in chunks[0]]
            for k, chunk in enumerate(chunks):
                loaded = [f.result() for f in pending]
                pending = [pool.submit(read_source, s.path) for s in chunks[k + 1]] if k + 1 < len(chunks) else []
                props = self._chunk_proposals(chunk, loaded)
                good = [j for j, (img, _) in enumerate(loaded) if img is not None and not isinstance(props[j], str)]
                results = iter(self._predict_chunk([loaded[j][0] for j in good],
                                                   None if self.proposals is None else [props[j] for j in good]))
                for j, (s, (img, err)) in enumerate(zip(chunk, loaded)):
                    if img is None:
                        yield Prediction(s, error=Problem(str(s.path), err, kind="bad_image"))
                        continue
                    if isinstance(props[j], str):
                        yield Prediction(s, error=Problem(str(s.path), props[j], kind="bad_proposals"))
                        continue
                    r = next(results)
                    if isinstance(r, str):
                        yield Prediction(s, error=Problem(str(s.path), r, kind="predict_failed"))
                    else:
                        yield Prediction(s, result=r, image=img if keep_images else None)

    def _chunk_proposals(self, chunk: list[Source], loaded: list) -> list[np.ndarray | str | None]:
        """Per image of a chunk: its external proposals, a reason string when they are missing or bad, or None."""
        if self.proposals is None:
            return [None] * len(chunk)
        out: list[np.ndarray | str | None] = []
        for s, (img, _) in zip(chunk, loaded):
            if img is None:
                out.append(None)
                continue
            try:
                out.append(self.proposals.boxes_for(s.path, s.rel, img.shape[1], img.shape[0]))
            except ProposalsError as exc:
                out.append(str(exc))
        return out

    def _predict_chunk(
        self, images: list[np.ndarray], proposals: list[np.ndarray] | None = None
    ) -> list[dict | str]:
        """:meth:`predict_images`; if the batch fails, one image at a time, failures as reason strings.

        Failing on every image before anything ever worked is raised: a model or setup problem.
        """
        if not images:
            return []
        try:
            out = self.predict_images(images, proposals)
        except Exception as exc:  # noqa: BLE001 - find the image that fails (odd size, out of memory)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            out = [self._predict_one(img, None if proposals is None else proposals[k]) for k, img in enumerate(images)]
            if not self._worked and all(isinstance(r, str) for r in out):
                raise exc
        self._worked = True
        return out

    def _predict_one(self, image: np.ndarray, proposals: np.ndarray | None = None) -> dict | str:
        try:
            return self.predict_images([image], None if proposals is None else [proposals])[0]
        except Exception as exc:  # noqa: BLE001
            return f"prediction failed: {type(exc).__name__}: {exc}"

    def predict_paths(self, sources: Iterable[str | Path]) -> Iterator[tuple[str, dict | Problem]]:
        """``(path, result)`` per image (result as in :meth:`predict_images`), or ``(path, Problem)``."""
        for p in self.iter_predictions(sources):
            yield (str(p.source.path), p.result if p.error is None else p.error)


def check_proposals_arg(model: torch.nn.Module, name: str, weights: str | Path, proposals: str | Path | None) -> None:
    """Refuse ``--proposals`` for a model that cannot use them, and its absence for one built without an RPN."""
    if proposals is not None and not takes_proposals(name):
        raise InvalidInput(f"--proposals is for Fast R-CNN checkpoints; {weights} is a {name} model")
    if proposals is None and getattr(model, "needs_proposals", False):
        raise InvalidInput(f"{weights} was trained on external proposals (no RPN): pass --proposals FILE.json")
