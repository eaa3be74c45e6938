import cv2
import numpy as np
import pytest
import torch

from detect.engine.inference.tiling import (
    TileOptions,
    merge_crops,
    plan_crops,
    predict_tiled,
    should_tile,
    tile_windows,
)


def blob_detector(crops):
    """Fake detector on crops (crop pixels): every white rectangle is one class-1 detection."""
    out = []
    for c in crops:
        mask = (c[..., 0] > 200).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
        xywh = stats[1:, :4].astype(np.float32)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1).reshape(-1, 4)
        out.append(
            {
                "boxes": torch.from_numpy(boxes),
                "scores": torch.full((n - 1,), 0.9),
                "labels": torch.ones(n - 1, dtype=torch.int64),
            }
        )
    return out


def _image(h, w, rects):
    img = np.zeros((h, w, 3), dtype=np.uint8)
    for x1, y1, x2, y2 in rects:
        img[y1:y2, x1:x2] = 255
    return img


def test_windows_cover_and_overlap():
    win = tile_windows(1500, 2000, 400, 0.25)
    assert win[:, 0].min() == 0 and win[:, 1].min() == 0
    assert win[:, 2].max() == 2000 and win[:, 3].max() == 1500
    assert ((win[:, 2:] - win[:, :2]) == 400).all()
    xs = np.unique(win[:, 0])
    assert (np.diff(xs) <= 300).all()  # neighbours share >= 25 %
    assert tile_windows(100, 50, 400, 0.2).tolist() == [[0, 0, 50, 100]]


def test_should_tile():
    opts = TileOptions()  # tile side 2 * S
    assert not should_tile(480, 640, 320, opts)
    assert should_tile(3000, 4000, 320, opts)
    assert not should_tile(3000, 4000, 320, TileOptions(mode="off"))
    assert should_tile(700, 700, 320, TileOptions(mode="on"))
    assert not should_tile(600, 600, 320, TileOptions(mode="on"))  # fits one tile
    with pytest.raises(ValueError):
        TileOptions(mode="sometimes")
    with pytest.raises(ValueError):
        TileOptions(overlap=1.0)


@pytest.mark.parametrize("full_image", [False, True])
def test_object_found_at_right_place(full_image):
    img = _image(1500, 2000, [(1234, 777, 1294, 857)])
    opts = TileOptions(mode="on", size=400, overlap=0.25, full_image=full_image)
    r = predict_tiled(blob_detector, img, 200, opts)
    assert r["boxes"].tolist() == [[1234.0, 777.0, 1294.0, 857.0]]
    assert r["labels"].tolist() == [1]


@pytest.mark.parametrize(
    "rect",
    [
        (350, 100, 500, 180),  # crosses a vertical seam; one tile sees it whole
        (300, 100, 700, 180),  # wider than the overlap: only cut views, merged into one
        (900, 380, 960, 520),  # crosses a horizontal seam
    ],
)
def test_object_on_seam_is_one_detection(rect):
    img = _image(1500, 2000, [rect])
    opts = TileOptions(mode="on", size=400, overlap=0.25, full_image=False)
    r = predict_tiled(blob_detector, img, 200, opts)
    assert r["boxes"].tolist() == [list(map(float, rect))]


def test_neighbours_at_seam_stay_apart():
    # Two products side by side, the second one starting right at the first tile's border.
    rects = [(100, 100, 390, 180), (395, 100, 480, 180)]
    opts = TileOptions(mode="on", size=400, overlap=0.25, full_image=False)
    r = predict_tiled(blob_detector, _image(1500, 2000, rects), 200, opts)
    assert sorted(r["boxes"].tolist()) == [list(map(float, b)) for b in rects]


def test_max_detections_and_empty():
    rects = [(50 + 60 * i, 50, 90 + 60 * i, 90) for i in range(20)]
    opts = TileOptions(mode="on", size=400, overlap=0.25)
    r = predict_tiled(blob_detector, _image(1500, 2000, rects), 200, opts, max_detections=7)
    assert r["boxes"].shape == (7, 4)
    r = predict_tiled(blob_detector, _image(1500, 2000, []), 200, opts)
    assert r["boxes"].shape == (0, 4) and r["labels"].dtype == torch.int64
    crops, windows = plan_crops(_image(10, 10, []), 200, opts)
    assert merge_crops([], windows[:0], (10, 10), 200, opts)["scores"].numel() == 0


def test_object_larger_than_tile_is_one_detection():
    rect = (200, 300, 1300, 900)  # larger than a 400 px tile: every tile sees only a part
    opts = TileOptions(mode="on", size=400, overlap=0.25, full_image=True)
    r = predict_tiled(blob_detector, _image(1500, 2000, [rect]), 200, opts)
    assert r["boxes"].tolist() == [list(map(float, rect))]  # the whole-image pass sees it whole
    opts = TileOptions(mode="on", size=400, overlap=0.25, full_image=False)
    r = predict_tiled(blob_detector, _image(1500, 2000, [rect]), 200, opts)
    assert len(r["boxes"]) < 12  # pieces merged as far as they cover each other, all inside the object
    assert (r["boxes"][:, :2] >= torch.tensor(rect[:2])).all() and (
        r["boxes"][:, 2:] <= torch.tensor(rect[2:])
    ).all()


def test_agnostic_merge_keeps_one_box_per_spot_across_classes():
    opts = TileOptions(mode="on", size=400, overlap=0.25)
    windows = np.array([[0, 0, 400, 400], [300, 0, 700, 400]], dtype=np.int64)
    results = [  # one product seen whole by both tiles, as two look-alike classes
        {"boxes": torch.tensor([[320.0, 100.0, 380.0, 200.0]]), "scores": torch.tensor([0.9]),
         "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[21.0, 101.0, 80.0, 200.0]]), "scores": torch.tensor([0.6]),
         "labels": torch.tensor([2])},
    ]
    aware = merge_crops(results, windows, (400, 700), 200, opts)
    agnostic = merge_crops(results, windows, (400, 700), 200, opts, agnostic=True)
    assert aware["labels"].tolist() == [1, 2] and agnostic["labels"].tolist() == [1]
