"""``predict --save-labels``: the detections open in a labelling tool, and reading them back
(``retail-data convert OUT/labels``) gives the boxes of ``predictions.json``."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from data_tools.convert import convert
from detect.cli import main
from detect.config import Config
from detect.verbs.predict_run import run_predict

NAMES = ["cola", "chips"]
S = 64


class TwoBoxModel(nn.Module):
    """Eval contract: two boxes per image in tensor pixels (one partly outside a wide photo's content), a third
    under one pixel that no labelling tool could hold."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, images):
        boxes = torch.tensor([[8.0, 4.0, 40.3, 24.7], [2.5, 2.0, 20.0, 30.0], [5.0, 5.0, 5.2, 5.2]])
        return [{"boxes": boxes.clone(), "scores": torch.tensor([0.9, 0.6, 0.5]), "labels": torch.tensor([2, 1, 1])}
                for _ in range(images.shape[0])]


@pytest.fixture
def checkpoint(tmp_path, monkeypatch):
    import detect.models.build as build

    monkeypatch.setattr(build, "build_model", lambda cfg, num_classes, image_size=320: TwoBoxModel())
    cfg = Config()
    cfg.data.image_size = S
    path = tmp_path / "w.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "config": cfg.to_dict(), "class_names": NAMES}, path)
    return path


@pytest.fixture
def photos(tmp_path) -> Path:
    root = tmp_path / "shelves"
    (root / "aisle").mkdir(parents=True)
    assert cv2.imwrite(str(root / "a.jpg"), np.full((60, 80, 3), 90, np.uint8))
    assert cv2.imwrite(str(root / "aisle" / "b.png"), np.full((128, 100, 3), 90, np.uint8))
    return root


def _predicted(out: Path) -> dict[str, tuple[np.ndarray, list[str]]]:
    doc = json.loads((out / "predictions.json").read_text())
    return {Path(e["path"]).name: (np.array([d["box"] for d in e["detections"]]).reshape(-1, 4),
                                   [d["class_name"] for d in e["detections"]]) for e in doc["images"]}


@pytest.mark.parametrize("fmt", ["voc", "coco", "yolo", "cvat", "labelstudio"])
def test_saved_labels_read_back_as_the_predicted_boxes(photos, tmp_path, checkpoint, fmt):
    before = {p: p.read_bytes() for p in photos.rglob("*") if p.is_file()}
    out = tmp_path / "pred"
    summary = run_predict(str(checkpoint), [str(photos)], out, conf=0.1, device="cpu", save_labels=fmt)
    lab = summary["labels"]
    assert lab["format"] == fmt and lab["images"] == 2 and lab["dropped"] == 2  # the sub-pixel box, once per image
    back, problems, s = convert(out / "labels", progress=False)
    assert s["format"] == fmt and problems == [] and back.class_names == NAMES
    predicted = _predicted(out)
    for rec in back.records:
        boxes, names = predicted[Path(rec.image).name]
        keep = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
        np.testing.assert_allclose(rec.boxes, boxes[keep], atol=1e-3 if fmt in ("yolo", "labelstudio") else 1e-5)
        assert [NAMES[k - 1] for k in rec.labels] == [n for n, k in zip(names, keep) if k]
    assert {p: p.read_bytes() for p in photos.rglob("*") if p.is_file()} == before
    assert (out / "labels" / "images" / "shelves" / "aisle" / "b.png").is_file()
    assert not list(out.rglob(".*.tmp"))
    if fmt == "labelstudio":  # pre-labels with scores, shown by Label Studio as predictions to correct
        task = json.loads((out / "labels" / "annotations.json").read_text())[0]
        assert "annotations" not in task and task["predictions"][0]["result"][0]["score"] == 0.9


def test_cli_save_labels_and_a_rerun_into_the_same_folder(photos, tmp_path, checkpoint, capsys):
    out = tmp_path / "pred"
    assert main(["predict", "--weights", str(checkpoint), str(photos), "--out", str(out), "--device", "cpu",
                 "--conf", "0.1", "--save-labels", "yolo"]) == 0
    printed = capsys.readouterr().out
    assert "labels (yolo, 4 boxes on 2 images, 2 boxes under 1 px left out)" in printed and "retail-data convert" in printed
    assert (out / "labels" / "data.yaml").is_file() and (out / "labels" / "labels" / "shelves" / "a.txt").is_file()
    assert main(["predict", "--weights", str(checkpoint), str(photos), "--out", str(out), "--device", "cpu",
                 "--exist-ok", "--save-labels", "voc"]) == 1
    assert "not empty" in capsys.readouterr().err


def test_saved_photos_are_copies_unless_linked(photos, tmp_path, checkpoint):
    """An in-place edit of a photo under labels/images (a labelling tool rotating it) never reaches the original;
    ``--link`` opts into hard links (no extra disk space)."""
    original = photos / "a.jpg"
    before = original.read_bytes()
    run_predict(checkpoint, [str(photos)], tmp_path / "copied", device="cpu", conf=0.1, draw=False,
                save_labels="voc", log=lambda s: None)
    copy = tmp_path / "copied" / "labels" / "images" / "shelves" / "a.jpg"
    assert copy.stat().st_ino != original.stat().st_ino
    with open(copy, "r+b") as f:  # edit in place, as an editor that does not replace the file would
        f.write(b"edited")
    assert original.read_bytes() == before
    run_predict(checkpoint, [str(photos)], tmp_path / "linked", device="cpu", conf=0.1, draw=False,
                save_labels="voc", link_photos=True, log=lambda s: None)
    linked = tmp_path / "linked" / "labels" / "images" / "shelves" / "a.jpg"
    assert linked.stat().st_ino == original.stat().st_ino
    assert main(["predict", "--weights", str(checkpoint), str(photos), "--out", str(tmp_path / "x"), "--device",
                 "cpu", "--link"]) == 1  # --link without --save-labels links nothing: said, not ignored
