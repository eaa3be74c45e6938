"""The dataset file: a versioned pickle of plain dicts and numpy arrays, saved atomically, loaded safely.

On disk (ARCHITECTURE.md): ``{"format": "retail-detect-dataset", "format_version": 1, "tool_version",
"class_names", "image_root", "meta", "records": [Record.to_dict(), ...]}``, pickle protocol 4.

Loading never runs code from the file: :class:`SafeUnpickler` only lets numpy arrays, dtypes and
scalars be rebuilt (plain dicts, lists, strings and numbers need no lookup at all); any other global,
such as ``os.system``, is refused with :class:`DatasetFileError`, and an array shape over
:data:`MAX_ARRAY_BYTES` is refused before numpy allocates it. Only a regular file of at most
:data:`MAX_DATASET_BYTES` is read. What the file built must be a tree, as :func:`save_dataset` writes it: a
list, dict, tuple or array (or an array's data) used twice is refused, as are more records than the file's size
allows (:data:`MIN_RECORD_BYTES` each) and more array bytes than the file holds, so a small file cannot expand
into millions of records or endless paths. Then every value is checked (relative image paths, positive sizes,
finite boxes inside their image, labels in 1..K, matching lengths) and the first bad one is refused
with its place: ``records[3].boxes[0]: NaN coordinate``. A file of another format version is refused
with the command that rebuilds it.
"""

from __future__ import annotations

import importlib
import math
import os
import pickle
import posixpath
from pathlib import Path

import numpy as np

from data_tools import __version__
from data_tools.atomic import atomic_open
from data_tools.errors import UserError
from data_tools.images import MAX_PIXELS
from data_tools.locate import is_absolute_name
from data_tools.records import FORMAT_VERSION, ClassMap, Record, RecordSet
from data_tools.userfiles import UnsafeFile, open_regular

FORMAT_NAME = "retail-detect-dataset"
PICKLE_PROTOCOL = 4  # protocol 5 pickles arrays through numpy's _frombuffer; 4 keeps the allow-list small
MAX_DATASET_BYTES = 4 << 30
"""Largest dataset file read (4 GiB: about ten million boxes)."""
MAX_ARRAY_BYTES = 1 << 30
"""Largest single array a dataset file may rebuild (1 GiB); checked before numpy allocates it."""
MAX_META_DEPTH = 32
MIN_RECORD_BYTES = 64
"""Fewest bytes one record takes in a dataset file (:func:`save_dataset` writes about 150 for an image without
boxes): a file listing more records than its size allows this many bytes for repeats one record object."""
_CONTAINERS = (dict, list, tuple, set, frozenset)
_ATOMS = {str, int, float, bool, type(None), bytes}
_RECORD_KEYS = {"image", "width", "height", "boxes", "labels", "difficult", "truncated", "source"}
_OPTIONAL_KEYS = {"split"}
_DTYPE_KINDS = "biuf"

_NUMPY_MULTIARRAY = "numpy.core.multiarray" if int(np.__version__.split(".")[0]) < 2 else "numpy._core.multiarray"


class DatasetFileError(UserError, ValueError):
    """The dataset file cannot be used (unsafe, corrupt, out-of-range values, or another format version)."""

    def __init__(self, message: str, stale: bool = False) -> None:
        super().__init__(message)
        self.stale = stale


def _checked_dtype(dtype) -> np.dtype:
    """A plain bool / int / float dtype, or :class:`DatasetFileError`."""
    try:
        dt = np.dtype(dtype)
    except (TypeError, ValueError) as e:
        raise DatasetFileError(f"refused array dtype {dtype!r} ({e})") from None
    if dt.kind not in _DTYPE_KINDS or dt.subdtype is not None or dt.fields is not None or dt.itemsize == 0:
        raise DatasetFileError(f"refused array dtype {dt}: a dataset holds only bool, integer and float arrays")
    return dt


def _checked_shape(shape, dt: np.dtype) -> tuple[int, ...]:
    """``shape`` as a tuple of non-negative ints whose array of ``dt`` stays under :data:`MAX_ARRAY_BYTES`."""
    dims = shape if isinstance(shape, tuple) else (shape,)
    if not all(isinstance(d, int) and not isinstance(d, bool) for d in dims) or len(dims) > 8:
        raise DatasetFileError(f"refused array shape {shape!r}: not a tuple of at most 8 integers")
    if any(d < 0 for d in dims):
        raise DatasetFileError(f"refused array shape {dims}: negative dimension")
    nbytes = dt.itemsize
    for d in dims:
        nbytes *= d
    if nbytes > MAX_ARRAY_BYTES:
        raise DatasetFileError(f"refused array shape {dims} of {dt} ({nbytes:,} bytes): over the "
                               f"{MAX_ARRAY_BYTES:,}-byte limit for one array")
    return dims


class _NdarrayToken:
    """Stands for ``numpy.ndarray`` in a pickle: only :func:`_reconstruct` may use it, calling it is refused."""

    def __call__(self, *args, **kwargs):
        raise DatasetFileError("refused a direct numpy.ndarray(...) call (not how numpy pickles arrays)")


_NDARRAY = _NdarrayToken()


def _reconstruct(subtype, shape, dtype) -> np.ndarray:
    """numpy's ``_reconstruct(ndarray, shape, dtype)``, allowed only for plain arrays of bounded size."""
    if subtype is not _NDARRAY:
        raise DatasetFileError(f"refused to rebuild an array of type {subtype!r}")
    if shape == (0,) and dtype == b"b":  # what numpy writes for every array (the data comes in the state)
        return np.ndarray((0,), np.int8)
    dt = _checked_dtype(dtype)
    return np.ndarray(_checked_shape(shape, dt), dt)  # numpy's __setstate__ then checks the data's length


_ALLOWED: dict[tuple[str, str], object] = {
    # (module in the file, name) -> what it is rebuilt with; numpy 1.x and 2.x spell the module differently.
    **{(m, "_reconstruct"): _reconstruct for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    # numpy scalars are built from bytes held in the file, so they cannot be bigger than the file.
    **{(m, "scalar"): importlib.import_module(_NUMPY_MULTIARRAY).scalar
       for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): np.dtype,
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds only plain data and bounded bool/int/float numpy arrays.

    ``find_class`` answers with guarded stand-ins for numpy's constructors: shapes and dtypes are checked
    before any array is allocated, and ``numpy.ndarray`` itself cannot be called. (The shape in an
    array's pickled state needs no guard: numpy refuses a state whose data bytes do not match it.)
    """

    def find_class(self, module: str, name: str):
        target = _ALLOWED.get((module, name))
        if target is None:
            if module.split(".")[0] in ("data_tools", "detect"):
                raise DatasetFileError(
                    f"refused to load {module}.{name}: the file pickles project classes, so another version of "
                    "retail-detect wrote it", stale=True,
                )
            raise DatasetFileError(
                f"refused to load {module}.{name}: a dataset file may hold only plain data and numpy arrays "
                "(this file is unsafe or not a dataset file)"
            )
        return target


def save_dataset(rs: RecordSet, path: str | os.PathLike) -> None:
    """Write ``rs`` to ``path`` atomically (temp file in the same folder, fsync, ``os.replace``).

    A crash leaves either the old file or the new one, never half of one.
    """
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "tool_version": __version__,
        "class_names": list(rs.class_names),
        "image_root": str(rs.image_root),
        "meta": dict(rs.meta),
        "records": [r.to_dict() for r in rs.records],
    }
    with atomic_open(path, "wb") as f:
        pickle.dump(payload, f, protocol=PICKLE_PROTOCOL)


def load_dataset(path: str | os.PathLike) -> RecordSet:
    """Read a dataset file written by :func:`save_dataset`. Raises :class:`DatasetFileError` if unusable.

    Every value is checked (:func:`_check_fields`, :func:`_check_values`); a bad one is refused with its place in the file,
    e.g. ``records[3].boxes[0]: NaN coordinate``. This reads dataset files only: a verb that also takes a label folder
    or file reads its input with :func:`data_tools.sources.load_any`.
    """
    path = Path(path)
    try:
        with open_regular(path, MAX_DATASET_BYTES) as f:
            size = os.fstat(f.fileno()).st_size
            payload = SafeUnpickler(f).load()
    except UnsafeFile as e:
        raise DatasetFileError(str(e)) from None
    except DatasetFileError as e:
        raise DatasetFileError(f"{path}: {e}" + (f". {_rebuild_hint(path, None)}" if e.stale else "")) from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError, ValueError,
            KeyError, MemoryError, RecursionError, OverflowError) as e:
        raise DatasetFileError(f"{path}: not a retail-detect dataset file, or a truncated one "
                               f"({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise DatasetFileError(f"{path}: not a retail-detect dataset file (no '{FORMAT_NAME}' header)")
    records = payload.get("records")
    if isinstance(records, list) and len(records) > size // MIN_RECORD_BYTES + 1:
        raise DatasetFileError(f"{path}: {len(records):,} records in {size:,} bytes: a record takes at least "
                               f"{MIN_RECORD_BYTES} bytes, so the file repeats records (it is hostile or damaged)")
    shared = _shared_part(payload, size)
    if shared:
        raise DatasetFileError(f"{path}: {shared} (a dataset file never does: it is hostile or damaged)")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise DatasetFileError(
            f"{path}: dataset format version {version!r} (written by retail-detect "
            f"{payload.get('tool_version', '?')}); this version reads format {FORMAT_VERSION}. "
            + _rebuild_hint(path, payload.get("meta"))
        )
    return _to_recordset(path, payload)


def _rebuild_hint(path: Path, meta) -> str:
    src = meta.get("source") if isinstance(meta, dict) and isinstance(meta.get("source"), str) else "SRC"
    return f"Rebuild it from the annotations with: retail-data convert {src} -o {path}"


def _to_recordset(path: Path, payload: dict) -> RecordSet:
    """Check the structure, types and values, then build the RecordSet (no trust in what the file says)."""
    names = payload.get("class_names")
    records = payload.get("records")
    root = payload.get("image_root")
    meta = payload.get("meta", {})
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise DatasetFileError(f"{path}: 'class_names' must be a list of strings")
    try:
        ClassMap(names)
    except ValueError as e:
        raise DatasetFileError(f"{path}: class_names: {e}") from None
    if not isinstance(root, str) or not isinstance(records, list) or not isinstance(meta, dict):
        raise DatasetFileError(f"{path}: damaged dataset file (bad image_root / records / meta)")
    if _depth(meta) > MAX_META_DEPTH:
        raise DatasetFileError(f"{path}: meta is nested deeper than {MAX_META_DEPTH} levels")
    for i, d in enumerate(records):
        if not isinstance(d, dict) or not _RECORD_KEYS <= set(d) <= _RECORD_KEYS | _OPTIONAL_KEYS:
            keys = sorted(map(str, d)) if isinstance(d, dict) else type(d).__name__
            raise DatasetFileError(f"{path}: records[{i}] is damaged (keys {keys})")
        bad = _check_fields(d)
        if bad:
            raise DatasetFileError(f"{path}: records[{i}].{bad}")
    out = [Record.from_dict(d) for d in records]
    bad = _check_values(out, len(names))
    if bad:
        raise DatasetFileError(f"{path}: {bad}")
    return RecordSet(list(names), root, out, dict(meta))


def _check_fields(d: dict) -> str | None:
    """What is wrong with one stored record dict's fields (types, path, size, array shapes), or ``None``.

    The answer reads ``"field: reason"``; box and label values are checked by :func:`_check_values`.
    """
    image = d["image"]
    if not isinstance(image, str) or not image:
        return f"image: {image!r} is not a path"
    if is_absolute_name(image):
        return f"image: {image!r} is an absolute path (records hold paths relative to image_root)"
    if posixpath.normpath(image.replace("\\", "/")).split("/")[0] == "..":
        return f"image: {image!r} leaves the image root"
    if not isinstance(d["source"], str):
        return f"source: {d['source']!r} is not a string"
    if not isinstance(d.get("split", ""), str):
        return f"split: {d['split']!r} is not a string"
    for key in ("width", "height"):
        v = d[key]
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            return f"{key}: {v!r} is not a positive integer"
    if int(d["width"]) * int(d["height"]) > MAX_PIXELS:
        return f"width: {d['width']}x{d['height']} is over the {MAX_PIXELS:,}-pixel limit"
    for key in ("boxes", "labels", "difficult", "truncated"):
        a = d[key]
        if not isinstance(a, np.ndarray) or a.dtype.kind not in _DTYPE_KINDS:
            return f"{key}: not a numeric array"
    boxes = d["boxes"]
    if (boxes.ndim != 2 or boxes.shape[1] != 4) and boxes.size:
        return f"boxes: shape {boxes.shape}, not [N, 4]"
    n = len(boxes) if boxes.size else 0
    if d["labels"].dtype.kind not in "iu":
        return f"labels: {d['labels'].dtype} values, not integers"
    for key in ("labels", "difficult", "truncated"):
        a = d[key]
        if a.ndim != 1 or (len(a) != n and not (key != "labels" and len(a) == 0)):
            return f"{key}: {a.size} values for {n} boxes"
    return None


def _check_values(recs: list[Record], num_classes: int) -> str | None:
    """The first bad box or label over all records (vectorised), as ``"records[i].boxes[j]: reason"``."""
    counts = np.array([r.num_boxes for r in recs], np.int64)
    if not counts.sum():
        return None
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    b = np.concatenate([r.boxes for r in recs]).astype(np.float64)
    labels = np.concatenate([r.labels for r in recs])
    w = np.repeat([float(r.width) for r in recs], counts)
    h = np.repeat([float(r.height) for r in recs], counts)

    def where(k: int) -> tuple[int, int, Record]:
        i = int(np.searchsorted(starts, k, side="right") - 1)
        return i, k - int(starts[i]), recs[i]

    finite = np.isfinite(b).all(axis=1)
    tol = 0.5
    checks = [
        (~finite, lambda r, j: f"{'NaN' if np.isnan(r.boxes[j]).any() else 'infinite'} coordinate"),
        (finite & (b[:, 2] <= b[:, 0]), lambda r, j: f"x2 <= x1 ({_fmt_box(r.boxes[j])})"),
        (finite & (b[:, 3] <= b[:, 1]), lambda r, j: f"y2 <= y1 ({_fmt_box(r.boxes[j])})"),
        (finite & ((b[:, 0] < -tol) | (b[:, 1] < -tol) | (b[:, 2] > w + tol) | (b[:, 3] > h + tol)),
         lambda r, j: f"({_fmt_box(r.boxes[j])}) reaches outside the {r.width}x{r.height} image"),
    ]
    for mask, reason in checks:
        bad = np.flatnonzero(mask)
        if len(bad):
            i, j, r = where(int(bad[0]))
            return f"records[{i}].boxes[{j}]: {reason(r, j)}"
    bad = np.flatnonzero((labels < 1) | (labels > num_classes))
    if len(bad):
        i, j, r = where(int(bad[0]))
        return f"records[{i}].labels[{j}]: {int(r.labels[j])} outside 1..{num_classes}"
    return None


def _fmt_box(row) -> str:
    return ", ".join(f"{v:g}" if math.isfinite(v) else str(v) for v in row)


def _depth(value, limit: int = MAX_META_DEPTH + 1) -> int:
    """Nesting depth of lists / tuples / dicts in ``value`` (iterative; stops counting past ``limit``)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            break
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend((x, d + 1) for x in v)
    return deepest


def _shared_part(payload: object, size: int) -> str | None:
    """Where the loaded file uses one list, dict, tuple, set or array (or one array's data) a second time, or holds
    more array data than its ``size`` bytes carry, as ``"records[1]: a dict used twice"``; None for a tree.

    :func:`save_dataset` never writes a shared object: each record, array and meta value is its own. A pickle can
    refer to one object again for two bytes, so one record repeated two million times fits in 4 MB and thirty
    shared lists nest to a billion paths; this walk visits each object once (one pass over what the file built)
    and stops at the first one seen twice, before anything follows the paths.
    """
    seen = {id(payload)}
    array_bytes = 0
    todo: list = [(payload, None)]  # (container, its place: None at the top, else (parent's place, key))
    while todo:
        v, where = todo.pop()
        for key, x in v.items() if isinstance(v, dict) else enumerate(v):
            if type(x) in _ATOMS:
                continue
            if isinstance(x, np.ndarray):
                owner = id(x if x.base is None else x.base)  # the array, or the bytes it was rebuilt on
                if owner in seen:
                    return f"{_place(where, key)}: an array (or its data) used twice"
                seen.add(owner)
                array_bytes += x.nbytes
                if array_bytes > size:
                    return f"{_place(where, key)}: {array_bytes:,} bytes of arrays in a file of {size:,} bytes"
            elif isinstance(x, _CONTAINERS) and x:
                if id(x) in seen:
                    return f"{_place(where, key)}: a {type(x).__name__} used twice"
                seen.add(id(x))
                todo.append((x, (where, key)))
    return None


def _place(where, key) -> str:
    """``records[3].boxes`` from the place links of :func:`_shared_part` (long places shortened in the middle)."""
    keys = [key]
    while where is not None:
        where, k = where
        keys.append(k)
    keys.reverse()
    text = "".join(k[:40] if isinstance(k, str) and i == 0 else f".{k[:40]}" if isinstance(k, str)
                   else f"[{k if isinstance(k, int) and abs(k) < 10**12 else type(k).__name__}]"
                   for i, k in enumerate(keys))
    return text if len(text) <= 120 else f"{text[:50]}...{text[-60:]}"
