"""Run an exported detector (``retail-detect export``) with ONNX Runtime or OpenVINO: numpy only, no torch.

A store PC needs only this file's imports: ``numpy``, ``onnxruntime`` (for ``.onnx``) or ``openvino`` (for
``.xml``), and OpenCV or Pillow to resize photos. ``import torch`` happens nowhere on this path, so::

    pip install numpy onnxruntime pillow      # or: openvino
    python -m detect.engine.runtime.exported model.onnx photo.jpg    # JSON detections on stdout

The file carries what running it needs (:data:`META_KEY`, JSON): class names, input size ``S``, the
recipe's NMS settings and ``max_detections``, precision, format version. :meth:`ExportedModel.open`
checks it and refuses, in one line naming the file, a file that is not a model, is corrupt, was exported by
another version or tool, or needs a runtime that is not installed.

Graph: ``images`` float32 ``[B, 3, S, S]`` 0..255 (letterboxed: longer side resized to ``S``, padded
bottom/right with 114) and ``score_thresh`` float32 ``[1]`` -> flat rows ``boxes [M, 4]`` xyxy input pixels,
``scores [M]``, ``labels [M]`` 1..C, ``batch_index [M]`` (see ``detect/models/export_graph.py``).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_tools.errors import CannotRun, InvalidInput, UserError

FORMAT_VERSION = 2  # 1: the dense-outputs export of earlier versions (NMS left to the caller), no metadata
META_KEY = "retail_detect"
SUFFIXES = {".onnx": "onnx", ".xml": "openvino"}
PAD_VALUE = 114  # as detect.data.augment.PAD_VALUE (that module imports torch)


class ExportedModelError(UserError, ValueError):
    """An exported model file cannot be used; the message names the file and the reason."""


@dataclass
class ExportMeta:
    """What an exported file says about itself (stored as JSON under :data:`META_KEY`)."""

    format_version: int
    model: str
    class_names: list[str]
    image_size: int
    max_detections: int
    nms_thresh: float
    agnostic: bool
    score_thresh: float
    precision: str = "fp32"  # fp32 | int8
    quantizer: str | None = None  # int8: onnxruntime-qdq | nncf
    backbone: str | None = None
    weights: str | None = None  # the checkpoint it came from (its name)
    version: str | None = None  # retail-detect version that wrote it
    config: dict | None = None  # the checkpoint's recipe (config.to_dict()): what the PyTorch verbs need

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def parse(cls, path: Path, text: str | None) -> ExportMeta:
        if not text:
            raise ExportedModelError(f"{path}: no retail-detect metadata in it: a model from another tool or from "
                                     "an older retail-detect; export the checkpoint again with `retail-detect export`")
        try:
            raw = json.loads(text)
            version = int(raw.get("format_version", 0))
        except (ValueError, TypeError, AttributeError):
            raise ExportedModelError(f"{path}: its retail-detect metadata is not readable JSON: export it again") from None
        if version != FORMAT_VERSION:
            raise ExportedModelError(f"{path}: exported by a retail-detect of another version (format {version}; this "
                                     f"one reads format {FORMAT_VERSION}): export the checkpoint again")
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        try:
            meta = cls(**known)
        except TypeError as e:
            raise ExportedModelError(f"{path}: its retail-detect metadata lacks a field ({e}): export it again") from None
        meta.class_names = [str(c) for c in meta.class_names]
        return meta


def model_format(path: str | os.PathLike) -> str:
    """``onnx`` | ``openvino`` from the suffix; anything else is refused in one line."""
    p = Path(path)
    fmt = SUFFIXES.get(p.suffix.lower())
    if fmt is None:
        raise ExportedModelError(f"{p}: not an exported model (give the .onnx file, or the .xml of an OpenVINO "
                                 "export, that `retail-detect export` wrote)")
    return fmt


def is_exported(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an exported model by its suffix (``.onnx``, ``.xml``)."""
    return Path(path).suffix.lower() in SUFFIXES


def default_threads() -> int:
    """Intra-op threads: the cores this process may use (affinity and cgroup quota), as the PyTorch path."""
    from detect.engine.runtime.threads import usable_cores

    return max(1, usable_cores())


class ExportedModel:
    """An exported detector ready to run.

    Args:
        path: ``model.onnx`` (ONNX Runtime) or ``model.xml`` (OpenVINO, with ``model.bin`` beside it).
        threads: intra-op threads (default: the usable cores). Idle threads sleep instead of spinning (ONNX
            Runtime's ``allow_spinning = 0``), as the PyTorch path's OpenMP policy does.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        self.path = Path(path)
        self.format = model_format(self.path)
        if not self.path.is_file():
            raise ExportedModelError(f"{self.path}: no such model file")
        self.threads = int(threads) if threads else default_threads()
        runner = _OnnxRunner if self.format == "onnx" else _OpenVinoRunner
        self._runner = runner(self.path, self.threads)
        self.meta = ExportMeta.parse(self.path, self._runner.meta_text())
        self.class_names = list(self.meta.class_names)
        self.image_size = int(self.meta.image_size)
        shape = self._runner.input_side()
        if shape is not None and shape != self.image_size:
            raise ExportedModelError(f"{self.path}: its graph takes {shape} px inputs but its metadata says "
                                     f"{self.image_size}: export it again")

    def run(self, images: np.ndarray, score_thresh: float) -> list[dict[str, np.ndarray]]:
        """Letterboxed ``images`` float32 [B, 3, S, S] 0..255 -> per image ``boxes`` [K, 4] (input pixels),
        ``scores`` [K], ``labels`` int64 [K] in 1..C, by score."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[1:] != (3, self.image_size, self.image_size):
            raise InvalidInput(f"{self.path}: takes images [B, 3, {self.image_size}, {self.image_size}], got "
                               f"{list(images.shape)}")
        boxes, scores, labels, index = self._runner.run(images, np.array([score_thresh], np.float32))
        index = index.astype(np.int64)
        out = []
        for b in range(images.shape[0]):
            rows = index == b
            out.append({"boxes": boxes[rows].astype(np.float32), "scores": scores[rows].astype(np.float32),
                        "labels": labels[rows].astype(np.int64)})
        return out

    def predict(self, images: list[np.ndarray], conf: float | None = None) -> list[dict[str, np.ndarray]]:
        """``H x W x 3`` uint8 RGB photos -> per photo ``boxes`` [K, 4] in its own pixels, ``scores``, ``labels``."""
        conf = self.meta.score_thresh if conf is None else conf
        boxed = [letterbox(img, self.image_size) for img in images]
        batch = np.stack([b for b, _ in boxed]).transpose(0, 3, 1, 2).astype(np.float32)
        dets = self.run(batch, conf)
        for d, img, (_, scale) in zip(dets, images, boxed):
            h, w = img.shape[:2]
            d["boxes"] = np.clip(d["boxes"] / np.float32(scale), 0, [w, h, w, h]).astype(np.float32)
        return dets


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """As :func:`detect.data.augment.letterbox`: longer side to ``size`` (INTER_AREA shrinking, INTER_LINEAR
    enlarging; Pillow's BOX / BILINEAR without OpenCV), pad bottom/right with 114 -> (``[S, S, 3]``, scale)."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if (nw, nh) != (w, h):
        try:
            import cv2

            image = cv2.resize(np.ascontiguousarray(image), (nw, nh),
                               interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        except ImportError:
            from PIL import Image

            resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
            image = np.asarray(Image.fromarray(image).resize((nw, nh), resample))
    out = np.full((size, size, 3), PAD_VALUE, np.uint8)
    out[:nh, :nw] = image
    return out, scale


class _OnnxRunner:
    def __init__(self, path: Path, threads: int) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise CannotRun(f"{path}: running an ONNX model needs onnxruntime: pip install onnxruntime") from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own classes for a bad file
            reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise ExportedModelError(f"{path}: not a readable ONNX model (corrupt or truncated?): {reason}") from None

    def meta_text(self) -> str | None:
        return self.session.get_modelmeta().custom_metadata_map.get(META_KEY)

    def input_side(self) -> int | None:
        shape = self.session.get_inputs()[0].shape
        return shape[-1] if isinstance(shape[-1], int) else None

    def run(self, images: np.ndarray, thresh: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {"images": images, "score_thresh": thresh})


class _OpenVinoRunner:
    def __init__(self, path: Path, threads: int) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise CannotRun(f"{path}: running an OpenVINO model needs openvino: pip install -e \".[openvino]\" "
                            "(or pip install openvino)") from None
        if not path.with_suffix(".bin").is_file():
            raise ExportedModelError(f"{path}: its weights {path.with_suffix('.bin').name} are missing beside it")
        core = ov.Core()
        try:
            self.model = core.read_model(str(path))
        except Exception as e:  # noqa: BLE001 - openvino raises RuntimeError for any bad file
            reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise ExportedModelError(f"{path}: not a readable OpenVINO model (corrupt or truncated?): {reason}") from None
        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        self.compiled = core.compile_model(self.model, "CPU", config)
        self.request = self.compiled.create_infer_request()

    def meta_text(self) -> str | None:
        if not self.model.has_rt_info([META_KEY]):
            return None
        return str(self.model.get_rt_info([META_KEY]).astype(str))

    def input_side(self) -> int | None:
        dim = self.model.inputs[0].get_partial_shape()[3]
        return dim.get_length() if dim.is_static else None

    def run(self, images: np.ndarray, thresh: np.ndarray) -> list[np.ndarray]:
        self.request.infer({"images": images, "score_thresh": thresh})
        return [self.request.get_output_tensor(i).data.copy() for i in range(4)]


def main(argv: list[str] | None = None) -> int:
    """``python -m detect.engine.runtime.exported MODEL PHOTO... [--conf C]``: detections as JSON lines."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m detect.engine.runtime.exported", description=main.__doc__)
    p.add_argument("model")
    p.add_argument("photos", nargs="+")
    p.add_argument("--conf", type=float, default=None, help="score threshold (default: the recipe's)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    try:
        model = ExportedModel(args.model, args.threads)
        for photo in args.photos:
            image = read_rgb(photo)
            d = model.predict([image], args.conf)[0]
            print(json.dumps({"image": photo, "width": image.shape[1], "height": image.shape[0], "detections": [
                {"box": [round(float(v), 2) for v in b], "score": round(float(s), 4), "label": int(lab),
                 "class": model.class_names[int(lab) - 1]}
                for b, s, lab in zip(d["boxes"], d["scores"], d["labels"])]}))
    except (UserError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """A photo file -> ``H x W x 3`` uint8 RGB (Pillow, EXIF orientation applied)."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


if __name__ == "__main__":
    raise SystemExit(main())
