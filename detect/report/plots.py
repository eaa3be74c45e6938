"""The report's figures as PNG files (matplotlib, Agg): per-class PR curves, the confusion matrix, the
confidence sweep. The all-classes PR plot is :func:`detect.engine.inference.evaluator.plot_pr_curves`."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from data_tools.figures import pyplot, save_png


def plot_pr_per_class(m: dict, path: str | Path) -> Path | None:
    """One small PR panel (IoU 0.5) per class, titled with its AP50; None when there is no PR data."""
    pr = m.get("pr_curve")
    if not pr:
        return None
    plt = pyplot()
    names = list(pr["precision"])
    cols = min(5, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.1 * rows), squeeze=False, sharex=True, sharey=True,
                             layout="constrained")
    for ax, name in zip(axes.flat, names):
        ax.plot(pr["recall"], pr["precision"][name], linewidth=1.2)
        ax.fill_between(pr["recall"], pr["precision"][name], alpha=0.15)
        ax.set_title(f"{name} ({m['per_class_ap50'].get(name, 0.0):.2f})", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.supxlabel("recall", fontsize=8)
    fig.supylabel("precision", fontsize=8)
    return save_png(fig, path)


def plot_confusion(cm: np.ndarray, names: list[str], path: str | Path, conf: float, iou: float) -> Path:
    """Confusion matrix ``[K + 1, K + 1]`` (rows true, columns predicted, last = background): counts in the
    cells, colour = share of the row."""
    plt = pyplot()
    labels = [*names, "background"]
    k = len(labels)
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    side = max(4.0, 0.42 * k + 1.5)
    fig, ax = plt.subplots(figsize=(side + 1, side), layout="constrained")
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fs = 8 if k <= 12 else 6 if k <= 30 else 4
    for (r, c), v in np.ndenumerate(cm):
        if v:
            ax.text(c, r, str(v), ha="center", va="center", fontsize=fs,
                    color="white" if share[r, c] > 0.6 else "black")
    ax.set_xticks(range(k), labels, rotation=90, fontsize=fs + 1)
    ax.set_yticks(range(k), labels, fontsize=fs + 1)
    ax.axhline(k - 1.5, color="grey", linewidth=0.8)
    ax.axvline(k - 1.5, color="grey", linewidth=0.8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion at IoU {iou:g}, confidence >= {conf:g} (colour: share of the row)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04)
    return save_png(fig, path)


def plot_sweep(sweep: list[dict], path: str | Path, recommended: float | None) -> Path | None:
    """F1, precision and recall (left axis) and count errors per image (right axis, log scale, floored at 0.01)
    against the confidence."""
    if not sweep:
        return None
    plt = pyplot()
    conf = [s["conf"] for s in sweep]
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    for key, style in (("f1", "-"), ("precision", ":"), ("recall", "--")):
        ax.plot(conf, [s[key] for s in sweep], style, label=key, color="tab:blue")
    ax.set_xlabel("confidence threshold")
    ax.set_ylabel("F1 / precision / recall (IoU 0.5)", color="tab:blue")
    ax.set_ylim(0, 1.02)
    ax2 = ax.twinx()  # log scale: the lowest thresholds can miscount 10x more than the best one
    floor = 0.01
    ax2.plot(conf, [max(s["class_mae"], floor) for s in sweep], "-o", markersize=3, color="tab:red",
             label="count MAE (per class)")
    ax2.plot(conf, [max(s["total_mae"], floor) for s in sweep], "--", color="tab:orange", label="count MAE (total)")
    ax2.set_yscale("log")
    from matplotlib.ticker import FormatStrFormatter

    for set_formatter in (ax2.yaxis.set_major_formatter, ax2.yaxis.set_minor_formatter):
        set_formatter(FormatStrFormatter("%g"))
    ax2.set_ylabel("miscounted facings per image (log)", color="tab:red")
    if recommended is not None:
        ax.axvline(recommended, color="grey", linewidth=1)
        ax.text(recommended, 0.02, f" --conf {recommended:g}", fontsize=8, color="grey")
    lines = ax.get_lines()[:3] + ax2.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], fontsize=7, loc="center right")
    return save_png(fig, path)
