"""``build_model(cfg.model, num_classes)``: a plain dict from detector name to its factory."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from detect.config import ModelConfig
from detect.models.fast_rcnn import build_fast_rcnn
from detect.models.ssd import build_ssd
from detect.models.yolo import build_yolo

FACTORIES: dict[str, Callable[[ModelConfig, int], nn.Module]] = {
    "ssd": build_ssd,
    "fast_rcnn": build_fast_rcnn,
    "yolo": build_yolo,
}


def build_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """The detector named ``cfg.name`` for classes 1..``num_classes``; it keeps ``model.backbone``."""
    if cfg.name not in FACTORIES:
        raise ValueError(f"unknown model.name '{cfg.name}'; choose one of {', '.join(FACTORIES)}")
    if num_classes < 1:
        raise ValueError("a detector needs at least one class")
    return FACTORIES[cfg.name](cfg, num_classes)


def set_postprocess(model: nn.Module, score_thresh: float | None = None, max_detections: int | None = None
                    ) -> dict[str, float | int]:
    """Set the postprocess score threshold / detection cap on every submodule that has them (the detector
    itself, or Fast R-CNN's box head). Returns the previous values, for restoring."""
    old: dict[str, float | int] = {}
    for m in model.modules():
        if hasattr(m, "score_thresh") and hasattr(m, "max_detections"):
            old = old or {"score_thresh": m.score_thresh, "max_detections": m.max_detections}
            if score_thresh is not None:
                m.score_thresh = score_thresh
            if max_detections is not None:
                m.max_detections = max_detections
    return old
