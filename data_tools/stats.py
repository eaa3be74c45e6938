"""Dataset statistics as a plain dict (JSON-ready), a text summary, and a 2x2 plot."""

from __future__ import annotations

import os
from collections import Counter

import numpy as np

from data_tools.figures import pyplot, save_png
from data_tools.records import RecordSet

SIZE_BINS = [0, 8, 16, 32, 64, 96, 128, 192, 256, 384, 512, 1024, 1e9]
ASPECT_BINS = [0, 0.25, 0.33, 0.5, 0.67, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 1e9]


def _summary(values: np.ndarray) -> dict:
    if len(values) == 0:
        return {"min": None, "p5": None, "median": None, "mean": None, "p95": None, "max": None}
    p5, med, p95 = np.percentile(values, [5, 50, 95])
    return {"min": round(float(values.min()), 3), "p5": round(float(p5), 3), "median": round(float(med), 3),
            "mean": round(float(values.mean()), 3), "p95": round(float(p95), 3), "max": round(float(values.max()), 3)}


def _hist(values: np.ndarray, bins: list[float]) -> dict:
    counts, _ = np.histogram(values, bins=bins)
    return {"edges": [float(b) for b in bins], "counts": counts.tolist()}


def compute_stats(rs: RecordSet) -> dict:
    """Counts and distributions of a dataset.

    Keys: ``images``, ``boxes``, ``classes``, ``empty_images``, ``difficult``, ``truncated``,
    ``per_class`` (name -> ``{"boxes", "images"}``), ``objects_per_image`` (summary + ``histogram``
    ``{count: images}``), ``box_size`` (sqrt of box area in pixels: summary + ``histogram`` ``{edges, counts}``),
    ``aspect`` (box width / height, same form), ``image_sizes`` (``"WxH"`` -> images, top 10).
    """
    boxes = np.concatenate([r.boxes for r in rs.records]) if rs.records else np.zeros((0, 4), np.float32)
    wh = (boxes[:, 2:] - boxes[:, :2]).astype(np.float64)
    size = np.sqrt(np.clip(wh[:, 0] * wh[:, 1], 0, None))
    aspect = wh[:, 0] / np.maximum(wh[:, 1], 1e-9)
    per_image = np.array([r.num_boxes for r in rs.records], np.int64)
    box_counts, image_counts = Counter(), Counter()
    for r in rs.records:
        labels = r.labels.tolist()
        box_counts.update(labels)
        image_counts.update(set(labels))
    sizes = Counter(f"{r.width}x{r.height}" for r in rs.records)
    return {
        "images": len(rs.records),
        "boxes": int(per_image.sum()),
        "classes": rs.num_classes,
        "empty_images": int((per_image == 0).sum()),
        "difficult": int(sum(int(r.difficult.sum()) for r in rs.records)),
        "truncated": int(sum(int(r.truncated.sum()) for r in rs.records)),
        "per_class": {n: {"boxes": box_counts.get(k, 0), "images": image_counts.get(k, 0)}
                      for k, n in enumerate(rs.class_names, 1)},
        "objects_per_image": {**_summary(per_image.astype(np.float64)),
                              "histogram": {str(k): v for k, v in sorted(Counter(per_image.tolist()).items())}},
        "box_size": {**_summary(size), "histogram": _hist(size, SIZE_BINS)},
        "aspect": {**_summary(aspect), "histogram": _hist(aspect, ASPECT_BINS)},
        "image_sizes": dict(sizes.most_common(10)),
    }


def format_stats(stats: dict) -> str:
    """A short human-readable report of :func:`compute_stats`'s dict."""
    lines = [
        f"images: {stats['images']}  boxes: {stats['boxes']}  classes: {stats['classes']}  "
        f"empty images: {stats['empty_images']}  difficult: {stats['difficult']}  truncated: {stats['truncated']}",
        "image sizes: " + ", ".join(f"{k} ({v})" for k, v in stats["image_sizes"].items()),
    ]
    for key, title in (("objects_per_image", "objects/image"), ("box_size", "box size (sqrt area, px)"),
                       ("aspect", "aspect (w/h)")):
        s = stats[key]
        if s["median"] is None:
            lines.append(f"{title}: -")
        else:
            lines.append(f"{title}: min {s['min']:g}  p5 {s['p5']:g}  median {s['median']:g}  mean {s['mean']:g}  "
                         f"p95 {s['p95']:g}  max {s['max']:g}")
    lines.append("per class (boxes / images):")
    width = max((len(n) for n in stats["per_class"]), default=0)
    for name, c in stats["per_class"].items():
        lines.append(f"  {name:<{width}}  {c['boxes']:>6} / {c['images']}")
    return "\n".join(lines)


def plot_stats(stats: dict, png: str | os.PathLike) -> None:
    """Save a 2x2 figure (boxes per class, objects per image, box sizes, aspects) to ``png``, atomically."""
    plt = pyplot()

    fig, ax = plt.subplots(2, 2, figsize=(12, 8))
    names = list(stats["per_class"])
    ax[0, 0].bar(range(len(names)), [stats["per_class"][n]["boxes"] for n in names])
    ax[0, 0].set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax[0, 0].set_title("boxes per class")
    hist = stats["objects_per_image"]["histogram"]
    ax[0, 1].bar([int(k) for k in hist], list(hist.values()))
    ax[0, 1].set_title("objects per image")
    for a, key, title in ((ax[1, 0], "box_size", "box size (sqrt area, px)"), (ax[1, 1], "aspect", "aspect (w/h)")):
        h = stats[key]["histogram"]
        labels = [f"<{e:g}" for e in h["edges"][1:-1]] + [f">={h['edges'][-2]:g}"]
        a.bar(range(len(h["counts"])), h["counts"])
        a.set_xticks(range(len(labels)), labels, rotation=45, fontsize=7)
        a.set_title(title)
    fig.suptitle(f"{stats['images']} images, {stats['boxes']} boxes, {stats['classes']} classes")
    fig.tight_layout()
    save_png(fig, png)
