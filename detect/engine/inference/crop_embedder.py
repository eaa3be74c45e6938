"""Crops -> vectors: an :class:`~detect.models.embedder.Embedder` in eval mode, with its identity.

``CropEmbedder.load("imagenet")`` is the shipped ImageNet backbone untrained; ``CropEmbedder.load("runs/e/best.pt")``
a checkpoint written by ``retail-detect embedder train`` (``kind: embedder``; its EMA weights when it has them).
The identity (:meth:`CropEmbedder.identity`) names the weights by a SHA-256 of their values, so a gallery
filled by one embedder refuses vectors from another.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from detect.data.crop_augment import letterboxed_batch
from detect.engine.inference.embedder_eval import embed_crops
from detect.engine.runtime.checkpoint import CheckpointError, load_checkpoint, load_weights
from detect.engine.runtime.device import resolve_device
from detect.models.embedder import Embedder, EmbedderSettings, build_embedder

EMBEDDER_KIND = "embedder"  # the ``kind`` of an embedder checkpoint
IMAGENET = "imagenet"


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over the names, shapes, dtypes and values of ``model``'s state dict (in key order)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def crop_boxes(image: np.ndarray, boxes: np.ndarray, min_side: int = 2) -> list[np.ndarray]:
    """The crops of ``boxes`` (float ``[N, 4]`` xyxy pixels) from ``image`` (``[H, W, 3]`` uint8); each box is
    clipped to the image and made at least ``min_side`` pixels wide and high."""
    h, w = image.shape[:2]
    crops = []
    for x1, y1, x2, y2 in np.asarray(boxes, np.float64).reshape(-1, 4):
        a, b = int(np.clip(np.floor(x1), 0, max(w - min_side, 0))), int(np.clip(np.floor(y1), 0, max(h - min_side, 0)))
        c, d = int(np.clip(np.ceil(x2), a + min_side, w)), int(np.clip(np.ceil(y2), b + min_side, h))
        crops.append(image[b:d, a:c])
    return crops


class CropEmbedder:
    """An embedder ready to embed crops.

    Args:
        model: an :class:`Embedder`.
        name: what the user called it (``imagenet`` or the checkpoint's path), for messages.
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.
        batch_size: crops per forward pass.
    Attributes:
        settings: the embedder's :class:`EmbedderSettings` (``dim``, ``image_size``, ...).
        sha256: the weights' digest (see :func:`weights_sha256`).
        class_names: the classes it was trained on (empty for ``imagenet``).
    """

    def __init__(self, model: Embedder, name: str, device: str = "auto", batch_size: int = 64,
                 class_names: Sequence[str] = ()) -> None:
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.name = str(name)
        self.settings = model.settings
        self.batch_size = max(1, int(batch_size))
        self.class_names = list(class_names)
        self.sha256 = weights_sha256(model)

    @classmethod
    def load(cls, spec: str | Path, device: str = "auto", batch_size: int = 64, use_ema: bool = True,
             image_size: int | None = None) -> CropEmbedder:
        """``imagenet`` (the untrained baseline; ``image_size`` default 128) or an embedder checkpoint.

        Raises:
            CheckpointError: the file is not an embedder checkpoint (a detector's, say), in one line.
        """
        if str(spec) == IMAGENET:
            settings = EmbedderSettings(kind=IMAGENET, image_size=image_size or EmbedderSettings.image_size)
            return cls(build_embedder(settings, pretrained=True), IMAGENET, device, batch_size)
        ckpt = load_checkpoint(spec)
        if ckpt.get("kind") != EMBEDDER_KIND:
            what = "a detector checkpoint" if "config" in ckpt and "kind" not in ckpt else f"kind {ckpt.get('kind')!r}"
            raise CheckpointError(f"{spec}: not an embedder checkpoint ({what}); train one with "
                                  f"`retail-detect embedder train` or pass --embedder imagenet")
        if not isinstance(ckpt.get("embedder"), dict) or not isinstance(ckpt.get("model"), dict):
            raise CheckpointError(f"{spec}: an embedder checkpoint without its settings or weights")
        settings = EmbedderSettings.from_dict(ckpt["embedder"])
        model = build_embedder(settings, pretrained=False)
        load_weights(model, ckpt, spec, use_ema)
        return cls(model, str(Path(spec).resolve()), device, batch_size, [str(c) for c in ckpt.get("class_names", [])])

    def identity(self) -> dict:
        """What a gallery stores to recognise this embedder: ``{"name", "sha256", "kind", "dim", "image_size"}``."""
        return {"name": self.name, "sha256": self.sha256, "kind": self.settings.kind, "dim": self.settings.dim,
                "image_size": self.settings.image_size}

    def prepare(self, crops: Sequence[np.ndarray]) -> torch.Tensor:
        """Crops (``[h, w, 3]`` uint8 RGB, any sizes) -> letterboxed uint8 ``[N, 3, S, S]``."""
        return letterboxed_batch(list(crops), self.settings.image_size)

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Crops (``[h, w, 3]`` uint8 RGB) -> float32 ``[N, dim]`` unit vectors, batched."""
        return embed_crops(self.model, list(crops), self.device, self.batch_size).numpy().astype(np.float32, copy=False)

    def embed_boxes(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """The vectors of ``boxes`` (``[N, 4]`` xyxy pixels) in ``image`` (``[H, W, 3]`` uint8): ``[N, dim]``."""
        return self.embed(crop_boxes(image, boxes))
