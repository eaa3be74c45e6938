"""Cheap image checks: size, EXIF orientation and integrity, without decoding the whole image.

Policy (ARCHITECTURE.md, "Bad inputs"):

- ``PIL.Image.open`` reads only the header: format, raw size, mode, EXIF. Files PIL cannot identify
  (text or HTML saved as ``.jpg``), zero-byte files and images over :data:`MAX_PIXELS` are rejected.
- Truncation: a JPEG must end with the EOI marker ``FF D9`` and a PNG with its ``IEND`` chunk (trailing
  NUL/whitespace padding is tolerated). Only when that tail check fails is the image decoded, to tell a
  truncated file (decoder error -> rejected) from one with extra bytes after the end marker, as some
  phone cameras write (decodes fine -> accepted). So a healthy file costs one header read plus a
  few tail bytes; other formats (BMP, TIFF, WebP, GIF) get the header check only.
- Grayscale, RGBA, palette, 16-bit and CMYK images are accepted: ``detect.data.read_image`` converts.
- EXIF orientation: ``width``/``height`` are the displayed (post-rotation) size; orientations 5-8 swap
  the raw width and height. :func:`resolve_size` decides whether annotation boxes were drawn on the
  raw or the displayed pixels, and :func:`orient_boxes` moves raw-pixel boxes to displayed pixels.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from data_tools.errors import UserError
from data_tools.userfiles import UnsafeFile, open_regular

MAX_PIXELS = 100_000_000
"""Largest accepted image (width x height); bigger ones are skipped (decoding one takes > 300 MB)."""
MAX_IMAGE_BYTES = 1 << 30
"""Largest accepted image file (1 GiB): a 100-megapixel 16-bit RGBA TIFF fits."""

_JPEG_EOI = b"\xff\xd9"
_PNG_IEND = b"IEND\xaeB`\x82"
_ORIENT_TAG = 0x0112


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
    try:
        f = open_regular(path, MAX_IMAGE_BYTES)
    except UnsafeFile as e:
        kind = "missing_image" if e.kind in ("missing_file", "unreadable_file") else e.kind
        raise ImageError(path, e.reason, kind) from None
    with f:
        return _probe_open(path, f)


def _probe_open(path, f) -> ImageInfo:
    """:func:`probe_image` on the already opened regular file ``f``."""
    if os.fstat(f.fileno()).st_size == 0:
        raise ImageError(path, "image file is empty (0 bytes)", "empty_image")
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
    orientation = 1
    # PNG keeps EXIF in a chunk that PIL only reaches by decoding, unless it comes before the pixels.
    if img.format != "PNG" or "exif" in img.info:
        try:
            orientation = int(img.getexif().get(_ORIENT_TAG, 1) or 1)
        except Exception:  # a broken EXIF block must not reject a good image
            orientation = 1
    if orientation not in range(1, 9):
        orientation = 1
    w, h = (raw_h, raw_w) if orientation >= 5 else (raw_w, raw_h)
    return ImageInfo(w, h, raw_w, raw_h, orientation, img.mode, img.format or "")


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
