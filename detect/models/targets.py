"""Ground truth for a batch, padded to one tensor so assignment and losses need no per-image loop."""

from __future__ import annotations

import torch
from torch import Tensor


def pad_targets(targets: list[dict[str, Tensor]], device: torch.device | str) -> tuple[Tensor, Tensor, Tensor]:
    """Stack per-image targets into padded tensors.

    Args:
        targets: B dicts with ``boxes`` float [N_i, 4] xyxy and ``labels`` int64 [N_i] in 1..C.
        device: where the result lives.

    Returns:
        boxes float32 [B, M, 4], labels int64 [B, M], mask bool [B, M] where M = max(N_i, 1).
        Padded rows have ``mask == False`` (their box is 0 and label 0, but only ``mask`` says they
        are not objects).
    """
    b = len(targets)
    counts = [int(t["boxes"].shape[0]) for t in targets]
    m = max(counts + [1])
    boxes = torch.zeros(b, m, 4, dtype=torch.float32, device=device)
    labels = torch.zeros(b, m, dtype=torch.int64, device=device)
    mask = torch.zeros(b, m, dtype=torch.bool, device=device)
    for i, (t, n) in enumerate(zip(targets, counts)):
        if n:
            boxes[i, :n] = t["boxes"].to(device=device, dtype=torch.float32, non_blocking=True)
            labels[i, :n] = t["labels"].to(device=device, non_blocking=True)
            mask[i, :n] = True
    return boxes, labels, mask
