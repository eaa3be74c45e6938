"""Train/val splits and k-fold cross-validation, stratified by class and deterministic per seed.

Each image gets one stratum: the rarest class it contains (``by="rarest"``: a rare class then lands in
both train and val) or its most frequent class (``by="dominant"``); images without boxes form their own
stratum. Strata are shuffled with ``numpy.random.default_rng(seed)`` and laid end to end; validation
images are then taken at evenly spaced positions (train/val) or positions are dealt round-robin to
folds (k-fold), so every stratum is split in the requested proportion to within one image.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace as dc_replace

import numpy as np

from data_tools.errors import InvalidInput
from data_tools.records import RecordSet


def strata(rs: RecordSet, by: str = "rarest") -> np.ndarray:
    """Stratum label per record, int64 ``[N]``: a class label 1..K, or 0 for images without boxes."""
    if by not in ("rarest", "dominant"):
        raise InvalidInput(f"stratify by 'rarest' or 'dominant', not {by!r}")
    totals = Counter()
    for r in rs.records:
        totals.update(r.labels.tolist())
    out = np.zeros(len(rs.records), np.int64)
    for i, r in enumerate(rs.records):
        if r.num_boxes == 0:
            continue
        here = Counter(r.labels.tolist())
        if by == "rarest":
            out[i] = min(here, key=lambda k: (totals[k], k))
        else:
            out[i] = max(here, key=lambda k: (here[k], -totals[k], -k))
    return out


def _stratified_order(rs: RecordSet, seed: int, by: str) -> np.ndarray:
    """Record indices grouped by stratum (strata and members shuffled by ``seed``)."""
    rng = np.random.default_rng(seed)
    s = strata(rs, by)
    groups = [rng.permutation(np.flatnonzero(s == k)) for k in np.unique(s)]
    return np.concatenate([groups[g] for g in rng.permutation(len(groups))]) if groups else np.zeros(0, np.int64)


def split_train_val(
    rs: RecordSet, val_fraction: float = 0.2, seed: int = 0, by: str = "rarest"
) -> tuple[RecordSet, RecordSet]:
    """Stratified split into ``(train, val)``; ``val`` has ``round(N * val_fraction)`` images (at least 1)."""
    n = len(rs)
    if not 0.0 < val_fraction < 1.0:
        raise InvalidInput(f"val fraction must be between 0 and 1, not {val_fraction}")
    if n < 2:
        raise InvalidInput(f"need at least 2 images to split, the dataset has {n}")
    order = _stratified_order(rs, seed, by)
    pos = np.arange(n)
    is_val = np.floor((pos + 1) * val_fraction + 0.5) > np.floor(pos * val_fraction + 0.5)
    if not is_val.any():
        is_val[n // 2] = True
    if is_val.all():
        is_val[0] = False
    val_idx, train_idx = np.sort(order[is_val]), np.sort(order[~is_val])
    meta = {"seed": seed, "val_fraction": val_fraction, "stratify": by}
    return _part(rs, train_idx, {**meta, "split": "train"}), _part(rs, val_idx, {**meta, "split": "val"})


def kfold(rs: RecordSet, k: int = 5, seed: int = 0, by: str = "rarest") -> list[tuple[RecordSet, RecordSet]]:
    """``k`` stratified folds: ``[(train_i, val_i)]``; every image is in exactly one ``val_i``."""
    n = len(rs)
    if k < 2 or k > n:
        raise InvalidInput(f"k-fold needs 2 <= k <= number of images ({n}), not k={k}")
    order = _stratified_order(rs, seed, by)
    fold_of = np.empty(n, np.int64)
    fold_of[order] = np.arange(n) % k
    folds = []
    for i in range(k):
        meta = {"seed": seed, "folds": k, "fold": i, "stratify": by}
        folds.append((_part(rs, np.flatnonzero(fold_of != i), {**meta, "split": "train"}),
                      _part(rs, np.flatnonzero(fold_of == i), {**meta, "split": "val"})))
    return folds


def split_by_field(rs: RecordSet) -> dict[str, RecordSet]:
    """The splits the source came with (``Record.split``: a YOLO export's folders, CVAT subsets), by name
    (``train``, ``val``, ``test``, others sorted); records without one go to ``unassigned``."""
    order = {"train": 0, "val": 1, "test": 2}
    names = sorted({r.split or "unassigned" for r in rs.records}, key=lambda n: (order.get(n, 3), n))
    return {n: _part(rs, np.array([i for i, r in enumerate(rs.records) if (r.split or "unassigned") == n], np.int64),
                     {"split": n, "from": "source"}, keep_split=True) for n in names}


def _part(rs: RecordSet, idx: np.ndarray, meta: dict, keep_split: bool = False) -> RecordSet:
    """The records at ``idx`` with ``meta`` added. A new split supersedes the one the source came with, so the
    records' own ``split`` is cleared (else ``data.train`` would keep only the old ``train`` images of it)."""
    part = rs.subset(idx.tolist())
    part.meta.update(meta)
    if not keep_split:
        part.records = [dc_replace(r, split="") if r.split else r for r in part.records]
    return part
