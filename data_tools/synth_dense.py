"""Dense synthetic shelves (``retail-data synth --dense``): the hard case of real shop photos.

Many small products packed tightly (4-6 shelf rows on a 640x640 photo, runs of 2-6 facings of a brand, gaps
of 0-4 % of a product's width), so a 640x640 photo holds about 40-90 boxes; mostly thin tall bottles, then
cans and multipack boxes. Brands come in look-alike groups of three (as beer brands do): the same shape,
aspect and colour family, told apart only by the label's pattern, shade and letter, so a detector that is
unsure between them scores one product as several classes. Same drawing, lighting and noise as
:mod:`data_tools.synth`, same files and VOC XML; class names are ``brand_*`` as there. Deterministic per
``(seed, index, size, classes)``.
"""

from __future__ import annotations

import os

from data_tools.records import RecordSet
from data_tools.synth import PATTERNS, Brand, ShelfStyle, _rgb, class_name, generate, make_tiny_dataset

DENSE_SIZE = (640, 640)  # the default photo size of the dense generator
GROUP = 3  # look-alike brands per group: same shape, aspect and colour family
# (shape, width / height, height as a fraction of the free row height): the groups cycle through these
DENSE_SHAPES = (("bottle", 0.30, 0.92), ("can", 0.55, 0.62), ("bottle", 0.34, 0.85), ("box", 0.78, 0.70))
HUE_FAMILIES = (0.07, 0.30, 0.12, 0.0, 0.58)  # amber, green, gold, red, blue
# every CYCLE groups the (shape, hue family) pairs repeat: from the second cycle on, a group's accent hue, pattern
# order and aspect move, so 200+ brands stay distinct looks (the first 60 brands are as before)
CYCLE = 20
DENSE_STYLE = ShelfStyle(row_height=(0.19, 0.27), runs=(2, 7), gap=(0.0, 0.04), wide_gap_p=0.03)


def dense_brand_styles(classes: int) -> list[Brand]:
    """``classes`` look-alike brands, label ``k + 1`` <-> ``brands[k]`` (same for every seed).

    Brand ``k`` is in group ``k // 3``: the group fixes shape, aspect, height and body hue (two groups of
    one shape differ in hue family); within a group the body hue moves by 0.015, the label is light or
    dark, and the pattern and letter differ. Groups ``g`` and ``g + CYCLE`` share shape and hue family; from
    cycle ``c = g // CYCLE >= 1`` on the accent hue, the pattern order and the aspect (+10 % per ``c mod 4``)
    move too, so no two of the first 600 brands look the same but for their letter.
    """
    brands = []
    for k in range(classes):
        g, j = divmod(k, GROUP)
        c = g // CYCLE
        shape, aspect, height = DENSE_SHAPES[g % len(DENSE_SHAPES)]
        hue = HUE_FAMILIES[g % len(HUE_FAMILIES)] + 0.015 * j
        brands.append(Brand(
            name=class_name(k), shape=shape, aspect=round(aspect * (1 + 0.1 * (c % 4)), 4), height=height,
            body=_rgb(hue, 0.75, 0.7 + 0.05 * j), label=(35, 35, 40) if j == 1 else _rgb(hue + 0.5, 0.1, 0.95),
            accent=_rgb(hue + 0.05 + 0.17 * c, 0.9, 0.55), pattern=PATTERNS[(k + c) % len(PATTERNS)],
            text=chr(65 + k % 26),
        ))
    return brands


def generate_dense(out_dir: str | os.PathLike, images: int = 64, classes: int = 12, seed: int = 0,
                   size: tuple[int, int] | int = DENSE_SIZE) -> dict:
    """Write a dense synthetic shelf dataset to ``out_dir`` (layout and summary: :func:`data_tools.synth.generate`)."""
    summary = generate(out_dir, images, classes, seed, size, brands=dense_brand_styles(classes), style=DENSE_STYLE)
    return summary | {"dense": True}


def make_dense_dataset(tmp_dir: str | os.PathLike, images: int = 12, classes: int = 6, seed: int = 0,
                       size: tuple[int, int] | int = DENSE_SIZE) -> RecordSet:
    """Dense shelves rendered into ``tmp_dir/images``, returned as a RecordSet (no XML; for tests)."""
    return make_tiny_dataset(tmp_dir, images, classes, seed, size, brands=dense_brand_styles(classes),
                             style=DENSE_STYLE)
