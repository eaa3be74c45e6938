"""FPN + PAN neck: the shared top-down :class:`~detect.models.necks.FPN`, then a bottom-up path (PANet).

The bottom-up path carries the fine, well-localised stride-8 features back up to the coarse levels:
``N_1 = P_1`` and ``N_{i+1} = fuse(cat(down(N_i), P_{i+1}))`` with ``down`` a stride-2 3x3 conv and
``fuse`` a 3x3 conv, each followed by BatchNorm + SiLU.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from detect.models.necks import FPN


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

