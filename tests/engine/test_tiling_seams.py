"""Tiling end to end with fake detectors: products on the seams counted once, the auto rule, the tile flags."""

import re

import numpy as np
import pytest
import torch

from detect.engine.inference.predictor import Predictor
from detect.engine.inference.tiling import TileOptions, predict_tiled, tile_windows
from detect.engine.inference.tiling_auto import plan_auto
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


# ----------------------------------------------------------------------------- auto


def _dets(*boxes, score=0.9):
    b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return {"boxes": b, "scores": torch.full((len(b),), score), "labels": torch.ones(len(b), dtype=torch.int64)}


def _never(crops):
    raise AssertionError("no probe expected")


def test_auto_rule_off_for_large_objects_on_for_small():
    opts, s, photo = TileOptions(), 224, np.zeros((3000, 4000, 3), np.uint8)
    big = _dets(*[(1300 * i, 0, 1300 * i + 1200, 1500) for i in range(3)])  # ~1340 px objects: 75 px at S
    assert plan_auto([photo], [big], _never, s, opts) == [(None, "large objects: median 75 px at S (>= 24)")]
    # 127 px objects: 7 px at S, not resolved; the 4x centre crop (1000 x 750) sees them at 28 px
    small = _dets(*[(100 * i, 0, 100 * i + 90, 180) for i in range(30)])
    probes = []

    def probe(crops):
        probes.append([c.shape[:2] for c in crops])
        return [_dets(*[(100 * i, 0, 100 * i + 90, 180) for i in range(8)]) if c.shape[0] == 750 else _dets()
                for c in crops]

    [(own, reason)] = plan_auto([photo], [small], probe, s, opts)
    assert probes == [[(1500, 2000)], [(750, 1000)]]  # 2x found nothing resolved, 4x did
    assert own.size == round(127.3 * s / 32) and own.overlap == opts.overlap  # the median shown at 32 px
    assert reason.startswith("small objects 7 px at S (median 127 px, 4x centre crop): 891 px tiles")
    # the user's --tile-size wins; a zoom under 1.5 is not worth tiling
    assert plan_auto([photo], [small], probe, s, TileOptions(size=640))[0][0].size == 640
    assert plan_auto([photo], [small], probe, s, TileOptions(size=3000))[0][0] is None
    # nothing resolved anywhere: the whole photo's boxes size the tiles; nothing at all: not tiled
    assert plan_auto([photo], [small], lambda c: [_dets() for _ in c], s, opts)[0][1].endswith("show them at 32 px")
    assert plan_auto([photo], [_dets()], lambda c: [_dets() for _ in c], s, opts)[0] == (
        None, "no objects found at S nor in the zoomed centre crops")
    faint = _dets(*[(100 * i, 0, 100 * i + 90, 180) for i in range(30)], score=0.1)  # under auto_conf: no vote
    assert plan_auto([photo], [faint], lambda c: [_dets() for _ in c], s, opts)[0][0] is None


class CountingBlobs(torch.nn.Module):
    """Eval contract on the tensor: every bright blob is a class-1 box; counts the crops it saw."""

    def __init__(self):
        super().__init__()
        self.crops = 0

    def forward(self, images):
        self.crops += images.shape[0]
        return blob_detector([im.permute(1, 2, 0).numpy() for im in images])


def test_predictor_auto_tiles_small_products_only_and_reuses_the_whole_pass():
    model = CountingBlobs()
    p = Predictor(model, ["p"], 128, conf=0.5, tile=TileOptions(mode="auto", overlap=0.25))
    large = _image(1500, 2000, [(100, 100, 900, 1400), (1000, 100, 1900, 1400), (100, 1420, 1900, 1490)])
    small = _image(1500, 2000, [(40 + 160 * i, 300 + 300 * j, 120 + 160 * i, 420 + 300 * j)
                                for i in range(12) for j in range(4)])  # 98 px: 6 px at S
    r_large, r_small = p.predict_images([large, small])
    assert r_large["tiles"] == 0 and r_large["tile_reason"].startswith("large objects")
    assert len(r_large["boxes"]) == 3
    side = int(re.search(r"(\d+) px tiles", r_small["tile_reason"]).group(1))
    assert abs(side - 98 * 128 / 32) < 40  # the 4x centre crop measures them: tiles show them at ~32 px
    n_tiles = len(tile_windows(1500, 2000, side, 0.25))
    assert r_small["tiles"] == n_tiles and r_small["tile_reason"].startswith("small objects 6 px at S")
    assert len(r_small["boxes"]) == 48  # every product once
    assert model.crops == 2 + 2 + n_tiles  # each whole photo once (the small one's is its whole view), 2 probes
    p.tile = TileOptions(mode="on", size=400, overlap=0.25)
    assert p.predict_images([large])[0]["tiles"] == len(tile_windows(1500, 2000, 400, 0.25))  # on: as before
