"""The embedder's recipe (``configs/embedder.yaml``): dataclasses read like the detector's (:mod:`detect.config`),
``section.key=value`` overrides, unknown keys and out-of-range values refused in one line naming the key.

``load_embedder_config("configs/embedder.yaml", ["train.epochs=4", "data.train=photos/"])``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from detect.config import ConfigError, _build, _check, _merge, _plain, parse_overrides, read_recipe
from detect.models.embedder_loss import LOSSES
from detect.models.options import PROBABILITY, above, at_least, option, within


@dataclass
class EmbedderDataConfig:
    train: str | None = None  # class folders (one product per photo) or any labelled dataset (each box a crop)
    val: str | None = None  # the same kinds; none: val_fraction of each class's train crops is held out
    classes: tuple[str, ...] = ()  # keep only these classes (empty: all); names as the data spells them
    val_fraction: float = option(0.15, within(0, 1, "[)"))  # without data.val: held out per class (>= 1 crop)
    min_box_side: int = option(8, at_least(1))  # boxes smaller than this (pixels) give no crop
    max_crop_side: int = option(192, at_least(32))  # crops are cached in RAM with their longer side at most this


@dataclass
class EmbedderModelConfig:
    dim: int = option(256, at_least(8))  # vector size
    image_size: int = option(128, at_least(32))  # the letterboxed crop's side
    gem_p: float = option(3.0, within(1, 8))
    dropout: float = option(0.0, within(0, 1, "[)"))
    # pca: the projection starts as the PCA of the train crops' ImageNet features and each proxy as its class's
    # mean vector (training starts near the ImageNet baseline); random: PyTorch's default initialisation
    init: str = option("pca", choices=("pca", "random"))


@dataclass
class EmbedderLossConfig:
    name: str = option("proxy_anchor", choices=LOSSES)
    scale: float = option(0.0, at_least(0))  # Proxy-Anchor alpha / ArcFace s; 0: the loss's default (32 / 30)
    margin: float = option(-1.0, at_least(-1))  # Proxy-Anchor delta / ArcFace m (radians); -1: default (0.1 / 0.3)
    proxy_lr_mult: float = option(100.0, above(0))  # the proxies learn at lr x this


@dataclass
class CropAugmentConfig:
    jitter: float = option(0.15, within(0, 0.5))  # box sides move by up to this fraction (context in and out)
    color: float = option(0.8, PROBABILITY)  # probability of brightness/contrast/saturation/hue jitter
    blur: float = option(0.2, PROBABILITY)
    perspective: float = option(0.3, PROBABILITY)
    occlusion: float = option(0.3, PROBABILITY)  # CoarseDropout holes
    neighbour: float = option(0.3, PROBABILITY)  # a strip of another crop pasted at a side
    hflip: float = option(0.0, PROBABILITY)  # off: packaging text is not mirror-symmetric


@dataclass
class EmbedderTrainConfig:
    epochs: int = option(8, at_least(0))
    max_steps: int = option(0, at_least(0))  # stop after this many optimizer steps (0 = no limit)
    time_budget_s: float = option(0.0, at_least(0))  # stop after this many seconds of training (0 = no limit)
    classes_per_batch: int = option(16, at_least(2))  # P: a batch is P classes x K crops
    per_class: int = option(4, at_least(1))  # K
    optimizer: str = option("adamw", choices=("sgd", "adam", "adamw"))
    lr: float = option(1e-3, above(0))  # projection and pooling; the backbone gets lr x backbone_lr_mult
    backbone_lr_mult: float = option(0.1, above(0))
    momentum: float = option(0.9, within(0, 1, "[)"))
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = option(1e-4, at_least(0))
    warmup_epochs: float = option(0.5, at_least(0))
    scheduler: str = option("cosine", choices=("cosine", "step", "none"))
    milestones: tuple[float, ...] = (0.67, 0.89)
    gamma: float = option(0.1, within(0, 1, "(]"))
    plateau_patience: int = 3  # unused (no plateau schedule here); LRSchedule reads it
    grad_clip: float = option(10.0, at_least(0))
    freeze_bn: bool = True  # keep the backbone's BatchNorm statistics (ImageNet's): small P x K batches
    ema: bool = False
    ema_decay: float = option(0.999, within(0, 1, "()"))
    eval_every: int = option(1, at_least(1))
    seed: int = 0
    device: str = "auto"
    out_dir: str = "runs/embedder"
    resume: str | None = None
    exist_ok: bool = False
    log_every: int = option(10, at_least(1))


@dataclass
class EmbedderConfig:
    data: EmbedderDataConfig = field(default_factory=EmbedderDataConfig)
    model: EmbedderModelConfig = field(default_factory=EmbedderModelConfig)
    loss: EmbedderLossConfig = field(default_factory=EmbedderLossConfig)
    augment: CropAugmentConfig = field(default_factory=CropAugmentConfig)
    train: EmbedderTrainConfig = field(default_factory=EmbedderTrainConfig)

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))


def embedder_config_from_dict(values: dict, overrides: list[str] | None = None) -> EmbedderConfig:
    """Build and check an :class:`EmbedderConfig` from a nested dict plus ``key=value`` overrides."""
    cfg = _build(EmbedderConfig, _merge(values or {}, parse_overrides(overrides)), "")
    _check(cfg, "")
    if cfg.train.max_steps == 0 and cfg.train.epochs == 0 and cfg.train.time_budget_s == 0:
        raise ConfigError("train.epochs: 0 epochs and no other budget: nothing to train")
    return cfg


def load_embedder_config(path: str | Path | None, overrides: list[str] | None = None) -> EmbedderConfig:
    """Read an embedder recipe YAML (the defaults when ``path`` is None) and apply overrides."""
    values = read_recipe(path)
    try:
        return embedder_config_from_dict(values, overrides)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None

