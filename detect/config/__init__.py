"""Experiment configuration: dataclasses loaded from one flat YAML per recipe.

``load_config("configs/ssd.yaml", ["train.lr=0.01", "data.train=run/train.pkl"])`` reads the YAML,
applies ``section.key=value`` overrides (values parsed as YAML, so ``0.01``, ``true``, ``[1, 2]`` work),
and builds :class:`Config`. Unknown sections or keys are errors that name the nearest valid key.

The ``model`` section is :class:`~detect.models.build.ModelConfig` (re-exported here): the shared model settings
plus each registered head's options as ``model.<name>``, so a new head never edits this file. Allowed values are
declared on the fields themselves (:func:`~detect.models.options.option`) and :func:`validate` reads them.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from data_tools.errors import UserError
from detect.models.build import DETECTORS, PEER_NAMES, ModelConfig, takes_proposals
from detect.models.options import PROBABILITY, Check, above, at_least, option, within

_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


class ConfigError(UserError, ValueError):
    """A configuration file or override is invalid; the message says where and how to fix it."""


@dataclass
class DataConfig:
    train: str | None = None  # dataset .pkl made by `retail-data convert` / `split`
    val: str | None = None
    test: str | None = None
    image_size: int = option(320, at_least(32))  # square letterbox size S: every batch is [B, 3, S, S]
    cache_images: bool = True  # decode each image once (resized to S) and keep it in RAM
    # DataLoader worker processes; 0 = load in the main process; -1 = automatic from the cores free on this
    # machine: on the CPU one per 4 free cores (0 below 4), on a GPU all free cores but one (max 8)
    workers: int = option(-1, Check(lambda v: v >= -1, ">= 0 (or -1 for one per free core)"))
    pin_memory: bool = True  # only used on CUDA
    proposals: str | None = None  # external region proposals JSON ({image: [[x1, y1, x2, y2], ...]} in original
    # pixels, or predict's predictions.json) for Fast R-CNN: they replace its RPN and move with augmentation
    # product detector: every class of the training and validation labels (and of `eval`'s) merged into one,
    # `product`; the checkpoint's only class is then `product` (naming each facing is a later step)
    class_agnostic: bool = False


@dataclass
class AugmentConfig:
    hflip: float = option(0.5, PROBABILITY)  # probability of a horizontal flip
    vflip: float = option(0.0, PROBABILITY)
    rotate: float = option(0.0, Check(lambda v: 0 <= v <= 180, "in [0, 180] degrees"))  # max rotation (affine)
    scale: tuple[float, float] = option((1.0, 1.0), Check(lambda v: len(v) == 2 and 0 < v[0] <= v[1],
                                                          "[low, high] with 0 < low <= high"))  # affine scale range
    translate: float = option(0.0, Check(lambda v: 0 <= v < 1, "a fraction in [0, 1)"))  # of the image side
    affine_p: float = option(0.0, PROBABILITY)  # probability of the affine (rotate/scale/translate) transform
    crop: float = option(0.0, PROBABILITY)  # probability of a bbox-safe random crop
    color_jitter: float = option(0.0, PROBABILITY)  # probability of brightness/contrast/saturation/hue jitter
    noise: float = option(0.0, PROBABILITY)  # probability of Gaussian noise
    blur: float = option(0.0, PROBABILITY)  # probability of a small blur
    min_visibility: float = option(0.3, PROBABILITY)  # drop boxes with less than this fraction left after crop/affine
    mosaic: float = option(0.0, PROBABILITY)  # probability of a 4-image mosaic (YOLO recipe)
    mosaic_off_epochs: int = option(0, at_least(0))  # switch mosaic off for the last N epochs


@dataclass
class TrainConfig:
    epochs: int = option(30, at_least(0))
    max_steps: int = option(0, at_least(0))  # stop after this many optimizer steps (0 = no limit); tests, smoke runs
    # stop after this many seconds of training (0 = no limit); cosine/step decay then follow the budget
    time_budget_s: float = option(0.0, at_least(0))
    batch_size: int = option(32, at_least(1))
    optimizer: str = option("sgd", choices=("sgd", "adam", "adamw"))
    lr: float = option(0.02, above(0))
    head_lr_mult: float = option(1.0, above(0))  # lr of the layers outside the pretrained backbone = lr x this
    momentum: float = option(0.9, within(0, 1, "[)"))  # SGD momentum
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)  # Adam / AdamW
    weight_decay: float = option(4e-5, at_least(0))  # L2 (decoupled for AdamW); not applied to norms and biases
    l1: float = option(0.0, at_least(0))  # hand-written L1 penalty on weights, added to the loss
    warmup_epochs: float = option(1.0, at_least(0))
    scheduler: str = option("cosine", choices=("cosine", "step", "plateau", "none"))
    milestones: tuple[float, ...] = (0.67, 0.89)  # step decay points as fractions of the epochs
    gamma: float = option(0.1, within(0, 1, "(]"))  # step / plateau decay factor
    plateau_patience: int = 3
    grad_clip: float = option(10.0, at_least(0))  # max gradient norm (0 = off)
    ema: bool = False
    ema_decay: float = option(0.9998, within(0, 1, "()"))
    amp: bool = True  # bf16 autocast on CUDA (ignored on the CPU)
    channels_last: bool = True  # on CUDA
    compile: bool = False  # torch.compile the model on CUDA
    early_stop_patience: int = option(0, at_least(0))  # stop after N evaluations without a better val mAP (0 = off)
    eval_every: int = option(1, at_least(1))  # evaluate every N epochs
    unfreeze_epoch: int = -1  # unfreeze the backbone at this epoch (-1 = never)
    max_nonfinite: int = option(20, at_least(1))  # abort after this many non-finite losses (each batch is skipped)
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    out_dir: str = "runs/train"
    resume: str | None = None  # checkpoint to resume from (e.g. runs/train/last.pt); the run continues in its folder
    exist_ok: bool = False  # write into out_dir even when it holds a run (default: runs/x -> runs/x2, ...)
    # checkpoints: last.pt (every epoch, for exact resume) and best.pt are always kept, each replaced atomically;
    # N > 0 also keeps epoch_N.pt, epoch_2N.pt, ... (hard links: no extra disk space while equal to last.pt)
    save_period: int = option(0, at_least(0))
    tensorboard: bool = False
    log_every: int = option(20, at_least(1))
    report: bool = True  # at the end, write report/index.html (detect.report) for best.pt on the val set


@dataclass
class EvalConfig:
    max_detections: int = option(300, at_least(1))
    score_thresh: float = option(0.001, within(0, 1))  # low threshold for mAP
    batch_size: int = option(32, at_least(1))


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        """Plain dict (tuples become lists) for YAML, JSON and checkpoints; each head's options appear as their
        own ``model.<name>`` section."""
        out = _plain(dataclasses.asdict(self))
        out["model"].update(out["model"].pop("heads"))
        return out


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
    """``cls`` from the mapping ``values``, each value checked against the type of its default. A field marked
    ``sections`` (``ModelConfig.heads``: ``{head name: options}``) contributes one sub-section per entry."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {values!r}")
    default = cls()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    grouped = [f.name for f in fields.values() if f.metadata.get("sections")]
    sections = {key: (group, type(opts)) for group in grouped for key, opts in getattr(default, group).items()}
    plain = [name for name in fields if name not in grouped]
    kwargs: dict[str, Any] = {group: {} for group in grouped}
    for key, value in values.items():
        name = f"{where}.{key}" if where else str(key)
        if key in sections:
            group, options = sections[key]
            kwargs[group][key] = _build(options, value or {}, name)
            continue
        if key not in plain:
            raise ConfigError(f"unknown key '{name}'" + _suggest(str(key), plain + list(sections)))
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


def get_key(cfg: Config, dotted: str) -> Any:
    """``get_key(cfg, "train.lr")`` -> the value."""
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def _check(section: Any, where: str) -> None:
    """Refuse a value of ``section`` (a dataclass, its sub-sections too) outside its field's declared
    :func:`~detect.models.options.option` choices or check."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        key = f"{where}.{f.name}" if where else f.name
        if f.metadata.get("sections"):
            for name, options in value.items():
                _check(options, f"{where}.{name}")
        elif dataclasses.is_dataclass(value):
            _check(value, key)
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{key}: '{value}' is not one of {', '.join(choices)}")
        check = f.metadata.get("check")
        if check is not None and not check.ok(value):
            raise ConfigError(f"{key}: must be {check.what}, got {_plain(value)!r}")


def validate(cfg: Config) -> Config:
    """Refuse out-of-range numbers and unknown enumerated values, naming the key; returns ``cfg``."""
    names = tuple(DETECTORS)
    if cfg.model.name not in names + PEER_NAMES:
        raise ConfigError(f"model.name: '{cfg.model.name}' is not one of {', '.join(names + PEER_NAMES)}")
    _check(cfg, "")
    if cfg.data.proposals is not None:
        if not takes_proposals(cfg.model.name):
            takers = [n for n in names if takes_proposals(n)]
            raise ConfigError(f"data.proposals: model.name={cfg.model.name} has no use for external proposals "
                              f"(models that take them: {', '.join(takers)})")
        DETECTORS[cfg.model.name].use_proposals(getattr(cfg.model, cfg.model.name))  # e.g. no RPN
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


DATA_PATH_KEYS = ("data.train", "data.val", "data.test", "data.proposals")
"""Config keys that name a file or folder: stored absolute in a run's checkpoints and ``config.yaml``."""


def absolute_data_paths(values: dict) -> dict:
    """``values`` (a :meth:`Config.to_dict`) with each of :data:`DATA_PATH_KEYS` made absolute (``os.path.abspath``
    against the current folder, symlinks kept), so a run can be resumed from any folder."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    for key in DATA_PATH_KEYS:
        section, name = key.split(".")
        value = out.get(section, {}).get(name)
        if isinstance(value, str) and value:
            out[section][name] = os.path.abspath(value)
    return out


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


def read_recipe(path: str | Path | None) -> dict:
    """The sections of a recipe YAML (``{}`` when ``path`` is None); one :class:`ConfigError` line for a missing
    file, invalid YAML or a top level that is not a mapping."""
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        values = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{p}: top level must be a mapping of sections")
    return values


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a recipe YAML (or the defaults when ``path`` is None) and apply overrides."""
    values = read_recipe(path)
    try:
        return config_from_dict(values, overrides)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None
