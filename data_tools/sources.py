"""A label folder or file used where a dataset ``.pkl`` is expected: converted once, cached by content.

:func:`load_any` is the one way a verb reads its dataset input: a dataset file goes to
:func:`data_tools.store.load_dataset`, any other path to :func:`load_source`, so each verb that
reads a dataset (``retail-detect train / eval / tune / compare``, ``retail-data stats / split / export /
browse``) takes a VOC folder, a COCO JSON or any format of :mod:`data_tools.formats` as well.

The cache: ``$RETAIL_DETECT_CACHE/datasets/`` (default ``$XDG_CACHE_HOME/retail-detect/datasets``, i.e.
``~/.cache/retail-detect/datasets``), never the user's label folder. A cached dataset is named
``<source name>-<key>.pkl``; the key is a SHA-256 over the tool and dataset-format versions, the format,
the source's absolute path, the options (class list), the **content** of every annotation-like file
(``.xml .json .txt .yaml .yml .csv .tsv``) under the source folder, and the **size and modification time**
of every other file there (the images); for a single annotation file, its content plus the files of the
folder its images are looked up in. Files reached only through a symlinked folder are not part of the key.
Changing a label, adding or replacing an image, or asking for another class order converts again.

The cached file keeps its full key in its meta (``source_key``): a cached file whose key differs (replaced by
another dataset) is converted again, and says so. A conversion prints the same summary as ``retail-data
convert`` (to stderr by default); a cache hit prints one line saying which cached file was used.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from data_tools import __version__
from data_tools.atomic import WriteError, remove_stale_temps
from data_tools.coco import image_root_of
from data_tools.convert import ConvertError, convert
from data_tools.errors import InvalidInput
from data_tools.formats import detect_format
from data_tools.records import FORMAT_VERSION, Problem, RecordSet
from data_tools.store import DatasetFileError, load_dataset, save_dataset
from data_tools.summary_text import summary_lines
from data_tools.userfiles import UnsafeFile, hash_into

CACHE_ENV = "RETAIL_DETECT_CACHE"
LABEL_SUFFIXES = (".xml", ".json", ".txt", ".yaml", ".yml", ".csv", ".tsv")
MAX_HASHED_BYTES = 4 << 30
KEY_META = "source_key"
"""The meta entry of a cached dataset holding its full cache key, compared on every cache hit."""
_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")
UNKNOWN_SHOWN = 8
"""Unknown class names kept in a converted dataset's meta (``conversion.unknown_names``) and shown in warnings."""
_UNKNOWN_NAME = re.compile(r"unknown class ('(?:[^'\\]|\\.){0,200}'|\"(?:[^\"\\]|\\.){0,200}\")"
                           r"|unknown class \((category_id [^)]{0,40})\)|(class id -?\d{1,12})")


def cache_dir() -> Path:
    """Where converted datasets are kept (see the module doc)."""
    base = os.environ.get(CACHE_ENV)
    if not base:
        base = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
                            "retail-detect")
    return Path(base) / "datasets"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def _hash_file(h, path: str) -> None:
    try:
        hash_into(h, path, MAX_HASHED_BYTES)
    except (UnsafeFile, OSError) as e:  # the reader reports it; the key only needs to change with it
        h.update(f"unreadable:{getattr(e, 'kind', type(e).__name__)}".encode())


def _hash_tree(h, root: str) -> int:
    """Feed every regular file under ``root`` into ``h`` (see the module doc); returns the number of files."""
    n = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)
            except OSError:
                h.update(f"{path}\0missing\n".encode("utf-8", "surrogateescape"))
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            rel = os.path.relpath(path, root)
            h.update(f"{rel}\0{st.st_size}\0".encode("utf-8", "surrogateescape"))
            if name.lower().endswith(LABEL_SUFFIXES):
                _hash_file(h, path)
            else:
                h.update(str(st.st_mtime_ns).encode())
            h.update(b"\n")
            n += 1
    return n


def source_key(src: str, fmt: str, path: str, class_names: list[str] | None) -> str:
    """The cache key of converting ``src`` (read from ``path``) as ``fmt`` with ``class_names`` (module doc)."""
    h = hashlib.sha256()
    h.update(json.dumps({"tool": __version__, "dataset_format": FORMAT_VERSION, "format": fmt,
                         "source": os.path.abspath(src), "classes": class_names}).encode())
    if os.path.isdir(path):
        _hash_tree(h, path)
    else:
        h.update(b"annotation\0")
        _hash_file(h, path)
        image_root = image_root_of(path) if fmt == "coco" else os.path.dirname(os.path.abspath(path))
        h.update(f"\0images\0{image_root}\0".encode("utf-8", "surrogateescape"))
        _hash_tree(h, image_root)
    return h.hexdigest()


def is_dataset_path(path: str | os.PathLike) -> bool:
    """True for a path to read as a dataset file: a ``.pkl`` name, or an existing file that starts like a pickle
    (anything not a regular file counts too, so the reader refuses it with its reason)."""
    p = os.fspath(path)
    if p.lower().endswith(".pkl"):
        return True
    try:
        st = os.stat(p)
    except OSError:
        return os.path.lexists(p)  # a broken link or a loop: refused by the reader; a missing path: a label source
    if stat.S_ISDIR(st.st_mode):
        return False
    if not stat.S_ISREG(st.st_mode):
        return True
    try:
        with open(p, "rb") as f:
            return f.read(1) == b"\x80"
    except OSError:
        return True



def load_any(path: str | os.PathLike, class_names: list[str] | None = None,
             log: Callable[[str], None] | None = None) -> RecordSet:
    """The dataset at ``path``: a dataset file (:func:`is_dataset_path`) read by
    :func:`data_tools.store.load_dataset`, or a label folder or file (a VOC or YOLO folder, a COCO / Label Studio
    JSON, a CVAT XML, a CSV) converted or read from the conversion cache by :func:`load_source`.

    ``class_names`` sets a converted source's label order and ``log`` receives its conversion summary (default:
    stderr); for a dataset file both are unused (the caller compares classes). Raises
    :class:`~data_tools.store.DatasetFileError` for an unusable dataset file,
    :class:`~data_tools.convert.ConvertError` (or the format's error) for a source with nothing usable.
    """
    if is_dataset_path(path):
        return load_dataset(path)
    return load_source(path, class_names, log)


def load_source(src: str | os.PathLike, class_names: list[str] | None = None,
                log: Callable[[str], None] | None = None) -> RecordSet:
    """The dataset of a label folder or file: from the cache when its inputs did not change, else converted.

    Args:
        src: anything ``retail-data convert`` reads (the format is detected).
        class_names: the label order to convert with (e.g. the training set's or a checkpoint's classes);
            None: the format's own order.
        log: where the summary goes (default: stderr).
    Raises :class:`~data_tools.convert.ConvertError` (or the format's error) when nothing usable is found.
    """
    log = log or _stderr
    src = os.fspath(src)
    if not os.path.lexists(src):
        raise ConvertError(f"dataset {src} does not exist (give a dataset .pkl, or a label folder or file to convert)")
    fmt, path, _ = detect_format(src)
    key = source_key(src, fmt, path, list(class_names) if class_names is not None else None)
    slug = _SLUG.sub("_", Path(os.path.abspath(src)).name)[:40] or "dataset"
    cached = cache_dir() / f"{slug}-{key[:16]}.pkl"
    if cached.is_file():
        try:
            rs = load_dataset(cached)
        except DatasetFileError as e:
            log(f"note: cached dataset unusable ({e}); converting again")
        else:
            if rs.meta.get(KEY_META) == key:
                s = rs.meta.get("conversion", {})
                log(f"{src}: {fmt} labels converted earlier, read from the cache {cached} ({len(rs)} images, "
                    f"{s.get('boxes', '?')} boxes, {rs.num_classes} classes, {s.get('problems', '?')} problems)")
                return rs
            why = "differs: the file was replaced" if KEY_META in rs.meta else "is missing: an earlier version wrote it"
            log(f"note: cached dataset {cached} was not converted from {src} as it is now (its source key {why}); "
                "converting again")
    rs, problems, summary = convert(src, "auto", class_names=class_names, progress=False)
    for line in summary_lines(summary, problems, f"retail-data convert {src} -o X.pkl --report R.json lists all", src):
        log(line)
    if not rs.records:
        hint = ""
        if any(p.kind == "missing_image" for p in problems):
            hint = (f"; its images were looked for under {rs.image_root}: when they are elsewhere, convert it with "
                    f"retail-data convert {src} -o DATASET.pkl --image-root DIR and use DATASET.pkl")
        raise ConvertError(f"no usable images in {src}: all {summary['inputs']} inputs were skipped{hint}")
    rs.meta["conversion"] = {k: summary[k] for k in ("format", "detected", "images", "boxes", "classes", "problems")}
    unknown = unknown_classes(problems)
    rs.meta["conversion"].update(unknown_boxes=sum(unknown.values()), unknown_classes=len(unknown),
                                 unknown_names=list(unknown)[:UNKNOWN_SHOWN])
    rs.meta[KEY_META] = key
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(cached.parent)
        save_dataset(rs, cached)
        log(f"  cached as {cached}")
    except (WriteError, OSError) as e:
        log(f"note: could not cache the converted dataset ({e}); it will be converted again next time")
    return rs


def select_split(rs: RecordSet, role: str, name: str, log: Callable[[str], None] | None = None) -> RecordSet:
    """The records of a dataset that a role uses when the source marked splits (a YOLO export's
    ``train/``, ``val/``, ``test/`` folders, CVAT subsets); a dataset without splits is returned whole.

    ``role``: ``"train"`` (the ``train`` split), ``"val"`` (``val``), or ``"eval"`` (``test``, else ``val``,
    else everything). ``name``: the path, for messages.
    """
    splits = sorted({r.split for r in rs.records if r.split})
    if not splits:
        return rs
    wanted = {"train": ["train"], "val": ["val"], "eval": ["test", "val"]}[role]
    use = next((s for s in wanted if s in splits), None)
    if use is None:
        if role == "eval":
            return rs
        counts = ", ".join(f"{s} {sum(r.split == s for r in rs.records)}" for s in splits)
        raise InvalidInput(f"{name} has no '{wanted[0]}' split (its splits: {counts}); give a dataset for data.{role}")
    keep = [i for i, r in enumerate(rs.records) if r.split == use]
    (log or _stderr)(f"{name}: using its '{use}' split ({len(keep)} of {len(rs)} images)")
    return rs.subset(keep)


def unknown_classes(problems: list[Problem]) -> dict[str, int]:
    """Boxes dropped per class unknown to the class list (the readers' ``unknown_class`` problems), most first.

    A class is named as its reader wrote it: ``'cola'`` (a name), ``category_id 7`` (COCO), ``class id 7`` (YOLO).
    """
    counts: Counter[str] = Counter()
    for p in problems:
        if p.kind == "unknown_class":
            m = _UNKNOWN_NAME.search(p.reason)
            counts[next((g for g in m.groups() if g is not None), "?") if m else "?"] += 1
    return dict(counts.most_common())


def unknown_class_warning(rs: RecordSet, name: str, wanted_from: str) -> str | None:
    """One warning line when the labels of ``rs`` (converted in the class order of ``wanted_from``, e.g. a
    checkpoint) lost boxes to classes it does not know, or have no box at all; None when all is well."""
    conv = rs.meta.get("conversion") if isinstance(rs.meta.get("conversion"), dict) else {}
    dropped, kinds, names = conv.get("unknown_boxes", 0), conv.get("unknown_classes", 0), conv.get("unknown_names", [])
    boxes = sum(r.num_boxes for r in rs.records)
    known = ", ".join(rs.class_names[:8]) + (f", ... ({rs.num_classes})" if rs.num_classes > 8 else "")
    which = ", ".join(map(str, names)) + (", ..." if kinds > len(names) else "")
    if not dropped:
        return None if boxes else f"warning: {name} has no boxes: every AP is n/a"
    what = (f"{dropped:,} box{'es' if dropped != 1 else ''} of {kinds:,} class{'es' if kinds != 1 else ''} that "
            f"{wanted_from} does not know ({which}; it knows {known})")
    if boxes:
        return f"warning: {name}: {what} left out of the scores; only its own classes are evaluated"
    return (f"warning: {name} has no boxes of a class {wanted_from} knows: {what} left out, so every AP is n/a. "
            "Evaluate it on labels of its classes (name them as it does), or train a checkpoint on these classes")


def class_mismatch(name: str, names: list[str], wanted: list[str], wanted_from: str, source: str | None = None,
                   path: str | None = None, split: str | None = None) -> str:
    """The error for a dataset whose class list differs from the one it must match, with how to fix it.

    ``path``: the dataset file (default ``name``); the suggested command writes a new file beside it, never over
    it or another existing file. ``split``: the part of a ``retail-data split`` the file was (its meta ``split``):
    the rebuild converts all of ``source``, so the message says to split the new file again.
    """
    def show(ns: list[str]) -> str:
        return ", ".join(ns[:8]) + (f", ... ({len(ns)})" if len(ns) > 8 else "")

    if sorted(names) == sorted(wanted):
        what = f"{name} lists the same classes as {wanted_from} in another order ({show(names)}, not {show(wanted)})"
    else:
        what = f"{name} has other classes ({show(names)}) than {wanted_from} ({show(wanted)})"
    src = source or "LABELS"
    new = _new_file_name(path or name, [source] if source else [])
    again = (f"; {name} was the '{split}' part of a split and this converts all of {src}: split {new} again "
             "(retail-data split) for that part" if split else "")
    return (f"{what}. Rebuild it in that order into a new file: "
            f"retail-data convert {src} -o {new} --classes-from TRAIN.pkl (or --classes CLASSES.txt, one name per "
            f"line in label order){again}; or give the label folder or file itself, which is then converted in that "
            "order")


def _new_file_name(path: str, avoid: list[str]) -> str:
    """``val-reordered.pkl`` beside ``val.pkl`` (``val-reordered-2.pkl``, ... when taken): a name no file has."""
    p = Path(path)
    stem = p.stem if p.suffix.lower() == ".pkl" else p.name
    taken = {os.path.abspath(a) for a in avoid}
    for i in range(1, 1000):
        new = p.with_name(f"{stem}-reordered{'' if i == 1 else f'-{i}'}.pkl")
        if not os.path.lexists(new) and os.path.abspath(new) not in taken:
            return str(new)
    return str(p.with_name(f"{stem}-reordered-NEW.pkl"))
