"""Progress for long stages (reading annotations, caching images, eval, predict, browse): a tqdm bar on stderr
where a person watches, one line per stage where nobody does.

- On a terminal, a stage of at least ``min_items`` items (default :data:`MIN_ITEMS`) shows a bar.
- When stderr is not a terminal (a log file, CI), a bar's redraws would fill the log: a long stage prints one line
  when it ends instead (``eval: 2,000 img in 41.2 s``).
- ``enabled`` forces the bar on or off (off also silences the line).

A stage that shows nothing returns a do-nothing bar, so callers update it unconditionally.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

from tqdm import tqdm

T = TypeVar("T")
MIN_ITEMS = 50  # shorter inputs finish before a bar is worth reading


def is_tty() -> bool:
    """Whether stderr (where bars go) is a terminal."""
    return sys.stderr.isatty()


def show_progress(total: int | None, enabled: bool | None = None, min_items: int = MIN_ITEMS) -> bool:
    """Whether to show a bar for ``total`` items: ``enabled`` when given, else a terminal and a long input."""
    if enabled is not None:
        return bool(enabled)
    return is_tty() and (total is None or total >= min_items)


def logs_a_line(total: int | None, enabled: bool | None = None, min_items: int = MIN_ITEMS) -> bool:
    """Whether a stage with no bar prints one closing line instead: not a terminal, not silenced, a long input."""
    return enabled is None and not is_tty() and total is not None and total >= min_items


class StageLine:
    """A bar's stand-in off the terminal: counts ``update`` calls and, if ``speak``, prints one line at ``close``."""

    def __init__(self, desc: str, unit: str, speak: bool, file: TextIO | None = None) -> None:
        self.desc, self.unit, self.speak, self.file = desc, unit, speak, file
        self.n, self.t0, self.closed = 0, time.perf_counter(), False

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, *args: object, **kwargs: object) -> None:  # tqdm's API; nothing to show
        pass

    def close(self) -> None:
        if self.speak and not self.closed:
            print(f"{self.desc}: {self.n:,} {self.unit} in {time.perf_counter() - self.t0:.1f} s",
                  file=self.file or sys.stderr, flush=True)
        self.closed = True

    def __enter__(self) -> StageLine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(total: int | None, desc: str, unit: str = "img", enabled: bool | None = None,
                 file: TextIO | None = None, min_items: int = MIN_ITEMS) -> tqdm | StageLine:
    """A tqdm bar of ``total`` ``unit`` on ``file`` (stderr) per :func:`show_progress`, else a :class:`StageLine`."""
    if show_progress(total, enabled, min_items):
        return tqdm(total=total, desc=desc, unit=unit, file=file or sys.stderr, dynamic_ncols=True, leave=False)
    return StageLine(desc, unit, logs_a_line(total, enabled, min_items), file)


def progress(iterable: Iterable[T], total: int | None, desc: str, unit: str = "img",
             enabled: bool | None = None, min_items: int = MIN_ITEMS) -> Iterable[T]:
    """``iterable`` with a bar (or one closing line off the terminal) of ``total`` items, per :func:`progress_bar`."""
    if show_progress(total, enabled, min_items):
        return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False)
    return _counted(iterable, StageLine(desc, unit, logs_a_line(total, enabled, min_items)))


def _counted(iterable: Iterable[T], line: StageLine) -> Iterator[T]:
    try:
        for item in iterable:
            line.update()
            yield item
    finally:
        line.close()
