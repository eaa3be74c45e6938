"""The SKU gallery: reference vectors of named products in a folder, searched through a faiss index.

A gallery folder holds

- ``manifest.json``: format, version, the embedder's identity (:meth:`CropEmbedder.identity`), the SKUs with
  their references (id, source, crop file), the unknown threshold and its calibration, the vectors file's
  name, rows and SHA-256, and a checksum of the manifest itself;
- ``vectors.<generation>.npy``: float32 ``[N, dim]`` unit vectors, one row per reference, in manifest order;
- ``refs/<id>.jpg``: each reference crop (longer side at most :data:`REF_SIDE`), which the HTML page shows
  and from which ``gallery rebuild`` re-embeds the gallery for another embedder.

Writes never lose an entry: new crops and a new vectors file are written under new names first, then
``manifest.json`` is replaced atomically (the commit), then what the old manifest used and the new one does not
is removed. A crash at any point leaves the old or the new gallery, whole. One writer at a time (``.lock``).
Adding or removing a SKU copies every other row bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from data_tools.atomic import atomic_write_bytes, atomic_write_text, flush_to_disk
from data_tools.errors import UserError
from data_tools.staged import OWNER_NAME
from data_tools.userfiles import UnsafeFile, read_limited
from detect.engine.inference.gallery_search import VectorIndex, calibrate_threshold

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

GALLERY_FORMAT = "retail-detect-gallery"
GALLERY_VERSION = 1
MANIFEST = "manifest.json"
REF_SIDE = 256  # longer side of a stored reference crop
_MAX_MANIFEST_BYTES = 256 << 20
_MAX_VECTOR_BYTES = 8 << 30
_CROP_NAME = re.compile(r"^refs/r\d{6,}\.jpg$")
_VECTORS_NAME = re.compile(r"^vectors\.\d{6,}\.npy$")


class GalleryError(UserError, ValueError):
    """A gallery cannot be read or changed; one line naming the folder or file and the reason."""


@dataclasses.dataclass(frozen=True)
class Reference:
    """One reference of a SKU: its id (``r000042``), where it came from (``photo.jpg`` or ``photo.jpg#box3``)
    and its crop file inside the gallery (``refs/r000042.jpg``)."""

    id: str
    sku: str
    source: str
    crop: str


@dataclasses.dataclass(frozen=True)
class NewReference:
    """A reference to add: its crop (``[h, w, 3]`` uint8 RGB), its unit vector ``[dim]`` and its source."""

    crop: np.ndarray
    vector: np.ndarray
    source: str


def _checksum(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def rebuild_hint(folder: str | Path) -> str:
    """The command that re-embeds ``folder``'s reference crops for another embedder."""
    return f"retail-detect gallery rebuild {folder} --embedder EMBEDDER -o NEW_GALLERY"


class Gallery:
    """An open gallery (see the module doc). ``vectors`` float32 ``[N, dim]``; ``refs[i]`` is row ``i``."""

    def __init__(self, folder: Path, manifest: dict, vectors: np.ndarray) -> None:
        self.folder = folder
        self.manifest = manifest
        self.vectors = vectors
        self.refs = [Reference(r["id"], s["name"], r["source"], r["crop"]) for s in manifest["skus"] for r in s["refs"]]
        self.index = VectorIndex(vectors, [r.sku for r in self.refs])

    # ---------------------------------------------------------------- reading
    @property
    def embedder(self) -> dict:
        """The identity of the embedder that filled the gallery (``name``, ``sha256``, ``dim``, ...)."""
        return dict(self.manifest["embedder"])

    @property
    def skus(self) -> list[str]:
        return [s["name"] for s in self.manifest["skus"]]

    @property
    def threshold(self) -> float | None:
        """Similarity below which a crop is ``unknown`` (calibrated on the references; None: too few)."""
        return self.manifest.get("threshold")

    def references(self, sku: str) -> list[Reference]:
        return [r for r in self.refs if r.sku == sku]

    @classmethod
    def create(cls, folder: str | Path, embedder: dict) -> Gallery:
        """A new empty gallery in ``folder`` (new or empty; a :class:`~data_tools.staged.StagedFolder`'s stage
        counts as empty) for the embedder ``embedder`` (its identity)."""
        folder = Path(folder)
        if folder.exists() and (not folder.is_dir() or any(p.name != OWNER_NAME for p in folder.iterdir())):
            what = "a file" if not folder.is_dir() else "a folder that is not empty"
            raise GalleryError(f"{folder}: is {what}; a new gallery needs a new or empty folder")
        manifest = {"format": GALLERY_FORMAT, "version": GALLERY_VERSION, "embedder": dict(embedder),
                    "skus": [], "next_id": 1, "generation": 0, "threshold": None, "calibration": {}, "vectors": None}
        gallery = cls(folder, manifest, np.zeros((0, int(embedder["dim"])), np.float32))
        with gallery._writing():
            gallery._commit(manifest["skus"], gallery.vectors, [])
        return gallery

    @classmethod
    def open(cls, folder: str | Path) -> Gallery:
        """Open and verify a gallery: format, version, manifest checksum, vectors file size and SHA-256."""
        folder = Path(folder)
        path = folder / MANIFEST
        if not folder.is_dir():
            raise GalleryError(f"{folder}: no such gallery folder" if not folder.exists() else
                               f"{folder}: not a gallery folder (a file)")
        if not path.is_file():
            raise GalleryError(f"{folder}: not a gallery ({MANIFEST} missing); make one with `retail-detect gallery build`")
        try:
            manifest = json.loads(read_limited(path, _MAX_MANIFEST_BYTES).decode("utf-8"))
        except (UnsafeFile, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise GalleryError(f"{path}: unreadable gallery manifest ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != GALLERY_FORMAT:
            raise GalleryError(f"{path}: not a retail-detect gallery manifest")
        if manifest.get("version") != GALLERY_VERSION:
            raise GalleryError(f"{path}: gallery version {manifest.get('version')!r}, this retail-detect reads version "
                               f"{GALLERY_VERSION}; re-make it with: {rebuild_hint(folder)}")
        if manifest.get("checksum") != _checksum(manifest):
            raise GalleryError(f"{path}: changed outside retail-detect (checksum mismatch); the gallery is refused")
        try:
            rows = _check_entries(manifest)
            dim = int(manifest["embedder"]["dim"])
            info = manifest["vectors"]
            if not isinstance(info.get("file"), str) or not _VECTORS_NAME.match(info["file"]):
                raise ValueError(f"vectors file name {info.get('file')!r}")
            vpath = folder / info["file"]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise GalleryError(f"{path}: malformed manifest ({exc})") from None
        try:
            data = read_limited(vpath, _MAX_VECTOR_BYTES)
        except (UnsafeFile, OSError) as exc:
            raise GalleryError(f"{vpath}: unreadable ({exc})") from None
        if hashlib.sha256(data).hexdigest() != info.get("sha256"):
            raise GalleryError(f"{vpath}: truncated or changed outside retail-detect (SHA-256 mismatch); the gallery "
                               "is refused")
        try:
            vectors = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise GalleryError(f"{vpath}: not a vectors file ({exc})") from None
        if vectors.dtype != np.float32 or vectors.shape != (rows, dim):
            raise GalleryError(f"{vpath}: holds {vectors.dtype} {vectors.shape}, the manifest says float32 ({rows}, {dim})")
        return cls(folder, manifest, vectors)

    def check_embedder(self, identity: dict) -> None:
        """Refuse vectors from an embedder other than the gallery's, with the command that rebuilds it."""
        mine = self.embedder
        same = all(mine.get(k) == identity.get(k) for k in ("sha256", "dim", "image_size"))
        if not same:  # the same weights at another input size give other vectors
            raise GalleryError(f"{self.folder}: built by embedder {_embedder_text(mine)}, not by "
                               f"{_embedder_text(identity)}; rebuild it for that "
                               f"embedder: {rebuild_hint(self.folder).replace('EMBEDDER', str(identity.get('name')))}")

    def load_crop(self, ref: Reference) -> np.ndarray:
        """A reference's stored crop, ``[h, w, 3]`` uint8 RGB."""
        from data_tools.images import read_image

        return read_image(self.folder / ref.crop)

    # ---------------------------------------------------------------- searching
    def search(self, queries: np.ndarray, top: int = 3):
        """See :meth:`VectorIndex.classify`: per query the best ``top`` SKUs and their similarities."""
        return self.index.classify(queries, top)

    # ---------------------------------------------------------------- writing
    def add(self, entries: dict[str, Sequence[NewReference]], replace: bool = False) -> None:
        """Add the references of one or more SKUs (``{sku: [NewReference, ...]}``) in one commit.

        A SKU already in the gallery is refused unless ``replace`` (its references are then replaced); every other
        SKU's rows are copied unchanged.
        """
        for sku, refs in entries.items():
            if not sku or sku != sku.strip() or any(ord(c) < 32 for c in sku):
                raise GalleryError(f"{self.folder}: bad SKU name {sku!r} (empty, control characters or edge spaces)")
            if not refs:
                raise GalleryError(f"{self.folder}: no reference for SKU {sku!r}")
            for r in refs:
                if r.vector.shape != (self.vectors.shape[1],):
                    raise GalleryError(f"{self.folder}: a vector of size {r.vector.shape} for SKU {sku!r}; the gallery "
                                       f"holds {self.vectors.shape[1]}")
        with self._writing():
            taken = [s for s in entries if s in self.skus]
            if taken and not replace:
                raise GalleryError(f"{self.folder}: SKU {taken[0]!r} is already in the gallery "
                                   f"({len(self.references(taken[0]))} references); pass --replace to replace them")
            keep = [i for i, r in enumerate(self.refs) if r.sku not in entries]
            skus = [{"name": s["name"], "refs": [r for r in s["refs"]]} for s in self.manifest["skus"] if s["name"] not in entries]
            next_id = int(self.manifest["next_id"])
            new_rows, written = [], []
            try:
                for sku, refs in entries.items():
                    listed = []
                    for r in refs:
                        rid = f"r{next_id:06d}"
                        next_id += 1
                        crop = f"refs/{rid}.jpg"
                        _write_crop(self.folder / crop, r.crop)
                        written.append(crop)
                        listed.append({"id": rid, "source": str(r.source), "crop": crop})
                        new_rows.append(np.asarray(r.vector, np.float32))
                    skus.append({"name": sku, "refs": listed})
            except BaseException:
                for crop in written:  # nothing names them yet
                    with contextlib.suppress(OSError):
                        (self.folder / crop).unlink()
                raise
            vectors = np.concatenate([self.vectors[keep], np.stack(new_rows)]) if new_rows else self.vectors[keep]
            self._commit(skus, vectors, written, next_id)

    def remove(self, sku: str) -> int:
        """Remove a SKU and its references; returns how many references went. Unknown SKU: one line."""
        with self._writing():
            if sku not in self.skus:
                raise GalleryError(f"{self.folder}: no SKU {sku!r} in the gallery ({len(self.skus)} SKUs; see "
                                   f"`retail-detect gallery list {self.folder}`)")
            gone = self.references(sku)
            keep = [i for i, r in enumerate(self.refs) if r.sku != sku]
            skus = [s for s in self.manifest["skus"] if s["name"] != sku]
            self._commit(skus, self.vectors[keep], [])
        return len(gone)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold the gallery's write lock; re-read the manifest when another writer committed meanwhile."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    raise GalleryError(f"{self.folder}: another process is changing this gallery; try again when it "
                                       "has finished") from None
            if (self.folder / MANIFEST).is_file() and self.manifest.get("checksum"):
                fresh = Gallery.open(self.folder)
                if fresh.manifest["checksum"] != self.manifest["checksum"]:
                    self.__init__(fresh.folder, fresh.manifest, fresh.vectors)
            yield
        finally:
            os.close(fd)

    def _commit(self, skus: list[dict], vectors: np.ndarray, written: list[str], next_id: int | None = None) -> None:
        """Write ``vectors`` under a new name, calibrate, replace the manifest (the commit), then tidy up."""
        old = self.manifest.get("vectors")
        old_crops = {r.crop for r in getattr(self, "refs", [])}
        generation = int(self.manifest.get("generation", 0)) + 1
        name = f"vectors.{generation:06d}.npy"
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(vectors, np.float32), allow_pickle=False)
        data = buf.getvalue()
        try:
            if written:
                flush_to_disk()  # the crops reach the disk before the manifest that names them
            atomic_write_bytes(self.folder / name, data)
            index = VectorIndex(vectors, [s["name"] for s in skus for _ in s["refs"]])
            threshold, calibration = calibrate_threshold(index)
            manifest = {**self.manifest, "skus": skus, "generation": generation, "threshold": threshold,
                        "next_id": int(self.manifest["next_id"] if next_id is None else next_id),
                        "calibration": calibration,
                        "vectors": {"file": name, "rows": int(len(vectors)), "sha256": hashlib.sha256(data).hexdigest()}}
            manifest["checksum"] = _checksum(manifest)
            atomic_write_text(self.folder / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False))
        except BaseException:
            if not _names_vectors(self.folder, name):  # the old manifest still names only the old files
                for leftover in [name, *written]:
                    with contextlib.suppress(OSError):
                        (self.folder / leftover).unlink()
            raise
        self.__init__(self.folder, manifest, np.ascontiguousarray(vectors, np.float32))
        if old:
            with contextlib.suppress(OSError):
                (self.folder / old["file"]).unlink()
        for crop in old_crops - {r.crop for r in self.refs}:
            with contextlib.suppress(OSError):
                (self.folder / crop).unlink()


def _check_entries(manifest: dict) -> int:
    """Check the SKU list's shape (unique names and ids, crop files named ``refs/rNNNNNN.jpg`` so that nothing
    outside ``refs/`` is ever read or removed); returns the number of references. Raises ValueError/TypeError."""
    names, ids, rows = set(), set(), 0
    for s in manifest["skus"]:
        if not isinstance(s["name"], str) or s["name"] in names:
            raise ValueError(f"SKU name {s['name']!r} repeated or not a string")
        names.add(s["name"])
        for r in s["refs"]:
            if not isinstance(r["crop"], str) or not _CROP_NAME.match(r["crop"]) or r["id"] in ids:
                raise ValueError(f"reference {r.get('id')!r} of {s['name']!r}: bad id or crop file {r.get('crop')!r}")
            if r["crop"] != f"refs/{r['id']}.jpg" or not isinstance(r["source"], str):
                raise ValueError(f"reference {r['id']!r} of {s['name']!r}: crop file or source mismatch")
            ids.add(r["id"])
            rows += 1
    int(manifest["next_id"])
    return rows


def _names_vectors(folder: Path, name: str) -> bool:
    """True when ``folder``'s manifest on disk names the vectors file ``name`` (the commit happened after all)."""
    try:
        return json.loads((folder / MANIFEST).read_text("utf-8")).get("vectors", {}).get("file") == name
    except (OSError, ValueError, AttributeError):
        return False


def _embedder_text(identity: dict) -> str:
    """``imagenet (a7245ec4e563, 128 px)`` for messages."""
    return f"{identity.get('name')} ({str(identity.get('sha256'))[:12]}, {identity.get('image_size')} px)"


def _write_crop(path: Path, crop: np.ndarray) -> None:
    """Store a reference crop as JPEG (quality 92), longer side at most :data:`REF_SIDE`."""
    h, w = crop.shape[:2]
    scale = REF_SIDE / max(h, w)
    if scale < 1:
        crop = cv2.resize(np.ascontiguousarray(crop), (max(1, round(w * scale)), max(1, round(h * scale))),
                          interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 RGB array
        raise GalleryError(f"{path}: could not encode the reference crop")
    atomic_write_bytes(path, buf.tobytes(), durable=False)
