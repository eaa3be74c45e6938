"""The user-error family of both CLIs: what is printed as one ``error: ...`` line, and what is a bug.

A **user error** is a problem the user can fix without touching the code: a bad flag value or recipe key,
a missing, unreadable or malformed input file, an output that would replace an input or a file of
another kind, a full disk. Every such problem raised by the package is a :class:`UserError`: one of
``ConfigError``, ``CheckpointError``, ``DatasetFileError``, ``OutputRefused``, ``WriteError``,
``PlanogramError``, ``ProposalsError``, ``ImageError``, ``UnsafeFile``, ``LoaderStalled``, the label-format
errors, or the plain :class:`InvalidInput` (a bad value) and :class:`CannotRun` (no GPU, a missing optional
package, training diverged). A subclass that callers used to catch as ``ValueError``, ``RuntimeError`` or
``OSError`` still is one (``class ConfigError(UserError, ValueError)``).

Besides :class:`UserError`, :func:`is_user_error` accepts the operating system's own refusals that name a
file the user gave, which the user can fix:

- ``FileNotFoundError``, ``PermissionError``, ``IsADirectoryError``, ``NotADirectoryError``,
  ``FileExistsError``;
- any ``OSError`` whose ``errno`` says the disk is full or read-only (``ENOSPC``, ``EDQUOT``, ``EFBIG``,
  ``EROFS``).

Everything else (``KeyError``, ``TypeError``, a bare ``ValueError`` or ``RuntimeError``, any other
``OSError``) is a bug: :func:`data_tools.cli_frame.run_cli` prints its traceback and exits 70.
"""

from __future__ import annotations

import errno
import re

USER_OS_ERRORS: tuple[type[OSError], ...] = (
    FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError,
)
"""``OSError`` subclasses that name a file the user gave and can fix (see the module doc)."""
USER_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
"""``errno`` values of any ``OSError`` that is the user's disk, not our code: full, over quota, read-only."""
MAX_LINE = 1000


class UserError(Exception):
    """A problem the user can fix (bad input, bad flag value, refused output): one ``error:`` line, exit 1."""

    def lines(self) -> list[str]:
        """What the CLIs print, one ``error: ...`` line each (a subclass with several problems lists them)."""
        return [one_line(self)]


class InvalidInput(UserError, ValueError):
    """A bad value the user gave (a flag, a recipe key, a dataset that cannot serve); still a ``ValueError``."""


class CannotRun(UserError, RuntimeError):
    """The run cannot go on for a reason the user can fix (no GPU, a missing optional package, training
    diverged, a child run failed); still a ``RuntimeError``."""


def error_lines(exc: BaseException) -> list[str]:
    """The one-line messages of a user error (:meth:`UserError.lines`, else :func:`one_line`)."""
    return [one_line_text(t) for t in exc.lines()] if isinstance(exc, UserError) else [one_line(exc)]


def is_user_error(exc: BaseException) -> bool:
    """True for a :class:`UserError` and the file-system refusals listed in the module doc."""
    if isinstance(exc, (UserError, *USER_OS_ERRORS)):
        return True
    return isinstance(exc, OSError) and exc.errno in USER_ERRNOS


def one_line(exc: BaseException) -> str:
    """The exception's message on one line, without terminal escapes, at most 1,000 characters."""
    return one_line_text(str(exc) or type(exc).__name__)


def one_line_text(text: str) -> str:
    """``text`` on one line (whitespace runs and newlines -> one space), terminal escapes removed, at most
    1,000 characters."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text).split())
    return text if len(text) <= MAX_LINE else text[:MAX_LINE - 3] + "..."
