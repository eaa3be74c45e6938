"""Static INT8 post-training quantisation of an exported graph (``retail-detect export --int8 --calib DATASET``).

Calibrated on the user's own photos: up to ``N`` photos of ``DATASET`` (a seeded sample; its ``train`` split when
it has splits), read with the project's image reader and letterboxed exactly as inference letterboxes them.
Unreadable photos are skipped with one warning line each; with none readable the export stops in one line,
before any file is written.

Only the network is quantised: the convolutions / matrix products and the activation ops between them (the
nodes that feed a ``Conv`` / ``MatMul`` / ``Gemm``, found on the graph by :func:`compute_nodes`). The head's
outputs are dequantised, so box decoding, softmax / sigmoid scores, ``TopK``, ``ScatterElements``,
``NonMaxSuppression`` and the gathers after it stay FP32: 8 bits cannot hold box coordinates in pixels nor
tell close scores apart for NMS.

Two quantizers (``--quantizer``):

- ``onnxruntime``: ``onnxruntime.quantization.quantize_static``, QDQ format, per-channel symmetric INT8
  weights, unsigned INT8 activations (U8S8, MinMax calibration), on the FP32 ONNX (``quant_pre_process``
  first). Gives an ``.onnx``; only for ``--format onnx`` (OpenVINO's CPU plugin runs the QDQ graph of an SSD
  once, then fails when the batch size changes: :data:`OPENVINO_QDQ_REFUSAL`).
- ``nncf``: ``nncf.quantize`` on ``openvino.convert_model(onnx)`` (preset ``performance``), the postprocess in
  its ignored scope; gives OpenVINO IR (``.xml`` + ``.bin``), so only for ``--format openvino``.

``auto`` (the default) takes :data:`AUTO` for the head and format: what measured faster at <= 1 AP point lost
(ARCHITECTURE.md "INT8", docs/deploy.md "INT8"). Dynamic INT8 is refused (:data:`DYNAMIC_REFUSAL`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from data_tools.errors import CannotRun, InvalidInput
from data_tools.images import ImageError, read_image
from data_tools.sources import load_any
from detect.engine.runtime.exported import META_KEY, ExportMeta

QUANTIZERS = ("auto", "onnxruntime", "nncf")
TAGS = {"onnxruntime": "onnxruntime-qdq", "nncf": "nncf"}
# --quantizer auto, per (head, format); a head not named takes the format's default (key head None)
AUTO: dict[tuple[str | None, str], str] = {(None, "onnx"): "onnxruntime", (None, "openvino"): "nncf"}
DYNAMIC_REFUSAL = ("dynamic INT8 is refused: it computes activation scales at run time, and for convolutional "
                   "detectors ONNX Runtime runs it slower than FP32 (SSD300 8x slower, onnxruntime#6732); use "
                   "static INT8: --int8 --calib DATASET (your own photos)")
OPENVINO_QDQ_REFUSAL = ("--quantizer onnxruntime with --format openvino is refused: OpenVINO's CPU plugin fails on "
                        "the QDQ graph of an SSD once the batch size changes (measured with OpenVINO 2026.4); use "
                        "--quantizer nncf (the default for openvino) or --format onnx")
SEED = 0

# Ops that do the network's arithmetic (quantised when they feed a conv / matmul) and the ops whose data input
# passes through to it. The rest (decode, TopK, NMS, gathers) stay FP32.
ANCHORS = {"Conv", "MatMul", "Gemm", "Convolution", "GroupConvolution"}
COMPUTE = {"Conv", "MatMul", "Gemm", "Add", "Mul", "Concat", "MaxPool", "AveragePool", "GlobalAveragePool",
           "Resize", "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "Pad", "Reshape", "Transpose",
           "Flatten", "Squeeze", "Unsqueeze", "Split", "Slice", "BatchNormalization", "ReduceMean",
           # OpenVINO op types
           "Convolution", "GroupConvolution", "Multiply", "AvgPool", "Interpolate", "Clamp", "Swish", "HSwish",
           "HSigmoid", "PRelu", "VariadicSplit", "StridedSlice", "FakeQuantize", "Convert"}
DATA_INPUT_ONLY = {"Conv", "Resize", "Pad", "Reshape", "Slice", "Split", "Squeeze", "Unsqueeze", "Clip", "Interpolate",
                   "StridedSlice", "VariadicSplit", "Convolution", "GroupConvolution", "Transpose", "Flatten",
                   "ReduceMean", "Clamp", "Gemm", "BatchNormalization"}


def refuse_dynamic() -> None:
    """Dynamic INT8 (``--int8-dynamic``): refused, with the reason."""
    raise InvalidInput(DYNAMIC_REFUSAL)


def check_quantizer(quantizer: str, fmt: str) -> None:
    """Refuse, before any work, a quantizer that is unknown, dynamic, or cannot give ``fmt``."""
    if quantizer == "dynamic":
        refuse_dynamic()
    if quantizer not in QUANTIZERS:
        raise InvalidInput(f"unknown --quantizer '{quantizer}' (use {', '.join(QUANTIZERS)})")
    if quantizer == "nncf" and fmt != "openvino":
        raise InvalidInput("--quantizer nncf gives an OpenVINO model: use it with --format openvino (for --format "
                           "onnx: --quantizer onnxruntime)")
    if quantizer == "onnxruntime" and fmt == "openvino":
        raise InvalidInput(OPENVINO_QDQ_REFUSAL)
    if fmt == "openvino" and quantizer in ("auto", "nncf"):
        _need("nncf", "--int8 --format openvino")


def pick_quantizer(quantizer: str, model: str, fmt: str) -> str:
    """``auto`` -> :data:`AUTO`'s choice for head ``model`` and format ``fmt``; others unchanged."""
    if quantizer != "auto":
        return quantizer
    return AUTO.get((model, fmt), AUTO[(None, fmt)])


def calibration_images(calib: str | os.PathLike, n: int, size: int, log: Callable[[str], None] = print
                       ) -> np.ndarray:
    """Up to ``n`` photos of dataset ``calib`` letterboxed to ``size``: uint8 ``[K, 3, S, S]``, ``K >= 1``.

    A seeded sample of the dataset's ``train`` split (the whole set when it has no splits); an unreadable photo
    is skipped with one warning line on stderr; none readable raises :class:`InvalidInput` naming ``--calib``.
    """
    from detect.data.augment import letterbox

    if n < 1:
        raise InvalidInput(f"--calib-images must be at least 1, got {n}")
    rs = load_any(calib, None, log)
    if any(r.split == "train" for r in rs.records):
        rs = rs.subset([i for i, r in enumerate(rs.records) if r.split == "train"])
    if not len(rs):
        raise InvalidInput(f"--calib {calib}: no photos in it to calibrate on")
    order = np.random.default_rng(SEED).permutation(len(rs))[:n]
    out = []
    for i in order:
        path = os.path.join(rs.image_root, rs.records[int(i)].image)
        try:
            image = read_image(path)
        except (ImageError, OSError) as e:
            print(f"warning: --calib: skipping {path}: {getattr(e, 'reason', None) or e}", file=sys.stderr)
            continue
        out.append(letterbox(image, size).image.transpose(2, 0, 1))
    if not out:
        raise InvalidInput(f"--calib {calib}: no readable image among {len(order)} photos (their files are missing or "
                           "not images): nothing written")
    return np.ascontiguousarray(np.stack(out))


def compute_nodes(nodes: Iterable[tuple[str, str, list[str | None]]]) -> set[str]:
    """Names of the nodes to quantise: every conv / matmul (:data:`ANCHORS`) and the :data:`COMPUTE` nodes that
    feed one through its data path (``nodes``: ``(name, op_type, producer name per input or None)``).

    The head's decode and the postprocess feed no convolution, so they are never in the set; the shape
    arithmetic feeding ``Resize`` sizes or ``Pad`` pads is not on a data path.
    """
    table = {name: (op, inputs) for name, op, inputs in nodes}
    keep: set[str] = set()
    stack = [name for name, (op, _) in table.items() if op in ANCHORS]
    while stack:
        name = stack.pop()
        if name in keep:
            continue
        keep.add(name)
        op, inputs = table[name]
        for producer in inputs[:1] if op in DATA_INPUT_ONLY else inputs:
            if producer in table and table[producer][0] in COMPUTE and producer not in keep:
                stack.append(producer)
    return keep


def onnx_nodes(proto) -> list[tuple[str, str, list[str | None]]]:
    """An ONNX graph as :func:`compute_nodes` takes it (nodes without a name get one)."""
    producer: dict[str, str] = {}
    for i, node in enumerate(proto.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}_unnamed"
        for out in node.output:
            producer[out] = node.name
    return [(n.name, n.op_type, [producer.get(x) for x in n.input]) for n in proto.graph.node]


def openvino_nodes(model) -> list[tuple[str, str, list[str | None]]]:
    """An OpenVINO model as :func:`compute_nodes` takes it (its ops' friendly names)."""
    return [(op.get_friendly_name(), op.get_type_name(),
             [inp.get_source_output().get_node().get_friendly_name() for inp in op.inputs()])
            for op in model.get_ordered_ops()]


class _Batches:
    """The calibration photos as the graph's inputs, one photo a batch (``images`` float32, ``score_thresh``)."""

    def __init__(self, images: np.ndarray, score_thresh: float) -> None:
        self.images = images
        self.thresh = np.array([score_thresh], np.float32)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for image in self.images:
            yield {"images": image[None].astype(np.float32), "score_thresh": self.thresh}


class _OrtReader:
    """:class:`onnxruntime.quantization.CalibrationDataReader` over :class:`_Batches`."""

    def __init__(self, batches: _Batches) -> None:
        self.batches = batches
        self._it = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.batches)


def quantize_onnxruntime(fp32: Path, out: Path, images: np.ndarray, meta: ExportMeta, work: Path,
                         method: str = "MinMax", pre_process: bool = True, activations: str = "QUInt8") -> Path:
    """FP32 ONNX -> QDQ INT8 ONNX at ``out`` (per-channel weights, the network only; see the module doc); its
    metadata is still the FP32 graph's."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    src = fp32
    if pre_process:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        src = work / "pre.onnx"
        quant_pre_process(str(fp32), str(src), skip_symbolic_shape=True)
    proto = onnx.load(str(src))
    names = compute_nodes(onnx_nodes(proto))
    onnx.save(proto, str(src))  # with the node names onnx_nodes gave
    quantize_static(str(src), str(out), _OrtReader(_Batches(images, meta.score_thresh)), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=getattr(QuantType, activations), weight_type=QuantType.QInt8,
                    nodes_to_quantize=sorted(names), op_types_to_quantize=sorted(COMPUTE),
                    calibrate_method=getattr(CalibrationMethod, method),
                    extra_options={"ActivationSymmetric": False,
                                   "WeightSymmetric": True})
    producer = (proto.producer_name, proto.producer_version)
    proto = onnx.load(str(out))
    # the FP32 graph's producer (PyTorch) kept: --out recognises an earlier export by it and may replace it;
    # the caller stamps the INT8 metadata (detect.tools.export.stamp_onnx_meta)
    proto.producer_name, proto.producer_version = producer
    onnx.save(proto, str(out))
    return out


def quantize_nncf(fp32: Path, out_xml: Path, images: np.ndarray, meta: ExportMeta, preset: str = "performance"
                  ) -> Path:
    """FP32 ONNX -> OpenVINO IR with INT8 network ops (NNCF; the postprocess ignored) at ``out_xml``."""
    import logging

    import nncf
    import openvino as ov

    nncf.set_log_level(logging.WARNING)  # its per-op notes; the export's own lines say what happens
    model = ov.convert_model(str(fp32))
    nodes = openvino_nodes(model)
    keep = compute_nodes(nodes)
    ignored = nncf.IgnoredScope(names=[name for name, op, _ in nodes if name not in keep and op not in
                                       ("Parameter", "Constant", "Result")], validate=False)
    data = nncf.Dataset(list(_Batches(images, meta.score_thresh)))
    preset_value = getattr(nncf.QuantizationPreset, preset.upper())
    quantized = nncf.quantize(model, data, subset_size=len(images), preset=preset_value, ignored_scope=ignored)
    quantized.set_rt_info(meta.to_json(), [META_KEY])
    ov.save_model(quantized, str(out_xml), compress_to_fp16=False)
    return out_xml


def quantize(onnx_path: Path, fmt: str, meta: ExportMeta, calib: str | os.PathLike | np.ndarray, calib_images: int,
             quantizer: str, work: Path, log: Callable[[str], None] = print) -> tuple[Path, ExportMeta]:
    """The FP32 ONNX at ``onnx_path`` -> the INT8 file in ``work`` (``.onnx`` QDQ or OpenVINO ``.xml``) and its meta
    (in the ``.xml``'s rt_info already; an ``.onnx`` gets it from :func:`detect.tools.export.stamp_onnx_meta`).

    Args:
        fmt: ``onnx`` | ``openvino`` (the export's format).
        calib: the dataset to calibrate on, or its photos already read by :func:`calibration_images`.
        calib_images: photos sampled from it; quantizer: ``auto`` | ``onnxruntime`` | ``nncf``.
    """
    check_quantizer(quantizer, fmt)
    images = calib if isinstance(calib, np.ndarray) else calibration_images(calib, calib_images, meta.image_size, log)
    chosen = pick_quantizer(quantizer, meta.model, fmt)
    meta = ExportMeta(**{**meta.__dict__, "precision": "int8", "quantizer": TAGS[chosen]})
    log(f"quantising to INT8 with {TAGS[chosen]}, calibrated on {len(images)} photos")
    if chosen == "nncf":
        return quantize_nncf(onnx_path, work / "int8.xml", images, meta), meta
    return quantize_onnxruntime(onnx_path, work / "int8.onnx", images, meta, work), meta


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes ``a`` [N, 4] and ``b`` [M, 4] -> [N, M]."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None] - inter, 1e-9)


def agreement(got: list[dict], want: list[dict], top: int = 20, iou: float = 0.5) -> dict:
    """How many of ``want``'s (FP32) ``top`` highest-scoring detections per image ``got`` (INT8) has: a row of the
    same label at IoU >= ``iou``, each used once. Returns ``matched`` (fraction), ``rows`` (compared), and
    ``mean_score_diff`` over the matched rows."""
    matched = rows = 0
    diffs: list[float] = []
    for g, w in zip(got, want):
        order = np.argsort(-w["scores"], kind="stable")[:top]
        free = np.ones(len(g["scores"]), bool)
        ious = box_iou(np.asarray(w["boxes"])[order].reshape(-1, 4), np.asarray(g["boxes"]).reshape(-1, 4))
        for row, i in enumerate(order):
            ok = free & (g["labels"] == w["labels"][i]) & (ious[row] >= iou)
            rows += 1
            if ok.any():
                j = int(np.where(ok, ious[row], -1).argmax())
                free[j] = False
                matched += 1
                diffs.append(abs(float(g["scores"][j]) - float(w["scores"][i])))
    return {"matched": matched / max(rows, 1), "rows": rows, "mean_score_diff": float(np.mean(diffs)) if diffs else 0.0}


def check_int8(path: Path, graph, images: np.ndarray, thresh: float, log: Callable[[str], None] = print) -> dict:
    """Run the INT8 file at ``path`` and the FP32 PyTorch ``graph`` on ``images`` (uint8 [B, 3, S, S], calibration
    photos: real inputs, not noise) at score ``thresh``; log and return :func:`agreement`."""
    import torch

    from detect.engine.runtime.exported import ExportedModel

    x = torch.from_numpy(np.ascontiguousarray(images)).float()
    with torch.no_grad():
        boxes, scores, labels, index = graph(x, torch.tensor([thresh]))
    want = [{"boxes": boxes[index == b].numpy(), "scores": scores[index == b].numpy(),
             "labels": labels[index == b].numpy()} for b in range(x.shape[0])]
    c = agreement(ExportedModel(path).run(x.numpy(), thresh), want)
    log(f"checked int8 against PyTorch FP32 on {x.shape[0]} calibration photos: {100 * c['matched']:.1f} % of its top "
        f"{c['rows']} detections found (same class, IoU >= 0.5), mean |score difference| {c['mean_score_diff']:.3f}")
    return c


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _need(module: str, what: str) -> None:
    if not _has(module):
        raise CannotRun(f'{what} needs {module}: pip install -e ".[openvino]"')
