"""``retail-detect demo``: the whole job on built-in synthetic shelves, in a few minutes on a CPU.

synth (JPEG + VOC XML) -> convert (validated dataset) -> split -> train SSD -> COCO eval -> predict
(drawn images + predictions.json). Every artefact lands under ``--out``.

Training is a step budget (``DEMO_EPOCHS`` epochs, the learning rate annealed over them), so a slow or
busy machine reaches the same model, only later. ``minutes`` is an upper bound on the training time:
when it ends training first, the schedule anneals by the time budget instead and the demo says so.
"""

from __future__ import annotations

import time
from pathlib import Path

from data_tools.convert import convert
from data_tools.errors import InvalidInput
from data_tools.split import split_train_val
from data_tools.store import save_dataset
from data_tools.synth import generate
from detect.config import config_from_dict
from detect.engine.runtime.run_dir import claim_run_dir

DEMO_CLASSES = 5
DEMO_SIZE = (320, 240)  # synthetic photo size (W, H)
DEMO_EPOCHS = 12  # the step budget: 12 epochs of the 80% split at batch 16 (72 steps with 120 images)


def demo_config(out: Path, minutes: float, device: str, train_pkl: Path, val_pkl: Path) -> dict:
    """The demo recipe: SSD on EfficientNet-Lite0 (ImageNet) at 224 px, AdamW, flips + colour jitter.

    ``minutes``: upper bound on the training time (0 = none); the run itself is ``DEMO_EPOCHS`` epochs.
    """
    return {
        "data": {"train": str(train_pkl), "val": str(val_pkl), "image_size": 224, "workers": 0},
        "model": {"name": "ssd", "backbone": "efficientnet_lite0", "backbone_weights": "imagenet"},
        "augment": {"hflip": 0.5, "color_jitter": 0.3},
        "train": {"epochs": DEMO_EPOCHS, "batch_size": 16, "optimizer": "adamw", "lr": 0.002, "weight_decay": 1e-4,
                  "warmup_epochs": 1, "scheduler": "cosine", "time_budget_s": minutes * 60, "eval_every": 4,
                  "device": device, "out_dir": str(out / "train"), "log_every": 10},
        "eval": {"batch_size": 16},
    }


def run_demo(out: str | Path = "demo_out", images: int = 120, minutes: float = 10.0, device: str = "auto",
             log=print) -> dict:
    """Run the demo into ``out`` (``out2``, ... when ``out`` holds an earlier demo); returns ``{"AP", "AP50",
    "weights", "predictions", "drawn", "seconds", "stopped_by", "out"}`` (``stopped_by``: None when all
    ``DEMO_EPOCHS`` epochs ran, else what ended training)."""
    start = time.perf_counter()
    if images < 10:
        raise InvalidInput("the demo needs at least 10 images")
    if minutes < 0:
        raise InvalidInput(f"--minutes must be >= 0 (0 = no time limit), got {minutes:g}")
    out, lock = claim_run_dir(out)  # a new folder per demo: demo_out -> demo_out2 when it holds an earlier one
    with lock:
        return _demo_into(out, images, minutes, device, log, start)


def _demo_into(out: Path, images: int, minutes: float, device: str, log, start: float) -> dict:
    """:func:`run_demo` once its output folder ``out`` is claimed."""
    from detect.engine.training.trainer import fit
    from detect.report.train_report import best_checkpoint_report
    from detect.verbs.evaluate_weights import evaluate_weights
    from detect.verbs.predict_run import run_predict

    log(f"[1/6] synth: {images} shelf photos -> {out / 'shelves'}")
    generate(out / "shelves", images=images, classes=DEMO_CLASSES, seed=0, size=DEMO_SIZE)
    log("[2/6] convert: VOC XML -> dataset")
    rs, problems, summary = convert(str(out / "shelves"), "voc", out / "shelves" / "classes.txt", False)
    if problems:
        log(f"  {len(problems)} problems (see retail-data convert for the report)")
    save_dataset(rs, out / "shelves.pkl")
    log(f"  {summary['images']} images, {summary['boxes']} boxes, {len(rs.class_names)} classes")
    log("[3/6] split: 80/20 stratified")
    train_rs, val_rs = split_train_val(rs, 0.2, 0)
    save_dataset(train_rs, out / "split" / "train.pkl")
    save_dataset(val_rs, out / "split" / "val.pkl")
    log(f"  train {len(train_rs.records)} / val {len(val_rs.records)} images")
    limit = f"at most {minutes:g} min" if minutes > 0 else "no time limit"
    log(f"[4/6] train: SSD on EfficientNet-Lite0 (ImageNet), {DEMO_EPOCHS} epochs ({limit})")
    cfg = config_from_dict(demo_config(out, minutes, device, out / "split" / "train.pkl", out / "split" / "val.pkl"))
    result = fit(cfg, log=log, on_finish=best_checkpoint_report)
    weights = Path(result["best"])
    log("[5/6] eval: COCO mAP on the val split")
    metrics = evaluate_weights(weights, out / "split" / "val.pkl", out / "eval.json", device=device, log=lambda *_: None)
    log(f"  AP {metrics['AP']:.3f}  AP50 {metrics['AP50']:.3f}  AP75 {metrics['AP75']:.3f}")
    log("[6/6] predict: val photos -> drawn images + predictions.json")
    val_images = [str(Path(val_rs.image_root) / r.image) for r in val_rs.records[:8]]
    pred = run_predict(weights, val_images, out / "predict", conf=0.4, device=device)
    seconds = time.perf_counter() - start
    pred_dir = out / Path(pred["out_dir"]).name  # out/predict, as the user named out (not resolved)
    drawn, predictions = pred_dir / "images", pred_dir / Path(pred["json"]).name
    log(f"done in {seconds:.0f} s: val mAP (AP) {metrics['AP']:.3f}, AP50 {metrics['AP50']:.3f}; "
        f"weights {weights}; drawn images in {drawn}/; detections in {predictions}")
    if result["stopped_by"]:
        log(f"note: the {minutes:g}-minute limit ended training after {result['epochs']}/{DEMO_EPOCHS} epochs "
            f"({result['steps']} steps), so this AP is below what the full run reaches; rerun with a larger "
            f"--minutes (0 = no limit)")
    return {"AP": metrics["AP"], "AP50": metrics["AP50"], "weights": str(weights), "drawn": str(drawn),
            "predictions": str(predictions), "seconds": seconds, "predict": pred,
            "stopped_by": result["stopped_by"], "out": str(out)}
