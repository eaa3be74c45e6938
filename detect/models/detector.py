"""The skeleton every detector shares (as torchvision's ``GeneralizedRCNN`` is for its family).

``images uint8/float 0..255 [B, 3, H, W]`` -> ``backbone.normalize`` -> ``backbone`` -> ``neck`` -> the
subclass's head: :meth:`Detector.losses` in training (a dict of scalar losses), :meth:`Detector.detections`
in eval (``list[{"boxes" [K, 4], "scores" [K], "labels" [K] in 1..C}]`` in input-tensor pixels, through the
one :func:`~detect.models.postprocess.postprocess` with ``self.post``). A detector that can be exported to
one fixed graph implements :meth:`Detector.dense` (everything before NMS) and sets ``exportable = True``.

Adding a head: subclass :class:`Detector`, implement ``losses`` / ``detections`` (and ``dense``); beside it
write its options dataclass (fields declared with :func:`~detect.models.options.option` when they have choices
or a range) and a ``build_<name>(settings, options, num_classes)``; add one
:class:`~detect.models.build.DetectorSpec` line to ``detect/models/build.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import Tensor, nn

from detect.models.postprocess import PostprocessSettings


class Detector(nn.Module):
    """Backbone -> neck -> head with the model contract of ARCHITECTURE.md.

    Args:
        backbone: a ``Backbone`` (``normalize``, ``forward`` -> maps at ``strides``, ``freeze``/``unfreeze``).
        neck: maps -> maps (an FPN), or None to use only the backbone's last (coarsest) map.
        post: postprocess settings used in eval (``self.post``).
    """

    exportable = False  # True when dense() gives everything before NMS (retail-detect export)
    needs_proposals = False  # True when built without its own proposals: forward needs proposals=[...]

    def __init__(self, backbone: nn.Module, neck: nn.Module | None, post: PostprocessSettings | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.post = post or PostprocessSettings()

    def features(self, images: Tensor) -> list[Tensor]:
        """``images`` [B, 3, H, W] 0..255 -> the neck's maps (finest first)."""
        feats = self.backbone(self.backbone.normalize(images))
        return self.neck(feats) if self.neck is not None else [feats[-1]]

    def forward(self, images: Tensor, targets: list[dict[str, Tensor]] | None = None, **extra
                ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Losses (training: ``targets`` required) or detections (eval).

        Args:
            images: uint8 or float 0..255 [B, 3, H, W].
            targets: B dicts with ``boxes`` float [N_i, 4] xyxy (input-tensor pixels), ``labels`` int64 [N_i]
                in 1..C.
            extra: head-specific inputs (Fast R-CNN's external ``proposals``).
        """
        if self.training and targets is None:
            raise ValueError(f"{type(self).__name__} in training mode needs targets (call model.eval() to predict)")
        image_size = (int(images.shape[-2]), int(images.shape[-1]))
        feats = self.features(images)
        if self.training:
            return self.losses(feats, image_size, targets, **extra)
        return self.detections(feats, image_size, **extra)

    def losses(self, feats: list[Tensor], image_size: tuple[int, int], targets: list[dict[str, Tensor]], **extra
               ) -> dict[str, Tensor]:
        """Scalar losses of the head on ``feats`` (the trainer sums them)."""
        raise NotImplementedError

    def detections(self, feats: list[Tensor], image_size: tuple[int, int], **extra) -> list[dict[str, Tensor]]:
        """Final detections of the head on ``feats`` (through ``postprocess(..., self.post)``)."""
        raise NotImplementedError

    def dense(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Everything before NMS: boxes [B, A, 4] xyxy pixels and class probabilities [B, A, C]."""
        raise NotImplementedError(f"{type(self).__name__} cannot be exported to one fixed graph")


@contextlib.contextmanager
def postprocess_settings(model: nn.Module, **changes) -> Iterator[PostprocessSettings]:
    """Use ``model.post`` with ``changes`` (e.g. ``score_thresh=0.001``) inside the ``with`` block.

    Works for every model with a ``post`` attribute or property: our detectors and the torchvision peers.
    """
    old = model.post
    model.post = old.replace(**changes)
    try:
        yield model.post
    finally:
        model.post = old
