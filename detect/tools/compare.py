"""``retail-detect compare``: our detectors (and with ``--peers`` their torchvision peers) on the same split,
backbone, size, batch and budget, in one table (val AP, AP50, training images/s, batch-1 latency, ours/peer
ratios) and one AP-vs-latency PNG.

Each detector trains from its recipe (``configs/<name>.yaml``). Equal work is a number of optimizer steps by
default (``--steps``: ``train.max_steps``, the schedule spans them); ``--budget-minutes`` gives each the same
training time instead (``train.time_budget_s``: the schedule anneals over the budget), which on a shared
machine measures the machine as much as the model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from data_tools.atomic import atomic_write_text
from data_tools.errors import CannotRun, InvalidInput
from data_tools.figures import pyplot, save_png
from data_tools.sources import load_any
from data_tools.split import split_train_val
from data_tools.store import save_dataset
from detect.config import load_config
from detect.engine.runtime.run_dir import claim_run_dir
from detect.models.build import NAMES
from detect.tables import aligned, write_dicts_csv


def recipe_path(name: str, configs_dir: str | Path | None) -> Path:
    """``configs_dir/<name>.yaml``; by default ``./configs`` or the repository's ``configs/``."""
    candidates = [Path(configs_dir)] if configs_dir else [Path("configs"), Path(__file__).resolve().parents[2] / "configs"]
    for folder in candidates:
        if (folder / f"{name}.yaml").is_file():
            return folder / f"{name}.yaml"
    raise FileNotFoundError(f"recipe {name}.yaml not found in {', '.join(map(str, candidates))} (pass --configs DIR)")


def _splits(data: str | None, train: str | None, val: str | None, out: Path, seed: int) -> tuple[str, str]:
    if train and val:
        return train, val
    if not data:
        raise InvalidInput("compare needs --data DATASET.pkl (split 80/20 here) or both --train and --val")
    t, v = out / "split" / "train.pkl", out / "split" / "val.pkl"
    if not (t.is_file() and v.is_file()):
        train_rs, val_rs = split_train_val(load_any(data), 0.2, seed)
        save_dataset(train_rs, t)
        save_dataset(val_rs, v)
    return str(t), str(v)


def batch1_latency_ms(weights: Path, device: torch.device, image_size: int, iters: int = 10) -> float:
    """Median batch-1 latency (ms, postprocess included) of a checkpoint on ``device``."""
    from detect.engine.runtime.checkpoint import load_model
    from detect.tools.timing import time_inference

    model, _, cfg = load_model(weights)
    model = model.to(device)
    images = torch.randint(0, 255, (1, 3, image_size, image_size), dtype=torch.uint8, device=device)
    warmup = 3 if device.type == "cuda" else 1
    return time_inference(model, images, iters, warmup, device, cfg.train.amp)["ms_per_image"]


# torchvision's reference detection recipes (references/detection): SGD, momentum 0.9, warmup + cosine,
# horizontal flip only; lr 0.02 / wd 1e-4 for the FCOS, RetinaNet and Faster R-CNN recipes, lr 0.002 /
# wd 5e-4 for SSD300's. ``--peers-recipe torchvision`` trains each peer with its own.
_FLIP_ONLY = ["augment.affine_p=0", "augment.crop=0", "augment.mosaic=0", "augment.color_jitter=0", "augment.noise=0",
              "augment.blur=0", "augment.vflip=0", "augment.hflip=0.5"]
_SGD = ["train.optimizer=sgd", "train.momentum=0.9", "train.scheduler=cosine", "train.warmup_epochs=1"]
TORCHVISION_RECIPES: dict[str, list[str]] = {
    "ssd": _SGD + ["train.lr=0.002", "train.weight_decay=5e-4"] + _FLIP_ONLY,
    **{p: _SGD + ["train.lr=0.02", "train.weight_decay=1e-4"] + _FLIP_ONLY for p in ("fcos", "retinanet", "faster_rcnn")},
}


def _budget(steps: int | None, budget_minutes: float | None, train_images: int, batch: int) -> list[str]:
    """Overrides for equal work: ``steps`` optimizer steps (the schedule spans them) or a time budget."""
    if budget_minutes is not None:
        return [f"train.time_budget_s={budget_minutes * 60}", "train.epochs=100000"]
    per_epoch = max(1, train_images // batch)
    return [f"train.max_steps={steps}", f"train.epochs={math.ceil(steps / per_epoch)}"]


def run_compare(data: str | None = None, train: str | None = None, val: str | None = None,
                budget_minutes: float | None = None, models: tuple[str, ...] = NAMES, configs_dir: str | None = None,
                out: str | Path = "runs/compare", device: str = "auto", overrides: list[str] | None = None,
                seed: int = 0, log=print, steps: int | None = 300, peers: bool = False,
                peers_recipe: str = "torchvision") -> list[dict]:
    """Train and evaluate each detector (module doc); writes ``OUT/compare.{csv,json,png}`` (``OUT2``, ... when
    ``OUT`` holds an earlier comparison), returns the rows.

    Args:
        steps: equal work by optimizer steps (the default); ignored when ``budget_minutes`` is given.
        budget_minutes: equal work by training time instead (measures the machine as much as the model).
        peers: also train each detector's default torchvision peer (``DETECTORS[name].peers[0]``) on the same
            split, size, batch and budget, and add ours/peer ratios.
        peers_recipe: ``torchvision`` (:data:`TORCHVISION_RECIPES`: the peer's reference SGD recipe) or ``ours`` (it trains with
            our recipe's optimizer, schedule and augmentation): the difference splits a gap into recipe and
            architecture.
    """
    if peers_recipe not in ("torchvision", "ours"):
        raise InvalidInput(f"--peers-recipe must be torchvision or ours, got {peers_recipe!r}")
    if budget_minutes is None and (steps is None or steps < 1):
        raise InvalidInput("compare needs --steps N >= 1 or --budget-minutes M")
    out, lock = claim_run_dir(out)  # a new folder per comparison: runs/compare -> runs/compare2, ...
    try:
        return _compare_into(out, data, train, val, budget_minutes, models, configs_dir, device, overrides or [],
                             seed, log, steps, peers, peers_recipe)
    finally:
        lock.release()


def _compare_into(out: Path, data, train, val, budget_minutes: float | None, models: tuple[str, ...], configs_dir,
                  device: str, overrides: list[str], seed: int, log, steps: int | None, peers: bool,
                  peers_recipe: str) -> list[dict]:
    """:func:`run_compare` once its output folder ``out`` is claimed."""
    from detect.engine.runtime.device import resolve_device
    from detect.models.build import DETECTORS, PEER_PREFIX

    for name in models:
        if name not in DETECTORS:
            raise InvalidInput(f"unknown detector '{name}'; choose from {', '.join(DETECTORS)}")
    train_pkl, val_pkl = _splits(data, train, val, out, seed)
    train_images = len(load_any(train_pkl).records)
    dev = resolve_device(device)
    budget = f"{budget_minutes:g} min" if budget_minutes is not None else f"{steps} steps"
    rows = []
    for name in models:
        recipe = recipe_path(name, configs_dir)
        base = [f"data.train={train_pkl}", f"data.val={val_pkl}", "train.early_stop_patience=0",
                f"train.device={device}", *overrides]
        batch = load_config(recipe, base).train.batch_size
        base += _budget(steps, budget_minutes, train_images, batch)
        jobs = [(name, "ours", base + [f"train.out_dir={out / name}"])]
        if peers:
            peer = DETECTORS[name].peers[0]
            extra = TORCHVISION_RECIPES[peer] if peers_recipe == "torchvision" else []
            jobs.append((PEER_PREFIX + peer, name, base + extra + [f"model.name={PEER_PREFIX + peer}",
                                                                   f"train.out_dir={out / (PEER_PREFIX + peer)}"]))
        for label, family, over in jobs:
            row = _train_and_measure(label, recipe, over, val_pkl, dev, budget, log)
            row["peer_of"] = "" if family == "ours" else family
            rows.append(row)
    for r in rows:  # ours/peer ratios on each of our rows
        peer = next((p for p in rows if p["peer_of"] == r["model"]), None)
        r.update(_ratios(r, peer))
    meta = {"device": str(dev), "budget": budget, "steps": steps if budget_minutes is None else None,
            "budget_minutes": budget_minutes, "peers_recipe": peers_recipe if peers else None,
            "train": train_pkl, "val": val_pkl, "torch": torch.__version__}
    atomic_write_text(out / "compare.json", json.dumps({"meta": meta, "rows": rows}, indent=1))
    write_dicts_csv(rows, out / "compare.csv")
    plot_ap_latency(rows, out / "compare.png", f"{budget} on {dev}")
    log(format_table(rows))
    log(f"wrote {out / 'compare.csv'}, compare.json and compare.png")
    return rows


def _train_and_measure(label: str, recipe: Path, overrides: list[str], val_pkl: str, dev: torch.device, budget: str,
                       log) -> dict:
    """Train one detector (ours or a peer) from ``recipe`` + ``overrides``, evaluate its best checkpoint."""
    from detect.engine.training.trainer import fit
    from detect.report.train_report import best_checkpoint_report
    from detect.verbs.evaluate_weights import evaluate_weights

    cfg = load_config(recipe, overrides)
    log(f"[{label}] training for {budget} ({cfg.model.backbone}, {cfg.data.image_size} px, batch "
        f"{cfg.train.batch_size}, {cfg.train.optimizer} lr {cfg.train.lr:g})")
    def tagged(*parts) -> None:  # the run's progress, every line (tables too) marked with the detector's name
        for line in " ".join(map(str, parts)).splitlines():
            log(f"  [{label}] {line}")

    summary = fit(cfg, log=tagged, on_finish=best_checkpoint_report)
    if summary["best"] is None:
        raise CannotRun(f"[{label}] trained no epoch: raise --steps or --budget-minutes")
    metrics = evaluate_weights(summary["best"], val_pkl, device=str(dev), log=lambda *a: None)
    latency = batch1_latency_ms(Path(summary["best"]), dev, cfg.data.image_size)
    row = {"model": label, "AP": metrics["AP"], "AP50": metrics["AP50"], "AP75": metrics["AP75"],
           "epochs": summary["epochs"], "steps": summary["steps"], "train_s": summary["seconds"],
           "train_img_s": summary["images_per_s"], "latency_ms_b1": latency, "weights": summary["best"]}
    log(f"[{label}] AP {row['AP']:.4f}  AP50 {row['AP50']:.4f}  {row['steps']} steps  "
        f"{row['train_img_s']:.1f} img/s  {latency:.1f} ms/img (batch 1)")
    return row


def _ratios(ours: dict, peer: dict | None) -> dict:
    """ours/peer for AP, AP50 and training speed; peer/ours for latency (so > 1 is better for us everywhere)."""
    def div(a: float, b: float) -> float | str:
        return round(a / b, 3) if b > 0 else ""

    if peer is None or ours["peer_of"]:
        return {"peer": "", "ap_ratio": "", "ap50_ratio": "", "train_speed_ratio": "", "latency_ratio": ""}
    return {"peer": peer["model"], "ap_ratio": div(ours["AP"], peer["AP"]), "ap50_ratio": div(ours["AP50"], peer["AP50"]),
            "train_speed_ratio": div(ours["train_img_s"], peer["train_img_s"]),
            "latency_ratio": div(peer["latency_ms_b1"], ours["latency_ms_b1"])}


def format_table(rows: list[dict]) -> str:
    """The results table; with peers, a second table of ours/peer ratios (> 1: ours is better)."""
    head = ["model", "peer of", "val AP", "AP50", "steps", "epochs", "train img/s", "ms/img b1"]
    body = [[r["model"], r.get("peer_of", ""), f"{r['AP']:.4f}", f"{r['AP50']:.4f}", str(r["steps"]),
             str(r["epochs"]), f"{r['train_img_s']:.1f}", f"{r['latency_ms_b1']:.1f}"] for r in rows]
    text = aligned([head, *body], left=2)
    ratios = [r for r in rows if r.get("peer")]
    if ratios:
        head = ["ours / peer", "AP", "AP50", "train speed", "latency (peer/ours)"]
        body = [[f"{r['model']} / {r['peer']}", *(_ratio_cell(r[k]) for k in
                 ("ap_ratio", "ap50_ratio", "train_speed_ratio", "latency_ratio"))] for r in ratios]
        text += "\n\n" + aligned([head, *body], left=1)
    return text


def _ratio_cell(value: float | str) -> str:
    """``1.66x``; ``n/a`` without a peer value; ``>100x`` when the peer's value is near zero."""
    if value == "":
        return "n/a"
    return ">100x" if value > 100 else f"{value:.2f}x"


def plot_ap_latency(rows: list[dict], path: Path, title: str) -> None:
    """PNG: val AP (y) against batch-1 latency (x), one labelled point per detector; peers marked apart."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:  # ours: filled circles; torchvision peers: hollow squares
        peer = bool(r.get("peer_of"))
        ax.scatter(r["latency_ms_b1"], r["AP"], s=50, marker="s" if peer else "o",
                   facecolors="none" if peer else None, edgecolors="tab:gray" if peer else None,
                   label="torchvision peer" if peer else "ours")
        ax.annotate(r["model"], (r["latency_ms_b1"], r["AP"]), textcoords="offset points", xytext=(5, 5))
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=8)
    ax.set_xlabel("latency, ms/image at batch 1")
    ax.set_ylabel("val AP (COCO 0.5:0.95)")
    ax.set_title(f"AP against latency ({title})")
    ax.grid(alpha=0.3)
    save_png(fig, path, dpi=110, tight=True)
