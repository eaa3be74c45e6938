"""Run folders: a new run never reuses a folder that holds one, and one live writer per folder.

The rule users know from Ultralytics: ``train.out_dir: runs/ssd`` writes into ``runs/ssd`` when that
folder is new or empty, else into ``runs/ssd2``, ``runs/ssd3``, ... (``exist_ok`` reuses it on purpose;
resume continues in the checkpoint's own folder). A :class:`RunLock` (``DIR/.lock`` with the writer's
pid and host, created with ``O_EXCL``) refuses a second live writer; a lock whose process is gone is
taken over. Temp files of an atomic save that a killed run left behind are removed when a run starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

from data_tools.atomic import TEMP_RE, check_writable_dir, pid_alive, remove_stale_temps
from data_tools.outputs import OutputRefused

LOCK_NAME = ".lock"


def _holds_files(folder: Path) -> bool:
    """True when ``folder`` holds anything besides a lock and stale temp files."""
    try:
        return any(not (e.name == LOCK_NAME or TEMP_RE.match(e.name)) for e in os.scandir(folder))
    except FileNotFoundError:
        return False


class RunLock:
    """``DIR/.lock`` held by this process; :meth:`release` (or leaving a ``with``) removes it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / LOCK_NAME
        self.held = False

    def holder(self) -> dict | None:
        """The lock file's ``{"pid", "host", "started"}``, or None when absent or unreadable."""
        try:
            info = json.loads(self.path.read_text(encoding="utf-8"))
            return info if isinstance(info, dict) else None
        except (OSError, ValueError):
            return None

    def _stale(self) -> bool:
        info = self.holder()
        if info is None:  # half-written or foreign: stale only when old (a live writer writes it at once)
            with contextlib.suppress(OSError):
                return time.time() - self.path.stat().st_mtime > 60
            return True
        if info.get("host") != socket.gethostname():
            return False  # another machine's process: cannot tell, assume alive
        pid = info.get("pid")
        return not (isinstance(pid, int) and pid_alive(pid))

    def try_acquire(self) -> bool:
        """Create the lock (taking over a stale one); False when a live process holds it."""
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._stale():
                    return False
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}, f)
            self.held = True
            return True
        return False

    def release(self) -> None:
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.held = False

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _candidates(base: Path):
    yield base
    k = 2
    while True:
        yield base.with_name(f"{base.name}{k}")
        k += 1


def claim_run_dir(base: str | Path, exist_ok: bool = False, resume: bool = False) -> tuple[Path, RunLock]:
    """Choose and lock the folder a run writes into; returns ``(folder, lock)``.

    Args:
        base: the requested folder (``train.out_dir`` / ``--out``).
        exist_ok: write into ``base`` even when it holds files (a second live writer is still refused).
        resume: ``base`` is the run being resumed: use it, refusing only a live writer.

    Raises:
        OutputRefused: ``base`` is a file, or (with ``exist_ok`` / ``resume``) is held by a live process.
        WriteError: a folder is not writable or its disk is full (:func:`data_tools.atomic.check_writable_dir`).
    """
    base = Path(base)
    if base.exists() and not base.is_dir():
        raise OutputRefused(f"output folder {base} is a file: choose another folder")
    fixed = exist_ok or resume
    for folder in _candidates(base):
        if folder.exists() and not folder.is_dir():
            continue
        if not fixed and _holds_files(folder):
            continue
        check_writable_dir(folder)  # before any expensive work: a clear error naming the folder
        lock = RunLock(folder)
        if lock.try_acquire():
            if not fixed and _holds_files(folder):  # another run claimed and wrote it meanwhile
                lock.release()
                continue
            remove_stale_temps(folder, older_than_s=0)  # we hold the lock: no live writer uses them
            return folder, lock
        if fixed:
            who = lock.holder() or {}
            raise OutputRefused(f"{folder} is in use by another run (pid {who.get('pid', '?')} on "
                              f"{who.get('host', '?')}); wait for it to finish or choose another train.out_dir")
    raise AssertionError("unreachable")  # pragma: no cover
