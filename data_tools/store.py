"""The dataset file: a versioned pickle of plain dicts and numpy arrays, saved atomically, loaded safely.

On disk (ARCHITECTURE.md): ``{"format": "retail-detect-dataset", "format_version": 1, "tool_version",
"class_names", "image_root", "meta", "records": [Record.to_dict(), ...]}``, pickle protocol 4.

Loading never runs code from the file: :class:`SafeUnpickler` only lets numpy arrays, dtypes and
scalars be rebuilt (plain dicts, lists, strings and numbers need no lookup at all); any other global,
such as ``os.system``, is refused with :class:`DatasetFileError`. A file of another format version is
refused with the command that rebuilds it.
"""

from __future__ import annotations

import importlib
import os
import pickle
from pathlib import Path

import numpy as np

from data_tools import __version__
from data_tools.atomic import atomic_open
from data_tools.records import FORMAT_VERSION, Record, RecordSet

FORMAT_NAME = "retail-detect-dataset"
PICKLE_PROTOCOL = 4  # protocol 5 pickles arrays through numpy's _frombuffer; 4 keeps the allow-list small
_RECORD_KEYS = {"image", "width", "height", "boxes", "labels", "difficult", "truncated", "source"}

_NUMPY_MULTIARRAY = "numpy.core.multiarray" if int(np.__version__.split(".")[0]) < 2 else "numpy._core.multiarray"
_ALLOWED: dict[tuple[str, str], tuple[str, str]] = {
    # (module in the file, name) -> (module to import here, name): numpy 1.x and 2.x spell the module differently.
    **{(m, n): (_NUMPY_MULTIARRAY, n)
       for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")},
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
}


class DatasetFileError(ValueError):
    """The dataset file cannot be used (unsafe, corrupt, or another format version)."""

    def __init__(self, message: str, stale: bool = False) -> None:
        super().__init__(message)
        self.stale = stale


class SafeUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` allows only numpy array/dtype/scalar reconstruction."""

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
        return getattr(importlib.import_module(target[0]), target[1])


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
    """Read a dataset file written by :func:`save_dataset`. Raises :class:`DatasetFileError` if unusable."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            payload = SafeUnpickler(f).load()
    except DatasetFileError as e:
        raise DatasetFileError(f"{path}: {e}" + (f". {_rebuild_hint(path, None)}" if e.stale else "")) from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError, ValueError) as e:
        raise DatasetFileError(f"{path}: not a retail-detect dataset file, or a truncated one ({e})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise DatasetFileError(f"{path}: not a retail-detect dataset file (no '{FORMAT_NAME}' header)")
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
    """Check the structure and dtypes, then build the RecordSet (no trust in what the file says)."""
    names = payload.get("class_names")
    records = payload.get("records")
    root = payload.get("image_root")
    meta = payload.get("meta", {})
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise DatasetFileError(f"{path}: 'class_names' must be a list of strings")
    if not isinstance(root, str) or not isinstance(records, list) or not isinstance(meta, dict):
        raise DatasetFileError(f"{path}: damaged dataset file (bad image_root / records / meta)")
    out = []
    for i, d in enumerate(records):
        if not isinstance(d, dict) or set(d) != _RECORD_KEYS:
            raise DatasetFileError(f"{path}: record {i} is damaged (keys {sorted(d) if isinstance(d, dict) else d!r})")
        for key in ("boxes", "labels", "difficult", "truncated"):
            a = d[key]
            if not isinstance(a, np.ndarray) or a.dtype.kind not in "biuf":
                raise DatasetFileError(f"{path}: record {i} field {key!r} is not a numeric array")
        try:
            rec = Record.from_dict(d)
        except (TypeError, ValueError) as e:
            raise DatasetFileError(f"{path}: record {i} is damaged ({e})") from None
        if len(rec.labels) and (rec.labels.min() < 1 or rec.labels.max() > len(names)):
            raise DatasetFileError(f"{path}: record {i} has labels outside 1..{len(names)}")
        out.append(rec)
    return RecordSet(list(names), root, out, dict(meta))
