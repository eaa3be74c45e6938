"""SSD: batched matching with padded targets, hard-negative mining, default boxes, box coding."""

from __future__ import annotations

import torch

from detect.models.anchors import grid_anchors, ssd_default_boxes
from detect.models.box_coder import decode, encode
from detect.models.build import ModelConfig, build_model
from detect.models.ssd import hard_negative_mask, match_priors


def test_match_priors_best_prior_threshold_and_padding():
    priors = torch.tensor([[0, 0, 10, 10], [0, 0, 20, 20], [50, 50, 60, 60], [100, 100, 140, 140.0]])
    gt = torch.tensor([[[0, 0, 19, 19], [52, 52, 70, 70], [0, 0, 10, 10]],  # 3rd row is padding
                       [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]])
    labels = torch.tensor([[3, 2, 1], [0, 0, 0]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    out_labels, matched = match_priors(priors, gt, labels, mask, 0.5)
    # prior 1 (IoU 0.90 with object 0); prior 2 is object 1's best prior although IoU 0.25 < 0.5;
    # prior 0 equals the padded row but must stay background.
    assert out_labels.tolist() == [[0, 3, 2, 0], [0, 0, 0, 0]]
    assert torch.equal(matched[0, 2], gt[0, 1].float())
    assert torch.equal(matched[1], priors)  # an image without objects: all background


def test_hard_negative_mining_three_to_one():
    ce = torch.arange(40.0).repeat(2, 1)
    positive = torch.zeros(2, 40, dtype=torch.bool)
    positive[0, [0, 39]] = True
    neg = hard_negative_mask(ce, positive, neg_pos_ratio=3, min_negatives=4)
    assert neg[0].sum() == 6 and neg[0, 33:39].all() and not neg[0, 39]  # hardest, positives excluded
    assert neg[1].sum() == 4 and neg[1, 36:].all()  # empty image: the minimum


def test_box_coder_round_trip_and_anchor_layout():
    anchors = grid_anchors([(2, 3)], [8], [[16.0]], [0.5, 1.0, 2.0])
    assert anchors.shape == (2 * 3 * 3, 4)
    assert torch.allclose(anchors[1], torch.tensor([-4.0, -4, 12, 12]))  # cell (y0, x0), ratio 1
    assert torch.allclose(anchors[4], torch.tensor([4.0, -4, 20, 12]))  # cell (y0, x1), ratio 1
    gt = torch.tensor([[3.0, 5.0, 40.0, 22.0]]).expand_as(anchors)
    assert torch.allclose(decode(encode(gt, anchors), anchors), gt, atol=1e-4)
    boxes = ssd_default_boxes([(4, 4), (2, 2)], [8, 16], 32, [1.0, 2.0, 0.5])
    assert boxes.shape == ((16 + 4) * 4, 4)


def test_ssd_contract_losses_and_detections():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="ssd", backbone_weights="none"), num_classes=3)
    images = torch.randint(0, 255, (2, 3, 96, 96), dtype=torch.uint8)
    targets = [{"boxes": torch.tensor([[10.0, 10, 50, 60]]), "labels": torch.tensor([2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    losses = model.train()(images, targets)
    assert set(losses) == {"cls", "box"} and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    out = model.eval()(images)
    assert len(out) == 2 and out[0]["boxes"].shape[1] == 4 and out[0]["labels"].dtype == torch.int64
    assert len(out[0]["boxes"]) <= 300 and (out[0]["labels"] >= 1).all() and (out[0]["labels"] <= 3).all()
