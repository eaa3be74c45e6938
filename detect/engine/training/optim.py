"""Optimizers (SGD+momentum, Adam, AdamW) with L2 decay on weights only, and the optional L1 penalty."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from data_tools.errors import InvalidInput
from detect.config import TrainConfig


def _is_decayed(name: str, p: Tensor) -> bool:
    """Conv and linear weights get weight decay; biases and norm parameters (1-D) do not."""
    return p.ndim > 1 and not name.endswith(".bias")


def param_groups(model: nn.Module, weight_decay: float, head_lr_mult: float = 1.0) -> list[dict]:
    """Decayed weights and the rest (``weight_decay`` 0). Frozen parameters are included, so a later unfreeze
    trains them without rebuilding the optimizer.

    ``head_lr_mult`` != 1 splits both groups again: parameters of ``model.backbone`` (the pretrained part, of
    ours and of the torchvision peers alike) keep ``lr_mult`` 1, the new layers (neck, heads) get
    ``lr_mult = head_lr_mult``; :class:`~detect.engine.training.schedule.LRSchedule` sets ``lr = base lr x lr_mult``.
    With 1 there are two groups, as in checkpoints written before the option existed.
    """
    pretrained: set[int] = set()
    if head_lr_mult != 1.0 and isinstance(getattr(model, "backbone", None), nn.Module):
        pretrained = {id(p) for p in model.backbone.parameters()}
    groups: dict[tuple[bool, float], list[Tensor]] = {}
    for name, p in model.named_parameters():
        mult = 1.0 if not pretrained or id(p) in pretrained else head_lr_mult
        groups.setdefault((_is_decayed(name, p), mult), []).append(p)
    order = sorted(groups, key=lambda k: (not k[0], k[1] != 1.0))  # decayed first, backbone before new layers
    return [{"params": groups[k], "weight_decay": weight_decay if k[0] else 0.0, "lr_mult": k[1]} for k in order]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """``cfg.optimizer``: ``sgd`` (momentum, optional Nesterov, L2), ``adam`` (L2 added to the gradient) or
    ``adamw`` (decoupled decay)."""
    groups = param_groups(model, cfg.weight_decay, cfg.head_lr_mult)
    name = cfg.optimizer.lower()
    if name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    if name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas))
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))
    raise InvalidInput(f"unknown train.optimizer '{cfg.optimizer}' (use sgd, adam or adamw)")


def l1_penalty(model: nn.Module, strength: float) -> Tensor | None:
    """``strength * sum |w|`` over the trainable decayed weights (hand-written L1), or None when 0."""
    if strength <= 0:
        return None
    terms = [p.abs().sum() for n, p in model.named_parameters() if p.requires_grad and _is_decayed(n, p)]
    return strength * torch.stack(terms).sum() if terms else None
