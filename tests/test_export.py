"""`retail-detect export`: ONNX (checked with onnxruntime) and TorchScript match PyTorch; Fast R-CNN without RPN refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from detect.cli import main
from detect.config import config_from_dict
from detect.engine.runtime.checkpoint import load_model, save_checkpoint
from detect.models.build import build_model
from detect.tools.export import run_exported


def _checkpoint(tmp_path, name: str, **model):
    cfg = config_from_dict({"data": {"image_size": 64}, "model": {"name": name, "backbone_weights": "none", **model}})
    torch.manual_seed(0)
    model = build_model(cfg.model, 2)
    path = tmp_path / f"{name}.pt"
    save_checkpoint(path, {"model": model.state_dict(), "config": cfg.to_dict(), "class_names": ["cola", "chips"]})
    return path


@pytest.mark.parametrize("name", ["ssd", "yolo", "fast_rcnn"])
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_pytorch(tmp_path, name, fmt, capsys):
    weights = _checkpoint(tmp_path, name)
    out = tmp_path / f"m.{fmt}"
    assert main(["export", "--weights", str(weights), "--format", fmt, "--out", str(out)]) == 0
    assert "max |difference|" in capsys.readouterr().out
    meta = json.loads((tmp_path / f"m.{fmt}.json").read_text())
    assert meta["class_names"] == ["cola", "chips"] and meta["input"]["shape"] == ["B", 3, 64, 64]
    model, _, _ = load_model(weights)
    images = torch.rand(2, 3, 64, 64) * 255  # batch 2: the ONNX batch axis is dynamic
    with torch.no_grad():
        boxes, scores = model.dense(images)
    got_boxes, got_scores = run_exported(out, fmt, images.numpy())
    np.testing.assert_allclose(got_boxes, boxes.numpy(), atol=1e-3)
    np.testing.assert_allclose(got_scores, scores.numpy(), atol=1e-4)
    assert scores.shape[-1] == 2


def test_fast_rcnn_without_rpn_export_is_refused(tmp_path, capsys):
    """Built for external proposals (data.proposals), Fast R-CNN has no proposal stage to put in the graph."""
    weights = _checkpoint(tmp_path, "fast_rcnn", fast_rcnn={"rpn": False})
    assert main(["export", "--weights", str(weights), "--format", "onnx"]) == 1
    assert "cannot be exported" in capsys.readouterr().err


def test_unwritable_output_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
    """A read-only folder is refused before the model loads, and a full disk while exporting names --out,
    never the temporary file (which is removed)."""
    import errno
    import os

    from data_tools import atomic

    weights = _checkpoint(tmp_path, "ssd")
    ro = tmp_path / "ro"
    ro.mkdir()
    real_mkstemp = atomic.tempfile.mkstemp

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", os.path.join(k.get("dir", "."), ".x.rdtmp-ab.tmp"))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", read_only)
    assert main(["export", "--weights", str(weights), "--out", str(ro / "m.onnx"), "--no-check"]) == 1
    assert capsys.readouterr().err == f"error: cannot write to {ro}: read-only file system\n"
    monkeypatch.setattr(atomic.tempfile, "mkstemp", real_mkstemp)

    def full(model, args, f, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(f))

    monkeypatch.setattr(torch.onnx, "export", full)
    assert main(["export", "--weights", str(weights), "--out", str(ro / "m.onnx"), "--no-check"]) == 1
    assert capsys.readouterr().err == f"error: no space left writing {ro / 'm.onnx'}\n"
    assert os.listdir(ro) == []
