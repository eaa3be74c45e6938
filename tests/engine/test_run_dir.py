"""Run folders: runs/x -> runs/x2 when taken, one live writer per folder, stale locks and temp files."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest

from data_tools.outputs import OutputRefused
from detect.engine.runtime.run_dir import LOCK_NAME, RunLock, claim_run_dir


def test_new_empty_and_taken_folders(tmp_path):
    base = tmp_path / "runs" / "ssd"
    first, lock1 = claim_run_dir(base)
    assert first == base and (base / LOCK_NAME).is_file()
    (base / "last.pt").write_bytes(b"run 1")
    lock1.release()
    assert not (base / LOCK_NAME).exists()
    second, lock2 = claim_run_dir(base)  # holds a run -> the next free name
    assert second == tmp_path / "runs" / "ssd2"
    lock2.release()
    (tmp_path / "runs" / "ssd2" / "metrics.csv").write_text("x")
    third, lock3 = claim_run_dir(base)
    assert third.name == "ssd3"
    lock3.release()
    again, lock4 = claim_run_dir(base, exist_ok=True)  # reuse on purpose
    assert again == base and (base / "last.pt").read_bytes() == b"run 1"
    lock4.release()


def test_live_writer_is_refused_or_avoided(tmp_path):
    base = tmp_path / "run"
    _, held = claim_run_dir(base)  # a live run that has not written a file yet
    other, lock = claim_run_dir(base)  # a second new run goes elsewhere
    assert other.name == "run2"
    lock.release()
    with pytest.raises(OutputRefused, match="in use by another run"):
        claim_run_dir(base, exist_ok=True)
    with pytest.raises(OutputRefused, match="in use by another run"):
        claim_run_dir(base, resume=True)
    held.release()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    base = tmp_path / "run"
    base.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    (base / LOCK_NAME).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    (base / ".last.pt.rdtmp-abc12345.tmp").write_bytes(b"half a checkpoint")  # a killed save
    (base / "last.pt").write_bytes(b"kept")
    (base / ".notes.20261203.tmp").write_text("the user's own")  # never ours: kept at any age
    folder, lock = claim_run_dir(base, resume=True)
    assert folder == base and lock.held
    assert not (base / ".last.pt.rdtmp-abc12345.tmp").exists() and (base / "last.pt").read_bytes() == b"kept"
    assert (base / ".notes.20261203.tmp").read_text() == "the user's own"
    lock.release()


def test_lock_context_and_holder(tmp_path):
    with RunLock(tmp_path) as lock:
        assert lock.try_acquire() and lock.holder()["pid"] == os.getpid()
        assert not RunLock(tmp_path).try_acquire()
    assert not (tmp_path / LOCK_NAME).exists()


def test_file_in_the_way_and_unwritable_folders(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("user data")
    with pytest.raises(OutputRefused, match="is a file"):
        claim_run_dir(tmp_path / "afile")
    import tempfile

    from data_tools.atomic import WriteError

    for code, words in ((errno.EROFS, "read-only file system"), (errno.ENOSPC, "no space left")):
        def refuse(*args, code=code, **kwargs):
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(tempfile, "mkstemp", refuse)  # the probe write fails as on such a disk
        with pytest.raises(WriteError) as err:
            claim_run_dir(tmp_path / "runs" / "x")
        assert str(err.value) == f"cannot write to {tmp_path / 'runs' / 'x'}: {words}"
        monkeypatch.undo()
