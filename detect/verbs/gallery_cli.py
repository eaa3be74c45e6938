"""The ``retail-detect gallery`` verb and its sub-verbs (build, add, list, remove, show, rebuild): their arguments
and the calls into :mod:`detect.verbs.gallery_build`, :mod:`~detect.verbs.gallery_edit` and
:mod:`~detect.verbs.gallery_show` (imported when the sub-verb runs, so ``--help`` stays instant)."""

from __future__ import annotations

import argparse

from data_tools.cli_frame import square_size

EMBEDDER_HELP = "`imagenet` (the ImageNet backbone, untrained) or an embedder checkpoint (.pt)"


def _build(args: argparse.Namespace) -> int:
    from detect.verbs.gallery_build import build_gallery

    build_gallery(args.dataset, args.embedder, args.out, per_class=args.per_class, classes=args.classes,
                  image_size=args.size)
    return 0


def _rebuild(args: argparse.Namespace) -> int:
    from detect.verbs.gallery_build import rebuild_gallery

    rebuild_gallery(args.gallery, args.embedder, args.out, image_size=args.size)
    return 0


def _add(args: argparse.Namespace) -> int:
    from detect.verbs.gallery_edit import add_photos

    add_photos(args.gallery, args.sku, args.photos, embedder=args.embedder, detector=args.detector,
               labels=args.labels, replace=args.replace, conf=args.conf)
    return 0


def _remove(args: argparse.Namespace) -> int:
    from detect.verbs.gallery_edit import remove_sku

    remove_sku(args.gallery, args.sku)
    return 0


def _list(args: argparse.Namespace) -> int:
    from detect.verbs.gallery_edit import list_gallery

    list_gallery(args.gallery, as_json=args.json)
    return 0


def _show(args: argparse.Namespace) -> int:
    from detect.verbs.gallery_show import show_gallery

    show_gallery(args.gallery, args.out, embed=args.embed)
    return 0


def add_gallery_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``gallery`` and its sub-verbs on the top-level sub-parsers ``sub``."""
    g = sub.add_parser("gallery", help="SKU gallery: enrol products from reference photos, list, show, rebuild",
                       description="A SKU gallery: reference crops of named products and their embedder vectors.")
    verbs = g.add_subparsers(dest="gallery_verb", required=True, metavar="{build,add,list,remove,show,rebuild}")

    p = verbs.add_parser("build", help="a new gallery: every class of a dataset (or class folder) as a SKU")
    p.add_argument("dataset", help="dataset .pkl, label folder/file (VOC, YOLO, COCO, ...: the crops of the boxes), "
                                   "or a folder of class folders with one product per photo")
    p.add_argument("--embedder", required=True, help=EMBEDDER_HELP)
    p.add_argument("-o", "--out", required=True, help="the new gallery folder (new or empty)")
    p.add_argument("--per-class", type=int, default=None, metavar="K",
                   help="references per SKU, spread over different photos (default: all)")
    p.add_argument("--classes", default=None, metavar="A,B,...", help="only these classes")
    p.add_argument("--size", type=square_size, default=None, metavar="S",
                   help="embedder input side for --embedder imagenet (default 128)")
    p.set_defaults(func=_build)

    p = verbs.add_parser("add", help="enrol one product from reference photos")
    p.add_argument("gallery")
    p.add_argument("--sku", required=True, help="the product's name")
    p.add_argument("photos", nargs="+", help="photos of the product (one reference each, or one per labelled box)")
    p.add_argument("--embedder", default=None, help=EMBEDDER_HELP + "; default: the gallery's own")
    p.add_argument("--detector", default=None, metavar="WEIGHTS",
                   help="product detector checkpoint: use the largest product box it finds in each photo")
    p.add_argument("--conf", type=float, default=0.25, help="--detector's score threshold")
    p.add_argument("--labels", default=None, metavar="FILE",
                   help="labels (any format retail-data reads) giving the product boxes of the photos")
    p.add_argument("--replace", action="store_true", help="replace the SKU's references when it is there")
    p.set_defaults(func=_add)

    p = verbs.add_parser("list", help="the gallery's SKUs and references")
    p.add_argument("gallery")
    p.add_argument("--json", action="store_true", help="as JSON")
    p.set_defaults(func=_list)

    p = verbs.add_parser("remove", help="remove a SKU and its references")
    p.add_argument("gallery")
    p.add_argument("--sku", required=True)
    p.set_defaults(func=_remove)

    p = verbs.add_parser("show", help="an HTML page of every SKU's references and look-alikes")
    p.add_argument("gallery")
    p.add_argument("-o", "--out", default=None, help="the page (default: GALLERY.html beside the gallery folder)")
    p.add_argument("--embed", action="store_true", help="inline the images (one portable file) instead of linking")
    p.set_defaults(func=_show)

    p = verbs.add_parser("rebuild", help="re-embed a gallery's reference crops with another embedder")
    p.add_argument("gallery")
    p.add_argument("--embedder", required=True, help=EMBEDDER_HELP)
    p.add_argument("-o", "--out", required=True, help="the new gallery folder (new or empty)")
    p.add_argument("--size", type=square_size, default=None, metavar="S",
                   help="embedder input side for --embedder imagenet (default 128)")
    p.set_defaults(func=_rebuild)
