"""Issue 25, item 6: the Python API (``from detect import load``) on tiny untrained checkpoints.

The detectors are untrained SSDs at 64 px (random but deterministic boxes: enough to compare the API with the
Predictor and with ``retail-detect predict`` box for box); the gallery holds ground-truth crops embedded by the
ImageNet embedder at 32 px. The README's example block and every Python block of docs/api.md run as written in a
folder laid out as they say.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from data_tools.errors import InvalidInput
from data_tools.images import ImageError, read_image
from data_tools.outputs import OutputRefused
from data_tools.synth import make_tiny_dataset
from detect import load
from detect.cli import main
from detect.engine.inference.crop_embedder import CropEmbedder, crop_boxes
from detect.engine.inference.gallery import Gallery, NewReference
from detect.engine.inference.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]
S = 64
NAMES = ["cola", "chips"]


def tiny_checkpoint(path: Path, class_names: list[str], product: bool = False) -> Path:
    """An untrained SSD checkpoint: scores around 0.34, up to 20 boxes per image."""
    from detect.config import config_from_dict
    from detect.engine.runtime.checkpoint import save_checkpoint
    from detect.models.build import build_model

    torch.manual_seed(0)
    cfg = config_from_dict({"model": {"name": "ssd", "backbone_weights": "none", "max_detections": 20},
                            "data": {"image_size": S, "class_agnostic": product}})
    model = build_model(cfg.model, len(class_names))
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(path, {"model": model.state_dict(), "config": cfg.to_dict(), "class_names": class_names})


@pytest.fixture(scope="module")
def shelves(tmp_path_factory) -> dict:
    """4 synthetic 160x128 shelf photos (PNG: decoding gives back the exact pixels) and a checkpoint."""
    root = tmp_path_factory.mktemp("api")
    rs = make_tiny_dataset(root / "synth", images=4, classes=2, seed=1, size=(160, 128))
    photos = root / "photos"
    photos.mkdir()
    for i, rec in enumerate(rs.records):
        image = read_image(Path(rs.image_root) / rec.image)
        cv2.imwrite(str(photos / f"shelf_{i + 1}.png"), image[..., ::-1])
    files = sorted(photos.glob("*.png"))
    return {"rs": rs, "photos": photos, "files": files, "arrays": [read_image(f) for f in files],
            "weights": tiny_checkpoint(root / "w.pt", NAMES)}


@pytest.fixture(scope="module")
def model(shelves):
    return load(shelves["weights"], device="cpu", conf=0.0)


def _same(result, expected: dict) -> None:
    np.testing.assert_array_equal(result.boxes, expected["boxes"].numpy())
    np.testing.assert_array_equal(result.scores, expected["scores"].numpy())
    np.testing.assert_array_equal(result.labels, expected["labels"].numpy())
    assert (result.width, result.height) == (expected["width"], expected["height"])


def test_import_detect_does_not_import_torch():
    code = ("import sys, detect; assert 'torch' not in sys.modules, 'torch imported'; assert 'load' in dir(detect)\n"
            "try:\n    detect.nope\nexcept AttributeError as e:\n    print(e)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "module 'detect' has no attribute 'nope'" in out.stdout
    import detect
    import detect.api

    assert load is detect.load is detect.api.load and detect.Result is detect.api.Result


def test_paths_arrays_pil_and_lists_give_the_predictors_results(shelves, model):
    predictor = Predictor.from_weights(shelves["weights"], device="cpu", conf=0.0)
    files, arrays = shelves["files"], shelves["arrays"]
    expected = predictor.predict_images(arrays)  # one batch of 4 (a batch's size moves scores by ~1e-8)
    assert model.class_names == NAMES and model.image_size == S and str(model.device) == "cpu"
    assert len(expected[0]["labels"]) > 0
    alone = predictor.predict_images(arrays[:1])[0]
    for one in (files[0], str(files[0]), arrays[0], Image.fromarray(arrays[0])):
        results = model(one)
        assert isinstance(results, list) and len(results) == 1
        _same(results[0], alone)
    mixed = model([str(files[0]), arrays[1], Image.fromarray(arrays[2]), files[3]])
    for r, e in zip(mixed, expected):
        _same(r, e)
    assert [r.path for r in mixed] == [str(f) if k in (0, 3) else None for k, f in enumerate(files)]
    folder = model(shelves["photos"], batch_size=3)  # a folder: its photos sorted, in batches of 3 and 1
    assert [r.path for r in folder] == [str(f) for f in files]
    for r, e in zip(folder, predictor.predict_images(arrays[:3]) + predictor.predict_images(arrays[3:])):
        _same(r, e)
    r = folder[0]
    assert r.boxes.dtype == np.float32 and r.boxes.shape == (len(r), 4) and r.labels.dtype == np.int64
    assert r.names == [NAMES[k - 1] for k in r.labels] and r.class_names == NAMES and r.sku is None
    assert sum(r.counts().values()) == len(r) and r.tiles == 0
    assert len(model(np.stack(arrays[:2]))) == 2  # a [B, H, W, 3] batch
    assert [r.path for r in model.stream(str(shelves["photos"] / "*_[12].png"))] == [str(f) for f in files[:2]]


def test_to_json_is_the_predictions_json_entry(shelves, model, tmp_path, capsys):
    out = tmp_path / "pred"
    assert main(["predict", "--weights", str(shelves["weights"]), str(shelves["photos"]), "--out", str(out),
                 "--conf", "0.0", "--device", "cpu"]) == 0
    capsys.readouterr()
    entries = json.loads((out / "predictions.json").read_text())["images"]
    assert len(entries) == 4 and any(e["num_detections"] for e in entries)
    for entry, r in zip(entries, model(shelves["photos"])):
        entry.pop("drawn")
        assert r.to_dict() == entry
        assert json.loads(r.to_json()) == entry
    assert model(shelves["arrays"][0])[0].to_dict()["path"] is None


def test_draw_returns_the_drawing_and_writes_it(shelves, model, tmp_path):
    r = model(shelves["files"][1])[0]
    drawn = r.draw()
    assert drawn.shape == (128, 160, 3) and drawn.dtype == np.uint8
    assert not np.array_equal(drawn, shelves["arrays"][1])  # boxes were drawn
    target = tmp_path / "drawn.png"
    assert np.array_equal(r.draw(target), drawn) and np.array_equal(read_image(target), drawn)
    with pytest.raises(OutputRefused):
        r.draw(shelves["files"][1])  # never over the input photo
    from_array = model(shelves["arrays"][1])[0].draw()
    assert np.array_equal(from_array, drawn)


def test_keyword_thresholds_and_tiling_change_the_output(shelves, model):
    image = shelves["arrays"][0]
    everything = model(image)[0]
    cut = float(np.median(everything.scores))
    fewer = model(image, conf=cut)[0]
    assert 0 < len(fewer) < len(everything) and (fewer.scores >= cut).all()
    assert model.conf == 0.0 and len(model(image)[0]) == len(everything)  # a call's conf is for that call only
    strict = load(shelves["weights"], device="cpu", conf=0.9)
    assert len(strict(image)[0]) == 0
    lower = strict(image, conf=0.0)[0]  # the model's own threshold is lowered for the call too
    np.testing.assert_array_equal(lower.boxes, everything.boxes)
    tiled = model(image, tile="on", tile_size=80, overlap=0.25)[0]
    assert tiled.tiles > 0 and everything.tiles == 0 and model.tile.mode == "auto"
    assert load(shelves["weights"], device="cpu", tile=True, tile_size=80)(image)[0].tiles == tiled.tiles


def test_bad_inputs_raise_one_error_naming_them(shelves, model, tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(ImageError, match=re.escape(str(text))):
        model([shelves["files"][0], text])
    with pytest.raises(InvalidInput, match=re.escape(f"{tmp_path / 'nope.jpg'}: no such file or folder")):
        model(tmp_path / "nope.jpg")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidInput, match="no image files"):
        model(empty)
    with pytest.raises(InvalidInput, match=r"image 1 \(numpy array\): .*got shape \(64, 64\) dtype uint8"):
        model([shelves["arrays"][0], np.zeros((64, 64), np.uint8)])
    with pytest.raises(InvalidInput, match=r"image 0 \(numpy array\): .*dtype float32"):
        model(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(InvalidInput, match="image 0: expected a path, a numpy array or a PIL image, got int"):
        model([3])
    with pytest.raises(InvalidInput, match=r"conf must be in \[0, 1\], got 2"):
        model(shelves["arrays"][0], conf=2)
    with pytest.raises(InvalidInput, match="tile mode"):
        model(shelves["arrays"][0], tile="sometimes")


# ----------------------------------------------------------------------------- gallery


@pytest.fixture(scope="module")
def gallery(shelves, tmp_path_factory) -> Path:
    """A gallery of the synthetic brands' ground-truth crops (4 per brand), ImageNet embedder at 32 px."""
    rs = shelves["rs"]
    embedder = CropEmbedder.load("imagenet", device="cpu", image_size=32)
    crops: dict[str, list[np.ndarray]] = {n: [] for n in rs.class_names}
    for rec in rs.records:
        image = read_image(Path(rs.image_root) / rec.image)
        for crop, label in zip(crop_boxes(image, rec.boxes), rec.labels):
            crops[rs.class_names[label - 1]].append(crop)
    folder = tmp_path_factory.mktemp("g") / "gallery"
    g = Gallery.create(folder, embedder.identity())
    g.add({sku: [NewReference(c, v, f"gt#{i}") for i, (c, v) in enumerate(zip(cs[:4], embedder.embed(cs[:4])))]
           for sku, cs in crops.items()})
    return folder


def test_gallery_names_boxes_as_predict_does(shelves, gallery, tmp_path, capsys):
    weights = tiny_checkpoint(tmp_path / "product.pt", ["product"], product=True)
    named = load(weights, device="cpu", conf=0.0, gallery=gallery)
    assert named.class_names[-1] == "unknown" and named.detector_class_names == ["product"]
    r = named(shelves["files"][0])[0]
    assert len(r) > 0 and r.sku == r.names and set(r.sku) <= set(named.class_names)
    assert r.similarity.shape == (len(r),) and r.similarity.dtype == np.float32
    assert (r.detector_labels == 1).all()
    out = tmp_path / "pred"
    assert main(["predict", "--weights", str(weights), str(shelves["files"][0]), "--gallery", str(gallery),
                 "--out", str(out), "--conf", "0.0", "--device", "cpu", "--no-draw"]) == 0
    capsys.readouterr()
    assert json.loads((out / "predictions.json").read_text())["images"] == [r.to_dict()]


# ----------------------------------------------------------------------------- the docs' examples


def _python_blocks(doc: Path, after: str | None = None) -> list[str]:
    """The ```python blocks of ``doc`` (only the first after the heading ``after``, when given)."""
    text = doc.read_text(encoding="utf-8")
    if after is not None:
        text = text[text.index(after):]
    blocks = re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)
    return blocks[:1] if after is not None else blocks


@pytest.fixture
def docs_folder(shelves, gallery, tmp_path, monkeypatch) -> Path:
    """The folder the examples assume: runs/ssd/best.pt, runs/product/best.pt, gallery/, photos/shelf_N.jpg."""
    (tmp_path / "runs" / "ssd").mkdir(parents=True)
    shutil.copy(shelves["weights"], tmp_path / "runs" / "ssd" / "best.pt")
    tiny_checkpoint(tmp_path / "runs" / "product" / "best.pt", ["product"], product=True)
    shutil.copytree(gallery, tmp_path / "gallery")
    (tmp_path / "photos").mkdir()
    for i, image in enumerate(shelves["arrays"][:2]):
        cv2.imwrite(str(tmp_path / "photos" / f"shelf_{i + 1}.jpg"), image[..., ::-1])
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(code: str, where: str) -> None:
    exec(compile(code, where, "exec"), {"__name__": "__main__"})  # noqa: S102 - the docs' own example


def test_readme_example_runs_as_written(docs_folder, capsys):
    (block,) = _python_blocks(ROOT / "README.md", after="## Python API")
    assert "from detect import load" in block
    _run(block, "README.md")
    printed = capsys.readouterr().out
    assert "photos/shelf_1.jpg" in printed and '{"path": "photos/shelf_1.jpg"' in printed
    assert read_image(docs_folder / "shelf_1_drawn.jpg").shape == (128, 160, 3)


def test_api_page_examples_run_as_written(docs_folder, capsys):
    blocks = _python_blocks(ROOT / "docs" / "api.md")
    assert len(blocks) == 2
    for i, block in enumerate(blocks):
        _run(block, f"docs/api.md block {i + 1}")
    printed = capsys.readouterr().out
    assert "['cola', 'chips'] 64 cpu" in printed and "unknown" in printed
