"""YOLO detector: output contract, variants, anchor points, and learning on synthetic shelves."""

from __future__ import annotations

import pytest
import torch

from detect.models.build import ModelConfig, build_model
from detect.models.yolo import YOLO, YOLOOptions, anchor_points, build_yolo

SIZE = 128


def _cfg(weights: str = "none", **yolo) -> ModelConfig:
    return ModelConfig(name="yolo", backbone="efficientnet_lite0", backbone_weights=weights, score_thresh=0.01,
                       heads={"yolo": YOLOOptions(**{"neck_channels": 64, "head_channels": 64, **yolo})})


def _targets() -> list[dict[str, torch.Tensor]]:
    return [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 50.0], [30.0, 8.0, 60.0, 40.0]]), "labels": torch.tensor([1, 3])},
            {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]  # an empty image


def test_anchor_points_match_flattened_maps() -> None:
    points, strides = anchor_points([(2, 3), (1, 1)], [8, 16], "cpu")
    assert points.dtype == torch.float32 and points.shape == (7, 2) and strides.tolist() == [8.0] * 6 + [16.0]
    assert points[:4].tolist() == [[4.0, 4.0], [12.0, 4.0], [20.0, 4.0], [4.0, 12.0]]  # row-major (y, then x)
    assert points[6].tolist() == [8.0, 8.0]


@pytest.mark.parametrize("yolo", [
    {},
    {"assigner": "simota", "cls_loss": "varifocal", "box_loss": "ciou"},
    {"dfl": True, "reg_max": 8},
])
def test_output_contract(yolo: dict) -> None:
    torch.manual_seed(0)
    model = build_model(_cfg(**yolo), num_classes=3)
    assert isinstance(model, YOLO) and model.backbone is not None
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    feats = model.features(images)
    sizes = [tuple(f.shape[-2:]) for f in feats]
    cls, box, points, strides = model._raw(feats)
    a = sum(h * w for h, w in sizes)
    assert sizes == [(8, 8), (4, 4), (2, 2)] and cls.shape == (2, a, 3) and points.shape == (a, 2)
    assert box.shape == (2, a, 4 * yolo["reg_max"] if yolo.get("dfl") else 4)
    model.train()
    losses = model(images, _targets())
    assert set(losses) == ({"cls", "box", "dfl"} if yolo.get("dfl") else {"cls", "box"})
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for det in out:
        assert set(det) == {"boxes", "scores", "labels"}
        assert det["boxes"].dtype == torch.float32 and det["boxes"].shape[1:] == (4,)
        assert det["labels"].dtype == torch.int64 and len(det["scores"]) <= 300
        if len(det["labels"]):
            assert det["labels"].min() >= 1 and det["labels"].max() <= 3
            assert det["boxes"].min() >= 0 and det["boxes"].max() <= 64


def test_batch_without_objects_has_zero_box_loss() -> None:
    model = build_model(_cfg(), num_classes=2).train()
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    losses = model(torch.zeros(2, 3, 64, 64, dtype=torch.uint8), [empty, empty])
    assert losses["box"] == 0 and torch.isfinite(losses["cls"]) and losses["cls"] > 0


def test_bad_options_and_missing_targets() -> None:
    with pytest.raises(ValueError, match="tal or simota"):
        build_model(_cfg(assigner="atss"), num_classes=2)
    model = build_model(_cfg(), num_classes=2).train()
    with pytest.raises(ValueError, match="needs targets"):
        model(torch.zeros(1, 3, 64, 64))


def test_registered() -> None:
    from detect.models import build

    assert build.DETECTORS["yolo"].build is build_yolo and "fcos" in build.DETECTORS["yolo"].peers
