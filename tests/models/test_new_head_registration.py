"""Adding a detector head takes its module (the head, its options dataclass with choices and ranges declared by
``option``, its builder), its recipe, its test and one registration line: this test is the proof. It writes a
(deliberately tiny) head here, registers it with one ``DetectorSpec`` naming its builder and options, and the
recipe's ``model.<name>`` section, config validation, training, checkpoints and rebuilding the model for eval all
work without touching any other file."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

import detect.models.build as build
from detect.config import ConfigError, config_from_dict
from detect.engine.runtime.checkpoint import load_model
from detect.engine.training.trainer import fit
from detect.models.backbones import build_backbone
from detect.models.box_ops import cell_centres
from detect.models.detector import Detector
from detect.models.options import ModelSettings, at_least, option
from detect.models.postprocess import PostprocessSettings, postprocess
from detect.models.targets import pad_targets


@dataclass
class CentreNetLiteOptions:
    width: int = option(16, at_least(1))  # channels of the head's hidden conv
    box_side: float = 24.0  # side of the fixed-size box predicted around each cell centre
    activation: str = option("relu", choices=("relu", "silu"))


class CentreNetLite(Detector):
    """Per cell of the coarsest map: class logits; a fixed-size box around the cell centre (a toy head)."""

    def __init__(self, *, backbone: nn.Module, num_classes: int, opts: CentreNetLiteOptions,
                 post: PostprocessSettings) -> None:
        super().__init__(backbone, None, post)
        self.side = opts.box_side
        act = nn.ReLU() if opts.activation == "relu" else nn.SiLU()
        self.head = nn.Sequential(nn.Conv2d(backbone.out_channels[-1], opts.width, 1), act,
                                  nn.Conv2d(opts.width, num_classes, 1))

    def _dense(self, feats: list[Tensor]) -> tuple[Tensor, Tensor]:
        f = feats[-1]
        logits = self.head(f).flatten(2).transpose(1, 2).float()  # [B, A, C]
        centres = cell_centres(f.shape[-2], f.shape[-1], self.backbone.strides[-1], f.device)  # [A, 2]
        boxes = torch.cat([centres - self.side / 2, centres + self.side / 2], 1)
        return boxes.expand(f.shape[0], -1, -1), logits

    def losses(self, feats, image_size, targets):
        boxes, logits = self._dense(feats)
        gt, labels, mask = pad_targets(targets, logits.device)  # [B, M, 4], [B, M], [B, M]
        c = (boxes[..., :2] + boxes[..., 2:]) / 2  # [B, A, 2]
        inside = ((c[:, :, None] >= gt[:, None, :, :2]) & (c[:, :, None] <= gt[:, None, :, 2:])).all(-1) & mask[:, None]
        target = torch.zeros_like(logits)
        onehot = nn.functional.one_hot(labels.clamp(min=1) - 1, logits.shape[-1]).float()  # [B, M, C]
        target = torch.maximum(target, (inside.float() @ onehot).clamp(max=1))
        return {"cls": nn.functional.binary_cross_entropy_with_logits(logits, target)}

    def detections(self, feats, image_size):
        boxes, logits = self._dense(feats)
        return postprocess(boxes, logits.sigmoid(), image_size, self.post)


def build_centrenet_lite(cfg: ModelSettings, opts: CentreNetLiteOptions, num_classes: int) -> CentreNetLite:
    backbone = build_backbone(cfg.backbone, cfg.backbone_weights, cfg.freeze_at, cfg.frozen_bn)
    return CentreNetLite(backbone=backbone, num_classes=num_classes, opts=opts,
                         post=PostprocessSettings.from_config(cfg))


@pytest.fixture
def registered(monkeypatch):
    """The one registration line (plus NAMES, which the real module derives from DETECTORS at import)."""
    spec = build.DetectorSpec(build_centrenet_lite, CentreNetLiteOptions, "CentreNet-lite", ("fcos",))
    monkeypatch.setitem(build.DETECTORS, "centrenet_lite", spec)
    monkeypatch.setattr(build, "NAMES", tuple(build.DETECTORS))


def test_options_section_is_validated_and_round_trips(registered) -> None:
    cfg = config_from_dict({"model": {"name": "centrenet_lite", "centrenet_lite": {"width": 8}}},
                           ["model.centrenet_lite.box_side=12"])
    assert cfg.model.centrenet_lite == CentreNetLiteOptions(width=8, box_side=12.0)
    back = config_from_dict(cfg.to_dict())
    assert back.to_dict()["model"]["centrenet_lite"] == {"width": 8, "box_side": 12.0, "activation": "relu"}
    assert back == cfg and set(back.to_dict()["model"]) >= set(build.DETECTORS)  # every head's section
    with pytest.raises(ConfigError, match="unknown key 'model.centrenet_lite.widht'; did you mean 'width'"):
        config_from_dict({"model": {"centrenet_lite": {"widht": 8}}})
    with pytest.raises(ConfigError, match="expected an integer"):
        config_from_dict({}, ["model.centrenet_lite.width=1.5"])
    with pytest.raises(ConfigError, match=r"model.centrenet_lite.width: must be >= 1, got 0"):
        config_from_dict({}, ["model.centrenet_lite.width=0"])
    with pytest.raises(ConfigError, match="model.centrenet_lite.activation: 'gelu' is not one of relu, silu"):
        config_from_dict({}, ["model.centrenet_lite.activation=gelu"])


def test_unregistered_section_is_still_an_unknown_key() -> None:
    with pytest.raises(ConfigError, match="unknown key 'model.centrenet_lite'"):
        config_from_dict({"model": {"centrenet_lite": {"width": 8}}})


def test_a_registered_head_trains_checkpoints_and_reloads(registered, tiny_split, tmp_path) -> None:
    cfg = config_from_dict({
        "model": {"name": "centrenet_lite", "backbone_weights": "none", "centrenet_lite": {"width": 8}},
        "data": {"train": str(tiny_split["train"]), "val": str(tiny_split["val"]), "image_size": 64, "workers": 0},
        "train": {"epochs": 1, "batch_size": 4, "optimizer": "adamw", "lr": 0.001, "report": False,
                  "out_dir": str(tmp_path / "run")}})
    result = fit(cfg, log=lambda _: None)
    assert result["steps"] > 0 and result["best_epoch"] == 1 and result["best"]  # trained and evaluated
    model, names, loaded = load_model(result["best"])  # rebuilt from the checkpoint's recipe by the registry
    assert isinstance(model, CentreNetLite) and loaded.model.centrenet_lite.width == 8 and len(names) == 2
    out = model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    assert out[0]["boxes"].shape[-1] == 4 and out[0]["labels"].dtype == torch.int64
