"""``predict`` over many photos: results streamed to ``predictions.jsonl`` in flat memory, ``--resume``, ``--ray``."""

from __future__ import annotations

import importlib.util
import json
import os
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from data_tools.errors import CannotRun
from detect.cli import main
from detect.config import Config
from detect.verbs import predict_output as po
from detect.verbs import predict_ray
from detect.verbs.predict_run import run_predict
from detect.verbs.predict_stream import JSONL_NAME, read_lines

NAMES = ["cola", "chips"]
S = 64


class ManyBoxModel(nn.Module):
    """Eval contract: ``boxes`` boxes per image (labels alternating); counts the images it saw."""

    seen = 0

    def __init__(self, boxes: int = 10):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.k = boxes

    def forward(self, images):
        ManyBoxModel.seen += images.shape[0]
        x = torch.arange(self.k, dtype=torch.float32)
        boxes = torch.stack([x, x, x + 10, x + 12], 1)
        return [{"boxes": boxes.clone(), "scores": torch.linspace(0.99, 0.5, self.k),
                 "labels": (torch.arange(self.k) % 2) + 1} for _ in range(images.shape[0])]


@pytest.fixture
def weights(tmp_path, monkeypatch) -> Path:
    import detect.models.build as build

    monkeypatch.setattr(build, "build_model", lambda cfg, num_classes, image_size=320: ManyBoxModel())
    cfg = Config()
    cfg.data.image_size = S
    path = tmp_path / "w.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "config": cfg.to_dict(), "class_names": NAMES}, path)
    return path


def _photos(folder: Path, n: int, start: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        assert cv2.imwrite(str(folder / f"p{i:05d}.png"), np.full((24, 32, 3), 40 + i % 200, np.uint8))
    return folder


def _doc(out: Path) -> dict:
    return json.loads((out / po.JSON_NAME).read_text())


def _quiet(_: str) -> None:
    pass


def test_streamed_json_is_the_json_of_the_whole_document(tmp_path):
    meta = {"weights": "w.pt", "class_names": ["a", "ü"], "summary": {"images": 2, "class_counts": {}, "x": None}}
    for images, errors in [([], []), ([{"a": 1, "b": [], "c": {}, "d": [{"box": [1.5, 2], "é": "ü"}]}, {}], [{"e": 1}])]:
        po.write_json(tmp_path, iter(images), iter(errors), meta)
        doc = {"format": po.FORMAT, "format_version": po.FORMAT_VERSION, **meta, "images": images, "errors": errors}
        assert (tmp_path / po.JSON_NAME).read_text() == json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


def test_memory_stays_flat_with_the_number_of_photos(weights, tmp_path):
    """Entries are streamed through predictions.jsonl: ten times the photos, (almost) the same peak memory.

    Keeping the entries in a list (as predict did) grows the peak by ~10 MB between these two runs."""
    peaks = {}
    for n in (60, 600):
        photos = _photos(tmp_path / f"shelves{n}", n)
        tracemalloc.start()
        try:
            summary = run_predict(weights, [str(photos)], tmp_path / f"out{n}", draw=False, device="cpu",
                                  workers=1, log=_quiet)
            peaks[n] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert summary["images"] == n and summary["detections"] == 10 * n
        assert len(_doc(tmp_path / f"out{n}")["images"]) == n
    assert peaks[600] - peaks[60] < 3_000_000, peaks


def test_jsonl_has_a_header_and_one_line_per_photo(weights, tmp_path):
    photos = _photos(tmp_path / "shelves", 5)
    (photos / "bad.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "pred"
    summary = run_predict(weights, [str(photos), str(tmp_path / "missing")], out, device="cpu", log=_quiet, csv=True)
    head = json.loads((out / JSONL_NAME).read_text().splitlines()[0])
    assert head["format"] == "retail-detect-predictions-stream" and head["settings"]["conf"] == 0.25
    lines = list(read_lines(out / JSONL_NAME))
    assert len(lines) == 6 and sum("error" in line for line in lines) == 1
    doc = _doc(out)
    assert [e["path"] for e in doc["images"]] == [str(photos / f"p{i:05d}.png") for i in range(5)]
    assert [e["kind"] for e in doc["errors"]] == ["missing_source", "bad_image"]
    assert summary["errors"] == 2 and summary["drawn"] == 5 and doc["summary"]["drawn"] == 5
    assert all((out / e["drawn"]).is_file() for e in doc["images"])
    assert len((out / po.CSV_NAME).read_text().splitlines()) == 1 + 5 * 10


def test_resume_skips_done_photos_and_redoes_a_cut_line(weights, tmp_path, capsys):
    photos = _photos(tmp_path / "shelves", 8)
    full = tmp_path / "full"
    run_predict(weights, [str(photos)], full, device="cpu", log=_quiet, draw=False)
    out = tmp_path / "pred"
    run_predict(weights, [str(photos)], out, device="cpu", log=_quiet, draw=False)
    text = (out / JSONL_NAME).read_text().splitlines(keepends=True)
    (out / JSONL_NAME).write_text("".join(text[:4]) + text[4][:25])  # header + 3 photos + a cut line: "killed"
    (out / po.JSON_NAME).unlink()
    ManyBoxModel.seen = 0
    argv = ["predict", "--weights", str(weights), str(photos), "--out", str(out), "--no-draw", "--device", "cpu"]
    assert main([*argv, "--resume"]) == 0
    assert ManyBoxModel.seen == 5  # the 4th photo (its line was cut) and the 4 never predicted
    assert "half-written last line" in capsys.readouterr().out
    doc, ref = _doc(out), _doc(full)
    assert doc["images"] == ref["images"] and doc["summary"]["images"] == 8 and doc["summary"]["resumed"] == 3
    # run again: nothing left to do, same results; a photo that changed on disk is predicted again, listed once
    os.utime(photos / "p00002.png", ns=(1, 1))
    ManyBoxModel.seen = 0
    assert main([*argv, "--resume"]) == 0
    assert ManyBoxModel.seen == 1
    doc = _doc(out)
    assert sorted(e["path"] for e in doc["images"]) == sorted(e["path"] for e in ref["images"])
    assert doc["summary"]["images"] == 8 and doc["summary"]["detections"] == 80


def test_resume_refuses_other_settings_in_one_line(weights, tmp_path, capsys):
    photos = _photos(tmp_path / "shelves", 2)
    out = tmp_path / "pred"
    run_predict(weights, [str(photos)], out, device="cpu", log=_quiet, draw=False)
    argv = ["predict", "--weights", str(weights), str(photos), "--out", str(out), "--no-draw", "--device", "cpu"]
    assert main([*argv, "--resume", "--conf", "0.5"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --resume:") and "conf 0.25 -> 0.5" in err[0]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(CannotRun, match="holds no predictions.jsonl"):
        run_predict(weights, [str(photos)], tmp_path / "other", device="cpu", log=_quiet, resume=True)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    # without --resume a folder holding a run is left alone: the new run goes to pred2
    assert run_predict(weights, [str(photos)], out, device="cpu", log=_quiet, draw=False)["out_dir"].endswith("pred2")


def test_ray_without_ray_is_one_line(weights, tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(predict_ray.importlib.util, "find_spec",
                        lambda name, *a: None if name.split(".")[0] == "ray" else real(name, *a))
    photos = _photos(tmp_path / "shelves", 1)
    assert main(["predict", "--weights", str(weights), str(photos), "--out", str(tmp_path / "p"), "--ray", "auto"]) == 1
    assert capsys.readouterr().err.strip() == 'error: --ray needs ray: pip install -e ".[ray]"'
    assert not (tmp_path / "p").exists()


def test_expand_sources_resolves_walked_files_without_realpath(tmp_path):
    from detect.engine.inference.sources import expand_sources

    photos = _photos(tmp_path / "real" / "shelves", 2)
    (photos / "z_link.png").symlink_to(photos / "p00000.png")
    (tmp_path / "via").symlink_to(tmp_path / "real")
    src = expand_sources([str(tmp_path / "via" / "shelves")])
    assert [s.rel for s in src.files] == ["shelves/p00000.png", "shelves/p00001.png"]  # the link is the same photo
    assert all(s.real == s.path.resolve() for s in src.files)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed (pip install -e '.[ray]')")
def test_ray_writes_the_same_predictions(tmp_path):
    """Two local Ray workers give the predictions.json of a local run (a real tiny SSD checkpoint)."""
    import ray

    from data_tools.synth import make_tiny_dataset

    root = tmp_path / "data"
    make_tiny_dataset(root, images=6, classes=2, seed=1, size=(96, 80))
    photos = root / "images"
    weights = _tiny_checkpoint(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray actor (one CPU): the same sums in the same order, the same digits
    try:
        run_predict(weights, [str(photos)], tmp_path / "local", device="cpu", log=_quiet, conf=0.0, csv=True)
    finally:
        torch.set_num_threads(threads)
    ray.init(num_cpus=2, object_store_memory=80 * 1024 * 1024, include_dashboard=False, log_to_driver=False)
    try:
        s = run_predict(weights, [str(photos)], tmp_path / "ray", device="cpu", log=_quiet, conf=0.0, csv=True,
                        ray="auto", ray_workers=2)
    finally:
        ray.shutdown()
    local, remote = _doc(tmp_path / "local"), _doc(tmp_path / "ray")
    assert s["images"] == 6 and s["device"].startswith("ray (2 workers") and s["detections"] > 0
    assert remote["images"] == local["images"] and remote["errors"] == local["errors"]
    assert (tmp_path / "ray" / po.CSV_NAME).read_text() == (tmp_path / "local" / po.CSV_NAME).read_text()
    for e in local["images"]:
        assert (tmp_path / "ray" / e["drawn"]).read_bytes() == (tmp_path / "local" / e["drawn"]).read_bytes()


def _tiny_checkpoint(tmp_path: Path) -> Path:
    """An untrained SSD checkpoint at input 64 (real weights: each worker builds the model from the file)."""
    from detect.config import config_from_dict
    from detect.engine.runtime.checkpoint import save_checkpoint
    from detect.models.build import build_model

    torch.manual_seed(0)
    cfg = config_from_dict({"model": {"name": "ssd", "backbone_weights": "none", "max_detections": 8},
                            "data": {"image_size": S}})
    model = build_model(cfg.model, len(NAMES))
    return save_checkpoint(tmp_path / "ssd.pt", {"model": model.state_dict(), "config": cfg.to_dict(),
                                                 "class_names": NAMES})
