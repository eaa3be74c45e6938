"""Learning tests: each detector must learn synthetic shelves on the CPU in a bounded number of steps."""

from __future__ import annotations

import pytest

from detect.config import config_from_dict
from detect.engine.training.trainer import fit


def learning_config(split: dict, name: str, out, epochs: int = 16, **model) -> object:
    """38 train images at 128 px, batch 8: 16 epochs = 64 optimizer steps."""
    return config_from_dict({
        "data": {"train": str(split["train"]), "val": str(split["val"]), "image_size": 128, "workers": 0},
        "model": {"name": name, **model},
        "augment": {"hflip": 0.5},
        "train": {"epochs": epochs, "batch_size": 8, "optimizer": "adamw", "lr": 0.002, "weight_decay": 1e-4,
                  "warmup_epochs": 0.5, "scheduler": "cosine", "eval_every": epochs, "out_dir": str(out)},
    })


@pytest.mark.slow
def test_ssd_learns_synthetic_shelves(shelf_split, tmp_path):
    result = fit(learning_config(shelf_split, "ssd", tmp_path / "ssd"), log=lambda *a: None)
    assert result["steps"] == 64
    assert result["metrics"]["AP50"] >= 0.8, result["metrics"]



@pytest.mark.slow
def test_yolo_learns_synthetic_shelves(shelf_split, tmp_path):
    result = fit(learning_config(shelf_split, "yolo", tmp_path / "yolo"), log=lambda *a: None)
    assert result["metrics"]["AP50"] >= 0.8, result["metrics"]


SMALL_FAST_RCNN = {"anchor_sizes": [16.0, 32.0, 64.0], "rpn_pre_nms_topk": 300, "rpn_post_nms_topk": 100,
                   "rpn_batch_per_image": 128, "roi_batch_per_image": 64, "head_dim": 256,
                   "roi_upsample": 2, "roi_subbins": 2, "roi_class_agnostic": True}  # the recipe's RoI pooling + deltas


@pytest.mark.slow
def test_fast_rcnn_learns_synthetic_shelves(shelf_split, tmp_path):
    cfg = learning_config(shelf_split, "fast_rcnn", tmp_path / "frcnn", fast_rcnn=SMALL_FAST_RCNN)
    result = fit(cfg, log=lambda *a: None)
    assert result["metrics"]["AP50"] >= 0.8, result["metrics"]
