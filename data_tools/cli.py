"""``retail-data``: convert | stats | split | export-coco | synth.

Exit codes: 0 success; 1 ``convert --strict`` found something to skip or fix; 2 a user error (missing
or unusable input, refused output), printed as one ``error: ...`` line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from data_tools import __version__
from data_tools.atomic import refuse_overwrite
from data_tools.coco import CocoFormatError, write_coco
from data_tools.convert import ConvertError, blocking, convert, write_report
from data_tools.records import Problem
from data_tools.split import kfold, split_train_val
from data_tools.stats import compute_stats, format_stats, plot_stats
from data_tools.store import DatasetFileError, load_dataset, save_dataset

EXAMPLES = 5
USER_ERRORS = (ConvertError, CocoFormatError, DatasetFileError, ValueError, OSError)


class UserError(Exception):
    """A problem with the command line or its files, reported as ``error: ...`` (exit 2)."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="retail-data", description="Retail detection data tools.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("convert", help="VOC XML folder or COCO JSON -> dataset .pkl (+ problem report)")
    c.add_argument("src", help="folder searched recursively for VOC .xml, or a COCO .json file")
    c.add_argument("-o", "--output", required=True, help="dataset file to write (.pkl)")
    c.add_argument("--format", choices=["auto", "voc", "coco"], default="auto")
    c.add_argument("--classes", help="class names, one per line, in label order (others are skipped)")
    c.add_argument("--report", help="write every problem and the summary to this JSON file")
    c.add_argument("--strict", action="store_true", help="exit 1 (and write no dataset) if anything was skipped or fixed")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=cmd_convert)

    s = sub.add_parser("stats", help="counts, box sizes, objects per image")
    s.add_argument("dataset")
    s.add_argument("--json", action="store_true", help="print the statistics as JSON")
    s.add_argument("--plot", metavar="PNG", help="also save a plot")
    s.set_defaults(func=cmd_stats)

    sp = sub.add_parser("split", help="stratified train/val split or k folds")
    sp.add_argument("dataset")
    sp.add_argument("-o", "--output", required=True, metavar="DIR")
    sp.add_argument("--val", type=float, default=0.2, help="validation fraction (default 0.2)")
    sp.add_argument("--folds", type=int, default=0, metavar="K", help="write K folds instead of one split")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--by", choices=["rarest", "dominant"], default="rarest", help="class that stratifies an image")
    sp.set_defaults(func=cmd_split)

    e = sub.add_parser("export-coco", help="dataset .pkl -> COCO ground-truth JSON")
    e.add_argument("dataset")
    e.add_argument("-o", "--output", required=True, metavar="GT.json")
    e.set_defaults(func=cmd_export_coco)

    g = sub.add_parser("synth", help="generate a synthetic shelf dataset (JPEG + VOC XML)")
    g.add_argument("-o", "--output", required=True, metavar="DIR")
    g.add_argument("--images", type=int, default=64)
    g.add_argument("--classes", type=int, default=5)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--size", default="320x320", metavar="WxH")
    g.set_defaults(func=cmd_synth)

    b = sub.add_parser("browse", help="static HTML page of a dataset: boxes drawn, problems first, filter by class")
    b.add_argument("dataset")
    b.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="folder for index.html and the drawings (DIR2, ... when DIR holds files)")
    b.add_argument("--classes", default=None, help="only images holding these classes: a,b")
    b.add_argument("--max", type=int, default=None, metavar="N", help="at most N images (problems first)")
    b.add_argument("--augment", default=None, metavar="RECIPE.yaml",
                   help="also draw augmented training samples of each image (e.g. configs/yolo.yaml)")
    b.add_argument("--samples", type=int, default=3, help="augmented samples per image (default 3)")
    b.set_defaults(func=cmd_browse)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``retail-data`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed its message
        return int(e.code or 0)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # output piped into `head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except (UserError, *USER_ERRORS) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def _ensure_parent(path: str | os.PathLike) -> None:
    """Create the folder an output file goes into."""
    Path(path).resolve().parent.mkdir(parents=True, exist_ok=True)


def _example_problems(problems: list[Problem], n: int = EXAMPLES) -> list[Problem]:
    """Up to ``n`` problems in report order, the first of each kind preferred."""
    kinds: set[str] = set()
    firsts = [i for i, p in enumerate(problems) if not (p.kind in kinds or kinds.add(p.kind))]
    others = [i for i in range(len(problems)) if i not in set(firsts)]
    return [problems[i] for i in sorted((firsts + others)[:n])]


def _print_summary(s: dict, problems: list[Problem]) -> None:
    print(f"converted {s['source']} ({s['format']}): {s['inputs']} inputs in {s['seconds']:.2f} s")
    print(f"  images: {s['images']} ({s['images_skipped']} skipped, {s['empty_images']} without boxes)   "
          f"boxes: {s['boxes']} ({s['boxes_skipped']} skipped)   classes: {s['classes']}")
    print("  per class: " + ", ".join(f"{n} {c}" for n, c in s["per_class"].items()))
    if not problems:
        print("  problems: none")
        return
    kinds = ", ".join(f"{k} {v}" for k, v in s["problems_by_kind"].items())
    actions = ", ".join(f"{k} {v}" for k, v in s["problems_by_action"].items())
    print(f"  problems: {s['problems']} ({kinds}; {actions})")
    for p in _example_problems(problems):
        print(f"    {p}")
    if len(problems) > EXAMPLES:
        print(f"    ... {len(problems) - EXAMPLES} more (see --report)")


def cmd_convert(args: argparse.Namespace) -> int:
    if not os.path.exists(args.src):
        raise UserError(f"source {args.src} does not exist")
    if os.path.isdir(args.output):
        raise UserError(f"output {args.output} is a folder; give a file name like dataset.pkl")
    for out in filter(None, (args.output, args.report)):
        refuse_overwrite(out, [args.src] + ([args.classes] if args.classes else []))
    if args.report and Path(args.report).resolve() == Path(args.output).resolve():
        raise UserError("--report and -o name the same file")
    rs, problems, summary = convert(args.src, args.format, args.classes, progress=not args.quiet)
    inputs = {p.file for p in problems} | {r.source for r in rs.records}
    inputs |= {os.path.join(rs.image_root, r.image) for r in rs.records}
    for out in filter(None, (args.output, args.report)):
        refuse_overwrite(out, inputs)
    _print_summary(summary, problems)
    if args.report:
        _ensure_parent(args.report)
        write_report(args.report, summary, problems)
        print(f"  report: {args.report}")
    if not rs.records:
        raise UserError(f"no usable images in {args.src}: all {summary['inputs']} inputs were skipped; "
                        f"{args.output} not written")
    bad = blocking(problems)
    if args.strict and bad:
        print(f"error: --strict: {len(bad)} problems skipped or fixed an item; {args.output} not written",
              file=sys.stderr)
        return 1
    _ensure_parent(args.output)
    save_dataset(rs, args.output)
    print(f"  wrote {args.output}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    stats = compute_stats(load_dataset(args.dataset))
    print(json.dumps(stats, indent=1, ensure_ascii=False) if args.json else format_stats(stats))
    if args.plot:
        refuse_overwrite(args.plot, [args.dataset])
        _ensure_parent(args.plot)
        plot_stats(stats, args.plot)
        if not args.json:
            print(f"plot: {args.plot}")
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    rs = load_dataset(args.dataset)
    out = Path(args.output)
    if args.folds:
        parts = [(out / f"fold{i}", tr, va) for i, (tr, va) in enumerate(kfold(rs, args.folds, args.seed, args.by))]
    else:
        tr, va = split_train_val(rs, args.val, args.seed, args.by)
        parts = [(out, tr, va)]
    for d, _, _ in parts:
        for name in ("train.pkl", "val.pkl"):
            refuse_overwrite(d / name, [args.dataset])
    for d, tr, va in parts:
        d.mkdir(parents=True, exist_ok=True)
        save_dataset(tr, d / "train.pkl")
        save_dataset(va, d / "val.pkl")
        print(f"{d}: train {len(tr)} images ({sum(r.num_boxes for r in tr.records)} boxes), "
              f"val {len(va)} images ({sum(r.num_boxes for r in va.records)} boxes)")
    return 0


def cmd_export_coco(args: argparse.Namespace) -> int:
    refuse_overwrite(args.output, [args.dataset])
    rs = load_dataset(args.dataset)
    _ensure_parent(args.output)
    d = write_coco(rs, args.output)
    print(f"wrote {args.output}: {len(d['images'])} images, {len(d['annotations'])} annotations, "
          f"{len(d['categories'])} categories")
    return 0


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--size must look like 320x240, not {text!r}") from None
    if w < 16 or h < 16:
        raise UserError(f"--size {text} is too small (16x16 at least)")
    return w, h


def cmd_synth(args: argparse.Namespace) -> int:
    size = _parse_size(args.size)
    if args.images < 1 or args.classes < 1:
        raise UserError("--images and --classes must be at least 1")
    try:
        from data_tools.synth import generate
    except ImportError as e:
        raise UserError(f"the synthetic generator is not available ({e})") from None
    result = generate(args.output, args.images, args.classes, args.seed, size)
    print(f"wrote {args.images} synthetic images ({args.classes} classes, {size[0]}x{size[1]}) to {args.output}")
    if isinstance(result, dict) and "per_class" in result:
        per_class = ", ".join(f"{k} {v}" for k, v in result["per_class"].items())
        print(f"boxes: {result['boxes']} ({result['truncated']} cut by the border); per class: {per_class}")
    print(f"next: retail-data convert {args.output} -o {os.path.join(args.output, 'dataset.pkl')}")
    return 0


def cmd_browse(args: argparse.Namespace) -> int:
    from data_tools.browse import browse

    if args.max is not None and args.max < 1 or args.samples < 1:
        raise UserError("--max and --samples must be at least 1")
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    rs = load_dataset(args.dataset)
    r = browse(rs, args.output, classes, args.max, args.augment, args.samples, source=args.dataset)
    probs = ", ".join(f"{k} {v}" for k, v in r["problems"].items()) or "none"
    print(f"{r['shown']} of {r['images']} images drawn; images with problems: {probs}")
    print(f"wrote {r['index']}")
    return 0


if __name__ == "__main__":  # python -m data_tools.cli
    raise SystemExit(main())
