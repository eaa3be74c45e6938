"""``retail-detect export``: a checkpoint -> ONNX or TorchScript, outputs checked against PyTorch.

The exported graph takes ``images`` float32 ``[B, 3, S, S]`` in 0..255 (letterboxed as in training: resize
the longer side to S, pad bottom/right with 114) and returns, before NMS:

- ``boxes`` float32 ``[B, A, 4]`` xyxy in input pixels (divide by ``S / max(W, H)`` for original pixels),
- ``scores`` float32 ``[B, A, C]`` per-class probabilities for labels 1..C (class names in the sidecar JSON).

Postprocess is not in the graph: apply a score threshold and class-aware NMS (e.g.
``detect.models.postprocess.postprocess``, or ``torchvision.ops.batched_nms``) - the same step every
detector here ends in. SSD and the YOLO-style detector export; Fast R-CNN's proposal stage (per-image
top-k + NMS between two networks) does not trace to a fixed graph and is refused with a clear message.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from data_tools.atomic import TEMP_MARK, atomic_write_text, new_file_mode, write_error
from data_tools.errors import CannotRun, InvalidInput
from data_tools.outputs import check_output, prepare_output_folder
from detect.engine.runtime.checkpoint import load_model

FORMATS = ("onnx", "torchscript")


class DenseOutputs(nn.Module):
    """Wraps a detector with a ``dense(images) -> (boxes, scores)`` method for export."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.model.dense(images)


def export_model(weights: str | Path, fmt: str = "onnx", out: str | Path | None = None, batch: int = 1,
                 image_size: int | None = None, check: bool = True, log=print) -> dict:
    """Export checkpoint ``weights``; returns ``{"path", "meta", "max_abs_diff"}``.

    Writes ``out`` (default: beside the weights, ``.onnx`` / ``.torchscript.pt``) and ``<out>.json`` with
    class names, input size, letterbox rule and output layout. With ``check`` the exported model is run on
    a random batch and compared with PyTorch (ONNX through onnxruntime).
    """
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown --format '{fmt}' (use {' or '.join(FORMATS)})")
    suffix = ".onnx" if fmt == "onnx" else ".torchscript.pt"
    path = Path(out) if out is not None else Path(weights).with_suffix(suffix)
    check_output(path, fmt, [weights], flag="--out")
    check_output(path.with_name(path.name + ".json"), "export-meta", [weights], flag="--out (metadata)")
    prepare_output_folder(path.parent)  # read-only or full: one line naming the folder, before any work
    model, class_names, cfg = load_model(weights)
    if not getattr(model, "exportable", False):
        raise InvalidInput(f"{weights}: {cfg.model.name} cannot be exported to a fixed graph (its proposal stage "
                         "runs per-image top-k + NMS); export ssd or yolo, or use the PyTorch checkpoint")
    size = image_size or cfg.data.image_size
    wrapper = DenseOutputs(model).eval()
    example = torch.rand(batch, 3, size, size) * 255
    existed = path.exists()
    try:  # the atomic writer's temporary name (data_tools.atomic), so an orphan is recognised and removed later
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.{TEMP_MARK}", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise write_error(e, path, existed) from e
    tmp = Path(name)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes about constant priors/anchors: they are constants here
            expected = wrapper(example)
            if fmt == "onnx":
                torch.onnx.export(wrapper, (example,), str(tmp), input_names=["images"], output_names=["boxes", "scores"],
                                  dynamic_axes={"images": {0: "batch"}, "boxes": {0: "batch"}, "scores": {0: "batch"}},
                                  opset_version=17, dynamo=False)
            else:
                traced = torch.jit.trace(wrapper, (example,), check_trace=False)
                traced.save(str(tmp))
        os.chmod(tmp, new_file_mode(path))
        tmp.replace(path)
    except OSError as e:  # messages name --out, never the temporary file
        raise write_error(e, path, existed) from e
    finally:
        tmp.unlink(missing_ok=True)
    meta = {"format": fmt, "model": cfg.model.name, "backbone": cfg.model.backbone, "class_names": class_names,
            "input": {"name": "images", "shape": ["B", 3, size, size], "dtype": "float32", "range": "0..255",
                      "letterbox": "resize longer side to S, pad bottom/right with 114"},
            "outputs": {"boxes": "[B, A, 4] xyxy input pixels", "scores": "[B, A, C] probabilities of labels 1..C"},
            "postprocess": "not included: score threshold + class-aware NMS (detect.models.postprocess)",
            "nms_thresh": cfg.model.nms_thresh, "weights": str(weights)}
    atomic_write_text(path.with_name(path.name + ".json"), json.dumps(meta, indent=1))
    diff = None
    if check:
        got = run_exported(path, fmt, example.numpy())
        diff = max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected))
        log(f"checked {fmt} against PyTorch on a random batch: max |difference| {diff:.2e}")
    log(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and {path.name}.json")
    return {"path": str(path), "meta": meta, "max_abs_diff": diff}


def run_exported(path: str | Path, fmt: str, images: np.ndarray) -> list[np.ndarray]:
    """Run an exported model on ``images`` float32 [B, 3, S, S]: ``[boxes, scores]`` as numpy arrays."""
    if fmt == "onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            raise CannotRun("checking an ONNX export needs onnxruntime: pip install onnxruntime "
                               "(or pass --no-check)") from None

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(["boxes", "scores"], {"images": images.astype(np.float32)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 marks torch.jit deprecated; it still loads
        module = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return [t.numpy() for t in module(torch.from_numpy(images))]
