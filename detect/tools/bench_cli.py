"""`retail-detect bench`: its arguments and the call into :mod:`detect.tools.bench` (training and latency against
the torchvision peers) or :mod:`detect.tools.bench_formats` (the format x precision table), imported when the verb
runs so `--help` stays instant."""

from __future__ import annotations

import argparse
import json
import sys

from data_tools.cli_frame import comma_list, square_size
from data_tools.errors import InvalidInput


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def _bench(args: argparse.Namespace) -> int:
    from detect.models.build import NAMES
    from detect.tools.bench import run_bench

    printed = args.json == "-"  # --json alone: the results JSON is stdout, the table goes to stderr
    if args.formats is not None or args.weights is not None:  # the formats table (bench_formats)
        from detect.tools.bench_formats import run_bench_formats
        from detect.tools.bench_formats_table import format_table

        if args.weights is not None and args.models is not None:
            raise InvalidInput("bench: give --weights (trained checkpoints) or --models (random-init heads), not both")
        result = run_bench_formats(
            args.formats or "torch,onnx,openvino", args.precision, weights=comma_list(args.weights),
            models=comma_list(args.models) if args.models else None, data=args.data, calib=args.calib,
            calib_images=args.calib_images, peer_weights=comma_list(args.peer_weights), size=args.size,
            steps=args.steps, backbone=args.backbone, json_out=None if printed else args.json,
            verbose=not printed, log=_to_stderr)
    else:
        result = run_bench(
            models=comma_list(args.models) if args.models is not None else list(NAMES), size=args.size,
            batch=args.batch,
            device=args.device, steps=args.steps, data=args.data, json_out=None if printed else args.json,
            backbone=args.backbone, compile=args.compile, verbose=not printed,
        )
        from detect.tools.bench import format_table
    if printed:
        _to_stderr(format_table(result))
        print(json.dumps(result, indent=2))
    return 0


def add_bench_parser(sub) -> None:
    """Add the `bench` verb to the `retail-detect` subparsers."""
    p = sub.add_parser("bench", help="speed of our detectors against torchvision peers, same backbone")
    p.add_argument("--models", default=None, help="comma-separated detector names (default: every registered detector)")
    p.add_argument("--size", type=square_size, default=None, metavar="S",
                   help="input side S (or SxS; default: 320 on CUDA, 128 on the CPU)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: 32 on CUDA, 4 on the CPU)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: 20 on CUDA, 2 on CPU)")
    p.add_argument("--device", default="auto")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--data", default=None,
                   help="dataset .pkl for the real-data throughput (default: synthetic shelves); with --formats: the "
                        "evaluation set (AP, and the photos timed)")
    p.add_argument("--compile", action="store_true", help="torch.compile our models")
    p.add_argument("--formats", default=None, metavar="F1,F2",
                   help="the formats table instead: torch, onnx, openvino (latency at 1 and 2 threads, img/s, AP "
                        "on --data, MB; default with --weights: all three)")
    p.add_argument("--precision", default="fp32", metavar="P1,P2", help="with --formats: fp32, int8 (default fp32)")
    p.add_argument("--weights", default=None, metavar="W1.pt,W2.pt",
                   help="with --formats: trained checkpoints, one per head (else --models: random-init heads, no AP)")
    p.add_argument("--peer-weights", default=None, metavar="P1.pt,...",
                   help="with --formats: trained torchvision peers, one per head (default: random-init peers)")
    p.add_argument("--calib", default=None, metavar="DATASET",
                   help="with --precision int8: calibration photos, not --data (e.g. the train split)")
    p.add_argument("--calib-images", type=int, default=100, help="INT8 calibration photos (default 100)")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="the results as JSON: --json FILE writes them there; --json alone prints them (the table "
                        "goes to stderr)")
    p.set_defaults(func=_bench)
