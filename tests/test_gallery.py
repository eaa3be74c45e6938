"""The SKU gallery store (detect/engine/inference/gallery.py) and its search: exact search, entries kept bit for bit,
the unknown threshold, refusals that leave the gallery as it was, and a crash mid-commit. A fake embedder (random
unit vectors) stands in where the test is about storage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detect.engine.inference import gallery as gallery_mod
from detect.engine.inference.gallery import Gallery, GalleryError, NewReference
from detect.engine.inference.gallery_search import VectorIndex, calibrate_threshold

DIM = 16
IDENTITY = {"name": "fake", "sha256": "f" * 64, "kind": "trained", "dim": DIM, "image_size": 32}


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def refs(rng: np.random.Generator, n: int, name: str = "p") -> list[NewReference]:
    return [NewReference(rng.integers(0, 255, (20 + i, 12, 3), dtype=np.uint8), v, f"{name}_{i}.jpg")
            for i, v in enumerate(unit(rng, n))]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of the gallery (the lock file aside) and its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


@pytest.fixture
def filled(tmp_path: Path) -> Gallery:
    rng = np.random.default_rng(0)
    g = Gallery.create(tmp_path / "g", IDENTITY)
    g.add({"a": refs(rng, 3, "a"), "b": refs(rng, 2, "b"), "c": refs(rng, 4, "c")})
    return g


def test_search_equals_brute_force() -> None:
    rng = np.random.default_rng(1)
    vectors = unit(rng, 300)
    skus = [f"s{i % 37}" for i in range(300)]
    index = VectorIndex(vectors, skus)
    queries = unit(rng, 50)
    sims, rows = index.nearest(queries, 5)
    dots = queries @ vectors.T
    np.testing.assert_array_equal(rows[:, 0], dots.argmax(1))
    np.testing.assert_allclose(sims[:, 0], dots.max(1), atol=1e-5)
    for q, match in enumerate(index.classify(queries, top=3)):
        assert match.sku == skus[int(dots[q].argmax())]
        best = {}
        for j in np.argsort(-dots[q]):
            best.setdefault(skus[j], float(dots[q, j]))
        ranked = list(best.items())[:3]
        assert [match.sku, *(s for s, _ in match.alternatives)] == [s for s, _ in ranked]
        np.testing.assert_allclose([match.similarity, *(v for _, v in match.alternatives)], [v for _, v in ranked],
                                   atol=1e-5)


def test_add_and_remove_keep_other_entries_bit_identical(filled: Gallery) -> None:
    rng = np.random.default_rng(2)
    before = {r.id: (filled.vectors[i].tobytes(), (filled.folder / r.crop).read_bytes(), r.sku, r.source)
              for i, r in enumerate(filled.refs)}
    filled.add({"d": refs(rng, 2, "d")})
    filled.remove("b")
    filled.add({"a": refs(rng, 1, "a2")}, replace=True)
    g = Gallery.open(filled.folder)
    assert sorted(g.skus) == ["a", "c", "d"]
    for i, r in enumerate(g.refs):
        if r.sku == "c":
            assert before[r.id] == (g.vectors[i].tobytes(), (g.folder / r.crop).read_bytes(), r.sku, r.source)
    kept = {r.crop for r in g.refs}
    on_disk = {p.relative_to(g.folder).as_posix() for p in (g.folder / "refs").iterdir()}
    assert on_disk == kept  # the crops of removed and replaced references are gone
    assert len(list(g.folder.glob("vectors.*.npy"))) == 1


def test_threshold_between_genuine_and_impostor_scores(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    centres = unit(rng, 6)
    g = Gallery.create(tmp_path / "g", IDENTITY)
    entries = {}
    for k, c in enumerate(centres):
        noisy = c + 0.05 * rng.normal(size=(5, DIM)).astype(np.float32)
        noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
        entries[f"s{k}"] = [NewReference(np.zeros((8, 8, 3), np.uint8), v, f"{k}_{i}") for i, v in enumerate(noisy)]
    g.add(entries)
    dots = g.vectors @ g.vectors.T
    same = np.array([[a.sku == b.sku for b in g.refs] for a in g.refs])
    np.fill_diagonal(dots, -np.inf)
    genuine_min = np.where(same, dots, -np.inf).max(1).min()
    impostor_max = np.where(~same, dots, -np.inf).max()
    assert impostor_max < g.threshold <= genuine_min
    assert g.manifest["calibration"]["error_rate"] == 0


def test_threshold_none_with_one_reference_per_sku(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    g = Gallery.create(tmp_path / "g", IDENTITY)
    g.add({f"s{i}": refs(rng, 1) for i in range(4)})
    assert g.threshold is None
    assert calibrate_threshold(VectorIndex(unit(rng, 1), ["x"]))[0] is None


def test_other_embedder_refused_with_the_rebuild_command(filled: Gallery) -> None:
    for other in ({**IDENTITY, "sha256": "0" * 64, "name": "e.pt"}, {**IDENTITY, "image_size": 64}):
        with pytest.raises(GalleryError, match="retail-detect gallery rebuild"):
            filled.check_embedder(other)
    filled.check_embedder(dict(IDENTITY))


def _rewrite_manifest(folder: Path, change, fix_checksum: bool = True) -> None:
    m = json.loads((folder / "manifest.json").read_text())
    change(m)
    if fix_checksum:
        m["checksum"] = gallery_mod._checksum(m)
    (folder / "manifest.json").write_text(json.dumps(m))


def test_tampered_truncated_and_other_version_refused(filled: Gallery, tmp_path: Path) -> None:
    folder = filled.folder
    good = snapshot(folder)
    cases = [
        (lambda: _rewrite_manifest(folder, lambda m: m["skus"][0].update(name="zzz"), False), "checksum"),
        (lambda: _rewrite_manifest(folder, lambda m: m.update(version=99)), "version 99"),
        (lambda: _rewrite_manifest(folder, lambda m: m["skus"][0]["refs"][0].update(crop="../../x.jpg")),
         "malformed"),
        (lambda: _rewrite_manifest(folder, lambda m: m["vectors"].update(file="../v.npy")), "malformed"),
    ]
    for damage, message in cases:
        damage()
        with pytest.raises(GalleryError, match=message):
            Gallery.open(folder)
        (folder / "manifest.json").write_bytes(good["manifest.json"])
    vec = folder / filled.manifest["vectors"]["file"]
    vec.write_bytes(good[vec.name][:-7])
    with pytest.raises(GalleryError, match="truncated"):
        Gallery.open(folder)
    vec.write_bytes(good[vec.name])
    Gallery.open(folder)
    with pytest.raises(GalleryError, match="no such gallery"):
        Gallery.open(tmp_path / "nope")


def test_existing_sku_refused_without_replace(filled: Gallery) -> None:
    before = snapshot(filled.folder)
    with pytest.raises(GalleryError, match="--replace"):
        filled.add({"a": refs(np.random.default_rng(5), 2)})
    with pytest.raises(GalleryError, match="no SKU"):
        filled.remove("nope")
    assert snapshot(filled.folder) == before


def test_crash_mid_commit_leaves_the_old_gallery_whole(filled: Gallery, monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(filled.folder)

    def crash(path, text, durable=True):
        raise OSError("disk gone")

    monkeypatch.setattr(gallery_mod, "atomic_write_text", crash)
    with pytest.raises(OSError, match="disk gone"):
        filled.add({"new": refs(np.random.default_rng(6), 3)})
    with pytest.raises(OSError, match="disk gone"):
        filled.remove("a")
    monkeypatch.undo()
    assert snapshot(filled.folder) == before
    g = Gallery.open(filled.folder)
    assert g.skus == ["a", "b", "c"] and len(g.refs) == 9
    g.add({"new": refs(np.random.default_rng(6), 1)})  # and it goes on working
    assert Gallery.open(filled.folder).skus == ["a", "b", "c", "new"]


def test_failed_crop_write_leaves_no_orphan(filled: Gallery, monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(filled.folder)
    real = gallery_mod._write_crop
    calls = []

    def second_fails(path, crop):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("no space")
        real(path, crop)

    monkeypatch.setattr(gallery_mod, "_write_crop", second_fails)
    with pytest.raises(OSError):
        filled.add({"new": refs(np.random.default_rng(7), 3)})
    assert snapshot(filled.folder) == before
