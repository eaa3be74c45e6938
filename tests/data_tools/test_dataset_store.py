"""The dataset file: round trip, atomic save, code payloads refused, stale versions refused."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from dt_helpers import temp_leftovers

import data_tools.store as store
from data_tools.cli import main
from data_tools.records import Record, RecordSet
from data_tools.store import DatasetFileError, load_dataset, save_dataset


def _rs() -> RecordSet:
    recs = [Record("images/a.jpg", 32, 24, np.array([[0, 0, 10, 10], [1.5, 2, 30, 24]], np.float32),
                   np.array([1, 2]), np.array([False, True]), np.array([True, False]), source="a.xml"),
            Record("images/ü.jpg", 32, 24, source="ü.xml")]
    return RecordSet(["beans", "cake"], "/data/ds", recs, {"source": "/data/ds", "format": "voc"})


def _raw(path) -> dict:
    with open(path, "rb") as f:
        return store.SafeUnpickler(f).load()


def test_round_trip(tmp_path):
    rs = _rs()
    save_dataset(rs, tmp_path / "d.pkl")
    back = load_dataset(tmp_path / "d.pkl")
    assert back.class_names == rs.class_names and back.image_root == rs.image_root and back.meta == rs.meta
    for a, b in zip(rs.records, back.records):
        assert (a.image, a.width, a.height, a.source) == (b.image, b.width, b.height, b.source)
        for key in ("boxes", "labels", "difficult", "truncated"):
            np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
            assert getattr(a, key).dtype == getattr(b, key).dtype
    assert not temp_leftovers(tmp_path)


def test_on_disk_format_matches_the_architecture(tmp_path):
    save_dataset(_rs(), tmp_path / "d.pkl")
    raw = _raw(tmp_path / "d.pkl")
    assert set(raw) == {"format", "format_version", "tool_version", "class_names", "image_root", "meta", "records"}
    assert raw["format"] == "retail-detect-dataset" and raw["format_version"] == 1
    assert set(raw["records"][0]) == {"image", "width", "height", "boxes", "labels", "difficult", "truncated", "source"}


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("where", ["top", "nested"])
def test_code_payload_is_refused_and_not_run(tmp_path, where, capsys):
    marker = tmp_path / "pwned"
    evil = _Payload(marker)
    doc = {"format": "retail-detect-dataset", "format_version": 1, "class_names": [], "image_root": "/",
           "meta": {}, "records": []}
    if where == "top":
        doc = evil
    else:
        doc["meta"] = {"x": [1, {"y": evil}]}
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(doc, protocol=4))
    with pytest.raises(DatasetFileError, match=r"refused to load (posix|os|nt)\.system"):
        load_dataset(path)
    assert not marker.exists()
    assert main(["stats", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "refused" in err and "Traceback" not in err
    assert not marker.exists()


def test_builtins_eval_is_refused(tmp_path):
    path = tmp_path / "eval.pkl"
    path.write_bytes(b"cbuiltins\neval\n(S'1+1'\ntR.")
    with pytest.raises(DatasetFileError, match="builtins.eval"):
        load_dataset(path)


def test_object_arrays_are_refused(tmp_path):
    d = {"format": "retail-detect-dataset", "format_version": 1, "tool_version": "0", "class_names": ["a"],
         "image_root": "/", "meta": {}, "records": [{**Record("a.jpg", 4, 4).to_dict(),
                                                      "labels": np.array(["1"], dtype=object)}]}
    path = tmp_path / "obj.pkl"
    path.write_bytes(pickle.dumps(d, protocol=4))
    with pytest.raises(DatasetFileError, match="not a numeric array"):
        load_dataset(path)


def test_stale_format_version_names_the_rebuild_command(tmp_path):
    path = tmp_path / "old.pkl"
    save_dataset(_rs(), path)
    doc = _raw(path)
    doc["format_version"] = 0
    path.write_bytes(pickle.dumps(doc, protocol=4))
    with pytest.raises(DatasetFileError) as e:
        load_dataset(path)
    assert "format version 0" in str(e.value) and f"retail-data convert /data/ds -o {path}" in str(e.value)


def test_dataset_pickling_project_classes_is_stale(tmp_path):
    path = tmp_path / "objs.pkl"
    path.write_bytes(pickle.dumps(_rs(), protocol=4))  # a RecordSet object, as an old version might have saved
    with pytest.raises(DatasetFileError, match="another version of retail-detect.*retail-data convert"):
        load_dataset(path)


@pytest.mark.parametrize("content", [b"", b"not a pickle at all", b'{"json": true}'])
def test_garbage_is_refused(tmp_path, content):
    path = tmp_path / "junk.pkl"
    path.write_bytes(content)
    with pytest.raises(DatasetFileError):
        load_dataset(path)


def test_truncated_dataset_file_is_refused(tmp_path):
    path = tmp_path / "cut.pkl"
    save_dataset(_rs(), path)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DatasetFileError, match="truncated"):
        load_dataset(path)


def test_failed_save_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "d.pkl"
    save_dataset(_rs(), path)
    before = path.read_bytes()

    def crash(obj, f, protocol):
        f.write(b"half a pickle")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(store.pickle, "dump", crash)
    with pytest.raises(KeyboardInterrupt):
        save_dataset(_rs(), path)
    assert path.read_bytes() == before and not temp_leftovers(tmp_path)
