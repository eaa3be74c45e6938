"""Cheap image checks: size, EXIF orientation and integrity, without decoding the whole image.

Policy (ARCHITECTURE.md, "Bad inputs"):

- ``PIL.Image.open`` reads only the header: format, raw size, mode, EXIF. Files PIL cannot identify
  (text or HTML saved as ``.jpg``), zero-byte files and images over :data:`MAX_PIXELS` are rejected.
- Truncation: a JPEG must end with the EOI marker ``FF D9`` and a PNG with its ``IEND`` chunk (trailing
  NUL/whitespace padding is tolerated). Only when that tail check fails is the image decoded, to tell a
  truncated file (decoder error -> rejected) from one with extra bytes after the end marker, as some
  phone cameras write (decodes fine -> accepted). So a healthy file costs one header read plus a
  few tail bytes; other formats (BMP, TIFF, WebP, GIF) get the header check only.
- Grayscale, RGBA, palette, 16-bit and CMYK images are accepted: :func:`read_image` converts.
- EXIF orientation: ``width``/``height`` are the displayed (post-rotation) size; orientations 5-8 swap
  the raw width and height. :func:`resolve_size` decides whether annotation boxes were drawn on the
  raw or the displayed pixels, and :func:`orient_boxes` moves raw-pixel boxes to displayed pixels.

Decoding (:func:`read_image`, the project's one image opener: training, prediction, the report):

- the file is opened with the same checks as :func:`probe_image` (a regular file of at most
  :data:`MAX_IMAGE_BYTES`) and the EXIF orientation is read by the same rule, then applied once with the
  transposition table of ``PIL.ImageOps.exif_transpose``; so image sizes agree with record sizes.
- Modes: ``L``/``1``/``CMYK``/``YCbCr``/``LAB``/``HSV`` are converted to RGB; ``RGBA``/``LA``/``PA`` and
  palette images with transparency are composited on white; 16-bit and 32-bit integer images
  (``I;16*``, ``I``) are scaled to 8 bits (``v / 257``); float images (``F``) are clipped to 0..255.
- Zero-byte, missing, non-image and truncated files raise :class:`ImageError` with the path and reason.
- ``max_side``: JPEGs may be decoded at a reduced DCT scale (``Image.draft``, 1/2, 1/4, 1/8) while the
  longer side stays ``>= max_side``; the caller resizes to its exact target. Decoding a 4000 px phone
  photo for a 320 px model input this way is several times faster.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from data_tools.errors import UserError
from data_tools.records import Problem
from data_tools.userfiles import UnsafeFile, open_regular

MAX_PIXELS = 100_000_000
"""Largest accepted image (width x height); bigger ones are skipped (decoding one takes > 300 MB)."""
MAX_IMAGE_BYTES = 1 << 30
"""Largest accepted image file (1 GiB): a 100-megapixel 16-bit RGBA TIFF fits."""

_JPEG_EOI = b"\xff\xd9"
_PNG_IEND = b"IEND\xaeB`\x82"
_ORIENT_TAG = 0x0112
# PIL.ImageOps.exif_transpose's table: EXIF orientation -> transpose method.
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_TO_RGB = {"1", "L", "P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"}
_ALPHA = {"RGBA", "LA", "PA", "RGBa", "La"}
BACKGROUND = (255, 255, 255)
"""Transparent pixels become white (product cut-outs sit on white)."""


class ImageError(UserError):
    """An image that cannot be read or used (the one image error of the project, in data_tools and detect).

    ``path`` names the image, ``reason`` says why (without the path), ``kind`` is the machine-readable
    problem kind (``missing_image``, ``empty_image``, ``huge_image``, ``truncated_image``, ...);
    ``str(error)`` is ``"<path>: <reason>"``.
    """

    def __init__(self, path: str | os.PathLike, reason: str, kind: str = "unreadable_image") -> None:
        super().__init__(f"{os.fspath(path)}: {reason}")
        self.path = os.fspath(path)
        self.reason = reason
        self.kind = kind

    def __reduce__(self):  # picklable across DataLoader workers / multiprocessing
        return type(self), (self.path, self.reason, self.kind)


@dataclass(frozen=True)
class ImageInfo:
    """What the header says. ``width``/``height`` are after EXIF orientation; ``raw_*`` are as stored."""

    width: int
    height: int
    raw_width: int
    raw_height: int
    orientation: int
    mode: str
    format: str


def probe_image(path: str | os.PathLike) -> ImageInfo:
    """Read an image's header and check it is complete (see the module policy). Raises :class:`ImageError`.

    Only a regular file of at most :data:`MAX_IMAGE_BYTES` is opened (a FIFO or ``/dev/zero`` named
    ``x.jpg`` is refused, not read).
    """
    with _open(path) as f:
        return _probe_open(path, f)


def _open(path: str | os.PathLike):
    """The image file opened for binary reading (a non-empty regular file of at most :data:`MAX_IMAGE_BYTES`),
    or :class:`ImageError`."""
    try:
        f = open_regular(path, MAX_IMAGE_BYTES)
    except UnsafeFile as e:
        kind = "missing_image" if e.kind in ("missing_file", "unreadable_file") else e.kind
        raise ImageError(path, e.reason, kind) from None
    if os.fstat(f.fileno()).st_size == 0:
        f.close()
        raise ImageError(path, "image file is empty (0 bytes)", "empty_image")
    return f


def _probe_open(path, f) -> ImageInfo:
    """:func:`probe_image` on the already opened, non-empty regular file ``f``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(f) as img:
                info = _header_info(img, path)
                if info.raw_width * info.raw_height > MAX_PIXELS:
                    raise ImageError(path, _huge_msg(info.raw_width, info.raw_height), "huge_image")
                _check_complete(path, f, img, info.format)
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(path, f"image has more than {MAX_PIXELS:,} pixels", "huge_image") from None
    except UnidentifiedImageError:
        raise ImageError(path, "not an image PIL can read", "not_an_image") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(path, f"cannot read image: {e}", "unreadable_image") from None
    return info


def _huge_msg(w: int, h: int) -> str:
    return f"image is {w}x{h} ({w * h:,} pixels, limit {MAX_PIXELS:,})"


def _header_info(img: Image.Image, path: str | os.PathLike) -> ImageInfo:
    raw_w, raw_h = img.size
    if raw_w <= 0 or raw_h <= 0:
        raise ImageError(path, f"image header gives size {raw_w}x{raw_h}", "unreadable_image")
    orientation = _orientation(img)
    w, h = (raw_h, raw_w) if orientation >= 5 else (raw_w, raw_h)
    return ImageInfo(w, h, raw_w, raw_h, orientation, img.mode, img.format or "")


def _orientation(img: Image.Image) -> int:
    """EXIF orientation 1..8 from the header (1 when absent or broken)."""
    # PNG keeps EXIF in a chunk that PIL only reaches by decoding, unless it comes before the pixels.
    if img.format == "PNG" and "exif" not in img.info:
        return 1
    try:
        value = int(img.getexif().get(_ORIENT_TAG, 1) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not reject a good image
        return 1
    return value if 1 <= value <= 8 else 1


def _check_complete(path, f, img: Image.Image, fmt: str) -> None:
    """Tail check for JPEG/PNG on the open file ``f``; decode only when the tail is wrong (module policy)."""
    if fmt == "JPEG":
        marker = _JPEG_EOI
    elif fmt == "PNG":
        marker = _PNG_IEND
    else:
        return
    pos = f.tell()
    f.seek(0, os.SEEK_END)
    f.seek(max(0, f.tell() - 64))
    tail = f.read(64).rstrip(b"\x00 \t\r\n")
    f.seek(pos)
    if tail.endswith(marker):
        return
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # someone told PIL to pad truncated images: decoding proves nothing
        ok = False
    else:
        try:
            img.load()
            ok = True
        except (OSError, SyntaxError, ValueError):
            ok = False
    if not ok:
        raise ImageError(path, f"image is truncated (no {fmt} end marker)", "truncated_image")


def resolve_size(declared: tuple[int, int] | None, info: ImageInfo) -> tuple[int, int, int, str | None, str | None]:
    """Reconcile the annotation's declared ``(width, height)`` with the real image.

    Returns ``(width, height, box_orientation, kind, reason)``: the size to use (always the displayed
    image size), the EXIF orientation to apply to the annotation's boxes (1 = none), and a problem
    ``kind``/``reason`` to report (``None`` when all agree). Boxes are taken to be in displayed pixels,
    except when the declared size is the raw size of an image whose EXIF rotation swaps width and height:
    then the annotator saw raw pixels (labelImg does) and the boxes are rotated to match.
    """
    w, h = info.width, info.height
    if declared is None:
        return w, h, 1, "missing_size", f"no usable <size>; using the image's {w}x{h}"
    if declared == (w, h):
        if info.orientation != 1 and (info.raw_width, info.raw_height) == (w, h):  # size cannot tell raw from rotated
            return w, h, 1, "exif_orientation", (
                f"image has EXIF orientation {info.orientation}; boxes taken as drawn on the displayed "
                f"(rotated) {w}x{h} image"
            )
        return w, h, 1, None, None
    if info.orientation >= 5 and declared == (info.raw_width, info.raw_height):
        return w, h, info.orientation, "exif_rotated", (
            f"<size> {declared[0]}x{declared[1]} is the stored size of an image with EXIF orientation "
            f"{info.orientation}; boxes rotated to the displayed {w}x{h} image"
        )
    return w, h, 1, "size_mismatch", (
        f"<size> says {declared[0]}x{declared[1]} but the image is {w}x{h}"
        + (f" (after EXIF orientation {info.orientation})" if info.orientation != 1 else "")
        + "; using the image's size"
    )


def check_image(file: str, path: str, declared: tuple[int, int] | None, problems: list[Problem], *,
                line: int | None = None, field: str | None = None, size_at: tuple[int | None, str | None] | None = None,
                sized: bool = True) -> tuple[ImageInfo, int, int, int] | None:
    """Probe the image an annotation in ``file`` names and reconcile the size it declares (:func:`resolve_size`).

    Returns ``(info, width, height, box_orientation)``, or None after an :class:`ImageError` reported as a
    Problem at ``line``/``field``. A size problem is reported at ``size_at`` (``(line, field)``; default the
    same place); ``sized``: the format declares sizes at all (YOLO does not, so a missing one is not reported).
    """
    try:
        info = probe_image(path)
    except ImageError as e:
        problems.append(Problem(file, str(e), line=line, field=field, kind=e.kind))
        return None
    width, height, orientation, kind, reason = resolve_size(declared, info)
    if kind and (sized or kind != "missing_size"):
        at_line, at_field = size_at if size_at is not None else (line, field)
        action = "ignored" if kind == "exif_orientation" else "fixed"
        problems.append(Problem(file, reason, line=at_line, field=at_field, action=action, kind=kind))
    return info, width, height, orientation


def orient_boxes(boxes: np.ndarray, orientation: int, raw_width: int, raw_height: int) -> np.ndarray:
    """Move xyxy boxes ``[N, 4]`` from raw stored pixels to the image displayed under EXIF ``orientation``.

    Matches ``PIL.ImageOps.exif_transpose`` (2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 CW,
    7 transverse, 8 rotate 90 CCW).
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x1, y1, x2, y2 = b.T
    W, H = float(raw_width), float(raw_height)
    table = {
        1: (x1, y1, x2, y2),
        2: (W - x2, y1, W - x1, y2),
        3: (W - x2, H - y2, W - x1, H - y1),
        4: (x1, H - y2, x2, H - y1),
        5: (y1, x1, y2, x2),
        6: (H - y2, x1, H - y1, x2),
        7: (H - y2, W - x2, H - y1, W - x1),
        8: (y1, W - x2, y2, W - x1),
    }
    return np.stack(table[orientation], axis=1) if len(b) else b


def read_image(path: str | os.PathLike, max_side: int | None = None) -> np.ndarray:
    """Decode an image file to RGB (see the module policy).

    Args:
        path: the image file.
        max_side: if given, a JPEG may be decoded at reduced scale with its longer side still
            ``>= max_side`` (the aspect ratio is kept up to rounding); other formats decode at full size.
    Returns:
        ``[H, W, 3]`` uint8 RGB, C-contiguous, after EXIF orientation.
    Raises:
        ImageError: missing, not a regular file, empty, not an image, truncated or otherwise undecodable.
    """
    with _open(path) as f:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(f) as img:
                    orientation = _orientation(img)
                    if max_side and img.format == "JPEG":
                        _draft(img, max_side)
                    img.load()
                    img = _to_rgb(img)
                    if orientation in _TRANSPOSE:
                        img = img.transpose(_TRANSPOSE[orientation])
                    arr = np.asarray(img)
        except UnidentifiedImageError:
            raise ImageError(path, "not an image PIL can read", "not_an_image") from None
        except Image.DecompressionBombError as e:
            raise ImageError(path, f"image too large: {e}", "huge_image") from None
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            kind = "truncated_image" if "truncated" in str(e).lower() else "unreadable_image"
            raise ImageError(path, f"cannot decode image: {e}", kind) from None
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ImageError(path, f"decoded to unexpected array {arr.shape} {arr.dtype}")
    return np.ascontiguousarray(arr)


def _draft(img: Image.Image, max_side: int) -> None:
    """Ask the JPEG decoder for the smallest DCT scale whose longer side is still ``>= max_side``."""
    w, h = img.size
    k = max_side / max(w, h)
    if k < 0.5:
        img.draft(img.mode, (max(1, math.ceil(w * k)), max(1, math.ceil(h * k))))


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> ``RGB`` (see the module policy)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in _ALPHA:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, BACKGROUND)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if mode in _TO_RGB:
        return img.convert("RGB")
    if mode.startswith("I") or mode == "F":
        arr = np.asarray(img)
        if mode == "F":
            arr8 = np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8)
        else:  # 16-bit (or 32-bit int holding 16-bit data, as PIL opens some 16-bit PNGs)
            arr8 = np.clip(arr.astype(np.int64) // 257, 0, 255).astype(np.uint8)
        if arr8.ndim == 2:
            arr8 = np.repeat(arr8[:, :, None], 3, axis=2)
        return Image.fromarray(np.ascontiguousarray(arr8[:, :, :3]), "RGB")
    return img.convert("RGB")
