"""Image reading policy: any file a dataset may hold -> ``H x W x 3`` uint8 RGB, or a clear :class:`ImageError`.

- EXIF orientation is applied exactly once, read from the header by the same rule as
  :func:`data_tools.images.probe_image` (which gave the records their post-EXIF ``width``/``height``), with
  the transposition table of ``PIL.ImageOps.exif_transpose``; so image sizes agree with record sizes.
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
import stat
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from data_tools.images import ImageError

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
BACKGROUND = (255, 255, 255)  # transparent pixels become white (product cut-outs sit on white)


def read_image(path: str | os.PathLike, max_side: int | None = None) -> np.ndarray:
    """Decode an image file to RGB.

    Args:
        path: the image file.
        max_side: if given, a JPEG may be decoded at reduced scale with its longer side still
            ``>= max_side`` (the aspect ratio is kept up to rounding); other formats decode at full size.
    Returns:
        ``[H, W, 3]`` uint8 RGB, C-contiguous, after EXIF orientation.
    Raises:
        ImageError: missing, empty, not an image, truncated or otherwise undecodable.
    """
    try:
        st = os.stat(path)
    except OSError as e:  # missing, permission, symlink loop
        raise ImageError(path, f"cannot read image: {e.strerror}", "missing_image") from None
    if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
        raise ImageError(path, "not a regular file (a FIFO, device or socket)", "not_a_file")
    size = st.st_size
    if size == 0:
        raise ImageError(path, "image file is empty (0 bytes)", "empty_image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                orientation = _orientation(img)
                if max_side and img.format == "JPEG":
                    _draft(img, max_side)
                img.load()
                img = _to_rgb(img)
                if orientation in _TRANSPOSE:
                    img = img.transpose(_TRANSPOSE[orientation])
                arr = np.asarray(img)
    except ImageError:
        raise
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


def _orientation(img: Image.Image) -> int:
    """EXIF orientation 1..8 from the header (1 when absent or broken), as ``probe_image`` reads it."""
    if img.format == "PNG" and "exif" not in img.info:
        return 1  # PNG EXIF after the pixels is ignored by probe_image too, so sizes stay consistent
    try:
        value = int(img.getexif().get(_ORIENT_TAG, 1) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not reject a good image
        return 1
    return value if 1 <= value <= 8 else 1


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
