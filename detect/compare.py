"""``retail-detect compare``: SSD, Fast R-CNN and the YOLO-style detector on the same split, backbone and
time budget, in one table (val AP, AP50, training images/s, batch-1 latency) and one AP-vs-latency PNG.

Each detector trains from its recipe (``configs/<name>.yaml``) with ``train.time_budget_s`` = the budget, so
the learning-rate schedule anneals over the budget, not over a number of epochs.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch

from data_tools.atomic import atomic_write_bytes, atomic_write_text
from data_tools.split import split_train_val
from data_tools.store import load_dataset, save_dataset
from detect.config import load_config
from detect.engine.run_dir import claim_run_dir
from detect.models.build import NAMES
from detect.tables import aligned, write_dicts_csv


def recipe_path(name: str, configs_dir: str | Path | None) -> Path:
    """``configs_dir/<name>.yaml``; by default ``./configs`` or the repository's ``configs/``."""
    candidates = [Path(configs_dir)] if configs_dir else [Path("configs"), Path(__file__).resolve().parents[1] / "configs"]
    for folder in candidates:
        if (folder / f"{name}.yaml").is_file():
            return folder / f"{name}.yaml"
    raise FileNotFoundError(f"recipe {name}.yaml not found in {', '.join(map(str, candidates))} (pass --configs DIR)")


def _splits(data: str | None, train: str | None, val: str | None, out: Path, seed: int) -> tuple[str, str]:
    if train and val:
        return train, val
    if not data:
        raise ValueError("compare needs --data DATASET.pkl (split 80/20 here) or both --train and --val")
    t, v = out / "split" / "train.pkl", out / "split" / "val.pkl"
    if not (t.is_file() and v.is_file()):
        train_rs, val_rs = split_train_val(load_dataset(data), 0.2, seed)
        save_dataset(train_rs, t)
        save_dataset(val_rs, v)
    return str(t), str(v)


def batch1_latency_ms(weights: Path, device: torch.device, image_size: int, iters: int = 10) -> float:
    """Median batch-1 latency (ms, postprocess included) of a checkpoint on ``device``."""
    from detect.bench import time_inference
    from detect.engine.predictor import load_model

    model, _, cfg = load_model(weights)
    model = model.to(device)
    images = torch.randint(0, 255, (1, 3, image_size, image_size), dtype=torch.uint8, device=device)
    warmup = 3 if device.type == "cuda" else 1
    return time_inference(model, images, iters, warmup, device, cfg.train.amp)["ms_per_image"]


def run_compare(data: str | None = None, train: str | None = None, val: str | None = None,
                budget_minutes: float = 5.0, models: tuple[str, ...] = NAMES, configs_dir: str | None = None,
                out: str | Path = "runs/compare", device: str = "auto", overrides: list[str] | None = None,
                seed: int = 0, log=print) -> list[dict]:
    """Train and evaluate each detector (module doc); writes ``OUT/compare.{csv,json,png}`` (``OUT2``, ... when
    ``OUT`` holds an earlier comparison), returns the rows."""
    out, lock = claim_run_dir(out)  # a new folder per comparison: runs/compare -> runs/compare2, ...
    try:
        return _compare_into(out, data, train, val, budget_minutes, models, configs_dir, device, overrides, seed, log)
    finally:
        lock.release()


def _compare_into(out: Path, data, train, val, budget_minutes: float, models: tuple[str, ...], configs_dir,
                  device: str, overrides: list[str] | None, seed: int, log) -> list[dict]:
    """:func:`run_compare` once its output folder ``out`` is claimed."""
    from detect.engine.evaluate_weights import evaluate_weights
    from detect.engine.setup import resolve_device
    from detect.engine.trainer import fit

    train_pkl, val_pkl = _splits(data, train, val, out, seed)
    dev = resolve_device(device)
    rows = []
    for name in models:
        over = [f"data.train={train_pkl}", f"data.val={val_pkl}", f"train.time_budget_s={budget_minutes * 60}",
                "train.epochs=100000", "train.early_stop_patience=0", f"train.out_dir={out / name}",
                f"train.device={device}", *(overrides or [])]
        cfg = load_config(recipe_path(name, configs_dir), over)
        log(f"[{name}] training for {budget_minutes:g} min ({cfg.model.backbone}, {cfg.data.image_size} px)")
        summary = fit(cfg, log=lambda *a, tag=f"  [{name}]": log(tag, *a))  # progress of long runs
        metrics = evaluate_weights(summary["best"], val_pkl, device=device, log=lambda *a: None)
        latency = batch1_latency_ms(Path(summary["best"]), dev, cfg.data.image_size)
        row = {"model": name, "AP": metrics["AP"], "AP50": metrics["AP50"], "AP75": metrics["AP75"],
               "epochs": summary["epochs"], "train_s": summary["seconds"], "train_img_s": summary["images_per_s"],
               "latency_ms_b1": latency, "weights": summary["best"]}
        log(f"[{name}] AP {row['AP']:.4f}  AP50 {row['AP50']:.4f}  {row['epochs']} epochs  "
            f"{row['train_img_s']:.1f} img/s  {latency:.1f} ms/img (batch 1)")
        rows.append(row)
    meta = {"device": str(dev), "budget_minutes": budget_minutes, "train": train_pkl, "val": val_pkl,
            "torch": torch.__version__}
    atomic_write_text(out / "compare.json", json.dumps({"meta": meta, "rows": rows}, indent=1))
    write_dicts_csv(rows, out / "compare.csv")
    plot_ap_latency(rows, out / "compare.png", f"{budget_minutes:g} min on {dev}")
    log(format_table(rows))
    log(f"wrote {out / 'compare.csv'}, compare.json and compare.png")
    return rows


def format_table(rows: list[dict]) -> str:
    head = ["model", "val AP", "AP50", "epochs", "train img/s", "ms/img b1"]
    body = [[r["model"], f"{r['AP']:.4f}", f"{r['AP50']:.4f}", str(r["epochs"]), f"{r['train_img_s']:.1f}",
             f"{r['latency_ms_b1']:.1f}"] for r in rows]
    return aligned([head, *body])


def plot_ap_latency(rows: list[dict], path: Path, title: str) -> None:
    """PNG: val AP (y) against batch-1 latency (x), one labelled point per detector."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        ax.scatter(r["latency_ms_b1"], r["AP"], s=40)
        ax.annotate(r["model"], (r["latency_ms_b1"], r["AP"]), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel("latency, ms/image at batch 1")
    ax.set_ylabel("val AP (COCO 0.5:0.95)")
    ax.set_title(f"AP against latency ({title})")
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
