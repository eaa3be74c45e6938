"""`retail-detect gallery ...` from the command line: one end-to-end run with the real `imagenet` embedder at a small
input size (build, list --json, add, remove, show, rebuild), then refusals with a fake embedder, each leaving the
gallery bit-identical."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_tools.store import save_dataset
from data_tools.synth import make_tiny_dataset
from detect.cli import main
from detect.engine.inference.gallery import Gallery
from detect.verbs import gallery_build, gallery_edit
from detect.verbs.gallery_sources import Pick, class_folders, spread

FAKE = {"name": "fake", "sha256": "a" * 64, "kind": "trained", "dim": 8, "image_size": 32}


class FakeEmbedder:
    """Crops -> unit vectors from their mean colour and size (deterministic, instant)."""

    name = "fake"
    batch_size = 4

    def identity(self) -> dict:
        return dict(FAKE)

    def embed(self, crops) -> np.ndarray:
        v = np.array([[*c.reshape(-1, 3).mean(0), c.shape[0], c.shape[1], 1, 2, 3] for c in crops], np.float32)
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).reshape(-1, 8)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ds")
    rs = make_tiny_dataset(root, images=6, classes=3, size=96)
    save_dataset(rs, root / "ds.pkl")
    return root / "ds.pkl"


def _photos(folder: Path, n: int, colour: tuple[int, int, int]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"p{i}.jpg"
        Image.fromarray(np.full((40 + 4 * i, 30, 3), colour, np.uint8)).save(p)
        out.append(str(p))
    return out


def test_cli_end_to_end_with_imagenet(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gal = tmp_path / "gal"
    assert main(["gallery", "build", str(dataset), "--embedder", "imagenet", "--size", "64", "--per-class", "3",
                 "-o", str(gal)]) == 0
    out = capsys.readouterr().out
    assert "3 SKUs, 9 references" in out
    assert main(["gallery", "list", str(gal), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [len(s["references"]) for s in info["skus"]] == [3, 3, 3]
    assert info["embedder"]["image_size"] == 64
    photos = _photos(tmp_path / "new", 2, (200, 30, 30))
    assert main(["gallery", "add", str(gal), "--sku", "red box", *photos]) == 0  # the gallery's own embedder
    assert "added SKU 'red box': 2 references" in capsys.readouterr().out
    g = Gallery.open(gal)
    assert g.search(g.vectors[-1:])[0].sku == "red box"
    assert main(["gallery", "show", str(gal), "-o", str(tmp_path / "page.html")]) == 0
    html = (tmp_path / "page.html").read_text()
    assert html.count('class="thumb"') == 11 and "nearest other SKU" in html and 'src="gal/refs/' in html
    assert main(["gallery", "remove", str(gal), "--sku", "red box"]) == 0
    assert "red box" not in Gallery.open(gal).skus and len(Gallery.open(gal).skus) == 3
    assert main(["gallery", "rebuild", str(gal), "--embedder", "imagenet", "-o", str(tmp_path / "gal2")]) == 0
    g2 = Gallery.open(tmp_path / "gal2")
    assert g2.embedder["image_size"] == 128 and [r.source for r in g2.refs] == [r.source for r in Gallery.open(gal).refs]
    assert main(["gallery", "add", str(gal), "--sku", "x", "--embedder", "imagenet", *photos]) == 0  # at 64 px


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gallery_build, "load_embedder", lambda spec, size=None: FakeEmbedder())
    monkeypatch.setattr(gallery_edit, "load_embedder",
                        lambda spec, size=None: OtherEmbedder() if spec == "other" else FakeEmbedder())


class OtherEmbedder(FakeEmbedder):
    name = "other.pt"

    def identity(self) -> dict:
        return {**FAKE, "name": self.name, "sha256": "b" * 64}


def test_build_from_class_folders_and_refusals(fake, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "shop"
    for k, colour in enumerate([(250, 0, 0), (0, 250, 0), (0, 0, 250)]):
        _photos(root / "Packages" / f"kind{k % 2}" / f"prod{k}", 4, colour)
    gal = tmp_path / "gal"
    assert main(["gallery", "build", str(root), "--embedder", "fake", "-o", str(gal), "--per-class", "2"]) == 0
    g = Gallery.open(gal)
    assert g.skus == ["prod0", "prod1", "prod2"] and len(g.refs) == 6
    assert g.references("prod0")[0].source == "Packages/kind0/prod0/p0.jpg"
    before = snapshot(gal)
    capsys.readouterr()
    err = []
    cases = [
        ["gallery", "build", str(root), "--embedder", "fake", "-o", str(gal)],  # not a new folder
        ["gallery", "add", str(gal), "--sku", "prod0", "--embedder", "fake", str(root / "Packages/kind0/prod0/p0.jpg")],
        ["gallery", "add", str(gal), "--sku", "new", "--embedder", "fake", str(tmp_path / "missing.jpg")],
        ["gallery", "remove", str(gal), "--sku", "nope"],
    ]
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    good = root / "Packages/kind0/prod0/p1.jpg"
    cases += [["gallery", "add", str(gal), "--sku", "new", "--embedder", "fake", str(good), str(tmp_path / bad)]
              for bad in ("empty.jpg", "text.jpg")]
    (tmp_path / "mine.html").write_text("<html>my own page</html>")
    cases.append(["gallery", "show", str(gal), "-o", str(tmp_path / "mine.html")])
    cases.append(["gallery", "show", str(gal), "-o", str(gal / "manifest.json")])
    cases.append(["gallery", "add", str(gal), "--sku", "new", "--embedder", "other", str(good)])
    for argv in cases:
        assert main(argv) == 1, argv
        err.append(capsys.readouterr().err.strip())
        assert snapshot(gal) == before, argv
    assert all(e.startswith("error: ") and "\n" not in e for e in err), err
    assert "not empty" in err[0] and "--replace" in err[1] and "missing.jpg" in err[2]
    assert "empty.jpg" in err[4] and "text.jpg" in err[5] and "my own page" not in err[6]
    assert "retail-detect gallery rebuild" in err[8] and "other.pt" in err[8]
    assert (tmp_path / "mine.html").read_text() == "<html>my own page</html>"
    assert main(["gallery", "add", str(gal), "--sku", "prod0", "--replace", "--embedder", "fake", str(good)]) == 0
    assert len(Gallery.open(gal).references("prod0")) == 1


def test_add_with_detector_and_labels(fake, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture) -> None:
    import torch

    from detect.engine.inference import predictor

    gal = tmp_path / "gal"
    assert main(["gallery", "build", str(dataset), "--embedder", "fake", "-o", str(gal)]) == 0
    before = snapshot(gal)
    photos = sorted(str(p) for p in (dataset.parent / "images").iterdir())[:2]

    class FakePredictor:
        def __init__(self, boxes):
            self.boxes = boxes

        def predict_images(self, images):
            return [{"boxes": torch.tensor(self.boxes, dtype=torch.float32).reshape(-1, 4)} for _ in images]

    monkeypatch.setattr(predictor.Predictor, "from_weights", classmethod(lambda cls, w, conf=0.25: FakePredictor([])))
    argv = ["gallery", "add", str(gal), "--sku", "d", "--embedder", "fake", "--detector", "det.pt", *photos]
    assert main(argv) == 1
    assert "no product found" in capsys.readouterr().err and snapshot(gal) == before
    boxes = [[0, 0, 10, 10], [5, 5, 45, 35]]
    monkeypatch.setattr(predictor.Predictor, "from_weights", classmethod(lambda cls, w, conf=0.25: FakePredictor(boxes)))
    assert main(argv) == 0
    g = Gallery.open(gal)
    assert [r.source for r in g.references("d")] == [f"{p}#detected" for p in photos]
    assert all(g.load_crop(r).shape[:2] == (30, 40) for r in g.references("d"))  # the largest box, 40 x 30
    assert main(["gallery", "add", str(gal), "--sku", "l", "--embedder", "fake", "--labels", str(dataset),
                 photos[0]]) == 0
    n = make_tiny_dataset(tmp_path / "again", images=6, classes=3, size=96).records[0].num_boxes
    assert len(Gallery.open(gal).references("l")) == n


def test_spread_picks_different_photos() -> None:
    picks = [Pick("s", f"p{i}", (0, 0, 1, 1 + j), f"p{i}#{j}") for i in range(10) for j in range(3)]
    chosen = spread(picks, 4)
    assert [p.path for p in chosen] == ["p0", "p3", "p6", "p9"]
    assert spread(picks, 4) == chosen
    assert len({p.path for p in spread(picks, 12)}) == 10 and len(spread(picks, 12)) == 12
    assert spread(picks, None) == picks


def test_class_folder_names_collide(tmp_path: Path) -> None:
    _photos(tmp_path / "a" / "x", 1, (1, 2, 3))
    _photos(tmp_path / "b" / "x", 1, (1, 2, 3))
    assert sorted(class_folders(tmp_path)) == ["a/x", "b/x"]
