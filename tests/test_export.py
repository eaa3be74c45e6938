"""`retail-detect export`: self-contained ONNX / OpenVINO graphs (NMS inside, dynamic batch, metadata inside)
that give the detections PyTorch gives; bad model files refused in one line."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from detect.cli import main
from detect.config import config_from_dict
from detect.engine.runtime.checkpoint import load_model, save_checkpoint
from detect.engine.runtime.exported import ExportedModel
from detect.models.build import build_model
from detect.models.export_graph import SelfContained
from detect.tools.export import compare_detections

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
SIZE = 96
NAMES = ["cola", "chips", "tea"]


def perturbed_checkpoint(path, name: str, noise: float = 0.05, names: list[str] = NAMES, **model_keys):
    """A randomly initialised detector with its weights jittered, so scores and boxes spread out (an untrained
    head scores every anchor alike: ties that any two NMS implementations may break differently)."""
    cfg = config_from_dict({"data": {"image_size": SIZE}, "model": {"name": name, "backbone_weights": "none",
                                                                    **model_keys}})
    torch.manual_seed(0)
    model = build_model(cfg.model, len(names))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * noise)
    return save_checkpoint(path, {"model": model.state_dict(), "config": cfg.to_dict(), "class_names": list(names)})


def torch_rows(weights, images: torch.Tensor, thresh: float) -> list[dict]:
    """The checkpoint's own eval forward (``model(images)``: detections through ``postprocess``)."""
    model, _, _ = load_model(weights, score_thresh=thresh)
    with torch.no_grad():
        out = model(images)
    return [{k: d[k].numpy() for k in ("boxes", "scores", "labels")} for d in out]


def fixed_batch(n: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, SIZE, SIZE, generator=g) * 255


FORMATS = ["onnx"] + (["openvino"] if HAS_OPENVINO else [])


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", ["ssd", "yolo", "fast_rcnn"])
def test_export_gives_pytorchs_detections(tmp_path, name, fmt, capsys):
    weights = perturbed_checkpoint(tmp_path / f"{name}.pt", name)
    out = tmp_path / ("m.onnx" if fmt == "onnx" else "m.xml")
    assert main(["export", "--weights", str(weights), "--format", fmt, "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "matched" in said and f"wrote {out}" in said
    m = ExportedModel(out)
    assert m.class_names == NAMES and m.image_size == SIZE and m.meta.model == name and m.meta.precision == "fp32"
    images = fixed_batch(3)  # exported with a batch of 1: the batch axis is dynamic
    thresh = 0.005 if name == "yolo" else 0.05  # the YOLO head starts at a class prior of 0.01
    got = m.run(images.numpy(), thresh)
    want = torch_rows(weights, images, thresh)
    c = compare_detections(got, want, score_tol=1e-3)
    if name == "fast_rcnn":
        # jittered random RPN scores tie at the proposal cut-off, so a few proposals differ between the two NMS
        # implementations; tests/models/test_fast_rcnn_export.py holds dense() to 1e-5 px on a configured model
        assert c["torch_rows"] > 20 and c["matched"] >= 0.95
        return
    assert c["torch_rows"] > 20 and c["labels_equal"] and c["matched"] == 1.0
    assert c["max_box_diff"] < 1.0 and c["max_score_diff"] < 1e-3


def test_no_300_cap_an_image_with_more_objects_gets_them_all():
    """500 disjoint boxes in one image, max_detections 1000: the graph (eager) returns all 500; a cap of 300 cuts."""
    from detect.models.postprocess import PostprocessSettings

    class Grid(torch.nn.Module):
        def dense(self, images):
            b = images.shape[0]
            ij = torch.stack(torch.meshgrid(torch.arange(25.0), torch.arange(20.0), indexing="ij"), -1).reshape(-1, 2)
            boxes = torch.cat([ij * 10, ij * 10 + 8], 1)  # 500 boxes, 8 px apart from each other
            scores = torch.linspace(0.9, 0.5, 500)[:, None].repeat(1, 2) * torch.tensor([1.0, 0.1])
            return boxes[None].expand(b, -1, -1), (scores[None] + images.mean() * 0).expand(b, -1, -1)

    graph = SelfContained(Grid(), PostprocessSettings(0.05, 0.5, 1000, False)).eval()
    boxes, scores, labels, index = graph(torch.zeros(2, 3, 256, 256), torch.tensor([0.2]))
    assert (index == 0).sum() == 500 and (index == 1).sum() == 500 and (labels == 1).all()
    graph.post = PostprocessSettings(0.05, 0.5, 300, False)
    assert (graph(torch.zeros(1, 3, 256, 256), torch.tensor([0.2]))[3] == 0).sum() == 300


def test_many_objects_survive_the_onnx_graph(tmp_path):
    """The recipe's max_detections travels into the file: an image with 400 products keeps all 400."""
    from detect.engine.runtime.exported import ExportMeta
    from detect.models.postprocess import PostprocessSettings
    from detect.tools.export import trace_onnx

    class Grid(torch.nn.Module):
        def dense(self, images):
            ij = torch.stack(torch.meshgrid(torch.arange(20.0), torch.arange(20.0), indexing="ij"), -1).reshape(-1, 2)
            boxes = torch.cat([ij * 10, ij * 10 + 8], 1)[None].expand(images.shape[0], -1, -1)
            scores = torch.linspace(0.9, 0.5, 400)[None, :, None].expand(images.shape[0], -1, 1)
            return boxes + images.mean() * 0, scores

    meta = ExportMeta(2, "grid", ["p"], 256, 1000, 0.5, False, 0.05, config={})
    path = tmp_path / "grid.onnx"
    trace_onnx(SelfContained(Grid(), PostprocessSettings(0.05, 0.5, 1000, False)).eval(), torch.zeros(1, 3, 256, 256),
               path, meta)
    got = ExportedModel(path).run(np.zeros((2, 3, 256, 256), np.float32), 0.2)
    assert [len(g["scores"]) for g in got] == [400, 400]


def test_class_agnostic_recipe_exports_one_nms_over_classes(tmp_path):
    weights = perturbed_checkpoint(tmp_path / "ssd.pt", "ssd", agnostic_nms=True)
    out = tmp_path / "a.onnx"
    assert main(["export", "--weights", str(weights), "--out", str(out), "--no-check"]) == 0
    m = ExportedModel(out)
    assert m.meta.agnostic
    images = fixed_batch(2)
    c = compare_detections(m.run(images.numpy(), 0.05), torch_rows(weights, images, 0.05), score_tol=1e-3)
    assert c["labels_equal"] and c["max_box_diff"] < 1.0


def test_fast_rcnn_for_external_proposals_is_refused(tmp_path, capsys):
    weights = perturbed_checkpoint(tmp_path / "fr.pt", "fast_rcnn", fast_rcnn={"rpn": False})
    assert main(["export", "--weights", str(weights), "--format", "onnx"]) == 1
    assert "external proposals" in capsys.readouterr().err


def test_int8_needs_calibration_photos(tmp_path, capsys):
    weights = perturbed_checkpoint(tmp_path / "ssd.pt", "ssd")
    assert main(["export", "--weights", str(weights), "--int8"]) == 1
    assert "--calib" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.onnx"))


def test_unwritable_output_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
    """A read-only folder is refused before the model loads, and a full disk while exporting names --out;
    nothing is left behind."""
    import errno
    import os

    from data_tools import atomic

    weights = perturbed_checkpoint(tmp_path / "ssd.pt", "ssd")
    ro = tmp_path / "ro"
    ro.mkdir()
    real_mkstemp = atomic.tempfile.mkstemp

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", os.path.join(k.get("dir", "."), ".x.rdtmp-ab.tmp"))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", read_only)
    assert main(["export", "--weights", str(weights), "--out", str(ro / "m.onnx"), "--no-check"]) == 1
    assert capsys.readouterr().err == f"error: cannot write to {ro}: read-only file system\n"
    monkeypatch.setattr(atomic.tempfile, "mkstemp", real_mkstemp)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("detect.tools.export.os.replace", full)
    assert main(["export", "--weights", str(weights), "--out", str(ro / "m.onnx"), "--no-check"]) == 1
    assert capsys.readouterr().err == f"error: no space left writing {ro / 'm.onnx'}\n"
    assert os.listdir(ro) == []


def test_export_never_replaces_a_file_of_another_kind(tmp_path, capsys):
    weights = perturbed_checkpoint(tmp_path / "ssd.pt", "ssd")
    photo = tmp_path / "shelf.onnx"
    photo.write_bytes(b"\xff\xd8\xff\xe0 not a model")
    assert main(["export", "--weights", str(weights), "--out", str(photo), "--no-check"]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert photo.read_bytes().startswith(b"\xff\xd8\xff")
