"""Metric-learning losses for the embedder, in plain torch: one learnt proxy (a unit vector) per class.

- ``proxy_anchor`` (Kim et al., "Proxy Anchor Loss for Deep Metric Learning", CVPR 2020): each proxy pulls
  the batch's embeddings of its class and pushes the others, weighted by how hard they are (a soft-max over the
  batch); converges in few steps, which is what a CPU budget of minutes needs.
- ``arcface`` (Deng et al., CVPR 2019): additive angular margin ``m`` on the true class's angle, soft-max over
  ``s * cos`` of all proxies.

The proxies are training state (saved in a training checkpoint under ``loss`` for ``--resume``), never part of
the embedder's weights that a gallery uses: at inference a crop is named by its nearest reference vectors.
Both losses are a few lines each, so the project keeps them rather than pin ``pytorch-metric-learning``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOSSES = ("proxy_anchor", "arcface")
DEFAULTS = {"proxy_anchor": (32.0, 0.1), "arcface": (30.0, 0.3)}  # (scale, margin) of each loss's paper


class ProxyLoss(nn.Module):
    """``loss(embeddings [B, D] unit rows, labels int64 [B] in 0..C-1) -> scalar``; ``proxies``: ``[C, D]``.

    Args:
        kind: one of :data:`LOSSES`.
        classes, dim: number of classes ``C`` and embedding size ``D``.
        scale: ``s`` (ArcFace; 30) or ``alpha`` (Proxy-Anchor; 32).
        margin: ``m``: the angular margin in radians (ArcFace; 0.3) or the similarity margin ``delta``
            (Proxy-Anchor; 0.1).
    """

    def __init__(self, kind: str, classes: int, dim: int, scale: float = 30.0, margin: float = 0.3) -> None:
        super().__init__()
        if kind not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, not {kind!r}")
        self.kind, self.scale, self.margin = kind, float(scale), float(margin)
        self.proxies = nn.Parameter(torch.empty(classes, dim))
        nn.init.kaiming_normal_(self.proxies, mode="fan_out")

    def cosines(self, embeddings: Tensor) -> Tensor:
        """``[B, D]`` -> cosine with every proxy ``[B, C]``."""
        return F.linear(F.normalize(embeddings, dim=1), F.normalize(self.proxies, dim=1))

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        cos = self.cosines(embeddings.float())
        if self.kind == "arcface":
            return self._arcface(cos, labels)
        return self._proxy_anchor(cos, labels)

    def _arcface(self, cos: Tensor, labels: Tensor) -> Tensor:
        """Cross-entropy over ``s * cos``, the true class's angle ``theta`` replaced by ``theta + m`` (``[B, C]``)."""
        sin = (1.0 - cos.pow(2)).clamp(min=1e-7).sqrt()
        target = cos * math.cos(self.margin) - sin * math.sin(self.margin)  # cos(theta + m)
        # past theta = pi - m the margin would make the logit grow again: there use cos - m sin(m) (as InsightFace)
        target = torch.where(cos > math.cos(math.pi - self.margin), target, cos - self.margin * math.sin(self.margin))
        one_hot = F.one_hot(labels, cos.shape[1]).bool()
        return F.cross_entropy(self.scale * torch.where(one_hot, target, cos), labels)

    def _proxy_anchor(self, cos: Tensor, labels: Tensor) -> Tensor:
        """Positive term over the proxies with a positive in the batch, negative term over all proxies."""
        pos = F.one_hot(labels, cos.shape[1]).float()  # [B, C]
        neg = 1.0 - pos
        a, d = self.scale, self.margin
        # log(1 + sum_x exp(.)) per proxy, stably: logsumexp with a zero term; masked entries get -inf
        pos_logits = torch.where(pos.bool(), -a * (cos - d), torch.full_like(cos, -math.inf))
        neg_logits = torch.where(neg.bool(), a * (cos + d), torch.full_like(cos, -math.inf))
        zero = torch.zeros(1, cos.shape[1], device=cos.device, dtype=cos.dtype)
        pos_term = torch.logsumexp(torch.cat([zero, pos_logits]), dim=0)  # [C]
        neg_term = torch.logsumexp(torch.cat([zero, neg_logits]), dim=0)  # [C]
        with_pos = pos.sum(0) > 0
        return pos_term[with_pos].sum() / with_pos.sum().clamp(min=1) + neg_term.sum() / cos.shape[1]


def build_loss(kind: str, classes: int, dim: int, scale: float = 0.0, margin: float = -1.0) -> ProxyLoss:
    """The :class:`ProxyLoss` of a recipe's ``loss`` section (``scale <= 0`` / ``margin < 0``: the loss's
    :data:`DEFAULTS`)."""
    s, m = DEFAULTS[kind]
    return ProxyLoss(kind, classes, dim, scale if scale > 0 else s, margin if margin >= 0 else m)
