"""``retail-data``: convert | stats | split | export (export-coco) | synth | browse.

It runs in the frame both CLIs share (:mod:`data_tools.cli_frame`: ``--debug``, ``--version``, the one-line
``error:``, the exit codes, also in ``--help``): 0 success; 1 a user error (:mod:`data_tools.errors`) or
``convert --strict`` found something to skip or fix; 2 usage; 70 a bug (traceback); 130 interrupted;
141 stdout closed early (``| head``).

A verb that reads a dataset also takes a label folder or file of any format (converted once and cached,
:mod:`data_tools.sources`). Every verb checks its outputs before the work: an output never replaces one of the command's inputs or
an existing file of another kind (:mod:`data_tools.outputs`), its folder is probed for writability and
free space, and temporary files left there by an interrupted save are removed
(:mod:`data_tools.atomic`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from data_tools.atomic import atomic_write_text, same_file
from data_tools.cli_frame import add_frame_flags, exit_codes_help, run_cli, verb_parser
from data_tools.coco import image_root_of, write_coco
from data_tools.convert import blocking, convert, write_report
from data_tools.errors import UserError
from data_tools.formats import FORMATS
from data_tools.formats.csv_boxes import parse_columns
from data_tools.formats.export import IMAGE_MODES, check_export_folder, export_records, is_file_target
from data_tools.outputs import check_output, prepare_output_folder, refuse_overwrite
from data_tools.records import Problem
from data_tools.sources import load_any
from data_tools.split import kfold, split_by_field, split_train_val
from data_tools.stats import compute_stats, format_stats, plot_stats
from data_tools.store import save_dataset
from data_tools.summary_text import summary_lines
from data_tools.written import record_written
from detect.verbs.retail_data_synth import SYNTH_MAX_CLASSES, SYNTH_MAX_IMAGES, SYNTH_SIDE, cmd_synth

FORMAT_HELP = "; ".join(f"{f.name}: {f.tools}" for f in FORMATS.values())
MAX_FOLDS = 100
EXIT_CODES = exit_codes_help("convert --strict found something to skip or fix (no dataset written)")
OUT_FLAGS = ("-o", "--out", "--output")  # --out as in retail-detect; --output kept for scripts


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="retail-data", description="Retail detection data tools.", epilog=EXIT_CODES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_frame_flags(p)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("convert", help="labels of any format (VOC, COCO, YOLO, CVAT, Label Studio, CSV) -> dataset .pkl",
                       description=f"Formats: {FORMAT_HELP}.")
    c.add_argument("src", help="a VOC or YOLO folder; a COCO / Label Studio .json, CVAT .xml or .csv file (or a folder "
                               "holding one)")
    c.add_argument(*OUT_FLAGS, dest="output", required=True, help="dataset file to write (.pkl)")
    c.add_argument("--format", choices=["auto", *FORMATS], default="auto",
                   help="label format (default: detected, and the detected format is printed)")
    classes = c.add_mutually_exclusive_group()
    classes.add_argument("--classes", help="class names, one per line, in label order (others are skipped)")
    classes.add_argument("--classes-from", metavar="OTHER.pkl",
                         help="use the class list and order of another dataset (e.g. the training set's)")
    c.add_argument("--image-root", metavar="DIR",
                   help="folder the image names are relative to (coco, cvat, labelstudio, csv; default: the file's "
                        "folder, or the parent of an annotations/ folder for COCO)")
    c.add_argument("--csv-columns", metavar="KEY=NAME,...",
                   help="csv: column names, e.g. image=image_name,label=class (keys: image, x1, y1, x2, y2, label, "
                        "width, height)")
    c.add_argument("--report", help="write every problem and the summary to this JSON file")
    c.add_argument("--strict", action="store_true", help="exit 1 (and write no dataset) if anything was skipped or fixed")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=cmd_convert)

    s = sub.add_parser("stats", help="counts, box sizes, objects per image",
                       usage="%(prog)s [-h] [--json [FILE]] [--plot PNG] dataset")
    s.add_argument("dataset", nargs="?", help="dataset .pkl, or a label folder or file (converted and cached)")
    s.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="the statistics as JSON: alone, printed; --json FILE writes them there")
    s.add_argument("--plot", metavar="PNG", help="also save a plot")
    s.set_defaults(func=cmd_stats)

    sp = sub.add_parser("split", help="stratified train/val split or k folds (or the splits the labels came with)")
    sp.add_argument("dataset", help="dataset .pkl, or a label folder or file (converted and cached)")
    sp.add_argument(*OUT_FLAGS, dest="output", required=True, metavar="DIR")
    sp.add_argument("--val", type=float, default=None,
                    help="validation fraction (default 0.2); given, it also re-splits labels that came split "
                         "(a YOLO export's train/val/test folders, CVAT subsets)")
    sp.add_argument("--folds", type=int, default=0, metavar="K", help=f"write K folds (2..{MAX_FOLDS}) instead of one split")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--by", choices=["rarest", "dominant"], default="rarest", help="class that stratifies an image")
    sp.set_defaults(func=cmd_split)

    x = sub.add_parser("export", help="dataset -> labels in another tool's format (with the images, or one file)",
                       description=f"Formats: {FORMAT_HELP}.")
    x.add_argument("dataset", help="dataset .pkl, or a label folder or file (converted and cached)")
    x.add_argument("--format", required=True, choices=list(FORMATS))
    x.add_argument(*OUT_FLAGS, dest="output", required=True, metavar="OUT",
                   help="a new folder (the tool's layout, images beside the labels), or for coco / labelstudio / cvat "
                        "/ csv a file ending in .json / .json / .xml / .csv (the labels alone)")
    x.add_argument("--images", choices=IMAGE_MODES, default="copy",
                   help="folder export: copy the images (default), hard-link them (copied where links are "
                        "impossible), or leave them out")
    x.set_defaults(func=cmd_export)

    e = sub.add_parser("export-coco", help="dataset -> one COCO ground-truth JSON (= export --format coco -o GT.json)")
    e.add_argument("dataset", help="dataset .pkl, or a label folder or file (converted and cached)")
    e.add_argument(*OUT_FLAGS, dest="output", required=True, metavar="GT.json")
    e.set_defaults(func=cmd_export_coco)

    g = sub.add_parser("synth", help="generate a synthetic shelf dataset (JPEG + VOC XML)")
    g.add_argument(*OUT_FLAGS, dest="output", required=True, metavar="DIR")
    g.add_argument("--images", type=int, default=64, help=f"1..{SYNTH_MAX_IMAGES:,} (default 64)")
    g.add_argument("--classes", type=int, default=None,
                   help=f"1..{SYNTH_MAX_CLASSES} (default 5; 12 with --dense)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--size", default=None, metavar="WxH",
                   help=f"image size WxH, or S for SxS; {SYNTH_SIDE[0]}..{SYNTH_SIDE[1]} pixels a side (default "
                        "320x320; 640x640 with --dense)")
    g.add_argument("--dense", action="store_true",
                   help="dense shop shelves: 40-90 small, tightly packed products per 640x640 photo, mostly bottles, "
                        "look-alike brands in groups of three")
    g.add_argument("--planogram", metavar="PLAN.yaml", help="draw the shelves of this plan and write truth.json")
    g.add_argument("--out-of-stock", type=float, default=0.0, metavar="F",
                   help="with --planogram: fraction of planned facings left out (a gap)")
    g.add_argument("--misplace", type=float, default=0.0, metavar="F",
                   help="with --planogram: fraction of planned facings replaced by another SKU")
    g.set_defaults(func=cmd_synth)

    b = sub.add_parser("browse", help="static HTML page of a dataset: boxes drawn, problems first, filter by class")
    b.add_argument("dataset", help="dataset .pkl, or a label folder or file (converted and cached)")
    b.add_argument(*OUT_FLAGS, dest="output", required=True, metavar="DIR",
                   help="folder for index.html and the drawings (DIR2, ... when DIR holds files)")
    b.add_argument("--classes", default=None, help="only images holding these classes: a,b")
    b.add_argument("--max", type=int, default=None, metavar="N", help="at most N images (problems first)")
    b.add_argument("--augment", default=None, metavar="RECIPE.yaml",
                   help="also draw augmented training samples of each image (e.g. configs/yolo.yaml)")
    b.add_argument("--samples", type=int, default=3, help="augmented samples per image, 1..16 (default 3)")
    b.set_defaults(func=cmd_browse)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``retail-data`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code (:func:`run_cli`)."""
    parser = _parser()

    def adjust(args: argparse.Namespace, extra: list[str]) -> list[str]:
        """``stats --json DATASET`` (the old flag before the dataset): the path is the dataset, JSON printed."""
        if args.command == "stats" and args.dataset is None:
            if args.json in (None, "-"):
                verb_parser(parser, args).error("the following arguments are required: dataset")
            args.dataset, args.json = args.json, "-"
        return extra

    return run_cli(parser, argv, adjust)


def _parent(path: str | os.PathLike) -> Path:
    return Path(path).parent


def _print_summary(s: dict, problems: list[Problem], shown: str | None = None) -> None:
    print("\n".join(summary_lines(s, problems, shown=shown)))


def cmd_convert(args: argparse.Namespace) -> int:
    if not os.path.lexists(args.src):
        raise UserError(f"source {args.src} does not exist")
    if os.path.isdir(args.output):
        raise UserError(f"output {args.output} is a folder; give a file name like dataset.pkl")
    if args.report and same_file(args.report, args.output):
        raise UserError("--report and -o name the same file")
    given = [args.src] + [p for p in (args.classes, args.classes_from) if p]
    src_dir = args.src if os.path.isdir(args.src) else image_root_of(args.src)
    input_dirs = [src_dir] + ([args.image_root] if args.image_root else [])
    check_output(args.output, "dataset", given, input_dirs)
    if args.report:
        check_output(args.report, "report", given, input_dirs)
    for folder in dict.fromkeys(_parent(p) for p in filter(None, (args.output, args.report))):
        prepare_output_folder(folder)
    class_names = load_any(args.classes_from).class_names if args.classes_from else None
    columns = parse_columns(args.csv_columns) if args.csv_columns else None
    rs, problems, summary = convert(args.src, args.format, args.classes, progress=not args.quiet,
                                    class_names=class_names, image_root=args.image_root, csv_columns=columns)
    inputs = {p.file for p in problems} | {r.source for r in rs.records}
    inputs |= {os.path.join(rs.image_root, r.image) for r in rs.records}
    for out in filter(None, (args.output, args.report)):
        refuse_overwrite(out, inputs)
    _print_summary(summary, problems, args.src)
    if rs.records and summary["boxes"] == 0:
        print(f"warning: no boxes at all in {args.src}: all {summary['images']} images would train as background; "
              "check the annotations and the class list", file=sys.stderr)
    if args.report:
        write_report(args.report, summary, problems)
        print(f"  report: {args.report}")
    if not rs.records:
        hint = ""
        if any(p.kind == "missing_image" for p in problems) and args.image_root is None:
            hint = f"; images are looked for under {rs.image_root}: give --image-root DIR when they are elsewhere"
        raise UserError(f"no usable images in {args.src}: all {summary['inputs']} inputs were skipped; "
                        f"{args.output} not written{hint}")
    bad = blocking(problems)
    if args.strict and bad:
        print(f"error: --strict: {len(bad)} problems skipped or fixed an item; {args.output} not written",
              file=sys.stderr)
        return 1
    save_dataset(rs, args.output)
    print(f"  wrote {args.output}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    """Print the statistics (as JSON with ``--json``); ``--json FILE`` writes the JSON there and prints the table."""
    to_file = args.json not in (None, "-")
    for path, kind in ((args.plot, "plot"), (args.json if to_file else None, "stats")):
        if path:
            check_output(path, kind, [args.dataset])
    if args.plot and to_file and same_file(args.plot, args.json):
        raise UserError("--plot and --json name the same file")
    for folder in dict.fromkeys(_parent(p) for p in (args.plot, args.json if to_file else None) if p):
        prepare_output_folder(folder)
    stats = compute_stats(load_any(args.dataset))
    text = json.dumps(stats, indent=1, ensure_ascii=False)
    print(text if args.json == "-" else format_stats(stats))
    if to_file:
        atomic_write_text(args.json, text + "\n")
        print(f"json: {args.json}")
    if args.plot:
        plot_stats(stats, args.plot)
        if args.json != "-":
            print(f"plot: {args.plot}")
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UserError(f"output folder {out} is a file")
    if args.folds and not 2 <= args.folds <= MAX_FOLDS:
        raise UserError(f"--folds must be between 2 and {MAX_FOLDS}, not {args.folds}")
    dirs = [out / f"fold{i}" for i in range(args.folds)] if args.folds else [out]
    for d in dirs:
        for name in ("train.pkl", "val.pkl", "test.pkl"):
            check_output(d / name, "dataset", [args.dataset])
    for d in dirs:
        prepare_output_folder(d)
    rs = load_any(args.dataset)
    if args.folds:
        parts = [(d, {"train": tr, "val": va}) for d, (tr, va) in zip(dirs, kfold(rs, args.folds, args.seed, args.by))]
    elif args.val is None and any(r.split for r in rs.records):
        parts = [(out, split_by_field(rs))]
        print(f"{args.dataset} came split ({', '.join(parts[0][1])}): kept as it is (--val F splits it again)")
    else:
        tr, va = split_train_val(rs, 0.2 if args.val is None else args.val, args.seed, args.by)
        parts = [(out, {"train": tr, "val": va})]
    for d, named in parts:
        for name in named:
            check_output(d / f"{name}.pkl", "dataset", [args.dataset])
    for d, named in parts:  # save_dataset creates the folders
        for name, part in named.items():
            save_dataset(part, d / f"{name}.pkl")
        print(f"{d}: " + ", ".join(f"{name} {len(p)} images ({sum(r.num_boxes for r in p.records)} boxes)"
                                   for name, p in named.items()))
    return 0


def _export_checks(args: argparse.Namespace, kind: str | None):
    """Refusals before any work: the input itself, the annotations the dataset came from, a file of another kind.

    Returns the dataset when it had to be read for the checks (a ``.pkl``), else None.
    """
    refuse_overwrite(args.output, [args.dataset])
    if kind is None:  # a folder export
        check_export_folder(args.output, None)
        prepare_output_folder(args.output)
        return None
    rs = None
    if os.path.isfile(args.dataset) and args.dataset.lower().endswith(".pkl"):
        rs = load_any(args.dataset)
        meta = rs.meta
        for key in ("source", "classes_file", "annotation_file"):
            src = meta.get(key)
            if isinstance(src, str) and same_file(args.output, src):
                raise UserError(f"refusing to write {args.output}: it is the "
                                f"{'classes' if key == 'classes_file' else 'annotation'} file this dataset was converted from")
    check_output(args.output, kind, [args.dataset], [args.dataset] if os.path.isdir(args.dataset) else [])
    prepare_output_folder(_parent(args.output))
    return rs


def cmd_export(args: argparse.Namespace) -> int:
    single = is_file_target(args.format, args.output)
    rs = _export_checks(args, args.format if single else None) or load_any(args.dataset)
    r = export_records(rs, args.format, args.output, args.images)
    for p in r["problems"]:
        print(f"  {p}", file=sys.stderr)
    what = f"{r['records']} images, {r['boxes']} boxes, {rs.num_classes} classes"
    if single:
        print(f"wrote {args.output} ({args.format}): {what}; image names are relative to {rs.image_root} "
              f"(read it back with --image-root {rs.image_root})")
    else:
        placed = {"copy": "copied", "link": "linked", "none": "left out"}[args.images]
        print(f"wrote {args.output} ({args.format}): {what}; images {placed}" + (
            f" ({r['images']})" if args.images != "none" else ""))
    return 1 if r["problems"] and not r["records"] else 0


def cmd_export_coco(args: argparse.Namespace) -> int:
    rs = _export_checks(args, "coco") or load_any(args.dataset)
    d = write_coco(rs, args.output)
    record_written(args.output)
    print(f"wrote {args.output}: {len(d['images'])} images, {len(d['annotations'])} annotations, "
          f"{len(d['categories'])} categories")
    return 0


def cmd_browse(args: argparse.Namespace) -> int:
    from detect.report.browse import MAX_SAMPLES, browse

    if args.max is not None and args.max < 1:
        raise UserError(f"--max must be at least 1, not {args.max}")
    if not 1 <= args.samples <= MAX_SAMPLES:
        raise UserError(f"--samples must be between 1 and {MAX_SAMPLES}, not {args.samples}")
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    rs = load_any(args.dataset)
    r = browse(rs, args.output, classes, args.max, args.augment, args.samples, source=args.dataset)
    probs = ", ".join(f"{k} {v}" for k, v in r["problems"].items()) or "none"
    print(f"{r['shown']} of {r['images']} images drawn; images with problems: {probs}")
    print(f"wrote {r['index']}")
    return 0


if __name__ == "__main__":  # python -m detect.verbs.retail_data
    raise SystemExit(main())
