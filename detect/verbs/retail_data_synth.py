"""``retail-data synth``: synthetic shelf photos with VOC labels (plain, ``--dense``, or from a ``--planogram``).

The generators are imported when the verb runs (they pull in OpenCV drawing code the other verbs never need).
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from data_tools.cli_frame import parse_size
from data_tools.errors import UserError
from data_tools.outputs import prepare_output_folder
from data_tools.summary_text import per_class
from data_tools.userfiles import UnsafeFile, read_limited

SYNTH_SIDE = (16, 4096)  # --size bounds, as data_tools.synth enforces
SYNTH_MAX_IMAGES = 100_000
SYNTH_MAX_CLASSES = 1000


def _parse_size(text: str) -> tuple[int, int]:
    """``--size WxH`` (or ``S`` for SxS) within :data:`SYNTH_SIDE`; raises :class:`UserError`."""
    w, h = parse_size(text)
    lo, hi = SYNTH_SIDE
    if w < lo or h < lo:
        raise UserError(f"--size {text} is too small ({lo}x{lo} at least)")
    if w > hi or h > hi:
        raise UserError(f"--size {text} is too large ({hi}x{hi} at most)")
    return w, h


_SYNTH_CLASS = re.compile(r"brand_[a-z]+")


def _check_synth_folder(out: str) -> None:
    """``synth -o`` may write into a missing or empty folder, or over an earlier synth output only."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise UserError(f"output folder {out} is a file")
    if not p.is_dir() or not any(p.iterdir()):
        return
    try:
        names = [n.strip() for n in read_limited(p / "classes.txt", 1 << 20, p).decode("utf-8").splitlines() if n.strip()]
    except (UnsafeFile, UnicodeDecodeError):
        names = []
    if not names or not all(_SYNTH_CLASS.fullmatch(n) for n in names):
        raise UserError(f"refusing to write into {out}: it is not empty and not an earlier synth output "
                        "(no classes.txt of brand_* names); choose a new folder")


def cmd_synth(args: argparse.Namespace) -> int:
    size = _parse_size(args.size or ("640x640" if args.dense else "320x320"))
    if args.classes is None:
        args.classes = 12 if args.dense else 5
    if not 1 <= args.images <= SYNTH_MAX_IMAGES:
        raise UserError(f"--images must be between 1 and {SYNTH_MAX_IMAGES:,}, not {args.images}")
    if not 1 <= args.classes <= SYNTH_MAX_CLASSES:
        raise UserError(f"--classes must be between 1 and {SYNTH_MAX_CLASSES}, not {args.classes}")
    if args.planogram and args.dense:
        raise UserError("--dense and --planogram do not go together: a plan fixes the facings of every row")
    if args.planogram:  # the plan generator writes only into a new or empty folder
        from data_tools.synth_planogram import run_synth_planogram

        return run_synth_planogram(args.output, args.planogram, args.images, args.classes, args.seed, size,
                                   args.out_of_stock, args.misplace)
    if args.out_of_stock or args.misplace:
        raise UserError("--out-of-stock and --misplace need --planogram PLAN.yaml")
    _check_synth_folder(args.output)
    try:
        from data_tools.synth import generate
        from data_tools.synth_dense import generate_dense
    except ImportError as e:
        raise UserError(f"the synthetic generator is not available ({e})") from None
    for folder in (args.output, os.path.join(args.output, "images"), os.path.join(args.output, "annotations")):
        prepare_output_folder(folder)  # the generator creates them
    result = (generate_dense if args.dense else generate)(args.output, args.images, args.classes, args.seed, size)
    kind = "dense synthetic" if args.dense else "synthetic"
    print(f"wrote {args.images} {kind} images ({args.classes} classes, {size[0]}x{size[1]}) to {args.output}")
    if isinstance(result, dict) and "per_class" in result:
        per_image = f"{result['boxes'] / max(1, result['images']):.1f} per image, " if args.dense else ""
        print(f"boxes: {result['boxes']} ({per_image}{result['truncated']} cut by the border); "
              f"per class: {per_class(result['per_class'])}")
    print(f"next: retail-data convert {args.output} -o {os.path.join(args.output, 'dataset.pkl')}")
    return 0
