"""`retail-detect export --int8 --calib DATASET`: static INT8 calibrated on photos, the postprocess left FP32,
detections close to FP32; an unusable calibration set, dynamic INT8 and a quantizer that cannot give the format
are refused in one line with nothing written."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from test_export import SIZE, perturbed_checkpoint

from data_tools.store import save_dataset
from data_tools.synth import make_tiny_dataset
from detect.cli import main
from detect.engine.runtime.checkpoint import load_model
from detect.engine.runtime.exported import ExportedModel
from detect.models.export_graph import SelfContained
from detect.tools.quantize import agreement, calibration_images, pick_quantizer

POSTPROCESS = {"NonMaxSuppression", "TopK", "ScatterElements", "ScatterElementsUpdate"}
NETWORK = {"Conv", "MatMul", "Gemm", "Convolution", "GroupConvolution"}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A jittered random-init SSD at 96 px and a dataset file of 6 synthetic shelf photos to calibrate on."""
    root = tmp_path_factory.mktemp("int8")
    weights = perturbed_checkpoint(root / "ssd.pt", "ssd")
    save_dataset(make_tiny_dataset(root / "shelves", images=6, size=(128, 96)), root / "shelves.pkl")
    return weights, root / "shelves.pkl"


def fp32_rows(weights, images: np.ndarray, thresh: float) -> list[dict]:
    """The checkpoint's own graph in PyTorch (FP32) on uint8 ``images`` [B, 3, S, S]."""
    model, _, _ = load_model(weights)
    graph = SelfContained(model, model.post).eval()
    with torch.no_grad():
        boxes, scores, labels, index = graph(torch.from_numpy(images).float(), torch.tensor([thresh]))
    return [{"boxes": boxes[index == b].numpy(), "scores": scores[index == b].numpy(),
             "labels": labels[index == b].numpy()} for b in range(images.shape[0])]


def reaches_network(start: str, consumers: dict[str, list[tuple[str, str]]], ops: dict[str, str]) -> bool:
    """Whether node ``start`` is a conv / matmul or feeds one, following consumers."""
    seen, stack = set(), [start]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if ops[name] in NETWORK:
            return True
        stack += [c for c, _ in consumers.get(name, [])]
    return False


def onnx_quantised_only_the_network(path) -> tuple[int, list[str]]:
    """(QuantizeLinear count, names of QuantizeLinear nodes outside the network: fed by a node that is no conv and
    feeds none, i.e. by the decode or the postprocess)."""
    import onnx

    graph = onnx.load(str(path)).graph
    ops = {n.name: n.op_type for n in graph.node}
    producer = {o: n.name for n in graph.node for o in n.output}
    consumers: dict[str, list[tuple[str, str]]] = {}
    for n in graph.node:
        for x in n.input:
            if x in producer:
                consumers.setdefault(producer[x], []).append((n.name, n.op_type))
    quants = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    bad = [q.name for q in quants if q.input[0] in producer and not reaches_network(producer[q.input[0]], consumers, ops)]
    bad += [name for name, op in ops.items() if op in POSTPROCESS and any(
        producer.get(x) and ops[producer[x]] == "DequantizeLinear" for x in next(
            n for n in graph.node if n.name == name).input)]
    return len(quants), bad


def test_int8_onnx_export_is_close_to_fp32_and_leaves_the_postprocess_fp32(assets, tmp_path, capsys):
    weights, calib = assets
    out = tmp_path / "m.onnx"
    assert main(["export", "--weights", str(weights), "--int8", "--calib", str(calib), "--calib-images", "5",
                 "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "calibrated on 5 photos" in said and "IoU >= 0.5" in said and f"wrote {out}" in said
    m = ExportedModel(out)
    assert m.meta.precision == "int8" and m.meta.quantizer == "onnxruntime-qdq" and m.meta.model == "ssd"
    assert out.stat().st_size < 0.5 * os.path.getsize(weights)  # INT8 weights: a quarter of FP32, plus scales
    n_quant, outside = onnx_quantised_only_the_network(out)
    assert n_quant > 20 and outside == []
    images = calibration_images(calib, 6, SIZE)
    c = agreement(m.run(images.astype(np.float32), 0.05), fp32_rows(weights, images, 0.05), top=20)
    assert c["rows"] == 6 * 20 and c["matched"] >= 0.8 and c["mean_score_diff"] < 0.05


def test_calibration_set_without_a_readable_image_is_one_line_and_writes_nothing(assets, tmp_path, capsys):
    weights, _ = assets
    rs = make_tiny_dataset(tmp_path / "gone", images=3, size=(64, 64))
    for r in rs.records:
        os.remove(os.path.join(rs.image_root, r.image))
    save_dataset(rs, tmp_path / "gone.pkl")
    out = tmp_path / "out"
    out.mkdir()
    assert main(["export", "--weights", str(weights), "--int8", "--calib", str(tmp_path / "gone.pkl"),
                 "--out", str(out / "m.onnx")]) == 1
    err = capsys.readouterr().err.splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert errors == [f"error: --calib {tmp_path / 'gone.pkl'}: no readable image among 3 photos (their files are "
                      "missing or not images): nothing written"]
    assert sum(line.startswith("warning: --calib: skipping") for line in err) == 3
    assert os.listdir(out) == []


def test_dynamic_int8_is_refused_with_the_reason(assets, tmp_path, capsys):
    weights, calib = assets
    assert main(["export", "--weights", str(weights), "--int8-dynamic", "--out", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dynamic INT8 is refused" in err and "--int8 --calib DATASET" in err
    assert "onnxruntime#6732" in err and not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("fmt, quantizer, says", [("onnx", "nncf", "--format openvino"),
                                                   ("openvino", "onnxruntime", "batch size changes")])
def test_a_quantizer_that_cannot_give_the_format_is_refused(assets, tmp_path, capsys, fmt, quantizer, says):
    weights, calib = assets
    out = tmp_path / ("m.onnx" if fmt == "onnx" else "m.xml")
    assert main(["export", "--weights", str(weights), "--format", fmt, "--int8", "--calib", str(calib),
                 "--quantizer", quantizer, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err and os.listdir(tmp_path) == []


def test_auto_takes_onnxruntime_for_onnx_and_nncf_for_openvino():
    for head in ("ssd", "yolo", "fast_rcnn"):
        assert pick_quantizer("auto", head, "onnx") == "onnxruntime"
        assert pick_quantizer("auto", head, "openvino") == "nncf"
    assert pick_quantizer("onnxruntime", "yolo", "onnx") == "onnxruntime"


def test_nncf_openvino_export_is_close_to_fp32(assets, tmp_path, capsys):
    pytest.importorskip("nncf")
    pytest.importorskip("openvino")
    import openvino as ov

    weights, calib = assets
    out = tmp_path / "m.xml"
    assert main(["export", "--weights", str(weights), "--format", "openvino", "--int8", "--calib", str(calib),
                 "--quantizer", "nncf", "--out", str(out)]) == 0
    m = ExportedModel(out)
    assert m.meta.precision == "int8" and m.meta.quantizer == "nncf"
    ops = ov.Core().read_model(str(out)).get_ordered_ops()
    fq = [op for op in ops if op.get_type_name() == "FakeQuantize"]
    # every FakeQuantize feeds the network (a conv directly or through the ops between convs), none the postprocess
    fed = {c.get_node().get_type_name() for op in fq for c in op.output(0).get_target_inputs()}
    assert len(fq) > 20 and not fed & (POSTPROCESS | {"Exp", "SoftPlus", "Softmax", "Gather"})
    images = calibration_images(calib, 6, SIZE)
    c = agreement(m.run(images.astype(np.float32), 0.05), fp32_rows(weights, images, 0.05), top=20)
    assert c["matched"] >= 0.8 and c["mean_score_diff"] < 0.05
