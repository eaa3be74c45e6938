"""Batches: :func:`collate` and :func:`build_loader` (shuffling, DDP sampler, worker settings and seeding).

Determinism: the loader's own ``torch.Generator`` is seeded with ``seed``; it drives the shuffle order and
the base seed each worker gets, and each worker re-seeds numpy, ``random`` and the dataset's
augmentation RNGs from ``torch.initial_seed()`` (= base seed + worker id). So a run with the same seed,
batch size and number of workers sees the same batches. Under DDP, call
``loader.sampler.set_epoch(epoch)`` every epoch (as with any ``DistributedSampler``).

Workers and OpenCV: OpenCV's thread pool does not survive ``fork``. A worker forked after this process
ran a parallel OpenCV call (``cv2.resize`` of a 640x640 image is one, e.g. while building the image
cache) and the pool's threads went idle hangs forever in its first ``cv2.setNumThreads`` call. So each
time workers start, the loader first sets OpenCV to one thread *in this process* (which shuts its pool
down and stays so; forked workers inherit the setting), and the workers make no OpenCV thread call. A stalled worker can still never hang a run
silently: a batch that takes longer than ``timeout_s`` raises :class:`LoaderStalled`, one line that
names ``data.workers=0`` (load in the main process) as the way out.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, get_worker_info

from data_tools.errors import InvalidInput, UserError

LOADER_TIMEOUT_S = 300.0  # longest wait for one batch from the workers before LoaderStalled


class LoaderStalled(UserError, RuntimeError):
    """No batch came from the DataLoader workers within the loader's timeout (the message says what to do)."""


def collate(batch: list[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, list[dict]]:
    """``[(image uint8 [3, S, S], target), ...]`` -> ``(images uint8 [B, 3, S, S], [target, ...])``.

    One ``torch.stack`` copy. Images that are ``[3, S, S]`` views of ``[S, S, 3]`` memory (as the dataset
    returns them) are stacked as ``[B, S, S, 3]`` and permuted, so the batch is in channels-last memory
    (what the GPU convolutions prefer); its shape is ``[B, 3, S, S]`` either way.
    """
    images = [b[0] for b in batch]
    targets = [b[1] for b in batch]
    if all(im.dim() == 3 and im.permute(1, 2, 0).is_contiguous() for im in images):
        stacked = torch.stack([im.permute(1, 2, 0) for im in images]).permute(0, 3, 1, 2)
    else:
        stacked = torch.stack(images)
    return stacked, targets


def opencv_single_thread() -> None:
    """One OpenCV thread in this process (shuts down its thread pool), so processes forked next are safe."""
    import cv2

    cv2.setNumThreads(1)


def _seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: distinct, reproducible seeds per worker.

    No OpenCV call here: the parent set one OpenCV thread before forking (module doc), and
    ``cv2.setNumThreads`` is exactly the call that hangs in a child forked with a live pool.
    """
    seed = torch.initial_seed() % 2**32  # base seed (from the loader's generator) + worker id
    np.random.seed(seed)
    random.seed(seed)
    info = get_worker_info()
    ds = info.dataset if info is not None else None
    if hasattr(ds, "set_seed"):
        ds.set_seed(seed)


class _StallMessage:
    """Iterator over a worker loader's batches that turns DataLoader's timeout error into :class:`LoaderStalled`."""

    def __init__(self, it, timeout_s: float) -> None:
        self._it, self._timeout_s = it, timeout_s

    def __iter__(self) -> _StallMessage:
        return self

    def __len__(self) -> int:
        return len(self._it)

    def __next__(self):
        try:
            return next(self._it)
        except RuntimeError as e:
            if "timed out" not in str(e):
                raise
            raise LoaderStalled(
                f"the data loader's worker processes sent no batch for {self._timeout_s:g} s (stalled, or "
                f"far too slow on this machine); rerun with data.workers=0 to load images in the main process"
            ) from None


class WorkerSafeLoader(DataLoader):
    """A DataLoader whose worker processes start safely (OpenCV at one thread before they fork) and whose
    stalls end in :class:`LoaderStalled` instead of a silent hang (see the module doc)."""

    def __iter__(self):
        if self.num_workers == 0:
            return super().__iter__()
        opencv_single_thread()
        return _StallMessage(super().__iter__(), self.timeout)


def build_loader(ds: Dataset, batch_size: int, train: bool, workers: int, pin_memory: bool,
                 distributed: bool, seed: int, timeout_s: float = LOADER_TIMEOUT_S) -> DataLoader:
    """A DataLoader over ``ds`` yielding ``collate`` batches.

    Args:
        train: shuffle every epoch (reproducibly from ``seed``) and drop the last incomplete batch when
            there is at least one full batch; evaluation keeps order and every sample.
        workers: worker processes (0 = load in this process); workers > 0 are persistent.
        pin_memory: page-locked batches for fast host-to-GPU copies (use on CUDA only).
        distributed: use a ``DistributedSampler`` (requires an initialised ``torch.distributed``).
        seed: shuffle order, worker seeds and (with ``workers=0``) the dataset's augmentation seed.
        timeout_s: with workers, the longest wait for one batch before :class:`LoaderStalled`.
    """
    if batch_size < 1:
        raise InvalidInput(f"batch_size must be >= 1, got {batch_size}")
    if hasattr(ds, "prepare"):
        ds.prepare()  # build the image cache before workers fork, so they share it
    if workers == 0 and hasattr(ds, "set_seed"):
        ds.set_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    sampler = None
    if distributed:
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            raise RuntimeError("distributed=True needs torch.distributed to be initialised first")
        sampler = DistributedSampler(ds, shuffle=train, seed=seed, drop_last=False)
        per_replica = len(sampler)
    else:
        per_replica = len(ds)
    kwargs = {}
    if workers > 0:
        kwargs = {"persistent_workers": True, "prefetch_factor": 4, "worker_init_fn": _seed_worker,
                  "timeout": timeout_s}
    return WorkerSafeLoader(
        ds,
        batch_size=batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        drop_last=train and per_replica >= batch_size,
        generator=generator,
        **kwargs,
    )
