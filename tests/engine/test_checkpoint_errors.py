"""Checkpoints that cannot be used get one line naming the file and the reason; saves keep the old file."""

from __future__ import annotations

import errno
import io
import pickle

import pytest
import torch

from detect.engine.runtime import checkpoint as ck
from detect.engine.runtime.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)


class _Payload:
    def __reduce__(self):
        return (io.open, ("/etc/hostname",))


def _good(path):
    return save_checkpoint(path, {"format": CHECKPOINT_FORMAT, "model": {"w": torch.zeros(2)}})


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and "\x1b" not in text and "weights_only=False" not in text and len(text) < 400
    return text


def test_truncated_names_the_last_good_checkpoint(tmp_path):
    best = _good(tmp_path / "best.pt")
    last = tmp_path / "last.pt"
    last.write_bytes(best.read_bytes()[:300])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(last)
    assert _one_line(err.value) == (f"{last} is unusable: the file is truncated (zip central directory missing); "
                                    f"last good checkpoint: {best}")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("content, reason", [
    (b"", "the file is empty"),
    (b"epoch,loss\n1,0.5\n", "a text file, not a PyTorch checkpoint"),
    (pickle.dumps({"a": 1}, protocol=4), "a pickle file that is not a plain-data PyTorch checkpoint"),
])
def test_not_a_checkpoint(tmp_path, content, reason):
    path = tmp_path / "w.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=reason) as err:
        load_checkpoint(path)
    assert _one_line(err.value).startswith(f"{path} is unusable: ")


def test_unsafe_pickle_names_the_global(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": _Payload()}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert "global io.open" in _one_line(err.value) and "refused for safety" in str(err.value)


def test_full_disk_keeps_the_previous_file_and_names_the_users_path(tmp_path, monkeypatch):
    last = _good(tmp_path / "last.pt")
    before = last.read_bytes()

    def full(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck.torch, "save", full)
    with pytest.raises(OSError) as err:
        save_checkpoint(last, {"x": 1})
    assert str(err.value) == f"no space left writing {last} (previous last.pt kept)"
    assert err.value.errno == errno.ENOSPC
    assert last.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_saved_checkpoint_respects_the_umask(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        path = _good(tmp_path / "last.pt")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


class _FullDisk:
    """A file that takes ``room`` bytes, then fails like a full disk (what torch's zip writer calls)."""

    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room

    def write(self, data) -> int:
        n = len(memoryview(data).cast("B"))
        if n > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= n
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def test_full_disk_inside_torch_save_is_one_line(tmp_path, monkeypatch):
    """torch's zip writer turns the failed write into ``RuntimeError: [enforce fail at inline_container.cc]
    ... unexpected pos``; the user sees the path and that the previous file was kept (issue 23)."""
    last = _good(tmp_path / "last.pt")
    before = last.read_bytes()
    real_save = torch.save
    monkeypatch.setattr(ck.torch, "save", lambda obj, f, *a, **k: real_save(obj, _FullDisk(f, 600), *a, **k))
    with pytest.raises(OSError) as err:
        save_checkpoint(last, {"format": CHECKPOINT_FORMAT, "model": {"w": torch.ones(10_000)}})
    assert str(err.value) == f"no space left writing {last} (previous last.pt kept)"
    assert err.value.errno == errno.ENOSPC
    assert last.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.pt"]

    def writer_failed(obj, f, *a, **k):  # the same error with its cause lost
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(ck.torch, "save", writer_failed)
    with pytest.raises(OSError) as err:
        save_checkpoint(last, {"x": 1})
    assert _one_line(err.value) == f"cannot write {last}: the write failed (is the disk full?) (previous last.pt kept)"
    assert last.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_last_good_hint_reads_only_a_few_regular_files(tmp_path, monkeypatch):
    """A FIFO named ``*.pt`` beside a truncated checkpoint is never opened (it would block), and the hint
    tries a bounded number of the other files (issue 23)."""
    import os

    best = _good(tmp_path / "best.pt")
    last = tmp_path / "last.pt"
    last.write_bytes(best.read_bytes()[:300])
    os.mkfifo(tmp_path / "pipe.pt")
    os.utime(best, (1, 1))  # the oldest: tried last
    for i in range(10):
        (tmp_path / f"notes{i}.pt").write_text("not a checkpoint")
    loaded: list[str] = []
    real_load = torch.load

    def load(f, *a, **k):
        if isinstance(f, (str, os.PathLike)):  # torch would open it: never the FIFO
            assert os.path.basename(f) != "pipe.pt", "the FIFO was opened"
        loaded.append(f)
        return real_load(f, *a, **k)

    monkeypatch.setattr(ck.torch, "load", load)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(last)
    assert _one_line(err.value).endswith("the file is truncated (zip central directory missing)")  # no hint
    assert len(loaded) == 1 + ck._LAST_GOOD_TRIES  # last.pt, then the newest few of the other regular files
    for i in range(10):
        (tmp_path / f"notes{i}.pt").unlink()
    with pytest.raises(CheckpointError, match=f"last good checkpoint: {best}$"):
        load_checkpoint(last)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "pipe.pt")
    assert "is a FIFO (named pipe), not a regular file" in _one_line(err.value)


def test_checkpoints_name_their_kind_and_a_detector_verb_refuses_an_embedder(tmp_path):
    from detect.engine.runtime.checkpoint import load_model
    from detect.engine.training.run_checkpoints import restore

    path = save_checkpoint(tmp_path / "emb.pt", {"format": CHECKPOINT_FORMAT, "kind": "embedder",
                                                  "model": {"w": torch.zeros(2)}, "config": {}, "class_names": ["a"]})
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    assert "an embedder checkpoint, not a detector" in _one_line(err.value)
    assert "gallery build --embedder" in str(err.value)
    with pytest.raises(CheckpointError, match="kind 'embedder'"):
        restore(str(path), None, None, None, None, ["a"])
