"""`retail-detect gallery-bench`: its arguments and the call into :mod:`detect.tools.gallery_bench` (imported when the
verb runs, so `--help` stays instant)."""

from __future__ import annotations

import argparse
import json
import sys


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def _gallery_bench(args: argparse.Namespace) -> int:
    from detect.tools.gallery_bench import format_tables, parse_shots, run_gallery_bench

    printed = args.json == "-"  # --json alone: the results JSON is stdout, the tables go to stderr
    result = run_gallery_bench(
        args.data, [e.strip() for e in args.embedder.split(",") if e.strip()], queries=args.queries,
        query_fraction=args.query_fraction, new_classes=args.new_classes, new_fraction=args.new_fraction,
        unknown_fraction=args.unknown_fraction, shots=parse_shots(args.shots),
        old_shots=args.old_shots if args.old_shots == "same" else None if args.old_shots == "all"
        else parse_shots(args.old_shots)[0], seed=args.seed,
        queries_per_class=args.queries_per_class,
        image_size=args.size, batch=args.batch, search_sizes=parse_shots(args.search_sizes) if args.search_sizes else [],
        json_out=None if printed else args.json,
    )
    (_to_stderr if printed else print)(format_tables(result))
    if printed:
        print(json.dumps(result, indent=1))
    return 0


def add_gallery_bench_parser(sub) -> None:
    """Register ``gallery-bench`` on ``retail-detect``'s sub-parsers."""
    p = sub.add_parser("gallery-bench", help="leave-classes-out benchmark of a SKU gallery: top-1 of products enrolled "
                       "from K crops, old SKUs kept, open set, speed")
    p.add_argument("data", help="reference crops: a folder of class folders (one product per photo) or a dataset "
                   "(.pkl or labels; each box a crop)")
    p.add_argument("--queries", default=None, help="query crops from other photos, same kinds as DATA (e.g. the val "
                   "split); default: --query-fraction of DATA's photos")
    p.add_argument("--query-fraction", type=float, default=0.3, help="share of each class's photos that give the "
                   "queries when --queries is not given (default 0.3)")
    p.add_argument("--embedder", default="imagenet", help="comma-separated: imagenet (untrained baseline) and/or "
                   "embedder checkpoints (refused if trained on a new or unknown class)")
    p.add_argument("--new-classes", default=None, help="classes enrolled from K crops: a comma list or a file (one a "
                   "line); default: --new-fraction of the classes, drawn with --seed")
    p.add_argument("--new-fraction", type=float, default=0.5)
    p.add_argument("--unknown-fraction", type=float, default=0.0, help="share of the classes never enrolled (open set)")
    p.add_argument("--shots", default="1,5,10", help="K: reference crops per new class (default 1,5,10)")
    p.add_argument("--old-shots", default="all", help="reference crops per old class: all (default), N, or same "
                   "(K at each K: every SKU as many references)")
    p.add_argument("--queries-per-class", type=int, default=None, help="at most this many query crops per class "
                   "(drawn with --seed; default all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=None, help="imagenet embedder input side (default 128)")
    p.add_argument("--batch", type=int, default=64, help="crops per forward pass")
    p.add_argument("--search-sizes", default="1000,100000", help="gallery sizes of the search timing, random unit "
                   "vectors ('' for none)")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="the results as JSON: --json FILE writes them there (only over an earlier gallery-bench "
                        "JSON); --json alone prints them (the tables go to stderr)")
    p.set_defaults(func=_gallery_bench)
