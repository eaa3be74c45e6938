"""Folder outputs are written whole or not at all: a run that fails midway leaves nothing the rerun would refuse,
a killed run's hidden folder is removed later, and a user's own folder is never written into or removed."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys

import pytest
from dt_helpers import make_image

from data_tools.atomic import WriteError
from data_tools.formats import export as export_mod
from data_tools.records import Record, RecordSet
from data_tools.staged import OWNER_NAME, StagedFolder, remove_orphan_stages
from data_tools.store import save_dataset
from detect.verbs.retail_data import main


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "photos"
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        make_image(root / "images" / name, (32, 24))
    rs = RecordSet(["cola"], str(root), [Record(f"images/{n}", 32, 24, [[1, 1, 9, 9]], [1])
                                         for n in ("a.jpg", "b.jpg", "c.jpg")], {})
    path = tmp_path / "ds.pkl"
    save_dataset(rs, path)
    return path


def _fail_on_second_image(monkeypatch):
    real, placed = export_mod._place, []

    def place(src, dst, mode, problems):
        if placed:
            raise WriteError(errno.ENOSPC, f"no space left writing {dst}")
        placed.append(dst)
        return real(src, dst, mode, problems)

    monkeypatch.setattr(export_mod, "_place", place)


def test_an_export_that_fails_midway_leaves_nothing_and_the_rerun_writes_the_same_folder(dataset, tmp_path,
                                                                                          monkeypatch, capsys):
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        _fail_on_second_image(m)
        assert main(["export", str(dataset), "--format", "voc", "-o", str(out)]) == 1
    assert "no space left" in capsys.readouterr().err
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no hidden leftovers
    assert main(["export", str(dataset), "--format", "voc", "-o", str(out)]) == 0
    assert sorted(p.name for p in (out / "images").iterdir()) == ["a.jpg", "b.jpg", "c.jpg"]
    assert not (out / OWNER_NAME).exists() and oct(out.stat().st_mode & 0o777) != oct(0o700)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert main(["export", str(dataset), "--format", "voc", "-o", str(mine)]) == 1
    assert "not empty" in capsys.readouterr().err and os.listdir(mine) == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export", str(dataset), "--format", "yolo", "-o", str(empty)]) == 0  # an empty folder is used
    assert (empty / "data.yaml").is_file()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_killed_writers_hidden_folder_is_removed_by_the_next_run(tmp_path):
    killed = tmp_path / ".rep.rdtmp-abcd1234.part"
    killed.mkdir()
    (killed / "half.jpg").write_bytes(b"x")
    (killed / OWNER_NAME).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    elsewhere = tmp_path / ".rep.rdtmp-zzzz1234.part"  # another machine's writer on a shared disk: kept
    elsewhere.mkdir()
    (elsewhere / OWNER_NAME).write_text(json.dumps({"pid": _dead_pid(), "host": "another-host"}))
    users = tmp_path / ".rep.part"  # a user's hidden folder without our mark: never touched
    users.mkdir()
    with StagedFolder(tmp_path / "rep", numbered=True) as stage:
        assert not killed.exists() and elsewhere.exists() and users.exists()
        assert remove_orphan_stages(tmp_path) == []  # our own live stage is kept
        (stage.path / "index.html").write_text("ok")
    assert stage.final == tmp_path / "rep" and (tmp_path / "rep" / "index.html").read_text() == "ok"


def test_numbered_stage_steps_past_a_folder_with_files_and_a_file_target_is_refused(tmp_path):
    (tmp_path / "rep").mkdir()
    (tmp_path / "rep" / "notes.txt").write_text("mine")
    with StagedFolder(tmp_path / "rep", numbered=True) as stage:
        (stage.path / "x").write_text("1")
    assert stage.final == tmp_path / "rep2" and os.listdir(tmp_path / "rep") == ["notes.txt"]
    (tmp_path / "f").write_text("a file")
    from data_tools.outputs import OutputRefused

    with pytest.raises(OutputRefused, match="is a file"):
        with StagedFolder(tmp_path / "f", numbered=True):
            pass
    with pytest.raises(RuntimeError):
        with StagedFolder(tmp_path / "boom") as stage:
            (stage.path / "x").write_text("1")
            raise RuntimeError("midway")
    assert not (tmp_path / "boom").exists() and not stage.path.exists()
