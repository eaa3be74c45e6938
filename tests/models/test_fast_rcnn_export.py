"""Fast R-CNN as one fixed ONNX graph: ``dense`` (RPN + RoI head) exported with a dynamic batch matches eager.

The model is the recipe's (configs/fast_rcnn.yaml: FPN, roi_pool with roi_upsample 2 and roi_subbins 2,
class-agnostic deltas) with random weights at a small input size; one variant pools with roi_align and
regresses class-specific deltas ([B, N, C, 4] boxes). The graph is exported at batch 1 and run at batch 2.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import Tensor, nn

from detect.config import config_from_dict
from detect.models.build import build_model
from detect.models.postprocess import postprocess
from detect.models.roi_head import pool_rois, roi_levels

ort = pytest.importorskip("onnxruntime")


class DenseOutputs(torch.nn.Module):
    """``model.dense`` as a module's forward, to export the outputs before postprocess."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.dense(images)


SIZE = 160
RECIPE = Path(__file__).resolve().parents[2] / "configs" / "fast_rcnn.yaml"
# The random RPN keeps ~500 proposals per image (sides 20-160 px) after NMS: with 1000 slots padding rows are
# exercised too, and with canonical size 64 the proposals pool from all three levels.
LEVELS = {"roi_canonical_size": 64.0, "rpn_post_nms_topk": 1000}
RUNTIMES = ["onnxruntime", "openvino"]
VARIANTS = {"recipe": {}, "roi_align_per_class": {"roi_op": "roi_align", "roi_class_agnostic": False}}


def recipe_model(num_classes: int = 3, **fast_rcnn) -> nn.Module:
    """The recipe's Fast R-CNN (random weights, :data:`LEVELS` and ``fast_rcnn`` options changed), eval mode."""
    model = yaml.safe_load(RECIPE.read_text())["model"]
    model["backbone_weights"] = "none"
    model["fast_rcnn"].update(LEVELS, **fast_rcnn)
    cfg = config_from_dict({"data": {"image_size": SIZE}, "model": model})
    torch.manual_seed(0)
    return build_model(cfg.model, num_classes, SIZE).eval()


def export_onnx(module: nn.Module, inputs: tuple[Tensor, ...], names: list[str], outputs: list[str],
                path: Path, dynamic: dict[str, dict[int, str]]) -> Path:
    """``torch.onnx.export`` as ``retail-detect export`` calls it (TorchScript tracer, opset 17)."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about the constant anchors
        torch.onnx.export(module, inputs, str(path), input_names=names, output_names=outputs,
                          dynamic_axes=dynamic, opset_version=17, dynamo=False)
    return path


@pytest.fixture(scope="module", params=list(VARIANTS))
def exported(request, tmp_path_factory) -> tuple[nn.Module, Path, np.ndarray]:
    """(eager model, its ``dense`` as ONNX exported at batch 1, a batch of 2 images [2, 3, S, S])."""
    model = recipe_model(**VARIANTS[request.param])
    axes = {"images": {0: "batch"}, "boxes": {0: "batch"}, "scores": {0: "batch"}}
    path = export_onnx(DenseOutputs(model).eval(), (torch.rand(1, 3, SIZE, SIZE) * 255,), ["images"],
                       ["boxes", "scores"], tmp_path_factory.mktemp(request.param) / "fast_rcnn.onnx", axes)
    images = torch.Generator().manual_seed(1)
    return model, path, (torch.rand(2, 3, SIZE, SIZE, generator=images) * 255).numpy()


def _assert_matches(model: nn.Module, images: np.ndarray, got: list[np.ndarray]) -> None:
    """Exported (boxes, scores) vs eager ``dense``: boxes within 1 px where a score > 0.05, scores 1e-3."""
    with torch.no_grad():
        boxes, scores = (t.numpy() for t in model.dense(torch.from_numpy(images)))
    assert got[0].shape == boxes.shape and got[1].shape == scores.shape
    assert scores.shape[:2] == (2, model.rpn.post_nms_topk)
    np.testing.assert_allclose(got[1], scores, atol=1e-3, rtol=0)
    scored = scores > 0.05  # [B, N, C]
    near = (np.abs(got[0] - boxes) <= 1.0).all(-1)  # [B, N, C] class-specific boxes, else [B, N]
    near = np.broadcast_to(near if boxes.ndim == 4 else near[..., None], scored.shape)
    assert scored.sum() > 100 and near[scored].all()


def test_eager_detections_are_postprocess_of_dense() -> None:
    """One path: ``model(x)`` in eval is ``postprocess(dense(x))``, padding rows scored 0."""
    model = recipe_model()
    images = torch.rand(2, 3, SIZE, SIZE) * 255
    with torch.no_grad():
        dets = model(images)
        boxes, scores = model.dense(images)
    assert boxes.shape == (2, 1000, 4) and scores.shape == (2, 1000, 3)
    again = postprocess(boxes, scores, (SIZE, SIZE), model.post)
    assert len(dets) == 2 and sum(len(d["boxes"]) for d in dets) > 0
    for d, e in zip(dets, again):
        assert all(torch.equal(d[k], e[k]) for k in ("boxes", "scores", "labels"))
    props, mask, _ = model.rpn(model.features(images), (SIZE, SIZE))
    assert (~mask).any() and (scores[~mask] == 0).all()
    assert set(roi_levels(props[mask], model.roi_head.strides, 64.0).tolist()) == {0, 1, 2}


def test_dense_is_refused_without_rpn() -> None:
    model = recipe_model(rpn=False)
    assert not model.exportable
    with pytest.raises(ValueError, match="external proposals"):
        model.dense(torch.rand(1, 3, SIZE, SIZE) * 255)


def session(runtime: str, path: Path) -> Callable[[dict[str, np.ndarray]], list[np.ndarray]]:
    """Run the ONNX file ``path`` in onnxruntime or OpenVINO (skipped when not installed): inputs -> outputs.

    OpenVINO's CPU plugin runs in f32: its bf16 default on bf16 CPUs reorders near-tied RPN proposals.
    """
    if runtime == "onnxruntime":
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda feed: sess.run(None, feed)
    ov = pytest.importorskip("openvino")
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return lambda feed: [r for r in compiled(feed).values()]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_exported_dense_matches_eager_at_another_batch(exported, runtime: str) -> None:
    model, path, images = exported
    _assert_matches(model, images, session(runtime, path)({"images": images}))


class _Pool(nn.Module):
    """The recipe's FPN pooling (roi_pool, upsample 2, subbins 2) of given maps and RoIs; canonical size 56 at
    160 px so that boxes pool from all three levels."""

    def __init__(self, by_mask: bool) -> None:
        super().__init__()
        self.by_mask = by_mask

    def forward(self, f8: Tensor, f16: Tensor, f32: Tensor, rois: Tensor) -> Tensor:
        return pool_rois([f8, f16, f32], [8, 16, 32], rois, "roi_pool", 7, 56.0, by_mask=self.by_mask,
                         upsample=2, subbins=2)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("by_mask", [False, True])
def test_exported_roi_pool_rounds_box_edges_as_torchvision(tmp_path: Path, by_mask: bool, runtime: str) -> None:
    """ONNX MaxRoiPool (onnxruntime, OpenVINO) and torchvision's roi_pool quantise box edges alike, half cells included:
    edges at (n + 1/2) cells of the upsampled map (stride 4, 8, 16) round away from zero in both, and the
    level rule gives the same level at its boundaries (sides 56 and 112). Per level (what the CPU export
    takes) the graph also holds when a level has no RoIs, or gets some it had none of while traced."""
    g = torch.Generator().manual_seed(0)
    maps = tuple(torch.randn(2, 4, SIZE // s, SIZE // s, generator=g) for s in (8, 16, 32))
    edges = torch.tensor([[2.0, 6.0, 50.0, 38.0], [4.0, 12.0, 92.0, 76.0], [8.0, 24.0, 152.0, 136.0],
                          [20.0, 20.0, 76.0, 76.0], [10.0, 10.0, 122.0, 122.0], [0.0, 0.0, 160.0, 160.0],
                          [0.0, 0.0, 0.0, 0.0]])  # half-cell edges at levels 0, 1, 2; level boundaries; extremes
    x = torch.rand(2, 9, 2, generator=g).sort(-1).values * SIZE
    y = torch.rand(2, 9, 2, generator=g).sort(-1).values * SIZE
    rois = torch.cat([edges.expand(2, -1, -1), torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], -1)], 1)
    names = ["f8", "f16", "f32", "rois"]
    pool = _Pool(by_mask)
    path = export_onnx(pool, (*maps, rois[:, :1]), names, ["pooled"], tmp_path / "pool.onnx",  # level 0 only
                       {n: {0: "batch"} for n in names} | {"rois": {0: "batch", 1: "rois"}, "pooled": {0: "n"}})
    run = session(runtime, path)
    for some in (rois, rois[:1, :1], rois[:, 2:3]):  # [2, 16, 4] all levels; level 0 only; level 2 only
        with torch.no_grad():
            expected = pool(*maps, some)
        got = run({n: t.numpy() for n, t in zip(names, (*maps, some))})[0]
        assert got.shape == tuple(expected.shape) == (some.shape[0] * some.shape[1], 4, 7, 7)
        np.testing.assert_allclose(got, expected.numpy(), atol=1e-5, rtol=0)
