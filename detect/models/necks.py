"""Necks shared by the detectors: :class:`FPN` (top-down) and :class:`FPNPAN` (FPN, then PANet's bottom-up path).

FPNPAN's bottom-up path carries the fine, well-localised stride-8 features back up to the coarse levels:
``N_1 = P_1`` and ``N_{i+1} = fuse(cat(down(N_i), P_{i+1}))`` with ``down`` a stride-2 3x3 conv and
``fuse`` a 3x3 conv, each followed by BatchNorm + SiLU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FPN_INITS = ("pytorch", "kaiming_a1")


class FPN(nn.Module):
    """Top-down feature pyramid (Lin et al. 2017) with optional extra stride-2 levels on top.

    Args:
        in_channels: channels of the backbone maps, finest first (e.g. strides 8, 16, 32).
        out_channels: width of every output level.
        extra_levels: extra levels made by stride-2 3x3 convs from the coarsest output (SSD-style).
        norm: BatchNorm + ReLU after each output conv (what the dense heads train best with); False gives the
            FPN paper's plain linear 3x3 outputs, which a two-stage box head learns from several times faster
            (RoI features in train and eval mode then do not depend on batch statistics).
        init: ``pytorch`` (PyTorch's default conv init) or ``kaiming_a1`` (``kaiming_uniform_(a=1)``, bias 0: the
            FPN paper's and torchvision's; ~1.7x larger weights per conv, so ~3x larger plain outputs).

    ``forward(feats)``: ``[B, in_channels[i], H_i, W_i]`` per level -> ``[B, out_channels, H_i, W_i]`` per
    level, then ``extra_levels`` maps of half the previous size.
    """

    def __init__(self, in_channels: list[int], out_channels: int, extra_levels: int = 0, norm: bool = True,
                 init: str = "pytorch") -> None:
        super().__init__()
        if init not in FPN_INITS:
            raise ValueError(f"unknown FPN init {init!r}: use one of {', '.join(FPN_INITS)}")
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
        if init == "kaiming_a1":
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_uniform_(m.weight, a=1)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        laterals = [conv(f) for conv, f in zip(self.lateral, feats)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest")
        outs = [smooth(x) for smooth, x in zip(self.smooth, laterals)]
        for conv in self.extra:
            outs.append(conv(outs[-1]))
        return outs


class ConvBNAct(nn.Sequential):
    """``k x k`` convolution (no bias) -> BatchNorm -> SiLU; ``[B, c_in, H, W] -> [B, c_out, H/s, W/s]``."""

    def __init__(self, c_in: int, c_out: int, k: int = 3, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False),
            nn.BatchNorm2d(c_out),
            nn.SiLU(inplace=True),
        )


class FPNPAN(nn.Module):
    """Top-down FPN then bottom-up PAN over the backbone maps.

    Args:
        in_channels: channels of the backbone maps, finest first (e.g. strides 8, 16, 32).
        channels: width of every output level.

    ``forward(feats)``: maps ``[B, in_channels[i], H_i, W_i]`` -> same strides, ``[B, channels, H_i, W_i]``.
    """

    def __init__(self, in_channels: list[int], channels: int) -> None:
        super().__init__()
        self.fpn = FPN(list(in_channels), channels)
        levels = len(in_channels)
        self.down = nn.ModuleList(ConvBNAct(channels, channels, 3, 2) for _ in range(levels - 1))
        self.fuse = nn.ModuleList(ConvBNAct(2 * channels, channels, 3) for _ in range(levels - 1))
        self.out_channels = [channels] * levels

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        tops = self.fpn(feats)
        outs = [tops[0]]
        for down, fuse, top in zip(self.down, self.fuse, tops[1:]):
            d = down(outs[-1])
            if d.shape[-2:] != top.shape[-2:]:  # odd sizes: stride-2 conv rounds up, FPN levels may not
                d = nn.functional.interpolate(d, size=top.shape[-2:], mode="nearest")
            outs.append(fuse(torch.cat([d, top], dim=1)))
        return outs

