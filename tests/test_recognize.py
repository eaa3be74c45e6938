"""Issue 24, item 4: the two-stage pipeline in the verbs: detector boxes named by a SKU gallery.

The gallery is built here from the ground-truth crops of a tiny synthetic dataset with the ImageNet embedder at
32 px (fast). The detectors are untrained tiny checkpoints (their boxes are random: enough for the plumbing of
predict / audit); eval's detector is replaced by one that returns the ground-truth boxes, so its AP measures the
naming alone.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from data_tools.images import read_image
from data_tools.records import RecordSet, merge_classes
from data_tools.store import load_dataset, save_dataset
from data_tools.synth import make_tiny_dataset
from detect.cli import main
from detect.engine.inference.crop_embedder import CropEmbedder, crop_boxes
from detect.engine.inference.gallery import Gallery, GalleryError, NewReference
from detect.engine.inference.recognize import UNKNOWN, Recognizer

EMB_SIZE = 32
DET_SIZE = 64


@pytest.fixture(scope="module")
def embedder() -> CropEmbedder:
    return CropEmbedder.load("imagenet", device="cpu", image_size=EMB_SIZE)


@pytest.fixture(scope="module")
def shelves(tmp_path_factory) -> dict:
    """12 synthetic 160x128 shelf photos of 3 brands, as a dataset file and a folder of photos."""
    root = tmp_path_factory.mktemp("pipeline")
    rs = make_tiny_dataset(root, images=12, classes=3, seed=5, size=(160, 128))
    save_dataset(rs, root / "all.pkl")
    return {"rs": rs, "pkl": root / "all.pkl", "images": root / "images", "root": root}


def crops_by_class(rs: RecordSet) -> dict[str, list[np.ndarray]]:
    out: dict[str, list[np.ndarray]] = {n: [] for n in rs.class_names}
    for rec in rs.records:
        image = read_image(Path(rs.image_root) / rec.image)
        for crop, label in zip(crop_boxes(image, rec.boxes), rec.labels):
            out[rs.class_names[label - 1]].append(crop)
    return out


def build_gallery(folder: Path, rs: RecordSet, embedder: CropEmbedder, names: dict[str, str] | None = None,
                  per_class: int = 6) -> Path:
    """A gallery of the dataset's ground-truth crops; ``names`` renames classes to SKUs (a shuffled gallery)."""
    g = Gallery.create(folder, embedder.identity())
    entries = {}
    for cls, crops in crops_by_class(rs).items():
        crops = crops[:per_class]
        vecs = embedder.embed(crops)
        entries[(names or {}).get(cls, cls)] = [NewReference(c, v, f"gt#{i}") for i, (c, v) in enumerate(zip(crops, vecs))]
    g.add(entries)
    return folder


@pytest.fixture(scope="module")
def gallery(shelves, embedder, tmp_path_factory) -> Path:
    return build_gallery(tmp_path_factory.mktemp("g") / "gallery", shelves["rs"], embedder)


def tiny_checkpoint(path: Path, class_names: list[str], product: bool) -> Path:
    """An untrained SSD checkpoint (random boxes): a product detector (``data.class_agnostic``) or a closed set."""
    from detect.config import config_from_dict
    from detect.engine.runtime.checkpoint import save_checkpoint
    from detect.models.build import build_model

    torch.manual_seed(0)
    cfg = config_from_dict({"model": {"name": "ssd", "backbone_weights": "none", "max_detections": 8},
                            "data": {"image_size": DET_SIZE, "class_agnostic": product}})
    model = build_model(cfg.model, len(class_names))
    return save_checkpoint(path, {"model": model.state_dict(), "config": cfg.to_dict(), "class_names": class_names})


@pytest.fixture(scope="module")
def product_pt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("w") / "product.pt", ["product"], product=True)


# ----------------------------------------------------------------------------- Recognizer


def test_recognizer_names_ground_truth_crops_and_says_unknown(shelves, gallery, embedder):
    rec = Recognizer(embedder, Gallery.open(gallery))
    r = shelves["rs"].records[-1]
    image = read_image(Path(shelves["rs"].image_root) / r.image)
    namings = rec.name(image, r.boxes)
    truth = [shelves["rs"].class_names[k - 1] for k in r.labels]
    assert len(namings) == len(truth) > 0
    assert sum(n.sku == t for n, t in zip(namings, truth)) / len(truth) >= 0.8
    for n in namings:
        assert len(n.alternatives) == 2 and n.sku not in {a for a, _ in n.alternatives}  # 3 SKUs: best + 2
        assert all(s <= n.similarity + 1e-6 for _, s in n.alternatives)
    never = Recognizer(embedder, Gallery.open(gallery), unknown_below=1.01).name(image, r.boxes)
    assert {n.sku for n in never} == {UNKNOWN} and all(n.unknown for n in never)
    assert [n.nearest for n in never] == [n.sku for n in namings]
    assert never[0].alternatives[0][0] == namings[0].sku  # an unknown box lists its nearest SKU first
    assert rec.name(image, np.zeros((0, 4))) == []


def test_open_loads_the_gallerys_own_embedder_and_refuses_a_changed_one(gallery, tmp_path, embedder):
    assert Recognizer.open(gallery, device="cpu").embedder.sha256 == embedder.sha256
    other = dict(embedder.identity(), sha256="0" * 64)
    g = Gallery.create(tmp_path / "other", other)
    with pytest.raises(GalleryError, match="--embedder") as e:
        Recognizer.open(g.folder, device="cpu")
    assert "\n" not in str(e.value)
    gone = Gallery.create(tmp_path / "gone", dict(embedder.identity(), name=str(tmp_path / "missing.pt")))
    with pytest.raises(GalleryError, match="no longer exists.*--embedder"):
        Recognizer.open(gone.folder, device="cpu")
    with pytest.raises(GalleryError, match="rebuild"):  # an embedder given that did not build it
        Recognizer.open(g.folder, "imagenet", device="cpu")


# ----------------------------------------------------------------------------- predict / audit


def test_predict_gallery_names_boxes_in_json_csv_labels_and_counts(shelves, gallery, product_pt, tmp_path, capsys):
    out = tmp_path / "pred"
    assert main(["predict", "--weights", str(product_pt), str(shelves["images"]), "-o", str(out), "--conf", "0.0",
                 "--gallery", str(gallery), "--csv", "--device", "cpu", "--save-labels", "voc",
                 "--unknown-below", "-1"]) == 0  # random boxes: named, never unknown
    printed = capsys.readouterr().out
    doc = json.loads((out / "predictions.json").read_text())
    skus = {"brand_a", "brand_b", "brand_c"}
    dets = [d for e in doc["images"] for d in e["detections"]]
    assert dets and doc["class_names"] == [*sorted(skus), UNKNOWN] and doc["detector_class_names"] == ["product"]
    for d in dets:
        assert d["sku"] == d["class_name"] and d["sku"] in skus
        assert -1.0 <= d["sku_similarity"] <= 1.0 + 1e-6
        assert 1 <= len(d["sku_alternatives"]) <= 3 and {a["sku"] for a in d["sku_alternatives"]} <= skus
    summary = doc["summary"]
    assert summary["detector_counts"] == {"product": len(dets)} and sum(summary["class_counts"].values()) == len(dets)
    assert summary["gallery"]["skus"] == 3 and summary["gallery"]["unknown_below"] == -1
    assert f"product {len(dets)}; by SKU (3 in the gallery):" in printed
    with (out / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(dets) and {"sku", "sku_similarity", "sku_alternatives"} <= set(rows[0])
    assert rows[0]["sku"] == dets[0]["sku"] and ":" in rows[0]["sku_alternatives"]
    xml = "".join(p.read_text() for p in (out / "labels" / "annotations").glob("*.xml"))
    assert "<name>product</name>" not in xml and any(f"<name>{s}</name>" in xml for s in skus)

    unk = tmp_path / "unk"
    assert main(["predict", "--weights", str(product_pt), str(shelves["images"]), "-o", str(unk), "--conf", "0.0",
                 "--gallery", str(gallery), "--unknown-below", "1.01", "--no-draw", "--device", "cpu"]) == 0
    doc = json.loads((unk / "predictions.json").read_text())
    assert {d["sku"] for e in doc["images"] for d in e["detections"]} == {UNKNOWN}


def test_closed_set_detector_boxes_are_renamed_too(shelves, gallery, tmp_path):
    closed = tiny_checkpoint(tmp_path / "closed.pt", list(shelves["rs"].class_names), product=False)
    out = tmp_path / "pred"
    assert main(["predict", "--weights", str(closed), str(shelves["images"]), "-o", str(out), "--conf", "0.0",
                 "--gallery", str(gallery), "--no-draw", "--device", "cpu"]) == 0
    doc = json.loads((out / "predictions.json").read_text())
    assert doc["detector_class_names"] == shelves["rs"].class_names
    assert all("sku" in d for e in doc["images"] for d in e["detections"])


def test_gallery_flag_errors_are_one_line(shelves, gallery, product_pt, embedder, tmp_path, capsys):
    other = Gallery.create(tmp_path / "other", dict(embedder.identity(), sha256="f" * 64)).folder
    assert main(["predict", "--weights", str(product_pt), str(shelves["images"]), "-o", str(tmp_path / "p"),
                 "--gallery", str(other), "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "--embedder" in err and "\n" not in err
    assert not (tmp_path / "p").exists()  # refused before anything is written
    assert main(["predict", "--weights", str(product_pt), str(shelves["images"]), "--unknown-below", "0.5"]) == 1
    assert "--unknown-below applies to --gallery" in capsys.readouterr().err
    assert main(["eval", "--weights", str(product_pt), "--data", str(shelves["pkl"]), "--gallery",
                 str(tmp_path / "nope"), "--device", "cpu"]) == 1
    assert "no such gallery folder" in capsys.readouterr().err


def test_audit_gallery_runs_by_sku(shelves, gallery, product_pt, tmp_path, capsys):
    out = tmp_path / "audit"
    assert main(["audit", "--weights", str(product_pt), str(shelves["images"]), "-o", str(out), "--conf", "0.0",
                 "--gallery", str(gallery), "--no-draw", "--device", "cpu"]) == 0
    doc = json.loads((out / "audit.json").read_text())
    assert doc["class_names"][:3] == ["brand_a", "brand_b", "brand_c"] and doc["gallery"]["skus"] == 3
    assert "product" in doc["detector_counts"]


# ----------------------------------------------------------------------------- eval


def ground_truth_results(model, loader, device, amp=False, progress=None) -> list[dict]:
    """Stand-in for the detector: the ground-truth boxes of every image, score 0.9 (labels: ``product``)."""
    out = []
    for i, rec in enumerate(loader.dataset.rs.records, start=1):
        for b in rec.boxes:
            out.append({"image_id": i, "category_id": 1, "score": 0.9,
                        "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]})
    return out


def test_eval_gallery_scores_by_sku_and_fails_when_naming_is_broken(shelves, gallery, product_pt, embedder,
                                                                    tmp_path, monkeypatch, capsys):
    import detect.verbs.evaluate_weights as ew

    monkeypatch.setattr(ew, "predict_dataset", ground_truth_results)
    good = ew.evaluate_weights(product_pt, shelves["pkl"], device="cpu", gallery=gallery, log=lambda _: None)
    assert set(good["per_class"]) == {"brand_a", "brand_b", "brand_c"}
    assert good["AP50"] >= 0.8, good
    shuffled = build_gallery(tmp_path / "shuffled", shelves["rs"], embedder,
                             {"brand_a": "brand_b", "brand_b": "brand_c", "brand_c": "brand_a"})
    bad = ew.evaluate_weights(product_pt, shelves["pkl"], device="cpu", gallery=shuffled, log=lambda _: None)
    assert bad["AP50"] <= 0.3 < good["AP50"] - 0.5
    # a SKU that is not a class of the dataset: a false positive of no class; a class not in the gallery: one line
    partial = build_gallery(tmp_path / "partial", shelves["rs"], embedder, {"brand_c": "brand_z"})
    said: list[str] = []
    m = ew.evaluate_weights(product_pt, shelves["pkl"], device="cpu", gallery=partial, log=said.append)
    assert any("1 of the dataset's 3 classes are not in the gallery" in s and "brand_c" in s for s in said)
    assert m["per_class"]["brand_c"] == 0.0 and m["per_class"]["brand_a"] >= 0.8
    # the CLI, with the report (counts by SKU)
    report = tmp_path / "report"
    assert main(["eval", "--weights", str(product_pt), "--data", str(shelves["pkl"]), "--gallery", str(gallery),
                 "--report", str(report), "--json", str(tmp_path / "m.json"), "--device", "cpu"]) == 0
    assert "named by" in capsys.readouterr().out
    per_class = (report / "per_class.csv").read_text()
    assert "brand_a" in per_class and (report / "index.html").is_file()
    assert json.loads((tmp_path / "m.json").read_text())["AP50"] == pytest.approx(good["AP50"])


def test_eval_without_gallery_is_unchanged_for_a_product_detector(shelves, product_pt, monkeypatch):
    import detect.verbs.evaluate_weights as ew

    monkeypatch.setattr(ew, "predict_dataset", ground_truth_results)
    m = ew.evaluate_weights(product_pt, shelves["pkl"], device="cpu", log=lambda _: None)
    assert set(m["per_class"]) == {"product"} and m["AP50"] == pytest.approx(1.0)
    assert merge_classes(load_dataset(shelves["pkl"])).class_names == ["product"]
