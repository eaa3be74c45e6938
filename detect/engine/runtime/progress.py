"""Progress bars for long runs (``eval``, ``predict``): tqdm on stderr, only where a person watches.

A bar is shown when stderr is a terminal and the input has at least :data:`MIN_ITEMS` items; ``enabled``
forces it on or off. A disabled bar is a tqdm that prints nothing, so callers update it unconditionally.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TextIO, TypeVar

from tqdm import tqdm

T = TypeVar("T")
MIN_ITEMS = 50  # shorter inputs finish before a bar is worth reading


def show_progress(total: int | None, enabled: bool | None = None) -> bool:
    """Whether to show a bar for ``total`` items: ``enabled`` when given, else a TTY and a long input."""
    if enabled is not None:
        return bool(enabled)
    return sys.stderr.isatty() and (total is None or total >= MIN_ITEMS)


def progress_bar(total: int | None, desc: str, unit: str = "img", enabled: bool | None = None,
                 file: TextIO | None = None) -> tqdm:
    """A tqdm bar of ``total`` ``unit`` on ``file`` (stderr); disabled per :func:`show_progress`."""
    return tqdm(total=total, desc=desc, unit=unit, file=file or sys.stderr, dynamic_ncols=True, leave=False,
                disable=not show_progress(total, enabled))


def progress(iterable: Iterable[T], total: int | None, desc: str, unit: str = "img",
             enabled: bool | None = None) -> Iterable[T]:
    """``iterable`` with a progress bar of ``total`` items (:func:`progress_bar`'s rule)."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False,
                disable=not show_progress(total, enabled))


def is_tty() -> bool:
    return sys.stderr.isatty()
