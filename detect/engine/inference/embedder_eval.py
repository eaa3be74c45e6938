"""How well an embedder names crops: top-1 nearest-neighbour accuracy of query crops against reference crops.

Each query's label is the label of its most similar reference (cosine of the unit vectors); top-1 is the
fraction of queries named right. The references play the gallery (the enrolled photos of each product), the
queries the crops a detector cuts from a new shelf photo.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from detect.data.crop_augment import letterboxed_batch
from detect.models.embedder import Embedder

NO_MATCH = -1


@torch.inference_mode()
def embed_crops(model: Embedder, crops: Sequence[np.ndarray], device: torch.device, batch_size: int = 64) -> torch.Tensor:
    """Crops ``[h, w, 3]`` uint8 -> float ``[N, dim]`` unit vectors on the CPU (``model`` is put in eval mode and
    left there)."""
    model.eval()
    size = model.settings.image_size
    out = [torch.zeros((0, model.settings.dim))]
    for i in range(0, len(crops), batch_size):
        batch = letterboxed_batch(list(crops[i:i + batch_size]), size).to(device)
        out.append(model(batch).float().cpu())
    return torch.cat(out)


def nearest_labels(queries: torch.Tensor, refs: torch.Tensor, ref_labels: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """The label of each query's nearest reference: ``[Q, D]``, ``[R, D]`` unit rows, int ``[R]`` -> int64
    ``[Q]`` (:data:`NO_MATCH` without references)."""
    if not len(refs):
        return np.full(len(queries), NO_MATCH, np.int64)
    best = [torch.zeros(0, dtype=torch.long)]
    for i in range(0, len(queries), chunk):
        best.append((queries[i:i + chunk] @ refs.T).argmax(1))
    return np.asarray(ref_labels, np.int64)[torch.cat(best).numpy()]


def top1_accuracy(predicted: np.ndarray, truth: np.ndarray, classes: int) -> dict[str, float]:
    """``{"top1": fraction right, "top1_class_mean": mean over classes with a query of their fraction right}``."""
    predicted, truth = np.asarray(predicted), np.asarray(truth)
    if not len(truth):
        return {"top1": float("nan"), "top1_class_mean": float("nan")}
    right = predicted == truth
    per = [right[truth == k].mean() for k in range(classes) if (truth == k).any()]
    return {"top1": float(right.mean()), "top1_class_mean": float(np.mean(per))}


def crop_top1(model: Embedder, refs: Sequence[np.ndarray], ref_labels: np.ndarray, queries: Sequence[np.ndarray],
              query_labels: np.ndarray, classes: int, device: torch.device, batch_size: int = 64) -> dict[str, float]:
    """Top-1 nearest-neighbour accuracy (:func:`top1_accuracy`) of ``queries`` against ``refs`` under ``model``."""
    r = embed_crops(model, refs, device, batch_size)
    q = embed_crops(model, queries, device, batch_size)
    return top1_accuracy(nearest_labels(q, r, ref_labels), query_labels, classes)
