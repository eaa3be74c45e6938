"""``retail-detect export``: a checkpoint -> a self-contained ONNX or OpenVINO model, checked against PyTorch.

The graph (:class:`detect.models.export_graph.SelfContained`) gives final detections: decode, score filter,
NMS per image and class (class-agnostic when the recipe says so) and the recipe's ``max_detections`` are
inside it; the batch is dynamic. Inputs ``images`` float32 ``[B, 3, S, S]`` 0..255 (letterboxed) and
``score_thresh`` ``[1]``; outputs flat rows ``boxes [M, 4]``, ``scores [M]``, ``labels [M]``,
``batch_index [M]``. Class names, ``S``, the NMS settings and the format version travel inside the file
(:class:`detect.engine.runtime.exported.ExportMeta`), so ``predict`` / ``eval`` / ``audit --weights
model.onnx`` and the torch-free runner need nothing else.

OpenVINO: the ONNX graph converted by ``openvino.convert_model`` and saved as ``.xml`` + ``.bin`` (FP32).
INT8 (``--int8 --calib DATASET``): :mod:`detect.tools.quantize`. Files appear whole or not at all: each is
written under a temporary name and renamed; on any failure the temporaries are removed.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from data_tools.atomic import TEMP_MARK, new_file_mode, write_error
from data_tools.errors import CannotRun, InvalidInput
from data_tools.outputs import check_output, prepare_output_folder
from detect.engine.runtime.checkpoint import load_model
from detect.engine.runtime.exported import FORMAT_VERSION, META_KEY, ExportedModel, ExportMeta
from detect.models.export_graph import INPUT_NAMES, OUTPUT_NAMES, SelfContained

FORMATS = ("onnx", "openvino")
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("retail-detect")
    except PackageNotFoundError:
        return "unknown"


SUFFIX = {"onnx": ".onnx", "openvino": ".xml"}
CHECK_THRESH = 0.001  # score threshold of the check against PyTorch (low: many rows compared)


def export_model(weights: str | Path, fmt: str = "onnx", out: str | Path | None = None, batch: int = 1,
                 image_size: int | None = None, check: bool = True, int8: bool = False, calib: str | None = None,
                 calib_images: int = 100, quantizer: str = "auto", log=print) -> dict:
    """Export checkpoint ``weights``; returns ``{"path", "meta", "check"}``.

    Args:
        fmt: ``onnx`` | ``openvino``; out: the file (default: beside the weights, ``.onnx`` / ``.xml``;
            ``-int8`` added to the stem for INT8).
        batch: batch of the example input (the exported batch axis is dynamic either way).
        image_size: input side ``S`` (default: the training size).
        check: run the export on a batch and compare its detections with PyTorch's.
        int8, calib, calib_images, quantizer: static INT8 calibrated on ``calib_images`` photos of dataset
            ``calib`` (:func:`detect.tools.quantize.quantize`); ``quantizer="dynamic"`` is refused.
    """
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown --format '{fmt}' (use {' or '.join(FORMATS)})")
    if quantizer == "dynamic" or int8:
        from detect.tools.quantize import check_quantizer

        check_quantizer(quantizer, fmt)  # dynamic INT8, an unknown quantizer or one that cannot give fmt: refused
    if int8 and not calib:
        raise InvalidInput("--int8 needs --calib DATASET: static INT8 is calibrated on your own photos (a dataset "
                           ".pkl or a label folder)")
    stem_tag = "-int8" if int8 else ""
    path = Path(out) if out is not None else Path(weights).with_name(Path(weights).stem + stem_tag + SUFFIX[fmt])
    check_output(path, fmt, [weights], flag="--out")
    if path.suffix.lower() != SUFFIX[fmt]:
        raise InvalidInput(f"--out {path}: an {fmt} export is a {SUFFIX[fmt]} file")
    if fmt == "openvino":
        check_output(path.with_suffix(".bin"), "openvino-bin", [weights], flag="--out (weights)")
        _need_openvino()
    prepare_output_folder(path.parent)  # read-only or full: one line naming the folder, before any work
    model, class_names, cfg = load_model(weights)
    if not getattr(model, "exportable", False):
        raise InvalidInput(f"{weights}: {cfg.model.name} built for external proposals (data.proposals) cannot be "
                           "exported to one graph: its proposals come from outside the model")
    size = int(image_size or cfg.data.image_size)
    graph = SelfContained(model, model.post).eval()
    meta = ExportMeta(FORMAT_VERSION, cfg.model.name, list(class_names), size, int(cfg.model.max_detections),
                      float(cfg.model.nms_thresh), bool(cfg.model.agnostic_nms), float(cfg.model.score_thresh),
                      backbone=cfg.model.backbone, weights=Path(weights).name, version=_version(),
                      config=cfg.to_dict())
    example = torch.rand(max(1, batch), 3, size, size) * 255
    if int8:  # the photos are read before any file is made: none readable is one line, nothing written
        from detect.tools.quantize import calibration_images

        calib = calibration_images(calib, calib_images, size, log)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.{TEMP_MARK}", dir=_existing(path.parent)) as work:
        onnx_path = Path(work) / "fp32.onnx"
        trace_onnx(graph, example, onnx_path, meta)
        if int8:
            from detect.tools.quantize import quantize

            onnx_path, meta = quantize(onnx_path, fmt, meta, calib, calib_images, quantizer, Path(work), log=log)
            if onnx_path.suffix == ".onnx":
                stamp_onnx_meta(onnx_path, meta)
        if fmt == "onnx":
            staged = [onnx_path]
        else:
            xml = onnx_path if onnx_path.suffix == ".xml" else to_openvino(onnx_path, meta, Path(work))
            staged = [xml, xml.with_suffix(".bin")]
        place(staged, path)
    result = {"path": str(path), "meta": meta.__dict__, "check": None}
    if check and int8:  # an approximation of FP32: detections compared on real photos, by class and IoU
        from detect.tools.quantize import check_int8

        result["check"] = check_int8(path, graph, calib[:max(1, batch)], meta.score_thresh, log)
    elif check:
        result["check"] = check_against_torch(path, graph, example)
        c = result["check"]
        log(f"checked {fmt} against PyTorch on a batch of {example.shape[0]}: "
            f"{c['rows']} vs {c['torch_rows']} detections, {100 * c['matched']:.1f} % matched, max |box difference| {c['max_box_diff']:.2e} px, "
            f"max |score difference| {c['max_score_diff']:.2e}")
    size_mb = sum(p.stat().st_size for p in _files_of(path)) / 1e6
    log(f"wrote {path} ({size_mb:.1f} MB{', with ' + path.with_suffix('.bin').name if fmt == 'openvino' else ''}): "
        f"{meta.model}, {size} px, {len(class_names)} classes, {meta.precision}")
    return result


def _existing(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _need_openvino() -> None:
    try:
        import openvino  # noqa: F401
    except ImportError:
        raise CannotRun('--format openvino needs openvino: pip install -e ".[openvino]"') from None


def trace_onnx(graph: torch.nn.Module, example: torch.Tensor, out: Path, meta: ExportMeta) -> None:
    """Trace ``graph`` (images, score_thresh) to ONNX at ``out`` with dynamic batch and ``meta`` embedded."""
    import onnx

    thresh = torch.tensor([meta.score_thresh], dtype=torch.float32)
    dynamic = {"images": {0: "batch"}, **{name: {0: "detections"} for name in OUTPUT_NAMES}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about constant priors/anchors: they are constants here
        torch.onnx.export(graph, (example, thresh), str(out), input_names=list(INPUT_NAMES),
                          output_names=list(OUTPUT_NAMES), dynamic_axes=dynamic, opset_version=17, dynamo=False)
    proto = onnx.load(str(out))
    set_onnx_meta(proto, meta)
    onnx.save(proto, str(out))


def stamp_onnx_meta(path: Path, meta: ExportMeta) -> None:
    """Write ``meta`` into the ONNX file at ``path`` (:func:`set_onnx_meta`)."""
    import onnx

    proto = onnx.load(str(path))
    set_onnx_meta(proto, meta)
    onnx.save(proto, str(path))


def set_onnx_meta(proto, meta: ExportMeta) -> None:
    """Store ``meta`` in the ONNX model's ``metadata_props`` under :data:`META_KEY` (replacing an old entry)."""
    for prop in list(proto.metadata_props):
        if prop.key == META_KEY:
            proto.metadata_props.remove(prop)
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, meta.to_json()


def to_openvino(onnx_path: Path, meta: ExportMeta, work: Path) -> Path:
    """ONNX -> OpenVINO IR (``.xml`` + ``.bin``, FP32 weights) in ``work`` with ``meta`` in its rt_info."""
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    model.set_rt_info(meta.to_json(), [META_KEY])
    xml = work / "model.xml"
    ov.save_model(model, str(xml), compress_to_fp16=False)
    return xml


def place(staged: list[Path], path: Path) -> None:
    """Move the staged file(s) to ``path`` (an OpenVINO ``.bin`` first, its ``.xml`` last), each by rename."""
    targets = [path] if len(staged) == 1 else [path.with_suffix(".bin"), path]
    sources = staged if len(staged) == 1 else [staged[1], staged[0]]
    existed = path.exists()
    try:
        for src, dst in zip(sources, targets):
            fd, name = tempfile.mkstemp(prefix=f".{dst.name}.{TEMP_MARK}", suffix=".tmp", dir=dst.parent)
            os.close(fd)
            tmp = Path(name)
            try:
                os.replace(src, tmp)  # same file system: the work folder is beside the output
                os.chmod(tmp, new_file_mode(dst))
                tmp.replace(dst)
            finally:
                tmp.unlink(missing_ok=True)
    except OSError as e:  # messages name --out, never a temporary file
        raise write_error(e, path, existed) from e


def _files_of(path: Path) -> list[Path]:
    return [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]


def check_against_torch(path: Path, graph: SelfContained, images: torch.Tensor, thresh: float = CHECK_THRESH) -> dict:
    """Run the exported file and the PyTorch graph on ``images`` [B, 3, S, S]; compare their detections."""
    with torch.no_grad():
        boxes, scores, labels, index = graph(images, torch.tensor([thresh]))
    want = [{"boxes": boxes[index == b].numpy(), "scores": scores[index == b].numpy(),
             "labels": labels[index == b].numpy()} for b in range(images.shape[0])]
    got = ExportedModel(path).run(images.numpy(), thresh)
    return compare_detections(got, want)


def compare_detections(got: list[dict], want: list[dict], score_tol: float = 1e-2) -> dict:
    """Match each of ``want``'s rows (PyTorch) to one of ``got``'s (the export) per image: same label, score
    within ``score_tol``, the closest box; a row of equal scores may come in another order, so rows are
    matched, not compared by rank.

    Returns:
        ``rows`` / ``torch_rows`` (counts), ``matched`` (fraction of PyTorch rows matched), ``max_box_diff``
        (px, over matched rows), ``max_score_diff``, ``labels_equal`` (every row matched both ways).
    """
    box_d = score_d = 0.0
    matched = 0
    rows = sum(len(g["scores"]) for g in got)
    torch_rows = sum(len(w["scores"]) for w in want)
    for g, w in zip(got, want):
        free = np.ones(len(g["scores"]), bool)
        for box, score, label in zip(w["boxes"], w["scores"], w["labels"]):
            ok = free & (g["labels"] == label) & (np.abs(g["scores"] - score) <= score_tol)
            if not ok.any():
                continue
            diff = np.where(ok, np.abs(g["boxes"] - box).max(1), np.inf)
            j = int(diff.argmin())
            free[j] = False
            matched += 1
            box_d, score_d = max(box_d, float(diff[j])), max(score_d, float(abs(g["scores"][j] - score)))
    return {"rows": rows, "torch_rows": torch_rows, "matched": matched / max(torch_rows, 1),
            "max_box_diff": box_d, "max_score_diff": score_d, "labels_equal": matched == rows == torch_rows}
