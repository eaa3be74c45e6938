"""The one registration of every detector: :data:`DETECTORS`, read by ``build_model``, the config, ``bench``,
``compare`` and the CLI help. Adding a head is one :class:`DetectorSpec` line here, naming its builder and its
options dataclass; :class:`ModelConfig` (the recipe's ``model`` section) then carries those options as
``model.<name>``.

torchvision's peers (``detect.models.torchvision_peers``) can be trained and evaluated like our detectors under the
names ``tv_<peer>`` (``tv_fcos``, ``tv_faster_rcnn``, ``tv_ssd``, ``tv_retinanet``): that is how
``compare --peers`` measures them at equal work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from detect.models.fast_rcnn import FastRCNNOptions, build_fast_rcnn
from detect.models.options import ModelSettings
from detect.models.ssd import SSDOptions, build_ssd
from detect.models.torchvision_peers import PEER_BUILDERS, PEER_HEADS, build_peer
from detect.models.yolo import YOLOOptions, build_yolo


@dataclass(frozen=True)
class DetectorSpec:
    """A detector family: its factory ``build(settings, options, num_classes)``, its options dataclass (the
    recipe's ``model.<name>`` section, with choices and ranges declared by :func:`~detect.models.options.option`),
    display title, the torchvision peers it is measured against (``detect.models.torchvision_peers.PEER_BUILDERS``
    names; the first is the default peer) and, when it can take external region proposals (``data.proposals``)
    as a ``proposals=`` forward input, how its options change for them."""

    build: Callable[[ModelSettings, Any, int], nn.Module]
    options: type
    title: str
    peers: tuple[str, ...]
    use_proposals: Callable[[Any], None] | None = None  # given the options, set them up for external proposals


DETECTORS: dict[str, DetectorSpec] = {
    "ssd": DetectorSpec(build_ssd, SSDOptions, "SSD", ("ssd",)),
    "fast_rcnn": DetectorSpec(build_fast_rcnn, FastRCNNOptions, "Fast R-CNN", ("faster_rcnn",),
                              use_proposals=FastRCNNOptions.use_external_proposals),
    "yolo": DetectorSpec(build_yolo, YOLOOptions, "YOLO-style", ("fcos", "retinanet")),
}
NAMES: tuple[str, ...] = tuple(DETECTORS)
PEER_PREFIX = "tv_"
PEER_NAMES: tuple[str, ...] = tuple(PEER_PREFIX + p for p in PEER_BUILDERS)


@dataclass
class ModelConfig(ModelSettings):
    """The recipe's ``model`` section: the shared :class:`~detect.models.options.ModelSettings` plus one options
    object per registered head, ``model.<name>`` in YAML and ``cfg.model.<name>`` in code (kept in ``heads``;
    a head left out gets its defaults)."""

    heads: dict[str, Any] = field(default_factory=dict, repr=False, metadata={"sections": True})

    def __post_init__(self) -> None:  # every registered head, in the registry's order (as YAML lists them)
        given = dict(self.heads)
        self.heads.clear()
        for name, spec in DETECTORS.items():
            self.heads[name] = given.pop(name) if name in given else spec.options()
        self.heads.update(given)

    def __getattr__(self, name: str) -> Any:  # cfg.model.<head> -> its options
        heads = self.__dict__.get("heads")
        if heads is None:  # not built by __init__ (copy, unpickling)
            raise AttributeError(name)
        if name not in heads:
            spec = DETECTORS.get(name)
            if spec is None:
                raise AttributeError(f"ModelConfig has no '{name}'")
            heads[name] = spec.options()  # a head registered after this config was made
        return heads[name]

    def __setattr__(self, name: str, value: Any) -> None:  # cfg.model.<head> = options
        if name in DETECTORS and "heads" in self.__dict__:
            self.heads[name] = value
        else:
            super().__setattr__(name, value)


def takes_proposals(name: str) -> bool:
    """Whether model ``name`` can use external region proposals (``data.proposals``, ``--proposals``)."""
    spec = DETECTORS.get(name)
    return spec is not None and spec.use_proposals is not None


def build_model(cfg: ModelConfig, num_classes: int, image_size: int = 320) -> nn.Module:
    """The detector named ``cfg.name`` for classes 1..``num_classes``; it keeps ``model.backbone``.

    ``image_size``: the square input side S; only torchvision peers (``tv_*``) need it (their transform is
    fixed to S), our detectors take any size.
    """
    if num_classes < 1:
        raise ValueError("a detector needs at least one class")
    if cfg.name in PEER_NAMES:
        peer = cfg.name[len(PEER_PREFIX):]
        return build_peer(peer, cfg, getattr(cfg, PEER_HEADS[peer]), num_classes, image_size)
    if cfg.name not in DETECTORS:
        raise ValueError(f"unknown model.name '{cfg.name}'; choose one of {', '.join(NAMES + PEER_NAMES)}")
    return DETECTORS[cfg.name].build(cfg, getattr(cfg, cfg.name), num_classes)
