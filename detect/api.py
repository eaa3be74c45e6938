"""The Python API: ``from detect import load``; ``model = load("best.pt")``; ``results = model(images)``.

:func:`load` opens a detector (a checkpoint of ``retail-detect train``, or what
:meth:`~detect.engine.inference.predictor.Predictor.from_weights` also opens: an exported ``model.onnx`` /
``model.xml``) and, with ``gallery``, the SKU gallery that names its boxes. Calling the :class:`Model` on images
(a path, a folder or glob, an ``H x W x 3`` uint8 RGB numpy array, a PIL image, or a list of those) always
returns a list of :class:`~detect.api_result.Result`, one per image in input order (a folder gives its images
sorted, as ``predict`` does). The ``predict`` and ``audit`` verbs open their model with :func:`open_predictor`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from data_tools.errors import InvalidInput
from data_tools.images import read_image
from detect.api_result import Result
from detect.data.proposals import check_proposals_arg
from detect.engine.inference.predictor import Predictor
from detect.engine.inference.sources import expand_sources
from detect.engine.inference.tiling import TileOptions
from detect.models.detector import postprocess_settings
from detect.verbs.sku_stage import SkuStage, open_stage

ImageInput = str | os.PathLike | np.ndarray | Image.Image


def tile_options(tile: str | bool | TileOptions = "auto", tile_size: int | None = None,
                 overlap: float | None = None, base: TileOptions | None = None) -> TileOptions:
    """:class:`TileOptions` from keyword arguments: ``tile`` ``auto`` | ``on`` | ``off`` (or True / False),
    ``tile_size`` (tile side in original pixels), ``overlap`` (fraction); None keeps ``base``'s (or the default)."""
    if isinstance(tile, TileOptions):
        return tile
    mode = ("on" if tile else "off") if isinstance(tile, bool) else tile
    changes: dict[str, Any] = {"mode": mode}
    if tile_size is not None:
        changes["size"] = tile_size
    if overlap is not None:
        changes["overlap"] = overlap
    return dataclasses.replace(base, **changes) if base is not None else TileOptions(**changes)


def _check_conf(conf: float) -> float:
    if not 0.0 <= conf <= 1.0:  # also refuses NaN
        raise InvalidInput(f"conf must be in [0, 1], got {conf}")
    return float(conf)


def open_predictor(
    weights: str | Path,
    *,
    device: str = "auto",
    conf: float = 0.25,
    image_size: int | None = None,
    use_ema: bool = True,
    tile: str | TileOptions = "auto",
    batch_size: int = 8,
    agnostic_nms: bool | None = None,
    gallery: str | Path | None = None,
    embedder: str | Path | None = None,
    unknown_below: float | None = None,
    proposals: str | Path | None = None,
) -> tuple[Predictor, SkuStage | None]:
    """The detector and its naming stage as ``predict``, ``audit`` and :func:`load` use them.

    The gallery is opened first (a gallery that cannot be used fails before the model loads); with one the NMS
    is class-agnostic unless ``agnostic_nms=False`` (the detector's classes are replaced by SKUs: one box per
    product). The model is opened by :meth:`Predictor.from_weights` (its other arguments are passed on), then
    :func:`~detect.data.proposals.check_proposals_arg` refuses ``proposals`` for a model that cannot take them
    and their absence for one trained without an RPN.

    Returns:
        ``(predictor, stage)``; ``stage`` is None without a gallery.
    """
    stage = open_stage(gallery, embedder, unknown_below, device)
    if stage is not None and agnostic_nms is None:
        agnostic_nms = True
    predictor = Predictor.from_weights(weights, device=device, conf=conf, image_size=image_size, use_ema=use_ema,
                                       tile=tile, batch_size=batch_size, agnostic_nms=agnostic_nms)
    if predictor.config is not None:
        check_proposals_arg(predictor.model, predictor.config.model.name, weights, proposals)
    return predictor, stage


@dataclass
class _Item:
    """One image to predict: a file (read when its batch comes) or an array in memory."""

    path: Path | None
    image: np.ndarray | None


def _array(x: np.ndarray, what: str) -> np.ndarray:
    if x.ndim != 3 or x.shape[2] != 3 or x.dtype != np.uint8 or 0 in x.shape:
        raise InvalidInput(f"{what}: expected an H x W x 3 uint8 RGB numpy array, got shape {tuple(x.shape)} "
                           f"dtype {x.dtype}")
    return x


def _items(images: ImageInput | Iterable[ImageInput]) -> list[_Item]:
    """The images of one call, checked before any is predicted (a bad one raises, naming it)."""
    if isinstance(images, np.ndarray) and images.ndim == 4:  # a batch [B, H, W, 3]
        images = list(images)
    if isinstance(images, (str, os.PathLike, np.ndarray, Image.Image)):
        images = [images]
    elif not isinstance(images, Iterable):
        raise InvalidInput(f"expected images (a path, a numpy array, a PIL image or a list of them), got "
                           f"{type(images).__name__}")
    items: list[_Item] = []
    for i, x in enumerate(images):
        if isinstance(x, (str, os.PathLike)):
            src = expand_sources([x])
            if src.problems:
                p = src.problems[0]
                raise InvalidInput(f"{p.file}: {p.reason}")
            if not src.files:
                raise InvalidInput(f"{x}: no image files in this folder")
            items += [_Item(s.path, None) for s in src.files]
        elif isinstance(x, np.ndarray):
            items.append(_Item(None, _array(x, f"image {i} (numpy array)")))
        elif isinstance(x, Image.Image):
            items.append(_Item(None, _array(np.asarray(x.convert("RGB")), f"image {i} (PIL image)")))
        else:
            raise InvalidInput(f"image {i}: expected a path, a numpy array or a PIL image, got {type(x).__name__}")
    return items


def _read(item: _Item) -> np.ndarray:
    return item.image if item.image is not None else read_image(item.path)


class Model:
    """A detector (and, with a gallery, its SKU naming) ready to call on images; made by :func:`load`.

    Attributes:
        predictor: the :class:`~detect.engine.inference.predictor.Predictor` it runs.
        stage: the :class:`~detect.verbs.sku_stage.SkuStage` naming the boxes by a gallery, or None.
        class_names: the names the results' labels index (with a gallery: its SKUs, then ``unknown``).
        detector_class_names: the detector's own classes.
        image_size: the model input side ``S``.
        device: the torch device it runs on.
        conf, tile: the defaults of a call (score threshold, :class:`TileOptions`).
        row_gap: shelf-row split gap (fraction of the median box height) of :meth:`Result.to_dict`.

    A call's ``conf`` / tile / batch options are set on the shared predictor for its batches: call one model from
    one thread at a time.
    """

    def __init__(self, predictor: Predictor, stage: SkuStage | None = None, row_gap: float = 0.5) -> None:
        self.predictor = predictor
        self.stage = stage
        self.detector_class_names = list(predictor.class_names)
        self.class_names = list(stage.names) if stage is not None else self.detector_class_names
        self.row_gap = float(row_gap)

    @property
    def image_size(self) -> int:
        return self.predictor.image_size

    @property
    def device(self):  # torch.device
        return self.predictor.device

    @property
    def conf(self) -> float:
        return self.predictor.conf

    @property
    def tile(self) -> TileOptions:
        return self.predictor.tile

    def __repr__(self) -> str:
        named = f", gallery of {len(self.class_names) - 1} SKUs" if self.stage is not None else ""
        return (f"Model({len(self.detector_class_names)} classes, {self.image_size} px, {self.device}, "
                f"conf {self.conf}{named})")

    def __call__(self, images: ImageInput | Iterable[ImageInput], *, conf: float | None = None,
                 tile: str | bool | None = None, tile_size: int | None = None, overlap: float | None = None,
                 batch_size: int | None = None) -> list[Result]:
        """Detect products in ``images``; always a list of :class:`Result`, one per image, in input order.

        Args:
            images: a path (a file, a folder: its images recursively, sorted; a glob), an ``H x W x 3`` uint8 RGB
                numpy array (or a ``[B, H, W, 3]`` batch), a PIL image, or a list of those.
            conf: score threshold of this call (None: the one given to :func:`load`).
            tile, tile_size, overlap: tiling of this call (``auto`` | ``on`` | ``off``, tile side in original
                pixels, overlap fraction); None keeps the model's.
            batch_size: images (or tiles) per forward pass; None keeps the model's.

        Raises:
            InvalidInput: an input that is not an image (named), a bad threshold or tile option; ImageError: a
                file that cannot be read. Nothing is predicted when an argument is bad.
        """
        return list(self.stream(images, conf=conf, tile=tile, tile_size=tile_size, overlap=overlap,
                                batch_size=batch_size))

    def stream(self, images: ImageInput | Iterable[ImageInput], *, conf: float | None = None,
               tile: str | bool | None = None, tile_size: int | None = None, overlap: float | None = None,
               batch_size: int | None = None) -> Iterator[Result]:
        """:meth:`__call__` one result at a time (files are read a batch ahead, results are not all kept)."""
        p = self.predictor
        conf = p.conf if conf is None else _check_conf(conf)
        opts = tile_options(p.tile.mode if tile is None else tile, tile_size, overlap, base=p.tile)
        size = p.batch_size if batch_size is None else max(1, int(batch_size))
        items = _items(images)
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        if not chunks:
            return
        with ThreadPoolExecutor(max_workers=2) as pool:
            pending = [pool.submit(_read, it) for it in chunks[0]]
            for k, chunk in enumerate(chunks):
                arrays = [f.result() for f in pending]
                pending = [pool.submit(_read, it) for it in chunks[k + 1]] if k + 1 < len(chunks) else []
                with self._using(conf, opts, size):
                    raw = p.predict_images(arrays)
                for item, image, r in zip(chunk, arrays, raw):
                    if self.stage is not None:
                        r = self.stage.apply(image, r, self.detector_class_names)
                    yield Result(r, self.class_names, item.path, item.image, self.row_gap)

    @contextlib.contextmanager
    def _using(self, conf: float, tile: TileOptions, batch_size: int) -> Iterator[None]:
        """The predictor with this call's settings for one batch (the model's own threshold too, when it has one:
        a lower ``conf`` than :func:`load`'s then finds more boxes)."""
        p = self.predictor
        old = (p.conf, p.tile, p.batch_size)
        p.conf, p.tile, p.batch_size = conf, tile, batch_size
        post = (postprocess_settings(p.model, score_thresh=conf) if hasattr(p.model, "post")
                else contextlib.nullcontext())
        try:
            with post:
                yield
        finally:
            p.conf, p.tile, p.batch_size = old


def load(
    weights: str | Path,
    device: str = "auto",
    conf: float = 0.25,
    tile: str | bool = "auto",
    tile_size: int | None = None,
    overlap: float | None = None,
    batch_size: int = 8,
    gallery: str | Path | None = None,
    embedder: str | Path | None = None,
    unknown_below: float | None = None,
    agnostic_nms: bool | None = None,
    *,
    image_size: int | None = None,
    use_ema: bool = True,
    row_gap: float = 0.5,
) -> Model:
    """Open a detector for prediction.

    Args:
        weights: a checkpoint (``best.pt`` of ``retail-detect train``) or an exported ``model.onnx`` /
            ``model.xml`` (whatever :meth:`Predictor.from_weights` opens).
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.
        conf: score threshold (a call may give another).
        tile, tile_size, overlap: tiled inference of large photos: ``auto`` | ``on`` | ``off`` (or True / False),
            tile side in original pixels, overlap fraction (None: :class:`TileOptions`' defaults).
        batch_size: images (or tiles) per forward pass.
        gallery: a SKU gallery folder (``retail-detect gallery build``): every box is named by it, ``class_names``
            become its SKUs + ``unknown`` and results carry ``sku`` / ``similarity``.
        embedder: the gallery's embedder (``imagenet`` or a checkpoint); None: the one the gallery names.
        unknown_below: similarity under which a box is ``unknown``; None: the gallery's calibrated threshold.
        agnostic_nms: one NMS over all classes (True) or per class (False); None: as trained (class-agnostic with
            a gallery).
        image_size: model input side; None: the training size.
        use_ema: prefer a checkpoint's EMA weights.
        row_gap: shelf-row split gap of :meth:`Result.to_dict` (predict's ``row_gap``: 0.5).
    """
    predictor, stage = open_predictor(
        weights, device=device, conf=_check_conf(conf), image_size=image_size, use_ema=use_ema,
        tile=tile_options(tile, tile_size, overlap), batch_size=batch_size, agnostic_nms=agnostic_nms,
        gallery=gallery, embedder=embedder, unknown_below=unknown_below,
    )
    return Model(predictor, stage, row_gap)


__all__ = ["Model", "Result", "load", "open_predictor", "tile_options"]
