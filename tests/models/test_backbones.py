"""Backbones: ImageNet weights really load (classification as before), shapes, freezing, missing weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import FrozenBatchNorm2d

from data_tools.images import read_image
from data_tools.synth import make_tiny_dataset
from detect.models.backbones import build_backbone
from detect.models.efficientnet_lite import efficientnet_lite0

FREIBURG_WATER = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "freiburg" / "images" / "water"
BOTTLES = {440, 720, 737, 898, 899, 907}  # ImageNet: beer/pill/pop/water bottle, water jug, wine bottle


def _batch(paths: list[Path], size: int = 224) -> torch.Tensor:
    import cv2

    ims = [cv2.resize(read_image(p), (size, size), interpolation=cv2.INTER_AREA) for p in paths]
    x = torch.from_numpy(np.stack(ims)).permute(0, 3, 1, 2).float()
    return (x / 255 - 0.5) / 0.5


def test_lite0_weights_load_and_classify_as_before(tmp_path):
    """ImageNet weights load: a synthetic shelf photo gets a confident class, as when the weights were first checked."""
    net = efficientnet_lite0().eval()
    rs = make_tiny_dataset(tmp_path, images=1, classes=3, seed=0, size=(224, 224))
    with torch.no_grad():
        p = net(_batch([tmp_path / rs.records[0].image])).softmax(1)[0]
    random = efficientnet_lite0(pretrained=False).eval()
    with torch.no_grad():
        q = random(_batch([tmp_path / rs.records[0].image])).softmax(1)[0]
    assert p.max() > 0.05 > q.max()  # ImageNet weights are confident, random ones are not
    # top-1 recorded on 2026-11-22: 539 ("doormat", a striped flat texture); robust to kernel-level changes
    assert int(p.argmax()) == 539


@pytest.mark.skipif(not FREIBURG_WATER.is_dir(), reason="../shared/data/freiburg is not present")
def test_lite0_sees_bottles_in_real_water_photos():
    paths = sorted(FREIBURG_WATER.glob("*.jpg"))[:40]
    with torch.no_grad():
        top5 = efficientnet_lite0().eval()(_batch(paths)).topk(5, dim=1).indices
    hits = np.mean([bool(set(t.tolist()) & BOTTLES) for t in top5])
    assert hits >= 0.8, hits  # measured: 0.875 (0.725 with symmetric instead of TF-SAME padding)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet18", "mobilenet_v3_large", "vgg16"])
def test_backbone_shapes(name):
    b = build_backbone(name, weights="none")
    feats = b(b.normalize(torch.zeros(1, 3, 64, 96, dtype=torch.uint8)))
    assert [f.shape[1] for f in feats] == b.out_channels and b.strides == [8, 16, 32]
    assert [tuple(f.shape[-2:]) for f in feats] == [(8, 12), (4, 6), (2, 3)]


def test_normalize_matches_the_weights_convention():
    b = build_backbone("efficientnet_lite0", weights="none")
    x = torch.tensor([0.0, 127.5, 255.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert torch.allclose(b.normalize(x)[0, :, 0, 0], torch.tensor([-1.0, 0.0, 1.0]))


def test_freeze_unfreeze_and_frozen_bn():
    b = build_backbone("efficientnet_lite0", weights="none", freeze_at=2, frozen_bn=False)
    assert not any(p.requires_grad for s in b.stages[:3] for p in s.parameters())
    assert all(p.requires_grad for p in b.stages[3].parameters())
    b.train()
    assert not b.stages[0][1].training and b.stages[3][0]._bn0.training  # frozen stages keep BN stats
    b.unfreeze()
    assert all(p.requires_grad for p in b.parameters())
    f = build_backbone("resnet18", weights="none", frozen_bn=True)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in f.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in f.modules())


def test_missing_torchvision_weights_say_where_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"resnet50-11ad3fa6\.pth.*download\.pytorch\.org"):
        build_backbone("resnet50", weights="imagenet", weights_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("resnet7")
