"""`retail-detect`: train, eval, predict, audit, bench, tune, compare, export, demo, gallery, embedder, gallery-bench.

Each verb parses its arguments here and calls one plain function of the package; imports are lazy so
`retail-detect --help` is instant.

It runs in the frame both CLIs share (:mod:`data_tools.cli_frame`): 0 success; 1 a user error (bad config
or override, missing or unusable file, refused output: :mod:`data_tools.errors`), printed as one
``error: ...`` line on stderr, or ``predict`` / ``audit`` found no image it could read; 2 usage; 70 a bug,
its traceback printed (``--debug`` shows the traceback of a user error too); 130 interrupted; 141 stdout
closed early.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from data_tools.cli_frame import add_frame_flags, comma_list, exit_codes_help, run_cli, square_size
from data_tools.errors import InvalidInput
from detect.engine.runtime.threads import openmp_env_defaults


def _train(args: argparse.Namespace) -> int:
    from detect.config import load_config
    from detect.engine.training.trainer import fit
    from detect.report.train_report import best_checkpoint_report

    overrides = list(args.overrides)
    if args.exist_ok:
        overrides.append("train.exist_ok=true")
    if args.resume:
        from detect.engine.training.resume import resume_config

        cfg = resume_config(args.resume, args.config, overrides)
    elif args.config is None:
        raise InvalidInput("train needs --config RECIPE.yaml (or --resume runs/x/last.pt to continue a run)")
    else:
        cfg = load_config(args.config, overrides)
    result = fit(cfg, on_finish=best_checkpoint_report)  # best.pt's table and report/index.html (rank 0)
    from detect.engine.training.run_checkpoints import human_bytes

    best = f"best val AP {result['best_map']:.4f} at epoch {result['best_epoch']}; " if result["best_epoch"] > 0 else ""
    part = f" ({result['session_steps']} in this session)" if result["session_steps"] != result["steps"] else ""
    print(f"{best}{result['epochs']} epochs, {result['steps']} steps{part}, {result['seconds']:.0f} s of training "
          f"({result['images_per_s']:.1f} img/s)")
    written = [f"{result[k]} ({k})" for k in ("best", "last") if result.get(k)]
    size = f" ({human_bytes(result['checkpoint_bytes'])} on disk)"
    print(f"run folder {result['out_dir']}: " + (f"checkpoints {', '.join(written)}{size}; metrics "
                                                f"{result['out_dir']}/metrics.csv"
                                                if written else "no epoch trained, no checkpoint written"))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from detect.verbs.evaluate_weights import evaluate_weights

    printed = args.json == "-"  # --json alone: the metrics JSON is stdout, the table goes to stderr
    metrics = evaluate_weights(
        args.weights, args.data, out_json=None if printed else args.json, device=args.device,
        batch_size=args.batch, proposals=args.proposals, report=args.report, conf=args.conf,
        agnostic_nms=args.agnostic_nms, log=_to_stderr if printed else print, gallery=args.gallery,
        embedder=args.embedder, tile=args.tile, tile_size=args.tile_size, tile_overlap=args.overlap,
    )
    if printed:
        print(json.dumps({k: v for k, v in metrics.items() if k != "pr_curve"}, indent=1))
    return 0


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def _predict(args: argparse.Namespace) -> int:
    from detect.verbs.predict_run import run_predict

    summary = run_predict(
        args.weights, args.sources, args.out, conf=args.conf, device=args.device, csv=args.csv,
        draw=not args.no_draw, tile=args.tile, tile_size=args.tile_size, tile_overlap=args.overlap,
        rows=not args.no_rows, batch_size=args.batch,
        proposals=args.proposals, exist_ok=args.exist_ok, save_labels=args.save_labels,
        link_photos=args.link, agnostic_nms=args.agnostic_nms, gallery=args.gallery, embedder=args.embedder,
        unknown_below=args.unknown_below, resume=args.resume, ray=args.ray, ray_workers=args.ray_workers,
    )
    counts = ", ".join(f"{k} {v}" for k, v in summary.get("class_counts", {}).items())
    if "detector_counts" in summary:  # named by a gallery: the detector's classes, then the SKUs apart
        counts = (", ".join(f"{k} {v}" for k, v in summary["detector_counts"].items()) or "none") + (
            f"; by SKU ({summary['gallery']['skus']} in the gallery): {counts or 'none'}")
    for key in ("json", "csv", "out_dir"):
        if summary.get(key):
            summary[key] = _short(summary[key])
    print(f"{summary['images']} images ({summary['errors']} skipped, {summary.get('tiled_images', 0)} tiled), "
          f"{summary['detections']} detections: {counts or 'none'}")
    print(f"{summary['images_per_s']:.1f} images/s on {summary['device']}; wrote {summary['json']}"
          + (f", {summary['csv']}" if summary.get("csv") else "")
          + (f", {summary['drawn']} drawn images in {Path(summary['out_dir']) / 'images'}/" if summary.get("drawn") else ""))
    lab = summary.get("labels")
    if lab:
        print(f"labels ({lab['format']}, {lab['boxes']} boxes on {lab['images']} images"
              + (f", {lab['dropped']} boxes under 1 px left out" if lab["dropped"] else "")
              + f") in {_short(lab['dir'])}/: open them in the labelling tool to correct, then "
              f"retail-data convert {_short(lab['dir'])} -o corrected.pkl")
        for p in lab["problems"]:
            print(f"warning: {p['file']}: {p['reason']}", file=sys.stderr)
    return 1 if summary.get("images", 0) == 0 else 0


def _export(args: argparse.Namespace) -> int:
    from detect.tools.export import export_model

    if args.int8_dynamic:
        from detect.tools.quantize import refuse_dynamic

        refuse_dynamic()  # one line with the reason, before anything is read or written
    export_model(args.weights, args.format, args.out, batch=args.batch, image_size=args.size, check=not args.no_check,
                 int8=args.int8, calib=args.calib, calib_images=args.calib_images, quantizer=args.quantizer)
    return 0


def _tune(args: argparse.Namespace) -> int:
    from detect.tools.tune import run_tune

    run_tune(args.config, args.grid, args.overrides, folds=args.folds, epochs=args.epochs, out=args.out, seed=args.seed)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from detect.models.build import NAMES
    from detect.tools.compare import run_compare

    run_compare(args.data, args.train, args.val, args.budget_minutes, tuple(_names(args.models, NAMES)),
                args.configs, args.out, args.device, args.overrides, steps=args.steps, peers=args.peers,
                peers_recipe=args.peers_recipe)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from detect.tools.demo import run_demo

    run_demo(args.out, images=args.images, minutes=args.minutes, device=args.device)
    return 0


def _names(text: str | None, default: tuple[str, ...]) -> list[str]:
    """``"ssd, yolo"`` -> ``["ssd", "yolo"]``; None -> every registered detector."""
    return list(default) if text is None else comma_list(text)


def _audit(args: argparse.Namespace) -> int:
    from detect.audit.report import format_summary
    from detect.audit.run import run_audit

    result = run_audit(
        args.weights, args.sources, args.out, planogram=args.planogram, conf=args.conf, device=args.device,
        tile=args.tile, tile_size=args.tile_size, tile_overlap=args.overlap, truth=args.truth, min_gap=args.min_gap, brand_sep=args.brand_sep, draw=not args.no_draw,
        batch_size=args.batch, gallery=args.gallery, embedder=args.embedder, unknown_below=args.unknown_below,
    )
    print("\n".join(format_summary(result)))
    return 1 if result["summary"]["photos"] == 0 else 0


def _short(path: str) -> str:
    """``path`` relative to the working folder when it lies inside it."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def _agnostic_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agnostic-nms", action=argparse.BooleanOptionalAction, default=None,
                   help="one NMS over all classes (one box per product on dense shelves); default: as trained "
                        "(model.agnostic_nms)")


def _tile_flags(p: argparse.ArgumentParser, default: str = "auto") -> None:
    p.add_argument("--tile", choices=["auto", "on", "off"], default=default,
                   help=f"tiled inference for large photos (default {default}; auto: tiled when the objects found in "
                        "the whole photo are small at the model's input size)")
    p.add_argument("--tile-size", type=int, default=None, metavar="PX",
                   help="tile side in photo pixels (default: 2 x the model input size)")
    p.add_argument("--overlap", type=float, default=0.2, metavar="FRAC",
                   help="fraction of the tile side neighbouring tiles share, in [0, 1) (default 0.2)")


def _gallery_flags(p: argparse.ArgumentParser, unknown: bool = True) -> None:
    p.add_argument("--gallery", default=None, metavar="GALLERY",
                   help="name every box by this SKU gallery (`retail-detect gallery build`): class names become SKUs")
    p.add_argument("--embedder", default=None, help="with --gallery: its embedder (imagenet or a checkpoint; "
                   "default: the one the gallery names)")
    if unknown:
        p.add_argument("--unknown-below", type=float, default=None, metavar="SIM",
                       help="with --gallery: a box less similar than this to every SKU is `unknown` (default: the "
                            "gallery's calibrated threshold)")


def build_parser() -> argparse.ArgumentParser:
    from detect.verbs.predict_stream import add_stream_flags

    parser = argparse.ArgumentParser(prog="retail-detect", description=__doc__.splitlines()[0],
                                     epilog=exit_codes_help("predict / audit read no image"),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_frame_flags(parser)
    sub = parser.add_subparsers(dest="verb", required=True)

    p = sub.add_parser("train", help="train a detector from a recipe YAML")
    p.add_argument("--config", default=None, help="recipe YAML, e.g. configs/ssd.yaml (not needed with --resume)")
    p.add_argument("--resume", default=None,
                   help="continue a run from its checkpoint (e.g. runs/ssd/last.pt), in its own folder, with its "
                        "recipe; only budget/device keys (train.epochs, train.device, ...) may be overridden")
    p.add_argument("--exist-ok", action="store_true",
                   help="write into train.out_dir even if it holds a run (default: runs/ssd -> runs/ssd2, ...)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.lr=0.01")
    p.set_defaults(func=_train)

    p = sub.add_parser("eval", help="COCO mAP of a checkpoint on a dataset (.pkl or labels)")
    p.add_argument("--weights", required=True)
    p.add_argument("--data", required=True,
                   help="dataset .pkl (retail-data convert/split), or a label folder / file of any format (converted "
                        "in the checkpoint's class order and cached)")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="metrics (and per-class AP) as JSON: --json FILE writes them there (with FILE's stem "
                        "_results.json and _pr.png beside it); --json alone prints them (the table goes to stderr)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--proposals", default=None, help="Fast R-CNN: external proposals JSON (skips the RPN)")
    _agnostic_flag(p)
    _tile_flags(p, "off")
    p.add_argument("--report", default=None, metavar="DIR",
                   help="write an HTML report (DIR/index.html, metrics.json, per_class.csv); DIR2, ... when DIR holds files")
    p.add_argument("--conf", type=float, default=None,
                   help="confidence of the report's counts and galleries (default: the one that miscounts least)")
    _gallery_flags(p, unknown=False)
    p.set_defaults(func=_eval)

    p = sub.add_parser("predict", help="detect products in images, folders or globs")
    p.add_argument("--weights", required=True)
    p.add_argument("sources", nargs="+", help="image files, folders (recursive) or globs")
    p.add_argument("-o", "--out", default="runs/predict",
                   help="output folder (never an input folder); when it holds files: runs/predict2, ...")
    p.add_argument("--exist-ok", action="store_true", help="write into --out even if it holds an earlier run")
    p.add_argument("--conf", type=float, default=0.25, help="score threshold")
    p.add_argument("--device", default="auto")
    p.add_argument("--csv", action="store_true", help="also write predictions.csv")
    p.add_argument("--no-draw", action="store_true", help="do not write annotated images")
    p.add_argument("--no-rows", action="store_true", help="do not group detections into shelf rows")
    _tile_flags(p)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--proposals", default=None,
                   help="Fast R-CNN: external proposals JSON {image: [[x1, y1, x2, y2], ...]} (skips the RPN)")
    _agnostic_flag(p)
    p.add_argument("--save-labels", choices=["voc", "coco", "yolo", "cvat", "labelstudio"], default=None,
                   help="also write the detections as labels of this format in OUT/labels/ (with copies of the "
                        "photos beside them) to correct in labelImg, CVAT or Label Studio")
    _gallery_flags(p)
    p.add_argument("--link", action="store_true",
                   help="with --save-labels: hard-link the photos instead of copying them (no extra disk space, "
                        "but a photo edited in place there changes the original too)")
    add_stream_flags(p)
    p.set_defaults(func=_predict)

    p = sub.add_parser("audit", help="shelf audit: planogram compliance, out-of-stock gaps, share of shelf")
    p.add_argument("--weights", required=True)
    p.add_argument("sources", nargs="+", help="photos: files, folders (recursive) or globs")
    p.add_argument("--planogram", default=None, help="plan YAML/JSON (configs/planogram_example.yaml); "
                   "without it: rows, gaps and share of shelf only")
    p.add_argument("-o", "--out", default="runs/audit", help="output folder (a new or empty one; never a photo folder)")
    p.add_argument("--conf", type=float, default=0.15,
                   help="score threshold (lower than predict's: a missed product reads as an empty slot)")
    p.add_argument("--truth", default=None, help="truth.json of `retail-data synth --planogram`: measure the audit")
    p.add_argument("--min-gap", type=float, default=0.4, help="gap: wider than this x the row's median product width")
    p.add_argument("--brand-sep", default="_", help="brand = class name up to this separator (unless the plan maps it)")
    p.add_argument("--device", default="auto")
    _tile_flags(p)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--no-draw", action="store_true", help="do not write the drawn photos")
    _gallery_flags(p)
    p.set_defaults(func=_audit)

    from detect.tools.bench_cli import add_bench_parser

    add_bench_parser(sub)

    p = sub.add_parser("tune", help="grid search of recipe keys, ranked by val AP (optionally k-fold)")
    p.add_argument("--config", required=True)
    p.add_argument("--grid", nargs="+", required=True, metavar="KEY=V1,V2", help="e.g. train.lr=0.1,0.01,0.001")
    p.add_argument("--folds", type=int, default=0, help="k-fold cross-validation of data.train (k >= 2)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (default: the recipe's)")
    p.add_argument("-o", "--out", default="runs/tune")
    p.add_argument("--seed", type=int, default=0, help="fold assignment seed")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides for every run")
    p.set_defaults(func=_tune)

    p = sub.add_parser("compare", help="our detectors (and torchvision's peers): same split, backbone, size and budget")
    p.add_argument("--data", default=None,
                   help="dataset .pkl or label folder / file, split 80/20 here (or give --train and --val)")
    p.add_argument("--train", default=None, help="dataset .pkl or label folder / file")
    p.add_argument("--val", default=None, help="dataset .pkl or label folder / file")
    p.add_argument("--steps", type=int, default=300, help="optimizer steps per detector: equal work (default 300)")
    p.add_argument("--budget-minutes", type=float, default=None,
                   help="train each detector for this many minutes instead of --steps")
    p.add_argument("--peers", action="store_true",
                   help="also train each detector's torchvision peer (FCOS, Faster R-CNN, SSD) at equal work")
    p.add_argument("--peers-recipe", choices=["torchvision", "ours"], default="torchvision",
                   help="peers train with torchvision's reference recipe (SGD, warmup + cosine, flip only) or ours")
    p.add_argument("--models", default=None, help="comma-separated detector names (default: every registered detector)")
    p.add_argument("--configs", default=None, help="folder of the recipes (default: ./configs, else the checkout's configs/)")
    p.add_argument("-o", "--out", default="runs/compare")
    p.add_argument("--device", default="auto")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides for every detector")
    p.set_defaults(func=_compare)

    p = sub.add_parser("export", help="checkpoint -> self-contained ONNX / OpenVINO model (NMS inside), checked "
                       "against PyTorch")
    p.add_argument("--weights", required=True)
    p.add_argument("--format", choices=["onnx", "openvino"], default="onnx")
    p.add_argument("-o", "--out", default=None, help="output file, .onnx or .xml (default: beside the weights)")
    p.add_argument("--size", type=square_size, default=None, metavar="S",
                   help="input side S (or SxS; default: the training size)")
    p.add_argument("--batch", type=int, default=1, help="batch of the example input (the batch axis stays dynamic)")
    p.add_argument("--int8", action="store_true", help="static INT8 post-training quantisation (needs --calib)")
    p.add_argument("--calib", default=None, metavar="DATASET",
                   help="with --int8: your own photos to calibrate on (dataset .pkl or label folder)")
    p.add_argument("--calib-images", type=int, default=100, metavar="N", help="with --int8: photos used (default 100)")
    p.add_argument("--quantizer", choices=["auto", "onnxruntime", "nncf"], default="auto",
                   help="with --int8: ONNX Runtime QDQ or OpenVINO NNCF (auto: the one measured faster for this "
                        "head and format, see docs/deploy.md)")
    p.add_argument("--int8-dynamic", action="store_true",
                   help="refused: dynamic INT8 runs conv nets slower than FP32; use --int8 --calib DATASET")
    p.add_argument("--no-check", action="store_true", help="skip running the export against PyTorch")
    p.set_defaults(func=_export)

    p = sub.add_parser("demo", help="synthetic shelves -> train SSD -> mAP -> annotated images, on the CPU")
    p.add_argument("-o", "--out", default="demo_out")
    p.add_argument("--images", type=int, default=120)
    p.add_argument("--minutes", type=float, default=10.0,
                   help="upper bound on training minutes (the demo trains 12 epochs; 0 = no limit)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_demo)

    from detect.tools.gallery_bench_cli import add_gallery_bench_parser
    from detect.verbs.embedder_cli import add_embedder_parser
    from detect.verbs.gallery_cli import add_gallery_parser

    add_gallery_parser(sub)
    add_embedder_parser(sub)
    add_gallery_bench_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``retail-detect`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code (:func:`run_cli`)."""
    openmp_env_defaults()  # idle OpenMP threads sleep (set before torch loads), unless the user chose
    return run_cli(build_parser(), argv, _late_overrides)


def _late_overrides(args: argparse.Namespace, extra: list[str]) -> list[str]:
    """``train``'s ``key=value`` overrides may come before and after ``--resume``: take the later ones."""
    if extra and args.verb in ("train", "embedder") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
        return []
    return extra


if __name__ == "__main__":
    raise SystemExit(main())
