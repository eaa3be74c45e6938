"""Tiling end to end with fake detectors: products on the seams counted once, the auto rule, the tile flags."""

import numpy as np
import pytest
import torch

from detect.engine.inference.predictor import Predictor
from detect.engine.inference.tiling import TileOptions, auto_decision, predict_tiled, tile_windows
from tests.engine.test_tiling import _image, blob_detector

H, W, T, OV = 1500, 2000, 400, 0.25


def _overlaps(length: int) -> list[tuple[int, int]]:
    """``[(a, b), ...]``: the spans shared by neighbouring windows along one side."""
    starts = sorted({int(v) for v in tile_windows(T, length, T, OV)[:, 0]})
    return [(s, p + T) for p, s in zip(starts, starts[1:])]


def seam_products() -> list[tuple[int, int, int, int]]:
    """Products placed on every kind of seam of a ``W x H`` photo cut into ``T`` px tiles with overlap ``OV``.

    Across each vertical seam (top tile row, away from the horizontal seams): wholly inside the overlap (both
    tiles see it whole), crossing the left or right edge of the overlap (one tile sees it whole), and wider
    than the overlap (only cut views). Across each horizontal seam (left tile column): the same kinds. Two
    products on 4-way corners, larger than the overlap in both directions: no tile sees them whole.
    """
    xs, ys = _overlaps(W), _overlaps(H)
    kinds = [lambda a, b: (a + 15, b - 15), lambda a, b: (a - 40, a + 50), lambda a, b: (b - 50, b + 40),
             lambda a, b: (a - 35, b + 35)]
    out = []
    for i, (a, b) in enumerate(xs):
        x1, x2 = kinds[i % 4](a, b)
        out.append((x1, 90, x2, 200))
    for j, (a, b) in enumerate(ys):
        y1, y2 = kinds[(j + 1) % 4](a, b)
        out.append((60, y1, 180, y2))
    for i, j in ((2, 1), (4, 3)):
        (ax, bx), (ay, by) = xs[i], ys[j]
        out.append((ax - 30, ay - 25, bx + 30, by + 25))
    return out


def test_seam_layout_covers_every_case():
    boxes = seam_products()
    wins = tile_windows(H, W, T, OV)
    whole = [sum(bool(w[0] <= b[0] and w[1] <= b[1] and b[2] <= w[2] and b[3] <= w[3]) for w in wins) for b in boxes]
    assert 0 in whole and 1 in whole and 2 in whole  # no tile sees it whole / one tile does / two do
    for k, a in enumerate(boxes):  # apart: one blob each
        for b in boxes[k + 1:]:
            assert a[2] + 5 < b[0] or b[2] + 5 < a[0] or a[3] + 5 < b[1] or b[3] + 5 < a[1]


def shrunk(detector, px: int):
    """A detector whose boxes stop ``px`` crop pixels short of the object on every side (as real ones do)."""
    def run(crops):
        out = detector(crops)
        for r in out:
            r["boxes"] = r["boxes"] + torch.tensor([px, px, -px, -px], dtype=torch.float32)
        return out
    return run


@pytest.mark.parametrize("full_image", [False, True])
@pytest.mark.parametrize("short", [0, 2])
def test_products_on_seams_counted_once(full_image, short):
    products = seam_products()
    img = _image(H, W, products)
    opts = TileOptions(mode="on", size=T, overlap=OV, full_image=full_image)
    r = predict_tiled(shrunk(blob_detector, short), img, 200, opts)
    assert len(r["boxes"]) == len(products)  # one box per product, none doubled, none split
    got = sorted(r["boxes"].tolist())
    want = sorted([float(v) + d for v, d in zip(b, (short, short, -short, -short))] for b in products)
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), atol=0.01, rtol=0)
