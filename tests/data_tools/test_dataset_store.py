"""The dataset file: round trip, atomic save, code payloads refused, stale versions refused."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from dt_helpers import temp_leftovers

import data_tools.store as store
from data_tools.records import Record, RecordSet
from data_tools.store import DatasetFileError, load_dataset, save_dataset
from detect.verbs.retail_data import main


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
    assert main(["stats", str(path)]) == 1
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


def _doc_with(**record_changes) -> dict:
    rs = _rs()
    doc = {"format": "retail-detect-dataset", "format_version": 1, "tool_version": "0",
           "class_names": rs.class_names, "image_root": rs.image_root, "meta": {},
           "records": [r.to_dict() for r in rs.records]}
    doc["records"][0].update(record_changes)
    return doc


@pytest.mark.parametrize("change, message", [
    ({"width": -32}, r"records\[0\]\.width: -32 is not a positive integer"),
    ({"height": 0}, r"records\[0\]\.height: 0 is not a positive integer"),
    ({"width": 1.5}, r"records\[0\]\.width: 1.5 is not a positive integer"),
    ({"boxes": np.array([[0, 0, 10, 10], [np.nan, 2, 30, 24]], np.float32)}, r"records\[0\]\.boxes\[1\]: NaN coordinate"),
    ({"boxes": np.array([[0, 0, 10, 10], [1, 2, np.inf, 24]], np.float32)}, r"records\[0\]\.boxes\[1\]: infinite"),
    ({"boxes": np.array([[10, 0, 1, 10], [1, 2, 3, 4]], np.float32)}, r"records\[0\]\.boxes\[0\]: x2 <= x1"),
    ({"boxes": np.array([[0, 0, 10, 10], [1, 2, 300, 24]], np.float32)}, r"records\[0\]\.boxes\[1\]: .*outside the 32x24"),
    ({"boxes": np.zeros((2, 3), np.float32)}, r"records\[0\]\.boxes: shape \(2, 3\)"),
    ({"labels": np.array([1, 7])}, r"records\[0\]\.labels\[1\]: 7 outside 1\.\.2"),
    ({"labels": np.array([1.0, 2.0])}, r"records\[0\]\.labels: float32|records\[0\]\.labels: float64"),
    ({"difficult": np.array([True])}, r"records\[0\]\.difficult: 1 values for 2 boxes"),
    ({"image": "/etc/passwd"}, r"records\[0\]\.image: '/etc/passwd' is an absolute path"),
    ({"image": "../../x.jpg"}, r"records\[0\]\.image: '\.\./\.\./x\.jpg' leaves the image root"),
    ({"image": 7}, r"records\[0\]\.image: 7 is not a path"),
    ({"source": None}, r"records\[0\]\.source: None is not a string"),
])
def test_out_of_range_values_are_refused_with_the_field(tmp_path, change, message, capsys):
    path = tmp_path / "bad.pkl"
    path.write_bytes(pickle.dumps(_doc_with(**change), protocol=4))
    with pytest.raises(DatasetFileError, match=message):
        load_dataset(path)
    assert main(["stats", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.pkl" in err


def test_duplicate_class_names_are_refused(tmp_path):
    doc = _doc_with()
    doc["class_names"] = ["beans", "beans"]
    path = tmp_path / "dup.pkl"
    path.write_bytes(pickle.dumps(doc, protocol=4))
    with pytest.raises(DatasetFileError, match="class_names"):
        load_dataset(path)


def _reconstruct_pickle(shape: tuple, code: bytes = b"<f8") -> bytes:
    """A pickle calling numpy's allowed ``_reconstruct(ndarray, shape, dtype)`` with ``shape`` (no data)."""
    mod = store._NUMPY_MULTIARRAY.encode()
    return (b"\x80\x04c" + mod + b"\n_reconstruct\ncnumpy\nndarray\n"
            + pickle.dumps(shape, protocol=2)[2:-1] + b"C" + bytes([len(code)]) + code + b"\x87R.")


@pytest.mark.parametrize("shape", [(10**6, 10**6), (2**62,), (-1,)])
def test_huge_shapes_in_allowed_constructors_are_refused(tmp_path, shape, capsys):
    path = tmp_path / "huge.pkl"
    path.write_bytes(_reconstruct_pickle(shape))
    with pytest.raises(DatasetFileError, match="array shape"):
        load_dataset(path)
    assert main(["stats", str(path)]) == 1
    assert "array shape" in capsys.readouterr().err


def test_huge_shape_in_array_state_is_refused(tmp_path):
    """numpy itself refuses a state whose data does not fill the shape (no allocation): a guard."""
    good = pickle.dumps(np.zeros(3, np.float64), protocol=3)  # no frames: bytes can be swapped in place
    bad = good.replace(b"K\x01K\x03\x85", b"K\x01" + pickle.dumps((10**6, 10**6), protocol=2)[2:-1], 1)
    assert bad != good
    path = tmp_path / "state.pkl"
    path.write_bytes(bad)
    with pytest.raises(DatasetFileError, match="buffer size does not match"):
        load_dataset(path)


def test_direct_ndarray_call_is_refused(tmp_path):
    path = tmp_path / "call.pkl"
    path.write_bytes(b"\x80\x04cnumpy\nndarray\n" + pickle.dumps((10**6, 10**6), protocol=2)[2:-1] + b"\x85R.")
    with pytest.raises(DatasetFileError):
        load_dataset(path)


def test_deeply_nested_meta_is_refused(tmp_path):
    doc = _doc_with()
    deep: list = []
    for _ in range(200):
        deep = [deep]
    doc["meta"] = {"x": deep}
    path = tmp_path / "deep.pkl"
    path.write_bytes(pickle.dumps(doc, protocol=4))
    with pytest.raises(DatasetFileError, match="meta.*nested"):
        load_dataset(path)


def test_dataset_over_the_size_cap_is_refused_unread(tmp_path, monkeypatch):
    save_dataset(_rs(), tmp_path / "d.pkl")
    monkeypatch.setattr(store, "MAX_DATASET_BYTES", 100)
    with pytest.raises(DatasetFileError, match=r"d\.pkl is \d+ bytes, over the 100-byte limit"):
        load_dataset(tmp_path / "d.pkl")


def test_shared_lists_in_meta_are_refused_at_once(tmp_path, capsys):
    """Lists each holding the next one twice: 2**20 paths in a 1 KB file (2**30 hung the depth walk of ``stats``,
    which followed every path); refused at the first list seen a second time."""
    doc = _doc_with()
    shared: list = [1]
    for _ in range(20):
        shared = [shared, shared]
    doc["meta"] = {"x": shared}
    path = tmp_path / "shared.pkl"
    path.write_bytes(pickle.dumps(doc, protocol=4))
    assert path.stat().st_size < 2000
    with pytest.raises(DatasetFileError, match=r"shared\.pkl: meta\.x\[1\]: a list used twice"):
        load_dataset(path)
    assert main(["stats", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "shared.pkl" in err and "hostile or damaged" in err


def test_one_record_repeated_is_refused_before_it_is_built(tmp_path, monkeypatch):
    """One record listed 200,000 times (a 600 KB file that would become 200,000 Records): the number of records
    is bounded by the file's size, and a record used twice is refused where it repeats."""
    built = []
    monkeypatch.setattr(store.Record, "from_dict", classmethod(lambda cls, d: built.append(1)))
    doc = _doc_with()
    doc["records"] = [doc["records"][0]] * 200_000
    path = tmp_path / "repeat.pkl"
    path.write_bytes(pickle.dumps(doc, protocol=4))
    assert path.stat().st_size < 1_000_000
    with pytest.raises(DatasetFileError, match=r"repeat\.pkl: 200,000 records in [\d,]+ bytes: a record takes at least"):
        load_dataset(path)
    doc["records"] = [doc["records"][0]] * 2
    path.write_bytes(pickle.dumps(doc, protocol=4))
    with pytest.raises(DatasetFileError, match=r"records\[1\]: a dict used twice"):
        load_dataset(path)
    assert not built


class _SharedData:
    """Pickles as a numpy array whose data bytes object is shared with every other _SharedData of the same bytes."""

    def __init__(self, data: bytes, rows: int) -> None:
        self.data, self.rows = data, rows

    def __reduce__(self):
        state = (1, (self.rows, 4), np.dtype("float32"), False, self.data)
        return (store._reconstruct, (store._NDARRAY, (0,), b"b"), state)


def test_arrays_sharing_one_data_buffer_are_refused(tmp_path, monkeypatch):
    """Two records whose boxes are one 16 KB buffer in the file: concatenating N of them would need N times it."""
    monkeypatch.setattr(store, "_reconstruct", np.core.multiarray._reconstruct)  # how numpy pickles it
    monkeypatch.setattr(store, "_NDARRAY", np.ndarray)
    data = np.tile(np.array([[0, 0, 1, 1]], np.float32), (1000, 1)).tobytes()
    doc = _doc_with()
    doc["records"][1].update(boxes=_SharedData(data, 1000), labels=np.ones(1000, np.int64),
                             difficult=np.zeros(1000, bool), truncated=np.zeros(1000, bool))
    doc["records"][0].update(boxes=_SharedData(data, 1000), labels=np.ones(1000, np.int64),
                             difficult=np.zeros(1000, bool), truncated=np.zeros(1000, bool))
    path = tmp_path / "buffer.pkl"
    path.write_bytes(pickle.dumps(doc, protocol=4))
    monkeypatch.undo()
    with pytest.raises(DatasetFileError, match=r"records\[[01]\]\.boxes: an array \(or its data\) used twice"):
        load_dataset(path)


def test_arrays_larger_than_the_file_are_refused(tmp_path, monkeypatch):
    """An array rebuilt without its data (allocated, never filled): 16 MB of arrays from a 1 KB file."""
    monkeypatch.setattr(store, "_reconstruct", np.core.multiarray._reconstruct)  # how numpy pickles it
    monkeypatch.setattr(store, "_NDARRAY", np.ndarray)
    doc = _doc_with()
    doc["records"][1]["boxes"] = _Unfilled()
    path = tmp_path / "unfilled.pkl"
    path.write_bytes(pickle.dumps(doc, protocol=4))
    monkeypatch.undo()
    assert path.stat().st_size < 2000
    with pytest.raises(DatasetFileError, match=r"records\[1\]\.boxes: [\d,]+ bytes of arrays in a file of"):
        load_dataset(path)


class _Unfilled:
    """Pickles as numpy's ``_reconstruct(ndarray, (2**20, 4), 'f4')`` with no data state."""

    def __reduce__(self):
        return (store._reconstruct, (store._NDARRAY, (1 << 20, 4), np.dtype("float32").str))
