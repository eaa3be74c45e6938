"""The shared detector skeleton: settings swapped and restored, empty targets, registration."""

from __future__ import annotations

import pytest
import torch

from detect.models.build import DETECTORS, ModelConfig, build_model
from detect.models.detector import Detector, postprocess_settings


def _model(name: str) -> Detector:
    cfg = ModelConfig(name=name, backbone_weights="none")
    cfg.fast_rcnn.anchor_sizes = (16.0, 32.0, 64.0)
    torch.manual_seed(0)
    return build_model(cfg, num_classes=2)


@pytest.mark.parametrize("name", list(DETECTORS))
def test_empty_targets_give_zero_box_loss_and_a_finite_total(name):
    model = _model(name).train()
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}] * 2
    losses = model(images, empty)
    box_terms = [k for k in losses if "box" in k or k == "dfl"]
    assert box_terms and all(losses[k].item() == 0.0 for k in box_terms), losses
    total = sum(losses.values())
    assert torch.isfinite(total) and total.item() > 0  # the background is still learnt
    total.backward()


@pytest.mark.parametrize("name", list(DETECTORS))
def test_postprocess_settings_apply_and_restore(name):
    model = _model(name).eval()
    images = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    before = model.post
    with torch.no_grad(), postprocess_settings(model, score_thresh=0.0, max_detections=7) as post:
        assert model.post is post and post.max_detections == 7
        assert len(model(images)[0]["scores"]) == 7  # an untrained head scores everything above 0
    assert model.post is before
    with torch.no_grad(), postprocess_settings(model, score_thresh=1.0):
        assert len(model(images)[0]["scores"]) == 0


def test_training_without_targets_is_refused():
    with pytest.raises(ValueError, match="SSD in training mode needs targets"):
        _model("ssd").train()(torch.zeros(1, 3, 64, 64))
