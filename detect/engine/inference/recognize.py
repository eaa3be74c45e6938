"""Name detected boxes by a SKU gallery: crops -> embedder -> nearest references -> SKU, similarity, alternatives.

The second stage of the two-stage pipeline (a class-agnostic product detector finds the boxes, the gallery names
them). :class:`Recognizer` pairs a :class:`~detect.engine.inference.crop_embedder.CropEmbedder` with a
:class:`~detect.engine.inference.gallery.Gallery` built by that same embedder (checked by its identity);
:meth:`Recognizer.open` loads the gallery's own embedder from the identity it stores. A box whose best
similarity is below the unknown threshold (the gallery's calibrated one unless overridden) is named
:data:`UNKNOWN`; its nearest SKU is still reported.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from detect.engine.inference.crop_embedder import IMAGENET, CropEmbedder, crop_boxes
from detect.engine.inference.gallery import Gallery, GalleryError

UNKNOWN = "unknown"  # the name of a box no SKU of the gallery matches well enough
ALTERNATIVES = 3  # runners-up reported per box


@dataclasses.dataclass(frozen=True)
class Naming:
    """What one box is (a :class:`~detect.engine.inference.gallery_search.Match` plus the unknown decision).

    Attributes:
        sku: the best SKU, or :data:`UNKNOWN` when its similarity is below the threshold (or the gallery is empty).
        similarity: cosine similarity of the crop to the best SKU's nearest reference (-inf: empty gallery).
        alternatives: the runners-up ``((sku, similarity), ...)``, best first: the next :data:`ALTERNATIVES` SKUs;
            for an unknown box the nearest SKU comes first, then its runners-up.
        nearest: the best SKU even when the box is unknown (None: empty gallery).
        unknown: the similarity is below the threshold (or the gallery is empty).
    """

    sku: str
    similarity: float
    alternatives: tuple[tuple[str, float], ...]
    nearest: str | None
    unknown: bool = False


class Recognizer:
    """A gallery and the embedder that built it.

    Args:
        embedder: the crop embedder; refused (one line, with the rebuild command) when the gallery was built by
            another one.
        gallery: an open gallery.
        unknown_below: similarity under which a box is :data:`UNKNOWN`; None = the gallery's calibrated
            threshold (:attr:`Gallery.threshold`), and when the gallery has none, never unknown.
    """

    def __init__(self, embedder: CropEmbedder, gallery: Gallery, unknown_below: float | None = None) -> None:
        gallery.check_embedder(embedder.identity())
        if unknown_below is not None and not np.isfinite(unknown_below):
            raise GalleryError(f"--unknown-below must be a number, got {unknown_below}")
        self.embedder = embedder
        self.gallery = gallery
        self.threshold: float | None = gallery.threshold if unknown_below is None else float(unknown_below)

    @classmethod
    def open(cls, gallery_folder: str | Path, embedder: str | Path | None = None, unknown_below: float | None = None,
             device: str = "auto", batch_size: int = 64) -> Recognizer:
        """Open ``gallery_folder`` with ``embedder`` (``imagenet`` or an embedder checkpoint), by default the one its
        identity names.

        Raises:
            GalleryError: the gallery is unreadable; the embedder it names no longer exists or is no longer the one
                that built it (one line asking for ``--embedder``); or ``embedder`` did not build it.
            CheckpointError: ``embedder`` is not an embedder checkpoint.
        """
        gallery = Gallery.open(gallery_folder)
        ident = gallery.embedder
        spec, size = own_embedder_spec(gallery, embedder)
        emb = CropEmbedder.load(spec, device=device, batch_size=batch_size, image_size=size)
        if embedder is not None:
            return cls(emb, gallery, unknown_below)
        if emb.identity().get("sha256") != ident.get("sha256"):
            raise GalleryError(f"{gallery_folder}: built by embedder {spec} ({str(ident.get('sha256'))[:12]}), but "
                               f"{spec} now holds other weights ({emb.sha256[:12]}); pass --embedder with the "
                               "checkpoint that built the gallery")
        return cls(emb, gallery, unknown_below)

    @property
    def skus(self) -> list[str]:
        return self.gallery.skus

    def name_crops(self, crops: Sequence[np.ndarray]) -> list[Naming]:
        """Name crops (``[h, w, 3]`` uint8 RGB, any sizes), embedded in batches: one :class:`Naming` per crop."""
        if not crops:
            return []
        return self.name_vectors(self.embedder.embed(crops))

    def name_vectors(self, vectors: np.ndarray) -> list[Naming]:
        """Name embedded crops (float32 ``[N, dim]`` unit vectors of this embedder)."""
        out = []
        for m in self.gallery.search(vectors, top=1 + ALTERNATIVES):
            unknown = m.sku is None or (self.threshold is not None and m.similarity < self.threshold)
            alts = tuple((s, float(v)) for s, v in m.alternatives)
            if unknown and m.sku is not None:
                alts = ((m.sku, float(m.similarity)), *alts)[:ALTERNATIVES]
            out.append(Naming(UNKNOWN if unknown else m.sku, float(m.similarity), alts, m.sku, unknown))
        return out

    def name(self, image: np.ndarray, boxes: np.ndarray) -> list[Naming]:
        """Name the ``boxes`` (float ``[N, 4]`` xyxy pixels) of ``image`` (``[H, W, 3]`` uint8 RGB)."""
        return self.name_crops(crop_boxes(image, np.asarray(boxes, np.float64).reshape(-1, 4)))


def own_embedder_spec(gallery: Gallery, spec: str | Path | None = None) -> tuple[str, int | None]:
    """Which embedder names crops with (or adds to) ``gallery``: ``spec`` when given, else the one its identity
    names (``imagenet``, or its checkpoint path, which must still exist); and the input size to build ``imagenet``
    at (the gallery's; None for a checkpoint, which carries its own).

    Raises:
        GalleryError: the checkpoint the gallery names no longer exists (one line asking for ``--embedder``).
    """
    ident = gallery.embedder
    if spec is None:
        spec = str(ident.get("name", ""))
        if spec != IMAGENET and (not spec or not Path(spec).is_file()):
            raise GalleryError(f"{gallery.folder}: built by embedder {spec or '(unnamed)'}, which no longer exists "
                               "there; pass --embedder with that embedder checkpoint")
    size = int(ident.get("image_size") or 0) or None
    return str(spec), size if str(spec) == IMAGENET else None


def similarity_01(similarity: float | np.ndarray) -> float | np.ndarray:
    """A cosine similarity mapped monotonically onto 0..1 (``(s + 1) / 2``, clipped; -inf -> 0)."""
    return np.clip((np.asarray(similarity, np.float64) + 1.0) / 2.0, 0.0, 1.0) if isinstance(similarity, np.ndarray) \
        else float(min(max((similarity + 1.0) / 2.0, 0.0), 1.0))


__all__ = ["ALTERNATIVES", "UNKNOWN", "Naming", "Recognizer", "similarity_01"]
