"""An exported model (``.onnx`` / ``.xml``) behind the eval contract of our detectors, for the PyTorch verbs.

:func:`load_exported` is what :func:`detect.engine.runtime.checkpoint.load_model` returns for an exported file:
``(ExportedDetector, class_names, config)``, the config being the recipe embedded at export (input size set
to the export's), so ``predict``, ``eval`` (with ``--report``), ``audit``, ``--save-labels``, the Python API
and ``bench`` use the file exactly as a checkpoint, through the same Predictor, tiling, report and audit code.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.ops import nms

from data_tools.errors import InvalidInput
from detect.config import Config, config_from_dict
from detect.engine.runtime.exported import ExportedModel, ExportedModelError
from detect.models.postprocess import PostprocessSettings


class ExportedDetector(nn.Module):
    """``model(images [B, 3, S, S] 0..255) -> [{"boxes" [K, 4], "scores" [K], "labels" [K]}]`` on an exported file.

    ``post.score_thresh`` is the graph's ``score_thresh`` input at every call (eval lowers it as for a
    checkpoint); ``post.max_detections`` lower than the export's truncates (rows come by score). NMS is the
    graph's: asking for class-agnostic NMS (``--agnostic-nms``, ``--gallery``) of a class-aware export applies
    one class-agnostic NMS to its detections; the reverse cannot be undone and is refused.
    """

    exportable = False
    needs_proposals = False

    def __init__(self, runner: ExportedModel) -> None:
        super().__init__()
        self.runner = runner
        m = runner.meta
        self.exported_post = PostprocessSettings(m.score_thresh, m.nms_thresh, m.max_detections, m.agnostic)
        self.post = self.exported_post

    def forward(self, images: Tensor, targets=None, **extra) -> list[dict[str, Tensor]]:
        if self.training:
            raise InvalidInput(f"{self.runner.path}: an exported model cannot be trained; train the checkpoint")
        if any(v is not None for v in extra.values()):
            raise InvalidInput(f"{self.runner.path}: an exported model takes no external proposals")
        if self.exported_post.agnostic and not self.post.agnostic:
            raise InvalidInput(f"{self.runner.path}: exported with class-agnostic NMS; class-aware NMS needs an "
                               "export of a checkpoint with model.agnostic_nms: false")
        x = images.detach().to("cpu", torch.float32).contiguous().numpy()
        dets = self.runner.run(x, float(self.post.score_thresh))
        out = []
        for d in dets:
            boxes, scores, labels = (torch.from_numpy(d[k]) for k in ("boxes", "scores", "labels"))
            if self.post.agnostic and not self.exported_post.agnostic and len(scores):
                keep = nms(boxes, scores, self.post.nms_thresh)  # sorted by score
                boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            n = self.post.max_detections
            out.append({"boxes": boxes[:n].to(images.device), "scores": scores[:n].to(images.device),
                        "labels": labels[:n].to(images.device)})
        return out


def exported_config(runner: ExportedModel) -> Config:
    """The recipe embedded at export, its input size the export's."""
    m = runner.meta
    if not isinstance(m.config, dict):
        raise ExportedModelError(f"{runner.path}: its metadata holds no recipe: export the checkpoint again")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = config_from_dict(m.config)
    cfg.data.image_size = runner.image_size
    cfg.model.backbone_weights = "none"
    return cfg


def load_exported(path: str | Path, score_thresh: float | None = None, threads: int | None = None
                  ) -> tuple[ExportedDetector, list[str], Config]:
    """``(ExportedDetector in eval mode, class_names, config)`` of an exported file (see the module doc)."""
    runner = ExportedModel(path, threads)
    cfg = exported_config(runner)
    model = ExportedDetector(runner)
    if score_thresh is not None:
        cfg.model.score_thresh = float(score_thresh)
        model.post = model.post.replace(score_thresh=float(score_thresh))
    return model.eval(), list(runner.class_names), cfg

