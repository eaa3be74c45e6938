"""RoI head: pooling values vs torchvision, FPN level rule, RoI sampling, loss, eval decoding."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import roi_align, roi_pool

from detect.models.postprocess import PostprocessSettings
from detect.models.roi_head import BoxHead, RoIHead, fast_rcnn_loss, pool_rois, roi_levels, sample_rois


def _inclusive(rois: torch.Tensor, stride: int) -> torch.Tensor:
    """[B, S, 4] boxes (x2 exclusive) -> torchvision [B*S, 5] rois whose end is the last covered cell."""
    b, s, _ = rois.shape
    idx = torch.arange(b, dtype=torch.float32).repeat_interleave(s)[:, None]
    return torch.cat([idx, rois.reshape(-1, 4) - torch.tensor([0, 0, stride, stride], dtype=torch.float32)], 1)


def test_roi_pool_matches_torchvision_on_hand_made_map() -> None:
    feat = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8)
    feat = torch.cat([feat, -feat], 1)  # 2 channels
    feats = torch.cat([feat, feat + 100], 0)  # 2 images
    rois = torch.tensor([[[0, 0, 8, 8], [2, 2, 6, 6]], [[0, 0, 8, 8], [4, 0, 8, 4]]], dtype=torch.float32)
    out = pool_rois([feats], [1], rois, "roi_pool", output_size=2)
    # Hand-computed: the whole map split in quadrants -> the max of each quadrant.
    assert out[0, 0].tolist() == [[27.0, 31.0], [59.0, 63.0]]
    assert out[2, 0].tolist() == [[127.0, 131.0], [159.0, 163.0]]  # image 1's map, not image 0's
    assert out[1, 1].tolist() == [[-18.0, -20.0], [-34.0, -36.0]]  # cells 2..5, channel -map: max = least
    # torchvision's roi_pool reads x2, y2 as inclusive cells: we hand it x2 - stride, y2 - stride.
    inclusive = torch.tensor([[0, 0, 0, 7, 7], [0, 2, 2, 5, 5], [1, 0, 0, 7, 7], [1, 4, 0, 7, 3]], dtype=torch.float32)
    assert torch.equal(out, roi_pool(feats, inclusive, 2, 1.0))
    # With a stride: boxes in image pixels, map at stride 4.
    out4 = pool_rois([feats], [4], rois * 4, "roi_pool", output_size=3)
    assert torch.equal(out4, roi_pool(feats, _inclusive(rois * 4, 4), 3, 0.25))


def test_roi_align_option_matches_torchvision() -> None:
    torch.manual_seed(0)
    feats = torch.randn(2, 3, 16, 16)
    rois = torch.tensor([[[3.0, 5.0, 40.0, 33.0]], [[10.0, 0.0, 60.0, 63.0]]])
    out = pool_rois([feats], [4], rois, "roi_align", output_size=7)
    indexed = torch.tensor([[0, 3.0, 5.0, 40.0, 33.0], [1, 10.0, 0.0, 60.0, 63.0]])
    assert torch.allclose(out, roi_align(feats, indexed, 7, 0.25, 2, aligned=True))


def test_fpn_level_rule() -> None:
    boxes = torch.tensor([[0, 0, 20, 20], [0, 0, 111, 111], [0, 0, 112, 112], [0, 0, 223, 223],
                          [0, 0, 224, 224], [0, 0, 1000, 1000]], dtype=torch.float32)
    assert roi_levels(boxes, [8, 16, 32], canonical_size=112).tolist() == [0, 0, 1, 1, 2, 2]
    # The paper's constants: 224 px -> level 4 (stride 16) when the levels are strides 4..32.
    assert roi_levels(boxes, [4, 8, 16, 32], canonical_size=224).tolist() == [0, 0, 1, 1, 2, 3]


@pytest.mark.parametrize("by_mask", [True, False])  # True: the CUDA path (no host sync), False: the CPU path
def test_multi_level_pooling_matches_roi_pool_on_the_assigned_level(by_mask: bool) -> None:
    torch.manual_seed(0)
    strides = [8, 16, 32]
    feats = [torch.randn(2, 4, 256 // s, 256 // s) for s in strides]
    rois = torch.tensor([[[0, 0, 40, 40], [8, 8, 130, 126], [0, 0, 250, 240]],
                         [[64, 64, 96, 120], [10, 20, 110, 60], [30, 0, 256, 256]]], dtype=torch.float32)
    out = pool_rois(feats, strides, rois, "roi_pool", output_size=7, canonical_size=112, by_mask=by_mask)
    levels = roi_levels(rois.view(-1, 4), strides, 112)
    assert set(levels.tolist()) == {0, 1, 2}
    for r in range(6):
        b, lv = r // 3, int(levels[r])
        one = _inclusive(rois[b : b + 1, r % 3 : r % 3 + 1], strides[lv])
        one[:, 0] = b
        assert torch.equal(out[r], roi_pool(feats[lv], one, 7, 1.0 / strides[lv])[0])


def test_sample_rois_appends_gt_and_ignores_padding() -> None:
    torch.manual_seed(0)
    gt = torch.tensor([[[10, 10, 50, 50], [0, 0, 0, 0]], [[60, 60, 100, 120], [5, 5, 30, 40]]], dtype=torch.float32)
    gt_labels = torch.tensor([[3, 0], [1, 2]])
    gt_mask = torch.tensor([[True, False], [True, True]])
    props = torch.tensor([[[12, 10, 50, 52], [70, 70, 90, 90], [0, 0, 5, 5]],
                          [[60, 62, 100, 118], [0, 0, 0, 0], [0, 0, 128, 128]]], dtype=torch.float32)
    prop_mask = torch.tensor([[True, True, True], [True, False, True]])
    rois, labels, matched = sample_rois(props, prop_mask, gt, gt_labels, gt_mask, 4, 0.5)
    assert rois.shape == (2, 4, 4) and labels.shape == (2, 4)
    # Image 0: 4 valid candidates (3 proposals + 1 GT): 2 foreground (class 3), 2 background.
    assert sorted(labels[0].tolist()) == [0, 0, 3, 3]
    # Image 1: 4 valid candidates (2 proposals + 2 GT); foreground capped at 2 of the 3.
    assert (labels[1] > 0).sum() == 2 and (labels[1] == 0).sum() == 1 and (labels[1] == -1).sum() == 1
    fg = labels > 0
    assert torch.equal(matched[0][fg[0]], gt[0, :1].expand(2, 4))
    zero = torch.zeros(4)
    assert not any(torch.equal(r, zero) for r in rois[labels >= 0]), "padded rows must never be sampled"
    assert not (labels == 0)[fg].any()


def test_loss_ignores_unused_slots_and_uses_true_class_deltas() -> None:
    logits = torch.zeros(3, 4, requires_grad=True)
    deltas = torch.zeros(3, 12, requires_grad=True)
    labels = torch.tensor([2, 0, -1])
    targets = torch.tensor([[1.0, 0, 0, 0], [5.0, 5, 5, 5], [9.0, 9, 9, 9]])
    losses = fast_rcnn_loss(logits, deltas, labels, targets)
    assert torch.isclose(losses["roi_cls"], torch.log(torch.tensor(4.0)))  # mean over the 2 used RoIs
    assert torch.isclose(losses["roi_box"], torch.tensor((1.0 - 1 / 18) / 2))
    losses["roi_box"].backward()
    g = deltas.grad.view(3, 3, 4)
    assert g[0, 1, 0] != 0 and g[0, 0].abs().sum() == 0 and g[1:].abs().sum() == 0


def test_predict_returns_class_specific_detections() -> None:
    torch.manual_seed(0)
    head = RoIHead(4, [8], num_classes=3, roi_size=3, hidden=16).eval()
    feats = [torch.randn(2, 4, 8, 8)]
    props = torch.tensor([[[0, 0, 32, 32], [16, 16, 60, 50]], [[8, 8, 40, 40], [0, 0, 0, 0]]], dtype=torch.float32)
    mask = torch.tensor([[True, True], [True, False]])
    dets = head.predict(feats, props, mask, (64, 64), PostprocessSettings(score_thresh=0.0))
    assert len(dets) == 2
    assert len(dets[0]["boxes"]) == 6 and len(dets[1]["boxes"]) == 3  # padded proposal gives nothing
    for d in dets:
        assert d["labels"].min() >= 1 and d["labels"].max() <= 3
        assert (d["boxes"] >= 0).all() and (d["boxes"] <= 64).all()


def test_class_agnostic_regression_shares_one_set_of_deltas() -> None:
    """Loss: every positive trains the same 4 outputs whatever its class; predict: all classes get one box."""
    deltas = torch.zeros(3, 4, requires_grad=True)
    labels = torch.tensor([2, 3, 0])  # two classes, one background
    targets = torch.tensor([[1.0, 0, 0, 0], [0.0, 1, 0, 0], [5.0, 5, 5, 5]])
    losses = fast_rcnn_loss(torch.zeros(3, 4), deltas, labels, targets)
    assert torch.isclose(losses["roi_box"], torch.tensor(2 * (1.0 - 1 / 18) / 3))
    losses["roi_box"].backward()
    assert deltas.grad[0, 0] != 0 and deltas.grad[1, 1] != 0 and deltas.grad[2].abs().sum() == 0

    torch.manual_seed(0)
    head = RoIHead(4, [8], num_classes=3, roi_size=3, hidden=16, class_agnostic=True).eval()
    assert head.box_head.reg.out_features == 4
    with torch.no_grad():
        head.box_head.reg.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))  # shift every box right
    props = torch.tensor([[[0, 0, 32, 32]]], dtype=torch.float32)
    dets = head.predict([torch.randn(1, 4, 8, 8)], props, torch.ones(1, 1, dtype=torch.bool), (64, 64),
                        PostprocessSettings(score_thresh=0.0))[0]
    assert sorted(dets["labels"].tolist()) == [1, 2, 3]
    assert torch.allclose(dets["boxes"], dets["boxes"][:1].expand(3, 4))  # one box for every class
    assert dets["boxes"][0, 0] > 0.5  # the shared deltas were applied


@pytest.mark.parametrize("beta", [0.0, 1.0 / 9, 1.0])
def test_loss_box_beta_is_the_smooth_l1_switch(beta: float) -> None:
    logits, deltas = torch.zeros(2, 3), torch.zeros(2, 8)
    labels = torch.tensor([1, 1])
    targets = torch.tensor([[0.05, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0]])  # one error below every beta > 0.05, one above
    box = fast_rcnn_loss(logits, deltas, labels, targets, beta=beta)["roi_box"]

    def smooth(x: float) -> float:
        return 0.5 * x * x / beta if x < beta else x - 0.5 * beta

    assert torch.isclose(box, torch.tensor((smooth(0.05) + smooth(2.0)) / 2))


def test_box_head_init_options() -> None:
    torch.manual_seed(0)
    normal = BoxHead(8, 3, 256, num_classes=5, init="normal")
    assert abs(normal.cls.weight.std().item() - 0.01) < 0.002 and abs(normal.reg.weight.std().item() - 0.001) < 2e-4
    assert normal.cls.bias.abs().sum() == 0 and normal.reg.bias.abs().sum() == 0
    pytorch = BoxHead(8, 3, 256, num_classes=5, init="pytorch")  # nn.Linear's: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    for layer in (pytorch.cls, pytorch.reg):
        w = layer.weight.abs().max().item()
        assert 0.9 / 16 < w <= 1 / 16 and layer.bias.abs().max() > 0
    with pytest.raises(ValueError, match="box head init"):
        BoxHead(8, 3, 16, num_classes=5, init="xavier")


@pytest.mark.parametrize("norm", ["group", "batch"])
def test_box_head_norm_centres_max_pooled_features(norm: str) -> None:
    """roi_pool of a zero-mean map has a positive mean (the max of each bin); the norm option hands the fully
    connected layers centred, unit-scale inputs, in training and (for BatchNorm, from running stats) in eval."""
    torch.manual_seed(0)
    feats = [torch.randn(4, 64, 20, 20)]
    rois = torch.tensor([[[8.0, 8.0, 90.0, 120.0], [30.0, 0.0, 160.0, 70.0]]]).expand(4, 2, 4).contiguous()
    rois = rois + torch.rand(4, 2, 4) * 20
    pooled = pool_rois(feats, [8], rois, "roi_pool", output_size=7)
    assert pooled.mean() > 0.8  # max pooling: far from zero mean
    head = BoxHead(64, 7, 32, num_classes=3, norm=norm)
    for _ in range(30 if norm == "batch" else 1):  # BatchNorm: let the running statistics converge
        normed = head.norm(pooled)
    assert abs(normed.mean().item()) < 0.05 and abs(normed.std().item() - 1) < 0.1
    head.eval()
    assert abs(head.norm(pooled).mean().item()) < 0.1
    none = BoxHead(64, 7, 32, num_classes=3)
    assert torch.equal(none.norm(pooled), pooled)
    with pytest.raises(ValueError, match="RoI feature norm"):
        BoxHead(8, 3, 16, num_classes=5, norm="layer")


@pytest.mark.parametrize("by_mask", [True, False])
def test_upsample_makes_roi_pool_follow_box_edges(by_mask: bool) -> None:
    """On a map whose value is the x (pixel) of each cell's centre, roi_pool's last output column is the x of
    the last cell it covered: the box's right edge quantised to the grid. Pooling from the map upsampled 2x
    (bilinear, so still the x of each finer cell's centre) quantises to half the stride: the edge error halves."""
    stride = 8
    centres = (torch.arange(20, dtype=torch.float32) + 0.5) * stride
    feats = [centres.view(1, 1, 1, 20).expand(1, 1, 20, 20).contiguous(), torch.zeros(1, 1, 10, 10)]
    x2 = torch.arange(40.0, 150.0, 1.0)  # right edges at every pixel, boxes 30-140 px wide
    rois = torch.stack([torch.full_like(x2, 10.0), torch.full_like(x2, 10.0), x2, torch.full_like(x2, 50.0)], 1)[None]
    errors = {}
    for up in (1, 2):
        out = pool_rois(feats, [stride, 2 * stride], rois, "roi_pool", output_size=7, canonical_size=1e4,
                        by_mask=by_mask, upsample=up)
        last_centre = out[:, 0, 3, -1]  # centre x of the last pooled cell; ideal: x2 - stride / (2 * up)
        errors[up] = (last_centre - (x2 - stride / (2 * up))).abs()
    assert errors[1].max() <= stride / 2 + 1e-4 and errors[2].max() <= stride / 4 + 1e-4
    assert errors[2].mean() < 0.6 * errors[1].mean()
    with pytest.raises(ValueError, match="upsample must be >= 1"):
        RoIHead(4, [8], 3, upsample=0)


def test_subbins_average_finer_max_pooled_bins() -> None:
    """subbins=k: each 7x7 output bin is the mean of k x k roi_pool bins (torchvision's roi_pool at 7k, then
    k x k averaging); on a zero-mean map this cuts the upward bias of plain max pooling (here by a third)."""
    torch.manual_seed(0)
    feats = torch.randn(2, 16, 24, 24)
    rois = torch.tensor([[[8.0, 16.0, 150.0, 170.0]], [[0.0, 0.0, 100.0, 60.0]]])
    out = pool_rois([feats], [8], rois, "roi_pool", output_size=7, subbins=2)
    fine = roi_pool(feats, _inclusive(rois, 8), 14, 1.0 / 8)
    assert out.shape == (2, 16, 7, 7) and torch.allclose(out, torch.nn.functional.avg_pool2d(fine, 2))
    plain = pool_rois([feats], [8], rois, "roi_pool", output_size=7)
    assert out.mean() < 0.75 * plain.mean()
    with pytest.raises(ValueError, match="subbins must be >= 1"):
        RoIHead(4, [8], 3, subbins=0)
