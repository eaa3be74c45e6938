"""Experiment configuration: dataclasses loaded from one flat YAML per recipe.

``load_config("configs/ssd.yaml", ["train.lr=0.01", "data.train=run/train.pkl"])`` reads the YAML,
applies ``section.key=value`` overrides (values parsed as YAML, so ``0.01``, ``true``, ``[1, 2]`` work),
and builds :class:`Config`. Unknown sections or keys are errors that name the nearest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from data_tools.errors import UserError

_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


class ConfigError(UserError, ValueError):
    """A configuration file or override is invalid; the message says where and how to fix it."""


@dataclass
class DataConfig:
    train: str | None = None  # dataset .pkl made by `retail-data convert` / `split`
    val: str | None = None
    test: str | None = None
    image_size: int = 320  # square letterbox size S: every batch is [B, 3, S, S]
    cache_images: bool = True  # decode each image once (resized to S) and keep it in RAM
    workers: int = -1  # DataLoader worker processes; 0 = load in the main process; -1 = automatic from the
    # cores free on this machine: on the CPU one per 4 free cores (0 below 4), on a GPU all free cores but one (max 8)
    pin_memory: bool = True  # only used on CUDA
    proposals: str | None = None  # external region proposals JSON ({image: [[x1, y1, x2, y2], ...]} in original
    # pixels, or predict's predictions.json) for Fast R-CNN: they replace its RPN and move with augmentation


@dataclass
class AugmentConfig:
    hflip: float = 0.5  # probability of a horizontal flip
    vflip: float = 0.0
    rotate: float = 0.0  # max rotation in degrees (affine)
    scale: tuple[float, float] = (1.0, 1.0)  # affine scale range
    translate: float = 0.0  # max translation as a fraction of the image side
    affine_p: float = 0.0  # probability of the affine (rotate/scale/translate) transform
    crop: float = 0.0  # probability of a bbox-safe random crop
    color_jitter: float = 0.0  # probability of brightness/contrast/saturation/hue jitter
    noise: float = 0.0  # probability of Gaussian noise
    blur: float = 0.0  # probability of a small blur
    min_visibility: float = 0.3  # drop boxes with less than this fraction left after crop/affine
    mosaic: float = 0.0  # probability of a 4-image mosaic (YOLO recipe)
    mosaic_off_epochs: int = 0  # switch mosaic off for the last N epochs


@dataclass
class SSDConfig:
    neck_channels: int = 128  # channels of the FPN-style neck levels
    extra_levels: int = 2  # SSD extra layers after the backbone's last map
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5)
    min_scale: float = 0.07  # smallest default-box scale (fraction of image side)
    max_scale: float = 0.9
    iou_threshold: float = 0.5  # prior matched to an object at IoU >= this
    neg_pos_ratio: int = 3  # hard negative mining ratio
    box_weight: float = 1.0


@dataclass
class FastRCNNConfig:
    fpn: bool = True  # use an FPN neck (multi-level RoI assignment); False: single C5-stride map
    neck_channels: int = 128
    anchor_sizes: tuple[float, ...] = (32.0, 64.0, 128.0)  # one size per level (x2 octave per level)
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_pre_nms_topk: int = 1000
    rpn_post_nms_topk: int = 300
    rpn_nms_thresh: float = 0.7
    rpn_batch_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_fg_iou: float = 0.7  # anchor positive at IoU >= this (and each object's best anchor)
    rpn_bg_iou: float = 0.3  # anchor negative at max IoU < this; in between: ignored
    roi_op: str = "roi_pool"  # roi_pool (Fast R-CNN) | roi_align
    roi_size: int = 7
    roi_canonical_size: float = 112.0  # FPN level rule k = floor(4 + log2(sqrt(wh) / this)), k=4 is stride 16;
    # the paper's 224 suits ~800 px inputs, 112 suits 256-416 px (boxes < 112 px pool from stride 8)
    roi_batch_per_image: int = 256
    roi_positive_fraction: float = 0.25
    fg_iou: float = 0.5
    bg_iou: float = 0.5
    head_dim: int = 512  # width of the two fully connected layers
    rpn: bool = True  # False: no RPN, the proposals come from data.proposals (set automatically with it)
    head_init: str = "normal"  # box head outputs: normal (N(0, 0.01) classes, N(0, 0.001) deltas) | pytorch (nn.Linear's)
    roi_norm: str = "none"  # normalise the pooled RoI features: none | group (GroupNorm) | batch (BatchNorm)
    roi_subbins: int = 1  # roi_pool: each output bin averages subbins x subbins max-pooled bins
    roi_upsample: int = 1  # pool from maps bilinearly upsampled by this factor (finer roi_pool quantisation)
    roi_box_beta: float = 1.0 / 9  # smooth-L1 beta of the box head's regression loss (0: plain L1)
    roi_class_agnostic: bool = False  # one set of box deltas for all classes (True) or one per class
    fpn_init: str = "pytorch"  # FPN convs: pytorch (default init) | kaiming_a1 (the FPN paper's / torchvision's)


@dataclass
class YOLOConfig:
    neck_channels: int = 128  # FPN + PAN width
    head_channels: int = 128
    assigner: str = "tal"  # tal (task-aligned) | simota
    topk: int = 10  # candidates per object for the assigner
    cls_loss: str = "bce"  # bce | varifocal
    box_loss: str = "giou"  # giou | ciou
    dfl: bool = False  # distribution focal loss on box sides
    reg_max: int = 16  # DFL bins per box side (distances 0..reg_max-1 strides)
    cls_weight: float = 1.0
    box_weight: float = 2.5
    dfl_weight: float = 0.5  # weight of the DFL term (only with dfl: true)
    tal_alpha: float = 1.0  # task-aligned metric: score ** tal_alpha * IoU ** tal_beta
    tal_beta: float = 6.0
    prior_prob: float = 0.01  # initial class probability (bias of the class logits)


@dataclass
class ModelConfig:
    name: str = "ssd"  # ssd | fast_rcnn | yolo (detect.models.build.DETECTORS), or a torchvision peer: tv_fcos, ...
    backbone: str = "efficientnet_lite0"  # efficientnet_lite0 | resnet18 | resnet50 | mobilenet_v3_large | vgg16
    backbone_weights: str = "imagenet"  # imagenet | none | path to a .pth / .safetensors file
    freeze_at: int = 0  # freeze the stem and the first N stages (0 = train everything)
    frozen_bn: bool = False  # freeze BatchNorm statistics and affine params (small batches)
    dropout: float = 0.0  # dropout in the head
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    agnostic_nms: bool = False  # one NMS over all classes: one box per product on dense shelves
    max_detections: int = 300
    ssd: SSDConfig = field(default_factory=SSDConfig)
    fast_rcnn: FastRCNNConfig = field(default_factory=FastRCNNConfig)
    yolo: YOLOConfig = field(default_factory=YOLOConfig)
    # Options of heads registered with their own options dataclass (``DetectorSpec.options``): section
    # ``model.<name>`` in YAML, ``cfg.model.<name>`` in code, like the three above; filled by _build.
    heads: dict[str, Any] = field(default_factory=dict, repr=False)

    def __getattr__(self, name: str) -> Any:  # cfg.model.<registered head> -> its options
        heads = self.__dict__.get("heads")
        if heads is None:
            raise AttributeError(name)
        if name not in heads:
            options = _registered_options().get(name)
            if options is None:
                raise AttributeError(f"ModelConfig has no '{name}'")
            heads[name] = options()
        return heads[name]


@dataclass
class TrainConfig:
    epochs: int = 30
    max_steps: int = 0  # stop after this many optimizer steps (0 = no limit); for tests and smoke runs
    time_budget_s: float = 0.0  # stop after this many seconds of training (0 = no limit); cosine/step decay then follow the budget
    batch_size: int = 32
    optimizer: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.02
    head_lr_mult: float = 1.0  # lr of the layers outside the pretrained backbone (neck, heads) = lr x this
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)  # Adam / AdamW
    weight_decay: float = 4e-5  # L2 (decoupled for AdamW); not applied to norms and biases
    l1: float = 0.0  # hand-written L1 penalty on weights, added to the loss
    warmup_epochs: float = 1.0
    scheduler: str = "cosine"  # cosine | step | plateau | none
    milestones: tuple[float, ...] = (0.67, 0.89)  # step decay points as fractions of the epochs
    gamma: float = 0.1  # step / plateau decay factor
    plateau_patience: int = 3
    grad_clip: float = 10.0  # max gradient norm (0 = off)
    ema: bool = False
    ema_decay: float = 0.9998
    amp: bool = True  # bf16 autocast on CUDA (ignored on the CPU)
    channels_last: bool = True  # on CUDA
    compile: bool = False  # torch.compile the model on CUDA
    early_stop_patience: int = 0  # stop after N evaluations without a better val mAP (0 = off)
    eval_every: int = 1  # evaluate every N epochs
    unfreeze_epoch: int = -1  # unfreeze the backbone at this epoch (-1 = never)
    max_nonfinite: int = 20  # abort after this many non-finite losses (each such batch is skipped)
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    out_dir: str = "runs/train"
    resume: str | None = None  # checkpoint to resume from (e.g. runs/train/last.pt); the run continues in its folder
    exist_ok: bool = False  # write into out_dir even when it holds a run (default: runs/x -> runs/x2, ...)
    tensorboard: bool = False
    log_every: int = 20
    report: bool = True  # at the end, write report/index.html (detect.report) for best.pt on the val set


@dataclass
class EvalConfig:
    max_detections: int = 300
    score_thresh: float = 0.001  # low threshold for mAP
    batch_size: int = 32


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        """Plain dict (tuples become lists) for YAML, JSON and checkpoints; registered heads' options appear
        as their own ``model.<name>`` sections."""
        out = _plain(dataclasses.asdict(self))
        out["model"].update(out["model"].pop("heads"))
        return out


def _registered_options() -> dict[str, type]:
    """``{head name: options dataclass}`` of the registry's heads that declare one (imported lazily: the
    registry imports the models, which import this module)."""
    from detect.models.build import DETECTORS

    return {name: spec.options for name, spec in DETECTORS.items() if spec.options is not None}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(sorted(valid))}"


def _coerce(value: Any, template: Any, where: str) -> Any:
    """Check ``value`` against the type of the default ``template`` and convert lists to tuples."""
    if template is None or value is None:
        return value
    if isinstance(template, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if isinstance(template, (int, float)) and not isinstance(template, bool):
        if isinstance(value, str) and _NUMBER.match(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string; it is a number here
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        if isinstance(template, int) and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return type(template)(value)
    if isinstance(template, tuple):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(value)
    if isinstance(template, str) and not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _build(cls: type, values: dict, where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {values!r}")
    default = cls()
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "heads"}
    heads = _registered_options() if cls is ModelConfig else {}
    kwargs: dict[str, Any] = {"heads": {}} if cls is ModelConfig else {}
    for key, value in values.items():
        name = f"{where}.{key}" if where else str(key)
        if key in heads and key not in fields:
            kwargs["heads"][key] = _build(heads[key], value or {}, name)
            continue
        if key not in fields:
            raise ConfigError(f"unknown key '{name}'" + _suggest(str(key), list(fields) + list(heads)))
        current = getattr(default, key)
        if dataclasses.is_dataclass(current):
            kwargs[key] = _build(type(current), value or {}, name)
        else:
            kwargs[key] = _coerce(value, current, name)
    return cls(**kwargs)


def _set_path(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{dotted}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: list[str] | None) -> dict:
    """``["train.lr=0.01", "model.ssd.neg_pos_ratio=3"]`` -> nested dict (values parsed as YAML)."""
    tree: dict = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like section.key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or "." not in key:
            raise ConfigError(f"override '{item}': key must look like section.key (e.g. train.lr)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override '{item}': cannot parse value: {exc}") from None
        _set_path(tree, key, value)
    return tree


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


# Allowed values of the enumerated keys (the model factories and schedules check them too; here they are
# refused at load time, before any dataset is read).
CHOICES: dict[str, tuple[str, ...]] = {
    "train.optimizer": ("sgd", "adam", "adamw"),
    "train.scheduler": ("cosine", "step", "plateau", "none"),
    "model.fast_rcnn.roi_op": ("roi_pool", "roi_align"),
    "model.fast_rcnn.head_init": ("normal", "pytorch"),
    "model.fast_rcnn.roi_norm": ("none", "group", "batch"),
    "model.fast_rcnn.fpn_init": ("pytorch", "kaiming_a1"),
    "model.yolo.assigner": ("tal", "simota"),
    "model.yolo.cls_loss": ("bce", "varifocal"),
    "model.yolo.box_loss": ("giou", "ciou"),
}

# (key, test, what it must be): numeric ranges checked at load time.
RANGES: list[tuple[str, Any, str]] = [
    ("data.image_size", lambda v: v >= 32, ">= 32"),
    ("data.workers", lambda v: v >= -1, ">= 0 (or -1 for one per free core)"),
    ("train.epochs", lambda v: v >= 0, ">= 0"),
    ("train.max_steps", lambda v: v >= 0, ">= 0"),
    ("train.time_budget_s", lambda v: v >= 0, ">= 0"),
    ("train.batch_size", lambda v: v >= 1, ">= 1"),
    ("train.lr", lambda v: v > 0, "> 0"),
    ("train.head_lr_mult", lambda v: v > 0, "> 0"),
    ("train.momentum", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("train.weight_decay", lambda v: v >= 0, ">= 0"),
    ("train.l1", lambda v: v >= 0, ">= 0"),
    ("train.warmup_epochs", lambda v: v >= 0, ">= 0"),
    ("train.gamma", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("train.grad_clip", lambda v: v >= 0, ">= 0"),
    ("train.ema_decay", lambda v: 0 < v < 1, "in (0, 1)"),
    ("train.early_stop_patience", lambda v: v >= 0, ">= 0"),
    ("train.eval_every", lambda v: v >= 1, ">= 1"),
    ("train.max_nonfinite", lambda v: v >= 1, ">= 1"),
    ("train.log_every", lambda v: v >= 1, ">= 1"),
    ("augment.rotate", lambda v: 0 <= v <= 180, "in [0, 180] degrees"),
    ("augment.translate", lambda v: 0 <= v < 1, "a fraction in [0, 1)"),
    ("augment.mosaic_off_epochs", lambda v: v >= 0, ">= 0"),
    ("model.freeze_at", lambda v: v >= 0, ">= 0"),
    ("model.fast_rcnn.roi_box_beta", lambda v: v >= 0, ">= 0"),
    ("model.fast_rcnn.roi_upsample", lambda v: v >= 1, ">= 1"),
    ("model.fast_rcnn.roi_subbins", lambda v: v >= 1, ">= 1"),
    ("model.dropout", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("model.score_thresh", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("model.nms_thresh", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("model.max_detections", lambda v: v >= 1, ">= 1"),
    ("eval.max_detections", lambda v: v >= 1, ">= 1"),
    ("eval.score_thresh", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("eval.batch_size", lambda v: v >= 1, ">= 1"),
] + [(f"augment.{k}", lambda v: 0 <= v <= 1, "a probability in [0, 1]")
     for k in ("hflip", "vflip", "affine_p", "crop", "color_jitter", "noise", "blur", "min_visibility", "mosaic")]


def get_key(cfg: Config, dotted: str) -> Any:
    """``get_key(cfg, "train.lr")`` -> the value."""
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def validate(cfg: Config) -> Config:
    """Refuse out-of-range numbers and unknown enumerated values, naming the key; returns ``cfg``."""
    from detect.models.build import NAMES, PEER_NAMES, takes_proposals  # the registry (it imports the models)

    for key, allowed in {"model.name": NAMES + PEER_NAMES, **CHOICES}.items():
        value = get_key(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}: '{value}' is not one of {', '.join(allowed)}")
    for key, ok, what in RANGES:
        value = get_key(cfg, key)
        if not ok(value):
            raise ConfigError(f"{key}: must be {what}, got {value!r}")
    scale = cfg.augment.scale
    if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
        raise ConfigError(f"augment.scale: must be [low, high] with 0 < low <= high, got {list(cfg.augment.scale)}")
    if cfg.data.proposals is not None:
        takers = [n for n in NAMES if takes_proposals(n)]
        if not takes_proposals(cfg.model.name):
            raise ConfigError(f"data.proposals: model.name={cfg.model.name} has no use for external proposals "
                              f"(models that take them: {', '.join(takers)})")
        cfg.model.fast_rcnn.rpn = False  # the proposals replace the RPN
    return cfg


# Keys that moved: old name -> new name. Recipes and checkpoints written before the move still load.
MOVED_KEYS: dict[str, str] = {"model.fast_rcnn.proposals": "data.proposals"}


def _migrate(values: dict) -> dict:
    """``values`` with every key of :data:`MOVED_KEYS` under its new name (a null old value is dropped)."""
    out = _merge({}, values)
    for old, new in MOVED_KEYS.items():
        *parents, leaf = old.split(".")
        node = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node:
            value = node.pop(leaf)
            if value is not None:
                _set_path(out, new, value)
    return out


def config_from_dict(values: dict, overrides: list[str] | None = None) -> Config:
    """Build and :func:`validate` a :class:`Config` from a nested dict plus ``key=value`` overrides."""
    return validate(_build(Config, _migrate(_merge(values or {}, parse_overrides(overrides))), ""))


def flatten(values: dict, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 0.1}}`` -> ``{"train.lr": 0.1}``."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a recipe YAML (or the defaults when ``path`` is None) and apply overrides."""
    values: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            values = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: invalid YAML: {exc}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{p}: top level must be a mapping of sections")
    try:
        return config_from_dict(values, overrides)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None
