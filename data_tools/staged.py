"""Output folders written whole or not at all: a hidden folder beside the target, renamed into place at the end.

A verb that writes a folder of files (``export`` to a folder, ``eval --report``, ``browse``, ``predict
--save-labels``) writes them into ``.NAME.rdtmp-XXXXXXXX.part`` beside the target (:class:`StagedFolder`) and
renames it to the target when every file is written. So a killed or failed run never leaves a half-written
target that the next run would refuse as "not empty" or step past (``DIR2``): the rerun writes the same folder.

- A failure inside ``with StagedFolder(...)`` removes the hidden folder (it holds only what this run wrote).
- A killed process leaves its hidden folder behind; the next stage in the same parent folder removes it
  (:func:`remove_orphan_stages`): only a folder with our name pattern, of this user, whose owner file is
  not locked by a live writer and names a process of this host that is gone.
- ``numbered``: the run-folder rule (:func:`detect.engine.runtime.run_dir.claim_run_dir`): the target when
  it is new or empty, else ``DIR2``, ``DIR3``, ... chosen when the files are ready. Otherwise the target
  must be new or empty when renamed onto (the caller refused a non-empty one before any work).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import stat
import tempfile
import time
from pathlib import Path

from data_tools.atomic import STALE_AFTER_S, TEMP_MARK, check_writable_dir, pid_alive, write_error
from data_tools.errors import UserError

try:
    import fcntl
except ImportError:  # Windows: no flock; a stage's owner is then judged by its pid alone
    fcntl = None

STAGE_SUFFIX = ".part"
STAGE_RE = re.compile(r"^\..+\." + TEMP_MARK + r"[a-z0-9_]{8}" + re.escape(STAGE_SUFFIX) + "$")
"""Names ``tempfile.mkdtemp(prefix=".NAME.rdtmp-", suffix=".part")`` creates: our hidden folders only."""
OWNER_NAME = ".rdtmp-owner"
"""The file in a hidden folder naming its writer (pid, host), ``flock``-ed while it writes."""
_TAKEN = (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR)


class FolderTaken(UserError):
    """The target folder was filled by someone else while this run wrote its files."""


def _orphan(folder: str) -> bool:
    """True when the hidden folder's writer is gone (see the module doc)."""
    owner = os.path.join(folder, OWNER_NAME)
    try:
        fd = os.open(owner, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:  # killed between creating the folder and its owner file, or committing
        with contextlib.suppress(OSError):
            return time.time() - os.stat(folder).st_mtime > STALE_AFTER_S
        return False
    except OSError:
        return False
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:  # a live writer holds it
                return False
        info = json.loads(os.read(fd, 4096) or b"null")
    except (OSError, ValueError):
        return False
    finally:
        os.close(fd)
    if not isinstance(info, dict) or info.get("host") != socket.gethostname():
        return False  # another machine's writer: cannot tell, keep it
    pid = info.get("pid")
    return isinstance(pid, int) and not pid_alive(pid)


def remove_orphan_stages(parent: str | os.PathLike) -> list[str]:
    """Remove the hidden folders that killed writers left in ``parent``; returns their names."""
    removed: list[str] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        if not STAGE_RE.match(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
            continue
        if _orphan(entry.path):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.name)
    return sorted(removed)


def holds_files(folder: Path) -> bool:
    """True when ``folder`` exists and is not empty."""
    try:
        with os.scandir(folder) as it:
            return any(True for _ in it)
    except OSError:
        return False


class StagedFolder:
    """``with StagedFolder(target) as stage:`` write into ``stage.path``; on leaving it becomes the target.

    Args:
        target: the folder the user asked for (messages name it as given).
        numbered: move on to ``target2``, ``target3``, ... when the target holds files (run folders).

    After a successful ``with``, :attr:`final` is the folder written (``target`` or a numbered one, as given).

    Raises:
        OutputRefused: ``target`` is a file (numbered) ; FolderTaken: (not numbered) the target was filled
            meanwhile; WriteError: the parent folder cannot be written (the message names ``target``).
    """

    def __init__(self, target: str | os.PathLike, numbered: bool = False) -> None:
        self.target = Path(target)
        self.numbered = numbered
        self.final: Path | None = None
        self.path: Path | None = None
        self._fd: int | None = None

    def __enter__(self) -> StagedFolder:
        from data_tools.outputs import OutputRefused

        if self.target.exists() and not self.target.is_dir():
            raise OutputRefused(f"output folder {self.target} is a file: choose another folder")
        check_writable_dir(self.target.parent)  # a clear line naming the user's folder
        real = Path(os.path.realpath(self.target))
        parent = real.parent
        remove_orphan_stages(parent)
        try:
            tmp = tempfile.mkdtemp(prefix=f".{real.name}.{TEMP_MARK}", suffix=STAGE_SUFFIX, dir=parent)
        except OSError as e:
            raise write_error(e, self.target, False) from e
        self.path = Path(tmp)
        try:
            self._fd = os.open(os.path.join(tmp, OWNER_NAME), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            if fcntl is not None:
                with contextlib.suppress(OSError):
                    fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(self._fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
        except OSError as e:
            self._discard()
            raise write_error(e, self.target, False) from e
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._discard()
            return
        try:
            self.final = self._commit()
        except BaseException:
            self._discard()
            raise

    def _release_owner(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.path, OWNER_NAME))
            os.close(self._fd)
            self._fd = None

    def _discard(self) -> None:
        """Remove the hidden folder and everything this run wrote into it."""
        self._release_owner()
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)

    def _candidates(self):
        yield self.target
        if self.numbered:
            for k in range(2, 100_000):
                yield self.target.with_name(f"{self.target.name}{k}")

    def _commit(self) -> Path:
        """Rename the hidden folder onto the first usable candidate; returns it (as the user named it)."""
        from data_tools.outputs import OutputRefused

        self._release_owner()
        with contextlib.suppress(OSError):  # the mode a new folder gets (mkdtemp's is 0o700)
            os.chmod(self.path, _dir_mode())
        for cand in self._candidates():
            real = Path(os.path.realpath(cand))
            if real.exists() and (not real.is_dir() or holds_files(real)):
                if self.numbered:
                    continue
                raise FolderTaken(f"{cand} was filled by another program while this run wrote it; "
                                  "nothing written: choose a new folder")
            try:
                os.rename(self.path, real)
            except OSError as e:
                if e.errno in _TAKEN and self.numbered:
                    continue
                if e.errno in _TAKEN:
                    raise FolderTaken(f"{cand} was filled by another program while this run wrote it; "
                                      "nothing written: choose a new folder") from None
                if e.errno in (errno.EXDEV, errno.EBUSY) and real.is_dir():  # a mount point: move the files in
                    self._move_into(real, cand)
                    return cand
                raise write_error(e, cand, False) from e
            return cand
        raise OutputRefused(f"no free folder {self.target}2 .. {self.target}99999")

    def _move_into(self, real: Path, cand: Path) -> None:
        try:
            for entry in os.listdir(self.path):
                shutil.move(os.path.join(self.path, entry), real / entry)
        except OSError as e:
            raise write_error(e, cand, False) from e
        shutil.rmtree(self.path, ignore_errors=True)


def _dir_mode() -> int:
    """Mode of a new folder: ``0o777`` less the umask (``mkdtemp`` alone makes ``0o700``)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return 0o777 & ~mask
