"""The one registration of every detector: :data:`DETECTORS`, read by ``build_model``, the config check,
``bench``, ``compare`` and the CLI help. Adding a head is one :class:`DetectorSpec` line here.

torchvision's peers (``detect.models.torchvision_peers``) can be trained and evaluated like our detectors under the
names ``tv_<peer>`` (``tv_fcos``, ``tv_faster_rcnn``, ``tv_ssd``, ``tv_retinanet``): that is how
``compare --peers`` measures them at equal work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from detect.config import ModelConfig
from detect.models.fast_rcnn import build_fast_rcnn
from detect.models.ssd import build_ssd
from detect.models.torchvision_peers import PEER_BUILDERS, build_peer
from detect.models.yolo import build_yolo


@dataclass(frozen=True)
class DetectorSpec:
    """A detector family: its factory, display title, the torchvision peers it is measured against
    (``detect.models.torchvision_peers.PEER_BUILDERS`` names; the first is the default peer) and whether it
    can take external region proposals (``data.proposals``) as a ``proposals=`` forward input."""

    build: Callable[[ModelConfig, int], nn.Module]
    title: str
    peers: tuple[str, ...]
    takes_proposals: bool = False
    options: type | None = None  # a dataclass of head options: YAML section model.<name>, cfg.model.<name>


DETECTORS: dict[str, DetectorSpec] = {
    "ssd": DetectorSpec(build_ssd, "SSD", ("ssd",)),
    "fast_rcnn": DetectorSpec(build_fast_rcnn, "Fast R-CNN", ("faster_rcnn",), takes_proposals=True),
    "yolo": DetectorSpec(build_yolo, "YOLO-style", ("fcos", "retinanet")),
}
NAMES: tuple[str, ...] = tuple(DETECTORS)
PEER_PREFIX = "tv_"
PEER_NAMES: tuple[str, ...] = tuple(PEER_PREFIX + p for p in PEER_BUILDERS)


def takes_proposals(name: str) -> bool:
    """Whether model ``name`` can use external region proposals (``data.proposals``, ``--proposals``)."""
    spec = DETECTORS.get(name)
    return spec is not None and spec.takes_proposals


def build_model(cfg: ModelConfig, num_classes: int, image_size: int = 320) -> nn.Module:
    """The detector named ``cfg.name`` for classes 1..``num_classes``; it keeps ``model.backbone``.

    ``image_size``: the square input side S; only torchvision peers (``tv_*``) need it (their transform is
    fixed to S), our detectors take any size.
    """
    if num_classes < 1:
        raise ValueError("a detector needs at least one class")
    if cfg.name in PEER_NAMES:
        return build_peer(cfg.name[len(PEER_PREFIX):], cfg, num_classes, image_size)
    if cfg.name not in DETECTORS:
        raise ValueError(f"unknown model.name '{cfg.name}'; choose one of {', '.join(NAMES + PEER_NAMES)}")
    return DETECTORS[cfg.name].build(cfg, num_classes)
