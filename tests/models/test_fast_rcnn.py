"""Fast R-CNN end to end: learning on synthetic shelves, external proposals, staged freezing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from data_tools.synth import make_tiny_dataset
from detect.data.dataset import DetectionDataset
from detect.data.loader import collate
from detect.models.build import ModelConfig, build_model
from detect.models.fast_rcnn import FastRCNNOptions

SIZE = 128


def _cfg(**fast_rcnn) -> ModelConfig:
    fr = {"anchor_sizes": (16.0, 32.0, 64.0), "rpn_pre_nms_topk": 300, "rpn_post_nms_topk": 100,
          "rpn_batch_per_image": 128, "roi_batch_per_image": 64, "head_dim": 256, **fast_rcnn}
    return ModelConfig(name="fast_rcnn", backbone="efficientnet_lite0", backbone_weights="imagenet",
                       score_thresh=0.01, heads={"fast_rcnn": FastRCNNOptions(**fr)})


def _batches(rs, batch_size: int) -> list[tuple[torch.Tensor, list[dict]]]:
    ds = DetectionDataset(rs, SIZE, None, train=False)
    items = [ds[i] for i in range(len(ds))]
    return [collate(items[i : i + batch_size]) for i in range(0, len(items), batch_size)]


def test_head_alone_takes_external_proposals(tmp_path: Path) -> None:
    """The default lane's check of a Fast R-CNN without RPN: its losses and detections come from the given
    proposals (learning from them: the slow test below)."""
    torch.manual_seed(0)
    rs = make_tiny_dataset(tmp_path, images=2, classes=3, seed=1, size=SIZE)
    images, targets = _batches(rs, 2)[0]
    model = build_model(_cfg(rpn=False), num_classes=len(rs.class_names))
    assert model.rpn is None
    model.train()
    losses = model(images, targets, proposals=[t["boxes"] for t in targets])
    assert set(losses) == {"roi_cls", "roi_box"} and all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        dets = model(images, proposals=[t["boxes"] for t in targets])
    assert len(dets) == 2 and all(d["labels"].min() >= 1 for d in dets if len(d["labels"]))


@pytest.mark.slow
def test_head_alone_learns_to_classify_external_gt_proposals(tmp_path: Path) -> None:
    torch.manual_seed(0)
    rs = make_tiny_dataset(tmp_path, images=8, classes=3, seed=1, size=SIZE)
    batches = _batches(rs, 8)
    model = build_model(_cfg(rpn=False), num_classes=len(rs.class_names))
    assert model.rpn is None
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    images, targets = batches[0]
    model.train()
    losses = model(images, targets, proposals=[t["boxes"] for t in targets])
    assert set(losses) == {"roi_cls", "roi_box"}  # no RPN terms
    model.backbone.eval()
    _train_head(model, batches, steps=40)
    model.eval()
    with torch.no_grad():
        gt = [t["boxes"] for t in targets]
        feats = model.features(images)
        padded = torch.nn.utils.rnn.pad_sequence(gt, batch_first=True)
        logits, _ = model.roi_head.box_head(model.roi_head.pool(feats, padded))
        pred = logits.view(len(gt), padded.shape[1], -1).argmax(-1)
        real = [pred[i, : len(g)] for i, g in enumerate(gt)]
        acc = (torch.cat(real) == torch.cat([t["labels"] for t in targets])).float().mean()
        dets = model(images, proposals=gt)
    assert acc >= 0.95, f"accuracy {acc:.3f}"
    assert len(dets) == len(gt) and all(d["labels"].min() >= 1 for d in dets if len(d["labels"]))


def _train_head(model, batches, steps: int) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    for step in range(steps):
        images, targets = batches[step % len(batches)]
        losses = model(images, targets, proposals=[t["boxes"] for t in targets])
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        opt.step()


def test_freeze_then_unfreeze_changes_trainable_params() -> None:
    cfg = _cfg()
    cfg.freeze_at = 2
    model = build_model(cfg, num_classes=2)
    frozen = [n for n, p in model.backbone.named_parameters() if not p.requires_grad]
    assert frozen, "freeze_at=2 must freeze the stem and the first stages"
    assert all(p.requires_grad for p in model.roi_head.parameters())
    assert all(p.requires_grad for p in model.rpn.parameters())
    model.backbone.unfreeze()
    assert all(p.requires_grad for n, p in model.backbone.named_parameters() if n in frozen)


def test_model_without_rpn_needs_proposals() -> None:
    model = build_model(_cfg(rpn=False, fpn=False), num_classes=2).eval()
    images = torch.zeros(2, 3, 64, 64, dtype=torch.uint8)
    with pytest.raises(ValueError, match="external proposals"):
        model(images)
    props = [torch.tensor([[0.0, 0.0, 32.0, 32.0]]), torch.zeros(0, 4)]
    out = model(images, proposals=props)
    assert len(out) == 2 and len(out[1]["boxes"]) == 0
def test_build_applies_head_init_fpn_init_and_box_beta() -> None:
    torch.manual_seed(0)
    default = build_model(_cfg(), num_classes=3)
    assert default.roi_head.box_head.cls.bias.abs().sum() == 0 and abs(default.roi_head.box_beta - 1 / 9) < 1e-9
    model = build_model(_cfg(head_init="pytorch", fpn_init="kaiming_a1", roi_box_beta=0.5, roi_norm="group",
                             roi_upsample=2, roi_subbins=3, roi_class_agnostic=True), num_classes=3)
    assert model.roi_head.box_head.reg.out_features == 4 and default.roi_head.box_head.reg.out_features == 12
    assert model.roi_head.box_beta == 0.5 and model.roi_head.upsample == 2 and model.roi_head.subbins == 3
    assert isinstance(model.roi_head.box_head.norm, torch.nn.GroupNorm) and default.roi_head.upsample == 1
    assert model.roi_head.box_head.cls.bias.abs().max() > 0  # nn.Linear's default init, not zeros
    for conv in [*model.neck.lateral, *model.neck.smooth]:  # kaiming_uniform(a=1): bound sqrt(3 / fan_in), bias 0
        fan_in = conv.weight[0].numel()
        assert conv.weight.abs().max() > 1.2 / fan_in**0.5 and conv.bias.abs().sum() == 0
    for conv in default.neck.lateral:  # PyTorch's default: bound 1 / sqrt(fan_in)
        assert conv.weight.abs().max() <= 1 / conv.weight[0].numel() ** 0.5
