"""Search a gallery's vectors: an exact inner-product faiss index over the references, answers by SKU, and the
unknown threshold calibrated from the references themselves.

Vectors are unit length, so the inner product is the cosine similarity (1: the same direction).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import faiss
import numpy as np

NEIGHBOURS = 64  # references looked at per query before they are grouped by SKU
CALIBRATION_SAMPLE = 5000  # references used to calibrate the unknown threshold (a random, seeded sample)


@dataclasses.dataclass(frozen=True)
class Match:
    """What a query crop is: the best SKU, its similarity and the runners-up ``[(sku, similarity), ...]``
    (distinct SKUs, best first). ``sku`` is None when the gallery is empty."""

    sku: str | None
    similarity: float
    alternatives: tuple[tuple[str, float], ...]


class VectorIndex:
    """Exact inner-product search (``faiss.IndexFlatIP``) over ``vectors`` float32 ``[N, dim]`` whose row ``i``
    is a reference of SKU ``skus[i]``."""

    def __init__(self, vectors: np.ndarray, skus: Sequence[str]) -> None:
        self.vectors = np.ascontiguousarray(vectors, np.float32)
        self.skus = list(skus)
        if len(self.skus) != len(self.vectors):
            raise ValueError(f"{len(self.vectors)} vectors for {len(self.skus)} SKU labels")
        self.index = faiss.IndexFlatIP(int(self.vectors.shape[1]))
        if len(self.vectors):
            self.index.add(self.vectors)

    def __len__(self) -> int:
        return len(self.skus)

    def nearest(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest references of each query: ``(similarities [M, k], row indices [M, k])``, best first;
        index -1 (similarity -inf) where the gallery has fewer than ``k`` rows."""
        q = np.ascontiguousarray(np.asarray(queries, np.float32).reshape(-1, self.vectors.shape[1]))
        if not len(self.skus) or not len(q) or k <= 0:
            return np.full((len(q), max(k, 0)), -np.inf, np.float32), np.full((len(q), max(k, 0)), -1, np.int64)
        sims, rows = self.index.search(q, min(k, len(self.skus)))
        if k > len(self.skus):
            pad = k - len(self.skus)
            sims = np.pad(sims, ((0, 0), (0, pad)), constant_values=-np.inf)
            rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=-1)
        return sims, rows

    def classify(self, queries: np.ndarray, top: int = 3) -> list[Match]:
        """Per query (``[M, dim]``) the ``top`` best SKUs, each scored by its most similar reference."""
        sims, rows = self.nearest(queries, NEIGHBOURS)
        out = []
        for srow, irow in zip(sims, rows):
            best: dict[str, float] = {}
            for s, i in zip(srow, irow):
                if i >= 0 and self.skus[i] not in best:
                    best[self.skus[i]] = float(s)
                    if len(best) == top:
                        break
            ranked = sorted(best.items(), key=lambda kv: -kv[1])
            if not ranked:
                out.append(Match(None, float("-inf"), ()))
            else:
                out.append(Match(ranked[0][0], ranked[0][1], tuple(ranked[1:])))
        return out


def calibrate_threshold(index: VectorIndex, seed: int = 0) -> tuple[float | None, dict]:
    """The similarity below which a crop is called ``unknown``, from the references alone.

    Each sampled reference is a query with itself left out: its best similarity to another reference of its own
    SKU is a *genuine* score, to a reference of any other SKU an *impostor* score (what a product that was
    never enrolled would reach). The threshold is the equal-error point of the two: as many genuine scores
    fall below it as impostor scores reach it (halfway to the next lower score, so the weakest accepted score
    is not on the edge). Returns ``(threshold or None, {"genuine", "impostor",
    "error_rate"})``; None when there is no genuine pair (every SKU has one reference) or one SKU only.
    """
    n = len(index)
    rng = np.random.default_rng(seed)
    sample = np.arange(n) if n <= CALIBRATION_SAMPLE else np.sort(rng.choice(n, CALIBRATION_SAMPLE, replace=False))
    genuine, impostor = [], []
    if n:
        sims, rows = index.nearest(index.vectors[sample], NEIGHBOURS + 1)
        for q, srow, irow in zip(sample, sims, rows):
            own = index.skus[q]
            g = i = None
            for s, r in zip(srow, irow):
                if r < 0 or r == q:
                    continue
                if index.skus[r] == own:
                    g = s if g is None else g
                else:
                    i = s if i is None else i
                if g is not None and i is not None:
                    break
            if g is not None:
                genuine.append(float(g))
            if i is not None:
                impostor.append(float(i))
    info = {"genuine": len(genuine), "impostor": len(impostor)}
    if not genuine or not impostor:
        return None, info
    g, m = np.sort(genuine), np.sort(impostor)
    candidates = np.unique(np.concatenate([g, m]))
    frr = np.searchsorted(g, candidates, side="left") / len(g)  # genuine below the threshold: rejected
    far = 1.0 - np.searchsorted(m, candidates, side="left") / len(m)  # impostors at or above it: accepted
    best = int(np.argmin(np.abs(frr - far) + 1e-9 * candidates))
    info["error_rate"] = round(float((frr[best] + far[best]) / 2), 4)
    # No score lies between the next lower candidate and this one: their midpoint makes the same decisions on the
    # references and leaves a margin on both sides (the candidate itself would sit on its weakest genuine score).
    # Not rounded: a rounded threshold could step over the score it was chosen at.
    low = float(candidates[best - 1]) if best > 0 else float(candidates[best]) - 1e-3
    return (low + float(candidates[best])) / 2, info
