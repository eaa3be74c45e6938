"""ModelEMA: the ramped decay, buffers copied, state round trip."""

from __future__ import annotations

import math

import torch
from torch import nn

from detect.engine.training.ema import ModelEMA


def test_ema_follows_the_ramped_decay_and_copies_buffers():
    model = nn.Sequential(nn.Linear(2, 1, bias=False), nn.BatchNorm1d(1))
    with torch.no_grad():
        model[0].weight.fill_(0.0)
    ema = ModelEMA(model, decay=0.9, ramp=1.0)
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[1].num_batches_tracked.fill_(5)
    ema.update(model)
    d = 0.9 * (1 - math.exp(-1.0))
    assert torch.allclose(ema.module[0].weight, torch.full((1, 2), 1 - d))
    assert ema.module[1].num_batches_tracked.item() == 5  # integer buffers are copied, not averaged
    assert not any(p.requires_grad for p in ema.module.parameters())
    other = ModelEMA(model, decay=0.9, ramp=1.0)
    other.load_state_dict(ema.state_dict(), ema.updates)
    assert other.updates == 1 and torch.equal(other.module[0].weight, ema.module[0].weight)
