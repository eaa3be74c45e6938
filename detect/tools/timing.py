"""Timed loops for ``bench``: training steps and inference on one device, with the device synchronised around
each timed region and peak memory read where the device keeps it (CUDA)."""

from __future__ import annotations

import contextlib
import gc
import math
import statistics
import time
from collections.abc import Iterator

import torch
from torch import Tensor, nn

Batch = tuple[Tensor, list[dict[str, Tensor]]]  # images [B,3,S,S] + one target dict per image


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast_for(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (convolutions; our box math stays fp32 by contract); nothing on the CPU."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def synthetic_batch(batch: int, size: int, num_classes: int, device: torch.device, seed: int = 0,
                    min_boxes: int = 3, max_boxes: int = 15) -> Batch:
    """Random uint8 images [B,3,S,S] and per-image targets with ``min_boxes..max_boxes`` random valid boxes."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g)
    targets = []
    for _ in range(batch):
        n = int(torch.randint(min_boxes, max_boxes + 1, (1,), generator=g))
        centers = torch.rand(n, 2, generator=g) * size
        wh = (0.05 + 0.35 * torch.rand(n, 2, generator=g)) * size
        boxes = torch.cat([centers - wh / 2, centers + wh / 2], 1).clamp(0, size)  # width >= 0.025 S after clamp
        labels = torch.randint(1, num_classes + 1, (n,), generator=g)
        targets.append({"boxes": boxes.to(device), "labels": labels.to(device)})
    return images.to(device), targets


def time_training(model: nn.Module, batches: Iterator[Batch], steps: int, warmup: int, device: torch.device,
                  amp: bool, lr: float = 1e-3) -> dict:
    """Images/s of ``steps`` SGD steps (forward + backward + step) after ``warmup`` untimed ones.

    ``batches`` yields ``(images, targets)``; moving them to ``device`` (a no-op for on-device synthetic batches)
    is part of the timed work, as in the trainer. Returns ``img_s``, ``peak_mib`` (None on the CPU) and the
    last summed loss (read after the clock stops; None when not finite).
    """
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=4e-5)
    cl = device.type == "cuda" and getattr(model, "_bench_channels_last", False)

    def run(n: int) -> tuple[int, Tensor | None]:
        seen, loss = 0, None
        for _ in range(n):
            images, targets = next(batches)
            images = images.to(device, non_blocking=True)
            if cl:
                images = images.contiguous(memory_format=torch.channels_last)
            targets = [{"boxes": t["boxes"].to(device, non_blocking=True),
                        "labels": t["labels"].to(device, non_blocking=True)} for t in targets]
            with autocast_for(device, amp):
                losses = model(images, targets)
            loss = sum(v.float() for v in losses.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += images.shape[0]
        return seen, loss

    run(warmup)
    _sync(device)
    reset_peak(device)
    t0 = time.perf_counter()
    seen, loss = run(steps)
    _sync(device)
    elapsed = time.perf_counter() - t0
    last = float(loss.detach()) if loss is not None else math.nan
    return {"img_s": seen / elapsed, "peak_mib": _peak_mib(device), "loss_last": last if math.isfinite(last) else None}


@torch.inference_mode()
def time_inference(model: nn.Module, images: Tensor, iters: int, warmup: int, device: torch.device,
                   amp: bool) -> dict:
    """Median ms/image of ``model(images)`` in eval mode (postprocess included), timed call by call.

    Returns ``ms_per_image``, ``peak_mib`` (None on the CPU) and ``dets_per_image`` of the last call.
    """
    model.eval()
    if device.type == "cuda" and getattr(model, "_bench_channels_last", False):
        images = images.contiguous(memory_format=torch.channels_last)
    with autocast_for(device, amp):
        for _ in range(warmup):
            model(images)
        _sync(device)
        reset_peak(device)
        times, out = [], []
        for _ in range(iters):
            t0 = time.perf_counter()
            out = model(images)
            _sync(device)
            times.append(time.perf_counter() - t0)
    dets = sum(int(d["boxes"].shape[0]) for d in out) / max(len(out), 1)
    return {"ms_per_image": 1000.0 * statistics.median(times) / images.shape[0], "peak_mib": _peak_mib(device),
            "dets_per_image": dets}
