"""RPN: anchor targets on empty / padded targets, balanced sampling, batched proposal selection."""

from __future__ import annotations

import torch
from torchvision.ops import box_iou, nms

from detect.models.rpn import RPN, rpn_loss, rpn_targets, sample_pos_neg, select_proposals


def _anchors() -> torch.Tensor:
    """Six hand-made anchors in a 64x64 image."""
    return torch.tensor([
        [0, 0, 16, 16], [8, 8, 24, 24], [32, 32, 48, 48],
        [40, 40, 56, 56], [0, 32, 32, 64], [16, 0, 48, 32],
    ], dtype=torch.float32)


def test_rpn_targets_empty_image_has_only_negatives() -> None:
    anchors = _anchors()
    gt = torch.zeros(2, 1, 4)
    mask = torch.zeros(2, 1, dtype=torch.bool)
    labels, matched = rpn_targets(anchors, gt, mask)
    assert labels.shape == (2, 6)
    assert (labels == 0).all()
    assert torch.equal(matched, anchors[None].expand(2, -1, -1))  # finite encoding targets


def test_rpn_targets_padded_rows_never_positive() -> None:
    anchors = _anchors()
    # Image 0: one real object equal to anchor 2, then a padded row whose box equals anchor 0.
    gt = torch.tensor([[[32, 32, 48, 48], [0, 0, 16, 16]], [[0, 32, 32, 64], [0, 0, 0, 0]]], dtype=torch.float32)
    mask = torch.tensor([[True, False], [True, False]])
    labels, matched = rpn_targets(anchors, gt, mask)
    assert labels[0, 0] == 0, "anchor equal to a padded row must not be positive"
    assert labels[0, 2] == 1 and torch.equal(matched[0, 2], gt[0, 0])
    assert labels[1, 4] == 1 and torch.equal(matched[1, 4], gt[1, 0])
    # Same as each image alone, unpadded.
    for i in range(2):
        alone, _ = rpn_targets(anchors, gt[i : i + 1, :1], mask[i : i + 1, :1])
        assert torch.equal(alone[0], labels[i])


def test_rpn_targets_best_anchor_rule_and_ignore_band() -> None:
    anchors = _anchors()
    gt = torch.tensor([[[30, 30, 46, 50]]], dtype=torch.float32)  # best IoU < 0.7 with any anchor
    labels, _ = rpn_targets(anchors, gt, torch.ones(1, 1, dtype=torch.bool))
    iou = box_iou(gt[0], anchors)[0]
    assert iou.max() < 0.7
    assert labels[0, iou.argmax()] == 1  # every object gets its best anchor
    ignored = (iou >= 0.3) & (iou < iou.max())
    assert (labels[0][ignored] == -1).all()


def test_sampling_respects_batch_and_fraction() -> None:
    torch.manual_seed(0)
    pos = torch.rand(3, 500) < 0.3
    neg = ~pos & (torch.rand(3, 500) < 0.9)
    pos[2] = False  # an image without positives fills the batch with negatives
    p, n = sample_pos_neg(pos, neg, 64, 0.25)
    assert (p <= pos).all() and (n <= neg).all()
    assert p.sum(1).tolist() == [16, 16, 0]
    assert (p.sum(1) + n.sum(1)).tolist() == [64, 64, 64]


def test_rpn_loss_empty_targets_is_finite_and_differentiable() -> None:
    anchors = _anchors()
    obj = torch.zeros(2, 6, requires_grad=True)
    deltas = torch.zeros(2, 6, 4, requires_grad=True)
    labels, matched = rpn_targets(anchors, torch.zeros(2, 1, 4), torch.zeros(2, 1, dtype=torch.bool))
    losses = rpn_loss(obj, deltas, anchors, labels, matched, 256, 0.5)
    total = sum(losses.values())
    total.backward()
    assert torch.isfinite(total) and losses["rpn_box"] == 0
    assert torch.isfinite(obj.grad).all() and torch.isfinite(deltas.grad).all()


def _reference(anchors, obj, counts, k_pre, k_post, thresh):
    """Per-image, per-level loop with zero deltas: the slow reference."""
    out = []
    for b in range(obj.shape[0]):
        boxes, scores, levels, start = [], [], [], 0
        for lv, c in enumerate(counts):
            s, i = obj[b, start : start + c].topk(min(k_pre, c))
            boxes.append(anchors[start + i])
            scores.append(s.sigmoid())
            levels.append(torch.full_like(i, lv))
            start += c
        boxes, scores, levels = torch.cat(boxes), torch.cat(scores), torch.cat(levels)
        keep = torch.cat([torch.nonzero(levels == lv)[:, 0][nms(boxes[levels == lv], scores[levels == lv], thresh)]
                          for lv in range(len(counts))])
        keep = keep[scores[keep].argsort(descending=True)][:k_post]
        out.append((boxes[keep], scores[keep]))
    return out


def test_select_proposals_topk_per_image_and_never_mixes_images() -> None:
    torch.manual_seed(0)
    ys, xs = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    centers = torch.stack([xs, ys], -1).reshape(-1, 2) * 8 + 4
    lvl0 = torch.cat([centers - 6, centers + 6], 1)  # 64 anchors, overlapping neighbours
    lvl1 = torch.cat([centers[::4] - 12, centers[::4] + 12], 1)  # 16 anchors
    anchors = torch.cat([lvl0, lvl1]).clamp(0, 64)
    counts = [64, 16]
    obj = torch.randn(3, 80)
    obj[1] = obj[0]  # identical images: NMS across images would suppress image 1's boxes
    deltas = torch.zeros(3, 80, 4)
    boxes, scores, mask = select_proposals(anchors, obj, deltas, counts, (64, 64), 20, 12, 0.5)
    assert boxes.shape == (3, 12, 4) and mask.shape == (3, 12)
    assert torch.equal(boxes[0], boxes[1]) and torch.equal(mask[0], mask[1])
    ref = _reference(anchors, obj, counts, 20, 12, 0.5)
    for b in range(3):
        n = int(mask[b].sum())
        assert n == len(ref[b][0])
        assert torch.allclose(boxes[b, :n], ref[b][0]) and torch.allclose(scores[b, :n], ref[b][1])
        assert (scores[b, :n].diff() <= 0).all()
        assert (boxes[b, n:] == 0).all()


def test_rpn_module_shapes_and_losses() -> None:
    torch.manual_seed(0)
    rpn = RPN(8, [8, 16], [[16.0], [32.0]], [0.5, 1.0, 2.0], pre_nms_topk=50, post_nms_topk=30)
    feats = [torch.randn(2, 8, 8, 8), torch.randn(2, 8, 4, 4)]
    gt = (torch.tensor([[[4.0, 4.0, 30.0, 28.0]], [[0.0, 0.0, 0.0, 0.0]]]), torch.tensor([[True], [False]]))
    props, mask, losses = rpn(feats, (64, 64), gt)
    assert props.shape == (2, 30, 4) and mask.all()
    assert set(losses) == {"rpn_objectness", "rpn_box"}
    sum(losses.values()).backward()
    assert rpn.head.cls.weight.grad is not None
    assert not props.requires_grad
