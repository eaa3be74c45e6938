"""`retail-detect embedder train`: its arguments and the call into :mod:`detect.verbs.embedder_train` (imported
when the verb runs, so `--help` stays instant)."""

from __future__ import annotations

import argparse
from pathlib import Path

from data_tools.errors import InvalidInput


def _embedder_train(args: argparse.Namespace) -> int:
    from detect.verbs.embedder_train import embedder_recipe, run_embedder_train

    data, overrides = args.data, list(args.overrides)
    if data is not None and "=" in data and not Path(data).exists():  # no DATA (with --resume): an override
        data, overrides = None, [data, *overrides]
    if data is None and not args.resume:
        raise InvalidInput("embedder train needs DATA: a folder of class folders or a labelled dataset "
                           "(or --resume runs/embedder/last.pt)")
    cfg = embedder_recipe(data, args.val, args.out, args.classes, args.config, args.resume, args.exist_ok, overrides)
    run_embedder_train(cfg)
    return 0


def add_embedder_parser(sub) -> None:
    """Register ``embedder`` (sub-verb ``train``) on ``retail-detect``'s sub-parsers."""
    p = sub.add_parser("embedder", help="the product embedder that names each detected facing")
    esub = p.add_subparsers(dest="embedder_verb", required=True, metavar="{train}")
    e = esub.add_parser("train", help="train the embedder on product crops (metric learning)")
    e.add_argument("data", nargs="?", default=None,
                   help="class folders (one product per photo, the class = the innermost folder) or any labelled "
                        "dataset (.pkl, VOC, COCO, YOLO, ...: each box a crop)")
    e.add_argument("--val", default=None, help="val crops, the same kinds (default: data.val_fraction held out)")
    e.add_argument("-o", "--out", default=None, help="run folder (default runs/embedder; runs/embedder2, ... when taken)")
    e.add_argument("--classes", action="append", default=None, metavar="NAMES|FILE",
                   help="train on these classes only: comma-separated names or a file of one name a line")
    e.add_argument("--config", default=None, help="recipe YAML (default: the built-in one, as configs/embedder.yaml)")
    e.add_argument("--resume", default=None, help="continue a run from its last.pt")
    e.add_argument("--exist-ok", action="store_true", help="write into --out even if it holds a run")
    e.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.epochs=4")
    e.set_defaults(func=_embedder_train)
