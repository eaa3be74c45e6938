"""Predictor: a model that follows the eval contract -> detections in original image pixels (arrays or files).

One constructor, ``Predictor(model, class_names, image_size, ...)``, around a model in memory;
:meth:`Predictor.from_weights` rebuilds the model from a checkpoint (its config and class names, EMA weights
preferred) and calls it. Then

- :meth:`Predictor.predict_images` letterboxes a list of ``H x W x 3`` uint8 RGB arrays to ``S``,
  runs them as ``[B, 3, S, S]`` uint8 batches on the device and maps boxes back to original pixels
  (:func:`detect.data.augment.boxes_to_original`). Images much larger than ``S`` are tiled
  (:mod:`detect.engine.inference.tiling`); their tiles share the same batches.
- :meth:`Predictor.iter_predictions` does the same for files, folders (recursive) and globs, decoding
  the next batch in background threads while the current one runs (sources:
  :mod:`detect.engine.inference.sources`). Each photo carries its extra model inputs (Fast R-CNN's external
  proposals, attached to the sources by the caller) and they are letterboxed with it
  (:func:`detect.data.proposals.letterboxed_inputs`); such a photo is never tiled. A file that cannot be
  predicted comes out as a :class:`~data_tools.records.Problem` (path + reason + kind) and the run goes on.
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
from detect.config import Config
from detect.data.augment import boxes_to_original, letterbox
from detect.data.proposals import letterboxed_inputs
from detect.engine.inference.sources import Source, Sources, expand_sources, load_source
from detect.engine.inference.tiling import TileOptions, merge_crops, plan_crops, tile_windows
from detect.engine.inference.tiling_auto import plan_auto
from detect.engine.runtime.checkpoint import load_model
from detect.engine.runtime.device import resolve_device
from detect.engine.runtime.exported import is_exported

Extras = dict[str, np.ndarray]  # extra model inputs of one image: {"proposals": float32 [P, 4] original px}


@dataclass
class Prediction:
    source: Source
    result: dict | None = None  # see Predictor.predict_images
    error: Problem | None = None
    image: np.ndarray | None = None  # H x W x 3 uint8 RGB when keep_images=True


class Predictor:
    """A model in eval mode -> detections in original image pixels.

    Args:
        model: follows the eval contract: ``model(images uint8 [B, 3, S, S], **extras)`` -> per image
            ``{"boxes" [K, 4] xyxy tensor pixels, "scores" [K], "labels" [K] in 1..C}``.
        class_names: the ``C`` class names (label ``i`` is ``class_names[i - 1]``).
        image_size: model input side ``S``.
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.
        conf: detections scoring below this are dropped.
        tile: ``auto`` | ``on`` | ``off`` or a :class:`TileOptions`.
        batch_size: crops per forward pass.
        amp: bf16 autocast on CUDA.
        nms_thresh, max_detections: how the tiles of one image are merged.
        config: the recipe the model was trained with, when known (:meth:`from_weights` sets it).
    """

    def __init__(
        self,
        model: nn.Module,
        class_names: Sequence[str],
        image_size: int,
        *,
        device: str = "auto",
        conf: float = 0.25,
        tile: str | TileOptions = "auto",
        batch_size: int = 8,
        amp: bool = False,
        nms_thresh: float = 0.5,
        max_detections: int = 300,
        config: Config | None = None,
    ) -> None:
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
        self.config = config
        self._worked = False  # set once a batch succeeded: later failures are bad inputs, not a bad model

    @classmethod
    def from_weights(
        cls,
        weights: str | Path,
        *,
        device: str = "auto",
        conf: float = 0.25,
        image_size: int | None = None,
        use_ema: bool = True,
        tile: str | TileOptions = "auto",
        batch_size: int = 8,
        amp: bool | None = None,
        agnostic_nms: bool | None = None,
    ) -> Predictor:
        """A predictor for checkpoint ``weights`` (``model``, ``config``, ``class_names``, optional ``ema``), or
        for an exported ``model.onnx`` / ``model.xml`` (ONNX Runtime / OpenVINO, on the CPU).

        ``image_size``: None = the training ``data.image_size``; ``use_ema``: use the EMA weights when the
        checkpoint has them; ``amp``: None = the training ``train.amp``; ``agnostic_nms``: one NMS over all
        classes (True) or per class (False), None = the recipe's ``model.agnostic_nms``. The other arguments
        are the constructor's. Whether the model needs external proposals is the caller's to check
        (:func:`detect.data.proposals.check_proposals_arg`).
        """
        model, class_names, cfg = load_model(weights, use_ema, score_thresh=conf)
        if is_exported(weights) and image_size and int(image_size) != cfg.data.image_size:
            raise InvalidInput(f"{weights} was exported for {cfg.data.image_size} px inputs, not {image_size}: "
                               f"export the checkpoint again with --size {image_size}")
        if agnostic_nms is not None:  # class-agnostic NMS (dense shelves) whatever the recipe said
            model.post = model.post.replace(agnostic=agnostic_nms)
        return cls(
            model, class_names, image_size or cfg.data.image_size, device=device, conf=conf, tile=tile,
            batch_size=batch_size, amp=cfg.train.amp if amp is None else amp, nms_thresh=cfg.model.nms_thresh,
            max_detections=cfg.model.max_detections, config=cfg,
        )

    # --------------------------------------------------------------- arrays

    @torch.inference_mode()
    def _predict_crops(
        self, crops: Sequence[np.ndarray], extras: Sequence[Extras]
    ) -> list[dict[str, Tensor]]:
        """Letterbox + batch + forward; boxes ``[K, 4]`` in each crop's own pixels, on the device.

        ``extras``: per crop, the extra model inputs in its pixels (``{}`` for none).
        """
        s = self.image_size
        out: list[dict[str, Tensor]] = []
        for i in range(0, len(crops), self.batch_size):
            chunk = crops[i : i + self.batch_size]
            boxed = [letterbox(c, s) for c in chunk]  # (S x S x 3 uint8, scale: tensor px / original px)
            batch = torch.from_numpy(np.stack([b.image for b in boxed]))  # [B, S, S, 3] uint8
            if self.device.type == "cuda":
                batch = batch.pin_memory()
            images = batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2)  # [B, 3, S, S] NHWC memory
            scales = [b.scale for b in boxed]
            inputs = letterboxed_inputs(extras[i : i + self.batch_size], scales, self.device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
                dets = self.model(images, **inputs)
            for crop, b, d in zip(chunk, boxed, dets):
                keep = d["scores"] >= self.conf
                boxes = boxes_to_original(d["boxes"][keep], b.scale, crop.shape[1], crop.shape[0])
                out.append(
                    {"boxes": boxes, "scores": d["scores"][keep].float(), "labels": d["labels"][keep].long()}
                )
        return out

    def predict_images(
        self, images: Sequence[np.ndarray], extras: Sequence[Extras] | None = None
    ) -> list[dict]:
        """Detect objects in a list of images.

        Args:
            images: ``H x W x 3`` uint8 RGB arrays (sizes may differ).
            extras: per image, extra model inputs in original pixels, e.g. Fast R-CNN's
                ``{"proposals": float32 [P, 4] xyxy}`` used instead of its RPN; an image with extras is
                never tiled. None = none for any image.

        Tiling (``self.tile``): ``on`` tiles every image larger than one tile; ``auto`` predicts such an image
        whole first and tiles it, with the tile side, when :func:`~detect.engine.inference.tiling_auto.plan_auto`
        says so, the first pass becoming the merge's whole-image view (probes and tiles in later batches).

        Returns:
            One dict per image: ``boxes`` float32 ``[K, 4]`` xyxy in original pixels, ``scores``
            float32 ``[K]``, ``labels`` int64 ``[K]`` in ``1..C`` (CPU tensors, sorted by score),
            ``width``, ``height`` (int), ``tiles`` (number of tiles, 0 = not tiled), ``tile_reason`` (why
            the image was or was not tiled, in words).
        """
        extras = [{}] * len(images) if extras is None else list(extras)
        if len(extras) != len(images):
            raise ValueError(f"got extra inputs for {len(extras)} images but {len(images)} images")
        opts, s = self.tile, self.image_size
        crops: list[np.ndarray] = []
        crop_extras: list[Extras] = []
        plans: list[dict] = []  # per image: first crop, number of crops, windows (None: not tiled), reason
        for img, extra in zip(images, extras):
            if not (isinstance(img, np.ndarray) and img.shape[2:] == (3,) and img.dtype == np.uint8):
                raise ValueError(f"expected an H x W x 3 uint8 RGB array, got {getattr(img, 'shape', img)}")
            h, w = img.shape[:2]
            plan = {"start": len(crops), "n": 1, "windows": None, "reason": f"--tile {opts.mode}"}
            if extra:
                plan["reason"] = "extra model inputs (proposals): never tiled"
            elif max(h, w) <= opts.tile_side(s) and opts.mode != "off":
                plan["reason"] = "fits one tile"
            elif opts.mode == "on":
                c, windows = plan_crops(img, s, opts)
                plan.update(n=len(c), windows=windows)
                crops += c
                crop_extras += [{}] * len(c)
                plans.append(plan)
                continue
            elif opts.mode == "auto" and max(h, w) < opts.auto_ratio * opts.tile_side(s):
                plan["reason"] = f"under {opts.auto_ratio:g} default tiles long: not tiled by auto"
            elif opts.mode == "auto":
                plan["ask"] = True  # the whole image now, its tiles after the decision
            plans.append(plan)
            crops.append(img)
            crop_extras.append(extra)
        raw = self._predict_crops(crops, crop_extras)
        # auto: decide from the whole-image pass; the chosen images' tiles go in one more round of batches
        more: list[np.ndarray] = []
        asked = [k for k, plan in enumerate(plans) if plan.pop("ask", False)]
        decisions = plan_auto([images[k] for k in asked], [raw[plans[k]["start"]] for k in asked],
                              lambda c: self._predict_crops(c, [{}] * len(c)), s, opts) if asked else []
        for k, (own, reason) in zip(asked, decisions):
            img, plan = images[k], plans[k]
            plan["reason"] = reason
            if own is not None:  # tiled with its own tile side
                windows = tile_windows(img.shape[0], img.shape[1], own.tile_side(s), own.overlap)
                plan.update(windows=windows, extra_start=len(more), opts=own)
                more += [img[y1:y2, x1:x2] for x1, y1, x2, y2 in windows.tolist()]
        raw_more = self._predict_crops(more, [{}] * len(more)) if more else []
        results = []
        for img, plan in zip(images, plans):
            start, n, windows = plan["start"], plan["n"], plan["windows"]
            if windows is None:
                r = raw[start]
                order = r["scores"].argsort(descending=True)
                r = {k: v[order] for k, v in r.items()}
                tiles = 0
            else:
                if "extra_start" in plan:  # auto: the whole-image pass (when kept) + the tiles of this round
                    parts = raw_more[plan["extra_start"] : plan["extra_start"] + len(windows)]
                    if opts.full_image:
                        h, w = img.shape[:2]
                        parts = [raw[start], *parts]
                        windows = np.concatenate([np.array([[0, 0, w, h]], dtype=np.int64), windows])
                else:
                    parts = raw[start : start + n]
                tiles = len(windows) - int(opts.full_image)
                r = merge_crops(parts, windows, img.shape[:2], s, plan.get("opts", opts), self.nms_thresh,
                                self.max_detections, self.agnostic)
            r = {k: v.cpu() for k, v in r.items()}
            results.append({**r, "width": int(img.shape[1]), "height": int(img.shape[0]), "tiles": tiles,
                            "tile_reason": plan["reason"]})
        return results

    # --------------------------------------------------------------- files

    def iter_predictions(
        self, sources: Iterable[str | Path] | Sources, keep_images: bool = False, workers: int = 2
    ) -> Iterator[Prediction]:
        """Predict every image of ``sources`` (files, folders, globs, or expanded :class:`Sources`) in order.

        Unmatched sources and images that cannot be predicted come out as ``Prediction(error=Problem)``;
        the run goes on. The next batch is decoded by ``workers`` threads while the current one runs.
        """
        src = sources if isinstance(sources, Sources) else expand_sources(sources)
        for p in src.problems:
            yield Prediction(Source(Path(p.file), p.file), error=p)
        files = src.files
        chunks = [files[i : i + self.batch_size] for i in range(0, len(files), self.batch_size)]
        if not chunks:
            return
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            pending = [pool.submit(load_source, s) for s in chunks[0]]
            for k in range(len(chunks)):
                photos = [f.result() for f in pending]
                pending = [pool.submit(load_source, s) for s in chunks[k + 1]] if k + 1 < len(chunks) else []
                good = [ph for ph in photos if ph.problem is None]
                results = iter(self._predict_chunk([ph.image for ph in good], [ph.extras for ph in good]))
                for ph in photos:
                    if ph.problem is not None:
                        yield Prediction(ph.source, error=ph.problem)
                        continue
                    r = next(results)
                    if isinstance(r, Exception):
                        reason = f"prediction failed: {type(r).__name__}: {r}"
                        problem = Problem(str(ph.source.path), reason, kind="predict_failed")
                        yield Prediction(ph.source, error=problem)
                    else:
                        yield Prediction(ph.source, result=r, image=ph.image if keep_images else None)

    def _predict_chunk(
        self, images: list[np.ndarray], extras: list[Extras] | None = None
    ) -> list[dict | Exception]:
        """:meth:`predict_images`; if the batch fails, one image at a time, each failure as its exception.

        Failing on every image before anything ever worked is raised: a model or setup problem.
        """
        if not images:
            return []
        extras = [{}] * len(images) if extras is None else extras
        try:
            out: list[dict | Exception] = list(self.predict_images(images, extras))
        except Exception as exc:  # noqa: BLE001 - find the image that fails (odd size, out of memory)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            out = [self._predict_one(img, extra) for img, extra in zip(images, extras)]
            if not self._worked and all(isinstance(r, Exception) for r in out):
                raise exc
        self._worked = True
        return out

    def _predict_one(self, image: np.ndarray, extras: Extras) -> dict | Exception:
        try:
            return self.predict_images([image], [extras])[0]
        except Exception as exc:  # noqa: BLE001 - reported for this image by the caller
            return exc.with_traceback(None)  # the frames would keep this batch's tensors alive

    def predict_paths(self, sources: Iterable[str | Path]) -> Iterator[tuple[str, dict | Problem]]:
        """``(path, result)`` per image (result as in :meth:`predict_images`), or ``(path, Problem)``."""
        for p in self.iter_predictions(sources):
            yield (str(p.source.path), p.result if p.error is None else p.error)
