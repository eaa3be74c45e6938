"""Tiled inference for photos much larger than the model input (e.g. 4000 x 3000 at S = 320).

Letterboxing a 4000 px photo to 320 px shrinks every product ~12x. Tiling cuts the photo into
overlapping square windows of ``T = S * scale`` original pixels (``scale`` = k), runs every window
through the model at ``S`` (batched, by the caller), shifts the boxes back and merges them:

1. one global class-aware NMS (``torchvision.ops.batched_nms``) over all windows, ranking whole
   tile views first, then whole-image views, then views cut by a tile border;
2. boxes cut by an interior window border (a side within ~2 tensor pixels of a border that is not
   the image border) are partial views. A cut box mostly covered (intersection / own area >=
   ``cut_ios``) by a larger same-class box is dropped; if that larger box is itself cut, it grows
   to the union of both (two halves of one object). The larger view wins;
3. top ``max_detections`` by score.

By default the whole letterboxed image is predicted too (``full_image``), so objects larger than
the overlap are still found whole; only its large boxes (``full_min`` x tile side and up) are used,
as the tiles see small objects whole and at a higher resolution. Plan with :func:`plan_crops`, predict the crops, merge with
:func:`merge_crops`; :func:`predict_tiled` does all three for one image.

``auto`` mode decides per photo from the objects' size (:mod:`detect.engine.inference.tiling_auto`) and
chooses the tile side; the whole-image pass it starts from is the merge's whole-image view.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import batched_nms, box_area, clip_boxes_to_image

from data_tools.errors import InvalidInput

TILE_MODES = ("auto", "on", "off")


MIN_TILE_PX = 32  # a smaller tile side is a typo: thousands of tiles of a 12 MP photo


@dataclass
class TileOptions:
    """How large photos are tiled (module doc); bad values raise :class:`~data_tools.errors.InvalidInput`."""

    mode: str = "auto"  # auto | on | off
    size: int | None = None  # tile side in original pixels; None = round(image_size * scale)
    scale: float = 2.0  # k: a tile covers k x k model inputs' worth of original pixels
    overlap: float = 0.2  # fraction of the tile side shared by neighbouring tiles
    auto_ratio: float = 2.0  # auto considers tiling a photo whose long side >= auto_ratio * tile side
    full_image: bool = True  # also predict the whole letterboxed image and merge it with the tiles
    full_min: float = 0.25  # ... keeping only its boxes whose longer side >= full_min * tile side
    cut_ios: float = 0.6  # a cut box covered this much by a larger same-class box is merged into it
    border_px: float = 2.0  # a box side this close to a tile border (in model-input pixels) is "cut"
    # auto (tiling_auto): objects whose median side sqrt(w h) at S is under auto_min_px are not resolved;
    # tiles are sized to show them at auto_target_px; a zoom under auto_min_zoom is not worth tiling
    auto_min_px: float = 24.0
    auto_target_px: float = 32.0
    auto_min_zoom: float = 1.5
    auto_conf: float = 0.25  # only detections scoring this and up measure the objects ...
    auto_min_boxes: int = 3  # ... and at least this many of them

    def __post_init__(self) -> None:
        if self.mode not in TILE_MODES:
            raise InvalidInput(f"tile mode must be one of {', '.join(TILE_MODES)}, got {self.mode!r}")
        if not 0.0 <= self.overlap < 1.0:  # also refuses NaN
            raise InvalidInput(f"--overlap must be in [0, 1), got {self.overlap}")
        if self.size is not None and (isinstance(self.size, bool) or int(self.size) != self.size
                                      or self.size < MIN_TILE_PX):
            raise InvalidInput(f"--tile-size must be a whole number of pixels >= {MIN_TILE_PX}, got {self.size}")
        if not self.scale > 0:
            raise InvalidInput(f"tile scale must be > 0, got {self.scale}")
        if not (self.auto_min_px >= 0 and self.auto_target_px > 0 and self.auto_min_zoom >= 1):
            raise InvalidInput("tile auto_min_px must be >= 0, auto_target_px > 0 and auto_min_zoom >= 1")
        if not 0.0 <= self.auto_conf <= 1.0:
            raise InvalidInput(f"tile auto_conf must be in [0, 1], got {self.auto_conf}")

    def describe(self, image_size: int) -> dict:
        """``{"mode", "size", "overlap"}`` as the run's metadata records them (``size``: the tile side in pixels)."""
        return {"mode": self.mode, "size": self.tile_side(image_size), "overlap": self.overlap}

    def tile_side(self, image_size: int) -> int:
        """Tile side ``T`` in original pixels for model input size ``S``."""
        return int(self.size) if self.size else max(1, round(image_size * self.scale))


def should_tile(height: int, width: int, image_size: int, opts: TileOptions) -> bool:
    """Whether an ``height x width`` image is tiled under ``opts`` (never when it fits one tile)."""
    tile = opts.tile_side(image_size)
    if opts.mode == "off" or max(height, width) <= tile:
        return False
    return opts.mode == "on" or max(height, width) >= opts.auto_ratio * tile


def _starts(length: int, tile: int, overlap: float) -> list[int]:
    if length <= tile:
        return [0]
    stride = max(1.0, tile * (1.0 - overlap))
    n = math.ceil((length - tile) / stride) + 1
    return np.round(np.linspace(0, length - tile, n)).astype(int).tolist()


def tile_windows(height: int, width: int, tile: int, overlap: float) -> np.ndarray:
    """Overlapping windows covering the image, evenly spread, each ``min(tile, side)`` long.

    Returns:
        int64 ``[N, 4]`` xyxy in image pixels, row-major (top row of tiles first).
    """
    ys, xs = _starts(height, tile, overlap), _starts(width, tile, overlap)
    th, tw = min(tile, height), min(tile, width)
    return np.array([[x, y, x + tw, y + th] for y in ys for x in xs], dtype=np.int64).reshape(-1, 4)


def plan_crops(image: np.ndarray, image_size: int, opts: TileOptions) -> tuple[list[np.ndarray], np.ndarray]:
    """Crops to predict for one image: the tiles (+ the whole image when ``opts.full_image``).

    Args:
        image: ``H x W x 3`` uint8.

    Returns:
        ``(crops, windows)``: views into ``image`` and their int64 ``[N, 4]`` xyxy windows.
    """
    h, w = image.shape[:2]
    windows = tile_windows(h, w, opts.tile_side(image_size), opts.overlap)
    if opts.full_image:
        windows = np.concatenate([np.array([[0, 0, w, h]], dtype=np.int64), windows])
    crops = [image[y1:y2, x1:x2] for x1, y1, x2, y2 in windows.tolist()]
    return crops, windows


def merge_crops(
    results: list[dict],
    windows: np.ndarray,
    image_hw: tuple[int, int],
    image_size: int,
    opts: TileOptions,
    nms_thresh: float = 0.5,
    max_detections: int = 300,
    agnostic: bool = False,
) -> dict[str, Tensor]:
    """Merge per-crop detections into one image's detections (``agnostic``: one NMS over all classes).

    Args:
        results: one dict per crop: ``boxes`` ``[K, 4]`` xyxy in crop pixels, ``scores`` ``[K]``,
            ``labels`` int64 ``[K]``.
        windows: int64 ``[N, 4]`` crop windows (xyxy image pixels), as from :func:`plan_crops`.
        image_hw: ``(H, W)`` of the image.
        image_size: model input side ``S`` (sets the "cut" tolerance in original pixels).

    Returns:
        ``boxes`` float32 ``[K, 4]`` xyxy image pixels, ``scores`` ``[K]``, ``labels`` int64 ``[K]``,
        sorted by score, ``K <= max_detections``.
    """
    counts = [int(r["boxes"].shape[0]) for r in results]
    device = results[0]["boxes"].device if results else torch.device("cpu")
    if sum(counts) == 0:
        return {
            "boxes": torch.zeros((0, 4), dtype=torch.float32, device=device),
            "scores": torch.zeros(0, dtype=torch.float32, device=device),
            "labels": torch.zeros(0, dtype=torch.int64, device=device),
        }
    win = torch.as_tensor(windows, dtype=torch.float32, device=device)
    win = win.repeat_interleave(torch.as_tensor(counts, device=device), dim=0)  # [N, 4] window of each box
    boxes = torch.cat([r["boxes"].float() for r in results]) + win[:, [0, 1, 0, 1]]
    scores = torch.cat([r["scores"].float() for r in results])
    labels = torch.cat([r["labels"].long() for r in results])
    boxes = clip_boxes_to_image(boxes, image_hw)
    cut = _cut_mask(boxes, win, image_hw, opts.border_px / image_size)
    full = (win == win.new_tensor([0, 0, image_hw[1], image_hw[0]])).all(dim=1) & (len(windows) > 1)
    # The whole-image pass only contributes objects too large for the tiles to see whole and sharp.
    side = (boxes[:, 2:] - boxes[:, :2]).amax(dim=1)
    keep = ~full | (side >= opts.full_min * opts.tile_side(image_size))
    boxes, scores, labels, cut, full = boxes[keep], scores[keep], labels[keep], cut[keep], full[keep]

    groups = torch.zeros_like(labels) if agnostic else labels
    # Pieces of one object cut by different borders (e.g. the 4 views of an object on a 4-way corner) first
    # grow into their union: NMS would keep one piece and drop the others' extent.
    boxes, scores, alive = _absorb_cut(boxes, scores, groups, cut, opts.cut_ios, cut_absorbers=True)
    boxes, scores, labels, groups, cut, full = (t[alive] for t in (boxes, scores, labels, groups, cut, full))
    # NMS rank, whatever the scores: whole tile views > whole-image views > views cut by a tile border.
    prio = torch.where(full, 1.0, torch.where(cut, 0.0, 2.0))
    keep = batched_nms(boxes, scores + prio, groups, nms_thresh)
    boxes, scores, labels, groups, cut = boxes[keep], scores[keep], labels[keep], groups[keep], cut[keep]
    boxes, scores, alive = _absorb_cut(boxes, scores, groups, cut, opts.cut_ios)
    boxes, scores, labels = boxes[alive], scores[alive], labels[alive]
    order = scores.argsort(descending=True)[:max_detections]
    return {"boxes": boxes[order], "scores": scores[order], "labels": labels[order]}


def _cut_mask(boxes: Tensor, win: Tensor, image_hw: tuple[int, int], rel_tol: float) -> Tensor:
    """bool ``[N]``: a box side lies on an interior border of its own window."""
    h, w = image_hw
    side = (win[:, 2:] - win[:, :2]).amax(dim=1, keepdim=True)  # [N, 1] window side in image px
    tol = (rel_tol * side).clamp(min=1.0)
    interior = torch.stack([win[:, 0] > 0, win[:, 1] > 0, win[:, 2] < w, win[:, 3] < h], dim=1)  # [N, 4]
    near = (boxes - win).abs() <= tol  # [N, 4]: x1~wx1, y1~wy1, x2~wx2, y2~wy2
    return (near & interior).any(dim=1)


def _absorb_cut(
    boxes: Tensor, scores: Tensor, labels: Tensor, cut: Tensor, ios: float, cut_absorbers: bool = False,
    max_rounds: int = 64,
) -> tuple[Tensor, Tensor, Tensor]:
    """Drop cut boxes mostly covered by a larger same-label box; grow cut absorbers to the union.

    Args:
        boxes: ``[N, 4]`` xyxy image pixels; scores: ``[N]``; labels: ``[N]`` (the merge groups);
            cut: bool ``[N]``, the box is a view cut by an interior tile border.
        ios: a cut box covered this much (intersection / own area) by a larger one is absorbed.
        cut_absorbers: only cut boxes absorb (pieces of one object grow into their union).

    "Larger" is a strict order: area, then the earlier box, so two equal pieces (an object centred on a
    seam) merge too. Chains (a piece absorbed by a piece absorbed by a larger one) resolve from the largest
    down, one round per link, so no piece's extent is lost.

    Returns:
        ``(boxes [N, 4], scores [N], alive bool [N])``.
    """
    alive = torch.ones_like(scores, dtype=torch.bool)
    boxes, scores = boxes.clone(), scores.clone()
    index = torch.arange(len(scores), device=scores.device)
    for _ in range(max_rounds):
        ci = (cut & alive).nonzero().squeeze(1)  # [M] live cut boxes
        if ci.numel() == 0:
            break
        area = box_area(boxes)  # [N]
        lt = torch.maximum(boxes[ci, None, :2], boxes[None, :, :2])  # [M, N, 2]
        rb = torch.minimum(boxes[ci, None, 2:], boxes[None, :, 2:])
        inter = (rb - lt).clamp(min=0).prod(dim=2)  # [M, N]
        cover = inter / area[ci, None].clamp(min=1e-6)
        larger = (area[None, :] > area[ci, None]) | ((area[None, :] == area[ci, None]) & (index[None, :] < ci[:, None]))
        ok = (cover >= ios) & (labels[ci, None] == labels[None, :]) & larger & alive[None, :]  # [M, N]
        if cut_absorbers:
            ok &= cut[None, :]
        has = ok.any(dim=1)  # [M]: this cut box is covered by a larger one
        if not bool(has.any()):
            break
        # [M] the largest absorber (argmax takes the first of equals: the earlier box, as ``larger`` orders them)
        absorber = torch.where(ok, area[None, :], torch.full_like(cover, -1.0)).argmax(dim=1)
        covered = torch.zeros_like(alive)
        covered[ci[has]] = True
        apply = has & ~covered[absorber]  # absorbers not themselves covered go first
        src, dst = ci[apply], absorber[apply]
        alive[src] = False
        grow = cut[dst]  # only cut absorbers (partial views themselves) grow to the union
        src, dst = src[grow], dst[grow]
        if src.numel():
            idx = dst[:, None].expand(-1, 2)
            boxes[:, :2] = boxes[:, :2].scatter_reduce(0, idx, boxes[src, :2], reduce="amin")
            boxes[:, 2:] = boxes[:, 2:].scatter_reduce(0, idx, boxes[src, 2:], reduce="amax")
            scores = scores.scatter_reduce(0, dst, scores[src], reduce="amax")
    return boxes, scores, alive


def predict_tiled(
    predict_crops: Callable[[list[np.ndarray]], list[dict]],
    image: np.ndarray,
    image_size: int,
    opts: TileOptions,
    nms_thresh: float = 0.5,
    max_detections: int = 300,
) -> dict[str, Tensor]:
    """Tile one ``H x W x 3`` image, predict the crops with ``predict_crops`` (crop pixels out), merge."""
    crops, windows = plan_crops(image, image_size, opts)
    results = predict_crops(crops)
    return merge_crops(results, windows, image.shape[:2], image_size, opts, nms_thresh, max_detections)
