"""``--tile auto``: whether to tile a photo, and with which tile side, from the size of its objects.

A detector resolves objects within a band of sizes at its input ``S`` (measured in docs/predict.md: the SSD
trained on 20-43 px objects at S = 224 keeps AP50 >= 0.7 from ~25 to ~45 px and loses it below 22 and above
56). Tiling enlarges the objects by ``zoom = long side / T``: it helps when they are too small in the whole
letterboxed photo, and hurts when they are already resolved (large products are then cut by every seam).
A photo at least ``auto_ratio`` default tiles long (``2 x 2S``) is considered; per photo, from the model's own
detections (those scoring ``auto_conf`` and up, median side ``sqrt(w h)``):

1. the whole photo at ``S`` (the pass is kept as the merge's whole-image view): at least ``auto_min_boxes``
   objects with a median of ``auto_min_px`` or more at ``S`` -> not tiled (the objects are resolved);
2. otherwise the object size is measured in centre crops zoomed 2x, then 4x (one forward pass each), where
   at least ``auto_min_boxes`` objects of ``auto_min_px`` and up are found first (small objects found at ``S``
   are not resolved, so their boxes misstate their size); failing that, on the whole photo's boxes;
   nothing found anywhere -> not tiled;
3. the tile side ``T`` shows the median object at ``auto_target_px``: ``T = m * S / auto_target_px``
   (original px ``m``; ``--tile-size`` when given), at least ``S``; a zoom ``long side / T`` under
   ``auto_min_zoom`` is not worth the seams -> not tiled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from detect.engine.inference.tiling import TileOptions

PROBE_ZOOMS = (2, 4)


def median_side(result: dict, opts: TileOptions) -> tuple[float | None, int]:
    """``(median sqrt(w h) in the result's pixels or None, count)`` of the boxes scoring ``opts.auto_conf`` and up.

    Args:
        result: ``boxes`` ``[K, 4]`` xyxy, ``scores`` ``[K]``.
    """
    boxes = result["boxes"][result["scores"] >= opts.auto_conf]
    if boxes.shape[0] == 0:
        return None, 0
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0).float()
    return float(wh.prod(dim=1).sqrt().median()), int(boxes.shape[0])


def centre_crop(image: np.ndarray, zoom: int) -> np.ndarray:
    """The centre ``H/zoom x W/zoom`` view of an ``H x W x 3`` image."""
    h, w = image.shape[:2]
    ch, cw = max(1, h // zoom), max(1, w // zoom)
    y, x = (h - ch) // 2, (w - cw) // 2
    return image[y : y + ch, x : x + cw]


def plan_auto(
    images: list[np.ndarray],
    whole: list[dict],
    predict_crops: Callable[[list[np.ndarray]], list[dict]],
    image_size: int,
    opts: TileOptions,
) -> list[tuple[TileOptions | None, str]]:
    """Per photo: its tile options (``size`` = the chosen tile side) or None (not tiled), and the reason in words.

    Args:
        images: ``H x W x 3`` uint8 photos, each larger than one default tile.
        whole: per photo, the detections of the whole letterboxed photo (original px).
        predict_crops: crops -> per crop ``{"boxes" [K, 4] crop px, "scores" [K], ...}`` (the probes).
        image_size: model input side ``S``.
    """
    s = image_size
    out: list[tuple[TileOptions | None, str] | None] = [None] * len(images)
    measured: list[tuple[float, str] | None] = [None] * len(images)
    pending = []
    for i, (img, r) in enumerate(zip(images, whole)):
        m, n = median_side(r, opts)
        at_s = None if m is None else m * s / max(img.shape[:2])
        if at_s is not None and n >= opts.auto_min_boxes and at_s >= opts.auto_min_px:
            out[i] = (None, f"large objects: median {at_s:.0f} px at S (>= {opts.auto_min_px:g})")
        else:
            pending.append(i)
    for zoom in PROBE_ZOOMS:
        pending = [i for i in pending if max(images[i].shape[:2]) // zoom >= s]  # no upsampled probe
        if not pending:
            break
        crops = [centre_crop(images[i], zoom) for i in pending]
        still = []
        for i, crop, r in zip(pending, crops, predict_crops(crops)):
            m, n = median_side(r, opts)
            if m is not None and n >= opts.auto_min_boxes and m * s / max(crop.shape[:2]) >= opts.auto_min_px:
                measured[i] = (m, f"{zoom}x centre crop")
            else:
                still.append(i)
        pending = still
    for i, img in enumerate(images):
        if out[i] is not None:
            continue
        long = max(img.shape[:2])
        if measured[i] is None:
            m, _ = median_side(whole[i], opts)
            if m is None:
                out[i] = (None, "no objects found at S nor in the zoomed centre crops")
                continue
            measured[i] = (m, "whole photo")
        m, where = measured[i]
        side = int(opts.size) if opts.size else max(s, round(m * s / opts.auto_target_px))
        zoom = long / side
        head = f"objects {m * s / long:.0f} px at S (median {m:.0f} px, {where})"
        if zoom < opts.auto_min_zoom:
            out[i] = (None, f"{head}: {side} px tiles would enlarge them only {zoom:.1f}x")
        else:
            out[i] = (replace(opts, size=side), f"small {head}: {side} px tiles show them at {m * s / side:.0f} px")
    return out  # type: ignore[return-value]


__all__ = ["PROBE_ZOOMS", "centre_crop", "median_side", "plan_auto"]
