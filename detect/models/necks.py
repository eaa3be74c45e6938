"""Feature pyramid neck shared by the detectors."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class FPN(nn.Module):
    """Top-down feature pyramid (Lin et al. 2017) with optional extra stride-2 levels on top.

    Args:
        in_channels: channels of the backbone maps, finest first (e.g. strides 8, 16, 32).
        out_channels: width of every output level.
        extra_levels: extra levels made by stride-2 3x3 convs from the coarsest output (SSD-style).
        norm: BatchNorm + ReLU after each output conv (what the dense heads train best with); False gives the
            FPN paper's plain linear 3x3 outputs, which a two-stage box head learns from several times faster
            (RoI features in train and eval mode then do not depend on batch statistics).

    ``forward(feats)``: ``[B, in_channels[i], H_i, W_i]`` per level -> ``[B, out_channels, H_i, W_i]`` per
    level, then ``extra_levels`` maps of half the previous size.
    """

    def __init__(self, in_channels: list[int], out_channels: int, extra_levels: int = 0, norm: bool = True) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.smooth = nn.ModuleList(
            nn.Sequential(nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                          nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))
            if norm else nn.Conv2d(out_channels, out_channels, 3, padding=1)
            for _ in in_channels
        )
        self.extra = nn.ModuleList(
            nn.Sequential(nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1, bias=False),
                          nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))
            for _ in range(extra_levels)
        )
        self.out_channels = [out_channels] * (len(in_channels) + extra_levels)

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        laterals = [conv(f) for conv, f in zip(self.lateral, feats)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest")
        outs = [smooth(x) for smooth, x in zip(self.smooth, laterals)]
        for conv in self.extra:
            outs.append(conv(outs[-1]))
        return outs
