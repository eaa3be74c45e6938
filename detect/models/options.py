"""Options declared where they live: :func:`option` fields carry their allowed values, and
:class:`ModelSettings` holds the model-level settings every detector builder reads.

A recipe section is a dataclass whose fields may be declared with :func:`option`::

    @dataclass
    class SSDOptions:
        neg_pos_ratio: int = option(3, at_least(1))
        box_loss: str = option("giou", choices=("giou", "ciou"))

``detect.config.validate`` walks every section (``data``, ``augment``, ``train``, ``eval``, ``model`` and each
head's ``model.<name>``) and refuses a value outside its :class:`Check` (``"<key>: must be <what>, got <value>"``)
or its ``choices`` (``"<key>: '<value>' is not one of a, b"``). A head's options dataclass sits beside the head's
module and is registered with it in :data:`detect.models.build.DETECTORS`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple


class Check(NamedTuple):
    """A test a value must pass, and what it must be (``"must be {what}"`` in the error)."""

    ok: Callable[[Any], bool]
    what: str


def at_least(low: float) -> Check:
    """``value >= low``."""
    return Check(lambda v: v >= low, f">= {low}")


def above(low: float) -> Check:
    """``value > low``."""
    return Check(lambda v: v > low, f"> {low}")


def within(low: float, high: float, bounds: str = "[]") -> Check:
    """``low <= value <= high``; ``bounds`` ``"[)"``, ``"(]"`` or ``"()"`` make an end open."""
    lo_open, hi_open = bounds[0] == "(", bounds[1] == ")"
    return Check(lambda v: (v > low if lo_open else v >= low) and (v < high if hi_open else v <= high),
                 f"in {bounds[0]}{low}, {high}{bounds[1]}")


PROBABILITY = Check(lambda v: 0 <= v <= 1, "a probability in [0, 1]")


def option(default: Any, check: Check | None = None, *, choices: tuple[str, ...] = ()) -> Any:
    """A dataclass field with default ``default`` whose value must pass ``check`` and be one of ``choices``
    (when given); ``detect.config.validate`` reads both from the field's metadata."""
    return dataclasses.field(default=default, metadata={"check": check, "choices": choices})


@dataclass
class ModelSettings:
    """The model section's settings shared by every detector: what a ``build_<name>(settings, options,
    num_classes)`` reads besides its own options. ``detect.models.build.ModelConfig`` adds one options object
    per registered head (``model.<name>``)."""

    name: str = "ssd"  # ssd | fast_rcnn | yolo (detect.models.build.DETECTORS), or a torchvision peer: tv_fcos, ...
    backbone: str = "efficientnet_lite0"  # efficientnet_lite0 | resnet18 | resnet50 | mobilenet_v3_large | vgg16
    backbone_weights: str = "imagenet"  # imagenet | none | path to a .pth / .safetensors file
    freeze_at: int = option(0, at_least(0))  # freeze the stem and the first N stages (0 = train everything)
    frozen_bn: bool = False  # freeze BatchNorm statistics and affine params (small batches)
    dropout: float = option(0.0, within(0, 1, "[)"))  # dropout in the head
    score_thresh: float = option(0.05, within(0, 1))
    nms_thresh: float = option(0.5, within(0, 1, "(]"))
    agnostic_nms: bool = False  # one NMS over all classes: one box per product on dense shelves
    max_detections: int = option(300, at_least(1))
