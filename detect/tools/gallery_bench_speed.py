"""Speed of ``gallery-bench``: ms per crop to embed (batched) and ms per query crop to search galleries of
random unit vectors (exact inner product, :class:`~detect.engine.inference.gallery_search.VectorIndex`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from detect.engine.inference.gallery_search import VectorIndex

REFS_PER_SKU = 5  # the random galleries hold this many references per SKU
SEARCH_QUERIES = 256  # query crops per search timing
SEARCH_REPEATS = 3  # the best of this many timed passes


def embed_timed(embedder, crops: Sequence[np.ndarray]) -> tuple[np.ndarray, dict]:
    """``(vectors float32 [N, dim], {"crops", "seconds", "ms_per_crop", "batch", "image_size"})``: ``crops``
    embedded in batches of the embedder's ``batch_size``, the wall time including the letterbox resize."""
    start = time.perf_counter()
    vectors = embedder.embed(list(crops))
    seconds = time.perf_counter() - start
    settings = getattr(embedder, "settings", None)
    return vectors, {"crops": len(crops), "seconds": round(seconds, 3),
                     "ms_per_crop": round(1000 * seconds / max(1, len(crops)), 3),
                     "batch": getattr(embedder, "batch_size", None),
                     "image_size": getattr(settings, "image_size", None)}


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim), dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def search_speed(sizes: Sequence[int], dim: int, seed: int = 0, log: Callable[[str], None] | None = None) -> list[dict]:
    """Per gallery size ``n`` (random unit vectors ``[n, dim]``, :data:`REFS_PER_SKU` per SKU): the index build
    time and the ms per query crop of :meth:`VectorIndex.classify` (top 3 SKUs) on a batch of
    :data:`SEARCH_QUERIES` queries, best of :data:`SEARCH_REPEATS`."""
    rng = np.random.default_rng(seed)
    out = []
    for n in sizes:
        vectors = _unit(rng, int(n), dim)
        skus = [f"sku{i // REFS_PER_SKU}" for i in range(int(n))]
        start = time.perf_counter()
        index = VectorIndex(vectors, skus)
        build = time.perf_counter() - start
        queries = _unit(rng, SEARCH_QUERIES, dim)
        best = float("inf")
        for _ in range(SEARCH_REPEATS):
            start = time.perf_counter()
            index.classify(queries, top=3)
            best = min(best, time.perf_counter() - start)
        row = {"refs": int(n), "skus": len(set(skus)), "dim": dim, "queries": SEARCH_QUERIES,
               "build_seconds": round(build, 4), "ms_per_query": round(1000 * best / SEARCH_QUERIES, 4)}
        out.append(row)
        if log:
            log(f"search: {n} references ({row['skus']} SKUs, dim {dim}): {row['ms_per_query']} ms per query crop")
    return out
