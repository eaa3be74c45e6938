"""The product embedder: a crop -> an L2-normalised vector, on the EfficientNet-Lite0 ImageNet backbone.

Two kinds share one module:

- ``imagenet``: the shipped ImageNet backbone untrained, its 1280-channel head features average-pooled
  (``dim = 1280``). The baseline row of every table, and a start with no training at all.
- trained: the same backbone plus a projection (``Linear(1280, dim)`` after GeM pooling), fine-tuned with a
  metric-learning loss (:mod:`detect.models.embedder_loss`) by ``retail-detect embedder train``.

Crops are letterboxed to ``image_size`` x ``image_size`` (longer side ``image_size``, grey padding), so a tall
bottle and a wide box keep their shapes.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detect.models.efficientnet_lite import efficientnet_lite0

EMBEDDER_KINDS = ("imagenet", "trained")
LITE0_FEATURES = 1280


@dataclasses.dataclass
class EmbedderSettings:
    """What builds an embedder (stored in its checkpoint and in every gallery it fills).

    Attributes:
        kind: ``imagenet`` (untrained backbone, average pooling, no projection) or ``trained``.
        dim: vector size (1280 for ``imagenet``).
        image_size: side of the square letterboxed crop the network sees.
        gem_p: initial exponent of the GeM pooling (trained kind; learnt).
        dropout: dropout before the projection while training (trained kind).
    """

    kind: str = "trained"
    dim: int = 256
    image_size: int = 128
    gem_p: float = 3.0
    dropout: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EmbedderSettings:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class GeM(nn.Module):
    """Generalised-mean pooling (Radenovic et al. 2018): ``[B, C, H, W]`` -> ``[B, C]``, ``p`` learnt."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        p = self.p.clamp(1.0, 8.0)
        return x.clamp(min=self.eps).pow(p).mean((2, 3)).pow(1.0 / p)


class Embedder(nn.Module):
    """EfficientNet-Lite0 -> pooled head features -> (projection) -> L2-normalised vector.

    ``forward(images)``: uint8 or float 0..255 ``[B, 3, S, S]`` (RGB, letterboxed crops) -> float ``[B, dim]``,
    each row of unit length.
    """

    def __init__(self, settings: EmbedderSettings, pretrained: bool = True) -> None:
        super().__init__()
        if settings.kind not in EMBEDDER_KINDS:
            raise ValueError(f"embedder kind must be one of {EMBEDDER_KINDS}, not {settings.kind!r}")
        if settings.kind == "imagenet":
            settings = dataclasses.replace(settings, dim=LITE0_FEATURES)
        self.settings = settings
        net = efficientnet_lite0(pretrained=pretrained)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6(inplace=True))
        self.blocks = nn.Sequential(*net._blocks)
        self.head = nn.Sequential(net._conv_head, net._bn1, nn.ReLU6(inplace=True))
        if settings.kind == "trained":
            self.pool: nn.Module = GeM(settings.gem_p)
            self.dropout = nn.Dropout(settings.dropout)
            self.project: nn.Module = nn.Linear(LITE0_FEATURES, settings.dim)
        else:
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.dropout = nn.Identity()
            self.project = nn.Identity()

    @staticmethod
    def normalize(images: Tensor) -> Tensor:
        """0..255 ``[B, 3, S, S]`` -> float, as the Lite0 ImageNet weights expect (``(x / 255 - 0.5) / 0.5``)."""
        return images.float() / 127.5 - 1.0

    def features(self, images: Tensor) -> Tensor:
        """0..255 ``[B, 3, S, S]`` -> pooled backbone features ``[B, 1280]`` (before the projection)."""
        x = self.head(self.blocks(self.stem(self.normalize(images))))
        return self.pool(x).flatten(1)

    def forward(self, images: Tensor) -> Tensor:
        """0..255 ``[B, 3, S, S]`` -> unit vectors ``[B, dim]``."""
        return F.normalize(self.project(self.dropout(self.features(images))), dim=1)


def build_embedder(settings: EmbedderSettings, pretrained: bool = True) -> Embedder:
    """An :class:`Embedder` with ImageNet weights on its backbone (``pretrained``; a checkpoint's weights are
    loaded over it by the caller)."""
    return Embedder(settings, pretrained=pretrained)
