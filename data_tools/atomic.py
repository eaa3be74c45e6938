"""Atomic output files: a reader never sees a half-written file, and outputs never clobber inputs.

Every writer in :mod:`data_tools` (dataset pickle, COCO JSON, VOC XML, reports, plots) goes through
:func:`atomic_open`: it writes a temporary file ``.NAME.XXXXXXXX.tmp`` in the destination folder,
flushes and fsyncs it, then ``os.replace``-s it over the destination (atomic on POSIX and Windows). If
anything fails the temporary file is removed and the destination is left as it was.

- Permissions: a new file gets ``0o666 & ~umask`` (0644 under umask 022), like ``open()`` would give;
  a replaced file keeps its mode. (``mkstemp`` alone creates 0600 files.)
- Errors: a failed write raises :class:`WriteError` (an ``OSError``, ``errno`` kept) whose message
  names the user's path, never the temporary file: ``no space left writing out.pkl (previous out.pkl
  kept)``. :func:`check_writable_dir` probes an output folder before expensive work. (Whether an output
  may replace a file at all is :mod:`data_tools.outputs`.)
- A killed process can leave its temporary file behind; :func:`remove_stale_temps` removes those.
  While writing, :func:`atomic_open` holds an exclusive ``flock`` on its temporary file, so a live
  write is never mistaken for an orphan.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from data_tools.errors import UserError

try:
    import fcntl
except ImportError:  # Windows: no flock; stale temps are then recognised by age alone
    fcntl = None

TEMP_MARK = "rdtmp-"
TEMP_RE = re.compile(r"^\..+\." + TEMP_MARK + r"[a-z0-9_]{8}\.tmp$")
"""Names ``tempfile.mkstemp(prefix=".NAME.rdtmp-", suffix=".tmp")`` creates: the atomic writer's temporaries.
The ``rdtmp-`` mark is ours: a user's own ``.notes.20261203.tmp`` never matches, so cleanup never touches it."""
STALE_AFTER_S = 60.0
"""A temporary file untouched for this long, and not locked by a writer, is an orphan."""
MIN_FREE_BYTES = 64 * 1024
""":func:`check_writable_dir` refuses a folder whose disk has less free space than this."""

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_WRITE_ERRNOS = {*_NO_SPACE, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO}


class WriteError(UserError, OSError):
    """A write that failed (full disk, read-only folder, ...), with a message naming the user's path (``errno``
    is the original one). The user can fix it: both CLIs print it as one ``error:`` line."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(code, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _reason(e: OSError) -> str:
    if e.errno in _NO_SPACE:
        return "no space left"
    if e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if e.errno == errno.EROFS:
        return "read-only file system"
    return (e.strerror or str(e)).lower()


def write_error(e: OSError, path: str | os.PathLike, existed: bool) -> WriteError:
    """The :class:`WriteError` for ``e`` raised while writing ``path`` (``existed``: it was there before)."""
    kept = f" (previous {Path(path).name} kept)" if existed else ""
    if e.errno in _NO_SPACE:
        return WriteError(e.errno, f"no space left writing {os.fspath(path)}{kept}")
    return WriteError(e.errno, f"cannot write {os.fspath(path)}: {_reason(e)}{kept}")


def new_file_mode(path: str | os.PathLike) -> int:
    """Mode for a file about to replace ``path``: its current mode, or ``0o666`` less the umask."""
    with contextlib.suppress(OSError):
        st = os.stat(path)
        if stat.S_ISREG(st.st_mode):
            return stat.S_IMODE(st.st_mode)
    mask = os.umask(0o077)  # read the umask; 0o077 meanwhile errs on the private side
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None,
                durable: bool = True) -> Iterator[IO]:
    """Open a temporary file next to ``path`` for writing; on success it atomically becomes ``path``.

    Args:
        path: destination file; its folder is created when missing.
        mode: ``"wb"`` or ``"w"`` (text, then ``encoding`` defaults to UTF-8).
        durable: fsync the file and its folder (default). A writer of thousands of small files (an export)
            passes False and calls :func:`flush_to_disk` once at the end: still atomic, one disk flush.
    Raises:
        WriteError: the folder or file cannot be written (message names ``path``).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open supports modes 'wb' and 'w', not {mode!r}")
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory")
    existed = path.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{TEMP_MARK}", suffix=".tmp", dir=folder)
    except OSError as e:
        raise write_error(e, path, existed) from e
    try:
        _lock(fd)
        os.chmod(tmp, new_file_mode(path))
        kwargs = {} if mode == "wb" else {"encoding": encoding or "utf-8", "newline": ""}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, WriteError) and e.errno in _WRITE_ERRNOS:
            raise write_error(e, path, existed) from e
        raise
    if durable:
        _fsync_dir(folder)


def _lock(fd: int) -> None:
    """Mark a temporary file as being written (released when ``fd`` closes or the process dies).

    Best effort: where ``flock`` is missing or refused (some network file systems) the age rule of
    :func:`remove_stale_temps` still protects the file.
    """
    if fcntl is not None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path (``durable``: see :func:`atomic_open`)."""
    with atomic_open(path, "wb", durable=durable) as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, durable: bool = True) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path (``durable``: see :func:`atomic_open`)."""
    return atomic_write_bytes(path, text.encode("utf-8"), durable)


def flush_to_disk() -> None:
    """Flush every written file to disk (``os.sync``; where it is missing, nothing): the end of a bulk write."""
    if hasattr(os, "sync"):
        os.sync()


def check_writable_dir(folder: str | os.PathLike, min_free: int = MIN_FREE_BYTES, create: bool = True) -> Path:
    """Prove a file can be written in ``folder``; returns it as a Path.

    ``create``: make the folder (and its parents) if missing; with ``False`` a missing folder is left
    alone and its nearest existing ancestor is probed instead (where creating it would write).
    Raises :class:`WriteError` naming ``folder``: it is a file, cannot be created, is read-only or
    not writable, or its disk has less than ``min_free`` bytes free.
    """
    folder = Path(folder) if str(folder) else Path(".")
    if folder.exists() and not folder.is_dir():
        raise WriteError(errno.ENOTDIR, f"output folder {folder} is a file")
    probe = folder
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise WriteError(e.errno, f"cannot create output folder {folder}: {_reason(e)}") from e
    else:
        while not probe.is_dir() and probe != probe.parent:
            if probe.exists():  # a file where a parent folder should be
                raise WriteError(errno.ENOTDIR, f"cannot create output folder {folder}: {probe} is a file")
            probe = probe.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".write-probe.{TEMP_MARK}", suffix=".tmp", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise WriteError(e.errno, f"cannot write to {folder}: {_reason(e)}") from e
    try:
        free = shutil.disk_usage(probe).free
    except OSError:  # some file systems cannot tell; the write itself will say
        free = min_free
    if free < min_free:
        raise WriteError(errno.ENOSPC, f"no space left on the disk of {folder} ({free:,} bytes free)")
    return folder


def remove_stale_temps(folder: str | os.PathLike, older_than_s: float = STALE_AFTER_S) -> list[str]:
    """Delete the atomic writer's orphaned temporary files (``.NAME.rdtmp-XXXXXXXX.tmp``) in ``folder``.

    Only regular files of this user that match the writer's name pattern, were not modified for
    ``older_than_s`` seconds and are not locked by a live writer are removed (the age guards writers
    that do not lock, such as another tool's ``mkstemp`` copy; the lock guards a slow live write).
    Returns the names removed; a missing folder gives ``[]``.
    """
    removed: list[str] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not TEMP_RE.match(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < older_than_s:
            continue
        if hasattr(os, "getuid") and st.st_uid != os.getuid():
            continue
        if _unlink_if_unlocked(entry.path):
            removed.append(entry.name)
    return sorted(removed)


def _unlink_if_unlocked(path: str) -> bool:
    """Remove ``path`` unless a writer holds its lock. True if it was removed."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return False
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # a live writer holds it
                return False
        os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a lock's owner; one owned by another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: exists, owned by someone else; anything else: cannot tell
        return True
    return True


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True if ``a`` and ``b`` are one file: same resolved path, or same inode (hard links)."""
    try:
        if os.path.realpath(a) == os.path.realpath(b):
            return True
        return os.path.samefile(a, b)
    except (OSError, RuntimeError, ValueError):  # missing, a symlink loop, a NUL in the name
        return False


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where folders cannot be opened."""
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
