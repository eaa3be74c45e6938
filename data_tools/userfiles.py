"""Reading a user's file without hanging, exhausting memory, or leaving the dataset root.

Only regular files are read: a FIFO named ``a.xml`` would block ``open`` forever and a symlink to
``/dev/zero`` would be read until memory runs out. Every read is capped (``max_bytes``). Symlink loops,
dangling symlinks and, when a dataset ``root`` is given, symlinks that resolve outside it are refused
too. Refusals raise :class:`UnsafeFile` with a machine-readable ``kind`` and a ``reason`` that does not
repeat the path but reads after it ("is a FIFO (named pipe), not a regular file"), so callers put the
path where their message needs it; ``str()`` of the exception is ``"<path> <reason>"``.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Iterable

from data_tools.errors import UserError

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


class UnsafeFile(UserError):
    """A path that must not be read: ``kind`` (e.g. ``not_regular_file``) and ``reason`` (no path in it)."""

    def __init__(self, path: str, kind: str, reason: str) -> None:
        super().__init__(f"{path} {reason}")
        self.path, self.kind, self.reason = path, kind, reason


def within(path: str, root: str) -> bool:
    """True if the normalised absolute ``path`` lies inside ``root`` (lexically; both absolute)."""
    path, root = os.path.normpath(path), os.path.normpath(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def describe_mode(mode: int) -> str:
    """``"a FIFO (named pipe)"``, ``"a character device"``, ... for a non-regular ``st_mode``."""
    return next((text for test, text in _KINDS if test(mode)), "a special file")


def real_path(path: str, cache: dict | None = None) -> str:
    """``os.path.realpath(path)``; with ``cache`` (a dict kept for one pass over a dataset) each folder is
    resolved once, which makes checking thousands of files in a few folders several times faster."""
    if cache is None:
        return os.path.realpath(path)
    folder, name = os.path.split(path)
    real_folder = cache.get(("realpath", folder))
    if real_folder is None:
        real_folder = cache[("realpath", folder)] = os.path.realpath(folder)
    full = os.path.join(real_folder, name)
    return os.path.realpath(full) if os.path.islink(full) else full


def check_file(path: str | os.PathLike, root: str | os.PathLike | None = None, cache: dict | None = None) -> None:
    """Raise :class:`UnsafeFile` unless ``path`` is a regular file (after symlinks) inside ``root``.

    ``root``: the dataset folder; a symlink anywhere on the way that resolves outside it is refused.
    ``cache``: see :func:`real_path`.
    """
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except OSError as e:
        raise _stat_error(p, e) from None
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeFile(p, "not_regular_file", f"is {describe_mode(st.st_mode)}, not a regular file")
    if root is not None:
        real, real_root = real_path(os.path.abspath(p), cache), real_path(os.path.abspath(root), cache)
        if not within(real, real_root):
            raise UnsafeFile(p, "outside_root", f"resolves to {real}, outside the dataset root {os.fspath(root)}")


def _stat_error(p: str, e: OSError) -> UnsafeFile:
    if e.errno == errno.ELOOP:
        return UnsafeFile(p, "symlink_loop", "is a symlink loop (too many levels of symbolic links)")
    if e.errno == errno.ENOENT and os.path.islink(p):
        return UnsafeFile(p, "broken_symlink", f"is a broken symlink (to {os.readlink(p)})")
    if e.errno == errno.ENOENT:
        return UnsafeFile(p, "missing_file", "does not exist")
    return UnsafeFile(p, "unreadable_file", f"is unreadable ({e.strerror})")


def file_identity(path: str, cache: dict | None = None) -> tuple:
    """What makes two paths one file: its device and inode (two names of one file by a hard link or a symlink
    are one file), or its resolved path where the file system has no inode numbers."""
    try:
        st = os.stat(path)
    except OSError:
        st = None
    if st is not None and st.st_ino:
        return ("inode", st.st_dev, st.st_ino)
    return ("path", real_path(path, cache))


def open_regular(path: str | os.PathLike, max_bytes: int, root: str | os.PathLike | None = None,
                 cache: dict | None = None):
    """Open ``path`` for binary reading after :func:`check_file`, refusing files over ``max_bytes``.

    The file is opened non-blocking and checked again on the open descriptor, so a FIFO swapped in
    after the check cannot block. Returns a binary file object (the caller closes it).
    """
    p = os.fspath(path)
    check_file(p, root, cache)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise _stat_error(p, e) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(p, "not_regular_file", f"is {describe_mode(st.st_mode)}, not a regular file")
        if st.st_size > max_bytes:
            raise UnsafeFile(p, "huge_file", f"is {st.st_size:,} bytes, over the {max_bytes:,}-byte limit")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def hash_into(h, path: str | os.PathLike, max_bytes: int, root: str | os.PathLike | None = None) -> None:
    """Feed the bytes of a regular file of at most ``max_bytes`` (see :func:`open_regular`) into the ``hashlib``
    object ``h``, 1 MiB at a time; raises :class:`UnsafeFile` or ``OSError`` like :func:`open_regular`."""
    with open_regular(path, max_bytes, root) as f:
        for piece in iter(lambda: f.read(1 << 20), b""):
            h.update(piece)


def read_limited(path: str | os.PathLike, max_bytes: int, root: str | os.PathLike | None = None,
                 cache: dict | None = None) -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (see :func:`open_regular`)."""
    with open_regular(path, max_bytes, root, cache) as f:
        try:
            data = f.read(max_bytes + 1)
        except OSError as e:
            raise UnsafeFile(os.fspath(path), "unreadable_file", f"is unreadable ({e.strerror})") from None
    if len(data) > max_bytes:  # it grew while being read
        raise UnsafeFile(os.fspath(path), "huge_file", f"is over the {max_bytes:,}-byte limit")
    return data


def first_usable(candidates: Iterable[str], root: str, cache: dict | None = None) -> tuple[str | None, UnsafeFile | None]:
    """The first candidate path that exists and passes :func:`check_file` inside ``root``.

    Returns ``(path, None)``, or ``(None, why the first existing candidate was refused)``, or
    ``(None, None)`` when no candidate exists at all.
    """
    refused = None
    for p in candidates:
        if not os.path.lexists(p):
            continue
        try:
            check_file(p, root, cache)
        except UnsafeFile as e:
            refused = refused or e
            continue
        return p, None
    return None, refused


def read_json(path: str, max_bytes: int, error: type[Exception], what: str) -> object:
    """Parse a user's JSON file (a regular file of at most ``max_bytes``, UTF-8 with or without BOM).

    Every failure is raised as ``error`` with one line naming the file (and the line for invalid JSON);
    ``what`` names the expected kind in the "nested too deeply" message (e.g. ``"a COCO file"``).
    """
    try:
        return json.loads(read_limited(path, max_bytes).decode("utf-8-sig"))
    except UnsafeFile as e:
        raise error(str(e)) from None
    except json.JSONDecodeError as e:
        raise error(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except RecursionError:
        raise error(f"{path}: JSON nested too deeply to be {what}") from None
    except ValueError as e:  # Python's int-digits limit: a number of thousands of digits
        raise error(f"{path}: a number too long to be {what} ({str(e).split(';')[0]})") from None
