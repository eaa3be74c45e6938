import json

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from data_tools.outputs import OutputRefused
from data_tools.records import Problem
from detect.config import Config
from detect.data.proposals import ProposalsForFiles
from detect.engine.inference.predictor import Predictor
from detect.engine.inference.sources import expand_sources, load_source
from detect.engine.inference.tiling import TileOptions
from detect.engine.runtime.checkpoint import load_model
from detect.verbs import predict_output as po
from detect.verbs.predict_run import run_predict

NAMES = ["cola", "chips"]
S = 64


class KnownBoxModel(nn.Module):
    """Eval contract: one box [8, 4, 40, 24] (tensor pixels, label 2, 0.9) + one 0.1 box per image."""

    def forward(self, images):
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, S, S)
        box = torch.tensor([[8.0, 4.0, 40.0, 24.0], [0.0, 0.0, 5.0, 5.0]])
        return [
            {"boxes": box.clone(), "scores": torch.tensor([0.9, 0.1]), "labels": torch.tensor([2, 1])}
            for _ in range(images.shape[0])
        ]


class BlobModel(nn.Module):
    """Eval contract: every bright rectangle of the input tensor is a class-1 detection."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.calls = []

    def forward(self, images):
        self.calls.append(tuple(images.shape))
        out = []
        for img in images:
            mask = (img[0] > 127).numpy().astype(np.uint8)
            n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
            xywh = torch.from_numpy(stats[1:, :4]).float()
            out.append(
                {
                    "boxes": torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1).reshape(-1, 4),
                    "scores": torch.full((n - 1,), 0.8),
                    "labels": torch.ones(n - 1, dtype=torch.int64),
                }
            )
        return out


def _rgb(h, w, rect=None):
    img = np.full((h, w, 3), 30, dtype=np.uint8)
    if rect:
        x1, y1, x2, y2 = rect
        img[y1:y2, x1:x2] = 255
    return img


def _save(path, img):
    assert cv2.imwrite(str(path), img[..., ::-1].copy())


def test_boxes_mapped_back_exactly():
    p = Predictor(KnownBoxModel(), NAMES, S, device="auto", conf=0.25, tile="off")
    # letterbox scale = S / long side: 0.32 for 200 x 100, 0.5 for 96 x 128 (portrait)
    res = p.predict_images([_rgb(100, 200), _rgb(128, 96)])
    assert p.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    torch.testing.assert_close(res[0]["boxes"], torch.tensor([[25.0, 12.5, 125.0, 75.0]]))
    torch.testing.assert_close(res[1]["boxes"], torch.tensor([[16.0, 8.0, 80.0, 48.0]]))
    assert res[0]["labels"].tolist() == [2] and res[0]["scores"].tolist() == pytest.approx([0.9])
    assert (res[0]["width"], res[0]["height"], res[0]["tiles"]) == (200, 100, 0)
    with pytest.raises(ValueError):
        p.predict_images([np.zeros((10, 10), np.uint8)])


def test_batched_and_tiled_image_found_at_right_place():
    model = BlobModel()
    rect = (1234, 777, 1294, 857)
    p = Predictor(
        model, NAMES, S, conf=0.25, tile=TileOptions(mode="on", size=512), batch_size=16
    )
    big, small = _rgb(1500, 2000, rect), _rgb(48, 64, (8, 8, 24, 40))
    res = p.predict_images([big, small])
    assert res[0]["tiles"] > 1 and res[1]["tiles"] == 0
    assert res[0]["boxes"].shape == (1, 4)
    # a tile is 512 px at S = 64: one tensor pixel is 8 image pixels
    torch.testing.assert_close(res[0]["boxes"][0], torch.tensor(rect, dtype=torch.float32), atol=8.0, rtol=0)
    torch.testing.assert_close(res[1]["boxes"][0], torch.tensor([8.0, 8.0, 24.0, 40.0]), atol=1.0, rtol=0)
    assert all(c[0] <= 16 for c in model.calls) and sum(c[0] for c in model.calls) == res[0]["tiles"] + 2


@pytest.fixture
def tree(tmp_path):
    """shelves/{a.png, sub/b.jpg, sub/bad.jpg (garbage), empty.jpg (0 bytes), notes.txt}"""
    root = tmp_path / "shelves"
    (root / "sub").mkdir(parents=True)
    _save(root / "a.png", _rgb(60, 80, (10, 20, 30, 50)))
    _save(root / "sub" / "b.jpg", _rgb(120, 100, (40, 10, 90, 60)))
    (root / "sub" / "bad.jpg").write_bytes(b"this is not a jpeg")
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.txt").write_text("ignored")
    return root


def test_expand_sources(tree, tmp_path):
    src = expand_sources(
        [str(tree), str(tree / "a.png"), str(tmp_path / "*" / "sub" / "*.jpg"), "missing.jpg"]
    )
    rels = [s.rel for s in src.files]
    assert rels == ["shelves/a.png", "shelves/empty.jpg", "shelves/sub/b.jpg", "shelves/sub/bad.jpg"]
    assert src.dirs == [tree]
    assert [p.kind for p in src.problems] == ["missing_source"]
    assert [s.rel for s in expand_sources([str(tree / "**" / "*.jpg")]).files] == [
        "empty.jpg",
        "sub/b.jpg",
        "sub/bad.jpg",
    ]
    assert expand_sources([str(tmp_path / "*.bmp")]).problems[0].kind == "no_match"


def test_bad_images_reported_good_ones_predicted(tree):
    p = Predictor(BlobModel(), NAMES, S, tile="off", batch_size=2)
    out = dict(p.predict_paths([str(tree), str(tree / "sub" / "b.jpg"), str(tree / "nope.png")]))
    assert set(out) == {str(tree / n) for n in ["a.png", "empty.jpg", "sub/b.jpg", "sub/bad.jpg"]} | {
        str(tree / "nope.png")
    }
    kinds = {"empty.jpg": "bad_image", "sub/bad.jpg": "bad_image", "nope.png": "missing_source"}
    for bad, kind in kinds.items():
        err = out[str(tree / bad)]
        assert isinstance(err, Problem) and err.file == str(tree / bad) and err.reason and err.kind == kind
    torch.testing.assert_close(
        out[str(tree / "a.png")]["boxes"], torch.tensor([[10.0, 20.0, 30.0, 50.0]]), atol=1.0, rtol=0
    )
    torch.testing.assert_close(
        out[str(tree / "sub/b.jpg")]["boxes"], torch.tensor([[40.0, 10.0, 90.0, 60.0]]), atol=2.0, rtol=0
    )


@pytest.fixture
def checkpoint(tmp_path, monkeypatch):
    import detect.models.build as build

    monkeypatch.setattr(build, "build_model", lambda cfg, num_classes, image_size=320: BlobModel())
    cfg = Config()
    cfg.data.image_size = S
    path = tmp_path / "w.pt"
    torch.save(
        {
            "model": {"w": torch.zeros(1)},
            "ema": {"module.w": torch.ones(1)},
            "config": cfg.to_dict(),
            "class_names": NAMES,
        },
        path,
    )
    return path


def test_load_model_prefers_ema(checkpoint):
    model, names, cfg = load_model(checkpoint, use_ema=True, score_thresh=0.3)
    assert model.w.item() == 1.0 and names == NAMES and cfg.model.score_thresh == 0.3 and not model.training
    model, _, _ = load_model(checkpoint, use_ema=False)
    assert model.w.item() == 0.0
    p = Predictor.from_weights(str(checkpoint), device="cpu", conf=0.5)
    assert p.image_size == S and p.class_names == NAMES and p.model.w.item() == 1.0


def test_run_predict_outputs(tree, tmp_path, checkpoint):
    out = tmp_path / "out"
    inputs = {f: f.read_bytes() for f in tree.rglob("*") if f.is_file()}
    summary = run_predict(str(checkpoint), [str(tree)], out, device="cpu", csv=True, batch_size=2)
    assert summary["images"] == 2 and summary["errors"] == 2 and summary["detections"] == 2
    assert summary["class_counts"] == {"cola": 2} and summary["drawn"] == 2
    doc = json.loads((out / po.JSON_NAME).read_text())
    assert {e["file"] for e in doc["errors"]} == {str(tree / "empty.jpg"), str(tree / "sub" / "bad.jpg")}
    a = next(e for e in doc["images"] if e["path"].endswith("a.png"))
    assert a["width"] == 80 and a["height"] == 60 and a["counts"] == {"cola": 1}
    assert a["detections"][0]["row"] == 0 and a["rows"] == [{"row": 0, "count": 1, "classes": {"cola": 1}}]
    assert (out / "images" / "shelves" / "a.png").is_file() and (
        out / "images" / "shelves" / "sub" / "b.jpg"
    ).is_file()
    assert len((out / po.CSV_NAME).read_text().splitlines()) == 3
    assert not [f for f in out.rglob("*") if f.name.endswith(".tmp")]
    assert {f: f.read_bytes() for f in tree.rglob("*") if f.is_file()} == inputs  # inputs untouched


def test_run_predict_refuses_out_over_inputs(tree, checkpoint):
    for out in [tree, tree / "sub", tree / "pred"]:
        with pytest.raises(OutputRefused):
            run_predict(str(checkpoint), [str(tree)], out, device="cpu")
    with pytest.raises(OutputRefused):
        run_predict(str(checkpoint), [str(tree / "sub" / "b.jpg")], tree / "sub", device="cpu")
    assert not (tree / po.JSON_NAME).exists() and not (tree / "images").exists()


def test_run_predict_no_images(tmp_path, checkpoint):
    summary = run_predict(
        str(checkpoint), [str(tmp_path / "none" / "*.jpg")], tmp_path / "out", device="cpu", draw=False
    )
    assert summary["images"] == 0 and summary["errors"] == 1
    assert json.loads((tmp_path / "out" / po.JSON_NAME).read_text())["images"] == []


class PickyModel(BlobModel):
    """Fails on any batch holding a black image (pixel 0 at the top-left corner)."""

    def forward(self, images):
        if (images[:, :, 0, 0] == 0).all(dim=1).any():
            raise RuntimeError("cannot handle black images")
        return super().forward(images)


def test_image_failing_in_model_is_reported(tmp_path):
    _save(tmp_path / "a.png", _rgb(40, 40, (5, 5, 20, 20)))
    _save(tmp_path / "b.png", np.zeros((40, 40, 3), np.uint8))
    _save(tmp_path / "c.png", _rgb(40, 40, (5, 5, 20, 20)))
    p = Predictor(PickyModel(), NAMES, S, tile="off", batch_size=3)
    out = dict(p.predict_paths([str(tmp_path)]))
    assert (
        isinstance(out[str(tmp_path / "b.png")], Problem) and "black" in out[str(tmp_path / "b.png")].reason
    )
    assert out[str(tmp_path / "b.png")].kind == "predict_failed"
    assert (
        out[str(tmp_path / "a.png")]["boxes"].shape == (1, 4)
        and out[str(tmp_path / "c.png")]["labels"].numel() == 1
    )
    with pytest.raises(RuntimeError):  # nothing ever worked: a broken model is raised, not reported
        Predictor(PickyModel(), NAMES, S, tile="off")._predict_chunk(
            [np.zeros((9, 9, 3), np.uint8)]
        )


def test_agnostic_nms_can_be_switched_at_predict_time(tmp_path):
    """A model trained with class-aware NMS keeps boxes of two classes on one spot; --agnostic-nms keeps one."""
    from torchvision.ops import box_iou

    from detect.config import config_from_dict
    from detect.engine.runtime.checkpoint import save_checkpoint
    from detect.models.build import build_model

    torch.manual_seed(0)
    cfg = config_from_dict({"model": {"name": "ssd", "backbone_weights": "none"}, "data": {"image_size": S}})
    model = build_model(cfg.model, len(NAMES))
    path = save_checkpoint(tmp_path / "w.pt", {"model": model.state_dict(), "config": cfg.to_dict(),
                                               "class_names": NAMES})
    image = _rgb(S, S, (10, 10, 40, 40))

    def cross_class_overlaps(agnostic):
        p = Predictor.from_weights(str(path), device="cpu", conf=0.0, tile="off", agnostic_nms=agnostic)
        r = p.predict_images([image])[0]
        iou = box_iou(r["boxes"], r["boxes"])
        other = r["labels"][:, None] != r["labels"][None, :]
        return int(((iou > cfg.model.nms_thresh) & other).sum()), p

    aware, p_aware = cross_class_overlaps(None)
    agnostic, p_agnostic = cross_class_overlaps(True)
    assert not p_aware.model.post.agnostic and p_agnostic.model.post.agnostic and p_agnostic.agnostic
    assert aware > 0 and agnostic == 0


class ProposalEchoModel(nn.Module):
    """Needs external proposals (no RPN): returns each image's proposals (tensor pixels) as class-1 boxes."""

    needs_proposals = True

    def forward(self, images, proposals):
        assert len(proposals) == images.shape[0]
        ones = [torch.ones(len(p), dtype=torch.int64) for p in proposals]
        return [{"boxes": p.clone(), "scores": 0.9 * k.float(), "labels": k} for p, k in zip(proposals, ones)]


def test_photos_carry_their_proposals_through_the_predictor(tmp_path):
    """Each photo carries its own proposals (looked up once); one the file does not name, or whose boxes do
    not fit it, is a typed problem; an unreadable photo stays a bad image whatever the file says."""
    photos = tmp_path / "photos"
    photos.mkdir()
    _save(photos / "big.png", _rgb(300, 400))  # tiled without its proposals (tile on, T = 128)
    _save(photos / "small.png", _rgb(40, 50))
    _save(photos / "unnamed.png", _rgb(40, 50))
    _save(photos / "outside.png", _rgb(40, 50))
    (photos / "broken.png").write_bytes(b"not a png")
    table = tmp_path / "props.json"
    table.write_text(json.dumps({"big.png": [[100, 50, 300, 250]],
                                 "photos/small.png": [[5, 5, 45, 30], [0, 0, 9, 9]],
                                 "outside.png": [[60, 0, 70, 10]], "broken.png": [[0, 0, 1, 1]]}))
    src = expand_sources([str(photos)])
    src.attach_proposals(ProposalsForFiles(table))
    broken = next(f for f in src.files if f.path.name == "broken.png")
    assert broken.proposals is not None and load_source(broken).problem.kind == "bad_image"  # read first
    p = Predictor(ProposalEchoModel(), NAMES, S, tile=TileOptions(mode="on", size=128), batch_size=2)
    out = {pred.source.path.name: pred for pred in p.iter_predictions(src)}
    big, small = out["big.png"].result, out["small.png"].result
    assert big["tiles"] == 0 and big["boxes"].tolist() == [[100, 50, 300, 250]]  # original px, round trip
    torch.testing.assert_close(small["boxes"], torch.tensor([[5.0, 5.0, 45.0, 30.0], [0.0, 0.0, 9.0, 9.0]]))
    assert out["broken.png"].error.kind == "bad_image"
    unnamed, outside = out["unnamed.png"].error, out["outside.png"].error
    assert unnamed.kind == "bad_proposals" and "no proposals" in unnamed.reason
    assert outside.kind == "bad_proposals" and "lies outside" in outside.reason
