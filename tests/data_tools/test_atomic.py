"""Atomic writes: normal permissions, clear lines for read-only / full disks naming the user's path,
a writability probe before the work, and removal of temporary files left by a killed save."""

from __future__ import annotations

import errno
import os
import stat
import time
from collections import namedtuple

import pytest
from dt_helpers import temp_leftovers

import data_tools.atomic as atomic
import data_tools.store as store
import detect.verbs.retail_data as cli
from data_tools.atomic import WriteError, atomic_write_bytes, check_writable_dir, remove_stale_temps
from detect.verbs.retail_data import main


@pytest.fixture
def umask():
    """Set a umask for the test and restore the previous one."""
    old = os.umask(0o022)
    yield lambda m: os.umask(m)
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_files_follow_the_umask(tmp_path, umask):
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    assert _mode(tmp_path / "a.bin") == 0o644
    umask(0o077)
    atomic_write_bytes(tmp_path / "b.bin", b"x")
    assert _mode(tmp_path / "b.bin") == 0o600
    umask(0o002)
    atomic_write_bytes(tmp_path / "c.bin", b"x")
    assert _mode(tmp_path / "c.bin") == 0o664


def test_replacing_a_file_keeps_its_mode(tmp_path, umask):
    p = tmp_path / "a.bin"
    p.write_bytes(b"old")
    os.chmod(p, 0o640)
    atomic_write_bytes(p, b"new")
    assert p.read_bytes() == b"new" and _mode(p) == 0o640


def test_convert_output_is_readable_by_others(dataset, tmp_path, umask):
    assert main(["convert", str(dataset), "-o", str(tmp_path / "d.pkl"), "--quiet",
                 "--report", str(tmp_path / "r.json")]) == 0
    assert _mode(tmp_path / "d.pkl") == 0o644 and _mode(tmp_path / "r.json") == 0o644


def test_checkpoint_follows_the_umask(tmp_path, umask):
    pytest.importorskip("torch")
    from detect.engine.runtime.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "last.pt", {"epoch": 1})
    assert _mode(tmp_path / "last.pt") == 0o644


def test_no_space_left_names_the_user_path_and_keeps_the_old_file(dataset, tmp_path, monkeypatch, capsys):
    out = tmp_path / "d.pkl"
    assert main(["convert", str(dataset), "-o", str(out), "--quiet"]) == 0
    before = out.read_bytes()
    capsys.readouterr()

    def full(obj, f, protocol):
        f.write(b"half a pickle")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.pickle, "dump", full)
    assert main(["convert", str(dataset), "-o", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err == f"error: no space left writing {out} (previous {out.name} kept)\n"
    assert out.read_bytes() == before and not temp_leftovers(tmp_path)


def test_no_space_on_a_new_file_says_nothing_about_a_previous_one(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(WriteError) as e:
        atomic_write_bytes(tmp_path / "new.bin", b"x")
    assert str(e.value) == f"no space left writing {tmp_path / 'new.bin'}" and e.value.errno == errno.ENOSPC
    assert not temp_leftovers(tmp_path) and not (tmp_path / "new.bin").exists()


@pytest.fixture
def read_only(monkeypatch):
    """Make creating files fail as on a read-only mount (the tests run as root, so chmod cannot)."""
    def mkstemp(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", os.path.join(k.get("dir", "."), ".x.abcdefgh.tmp"))
    monkeypatch.setattr(atomic.tempfile, "mkstemp", mkstemp)


def test_read_only_output_folder_is_refused_before_the_work(dataset, tmp_path, monkeypatch, capsys, read_only):
    def boom(*a, **k):
        raise AssertionError("convert ran before the output folder was probed")

    monkeypatch.setattr(cli, "convert", boom)
    out = tmp_path / "ro" / "d.pkl"
    assert main(["convert", str(dataset), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err == f"error: cannot write to {tmp_path / 'ro'}: read-only file system\n"


@pytest.mark.parametrize("verb", ["split", "export-coco", "stats"])
def test_other_verbs_probe_their_output_folder(dataset, tmp_path, capsys, verb, monkeypatch):
    ds = tmp_path / "d.pkl"
    assert main(["convert", str(dataset), "-o", str(ds), "--quiet"]) == 0
    capsys.readouterr()

    def mkstemp(*a, **k):
        raise OSError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(atomic.tempfile, "mkstemp", mkstemp)
    target = tmp_path / "locked"
    args = {"split": ["split", str(ds), "-o", str(target)],
            "export-coco": ["export-coco", str(ds), "-o", str(target / "gt.json")],
            "stats": ["stats", str(ds), "--plot", str(target / "s.png")]}[verb]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"cannot write to {target}: permission denied" in err and ".tmp" not in err


def test_full_disk_is_refused_before_the_work(dataset, tmp_path, monkeypatch, capsys):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda p: usage(10**9, 10**9, 0))
    assert main(["convert", str(dataset), "-o", str(tmp_path / "d.pkl"), "--quiet"]) == 1
    assert f"no space left on the disk of {tmp_path}" in capsys.readouterr().err


def test_check_writable_dir(tmp_path):
    assert check_writable_dir(tmp_path / "later" / "sub", create=False) == tmp_path / "later" / "sub"
    assert not (tmp_path / "later").exists() and os.listdir(tmp_path) == []
    assert check_writable_dir(tmp_path / "new" / "sub") == tmp_path / "new" / "sub"
    assert (tmp_path / "new" / "sub").is_dir() and os.listdir(tmp_path / "new" / "sub") == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteError, match="is a file"):
        check_writable_dir(tmp_path / "file")
    with pytest.raises(WriteError, match="file is a file"):
        check_writable_dir(tmp_path / "file" / "below", create=False)


def _aged(path, seconds: float = 3600):
    path.write_bytes(b"partial")
    t = time.time() - seconds
    os.utime(path, (t, t))
    return path


def test_remove_stale_temps(tmp_path):
    old = _aged(tmp_path / ".d.pkl.rdtmp-k3j_x9q2.tmp")
    fresh = (tmp_path / ".d.pkl.rdtmp-abcd1234.tmp")
    fresh.write_bytes(b"being written")
    other = _aged(tmp_path / ".notes.tmp")  # not the writer's pattern
    users = _aged(tmp_path / ".notes.20261203.tmp")  # the user's own: hidden, 8 characters, but not our mark
    mine = _aged(tmp_path / "d.pkl.rdtmp-abcd1234.tmp")  # not hidden: not the writer's
    assert remove_stale_temps(tmp_path) == [old.name]
    assert not old.exists() and fresh.exists() and other.exists() and mine.exists() and users.exists()


def test_a_temp_file_still_being_written_is_kept(tmp_path):
    import fcntl

    live = _aged(tmp_path / ".d.pkl.rdtmp-abcd1234.tmp")
    with open(live, "rb") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # as atomic_open holds it while writing
        assert remove_stale_temps(tmp_path) == [] and live.exists()
    assert remove_stale_temps(tmp_path) == [live.name]


def test_atomic_open_locks_its_temp_while_writing(tmp_path):
    with atomic.atomic_open(tmp_path / "d.pkl") as f:
        f.write(b"half")
        assert remove_stale_temps(tmp_path, older_than_s=0) == [] and len(temp_leftovers(tmp_path)) == 1
    assert (tmp_path / "d.pkl").read_bytes() == b"half" and not temp_leftovers(tmp_path)


def test_convert_removes_temps_left_by_a_killed_save(dataset, tmp_path, capsys):
    orphan = _aged(tmp_path / ".d.pkl.rdtmp-zz1234ab.tmp")
    assert main(["convert", str(dataset), "-o", str(tmp_path / "d.pkl"), "--quiet"]) == 0
    assert not orphan.exists()
    assert "removed 1 temporary file left by an interrupted save" in capsys.readouterr().err
