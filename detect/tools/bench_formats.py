"""``retail-detect bench --formats``: each head as eager PyTorch, ONNX Runtime and OpenVINO, FP32 and INT8, in one table.

For each head (a trained checkpoint of ``--weights``, or a randomly initialised head of ``--models``) and each
format x precision: export once into a temporary folder (:func:`detect.tools.export.export_model`, no check),
then batch-1 latency at 1 and 2 threads (the median of timed calls after warmup,
:func:`detect.tools.timing.time_inference`; ``torch.set_num_threads(n)`` for eager rows, ``ExportedModel(path,
threads=n)`` for the files), throughput (img/s) at the best of batch 1/2/4/8 on the most threads, COCO AP and AP50
on ``--data`` (:func:`detect.verbs.evaluate_weights.evaluate_weights`, which runs exported files too; only for
trained weights: an untrained head's AP says nothing) and the size of what would be shipped (the file(s); for an
eager row, the model's ``state_dict``). Every row gets the same letterboxed inputs (the first photos of ``--data``,
else random pixels). The torchvision peer of each head (``detect.models.torchvision_peers``, on the head's
backbone and options, random-init or ``--peer-weights``) is measured eager and as ONNX
(``torch.onnx.export(dynamo=False, opset 17)`` of batch 1: the peers' transform is traced per image, so its
throughput is batch 1's and its AP is not measured) as the reference rows. A row that fails says why in one cell.

INT8 needs ``--calib DATASET``, photos other than ``--data``: calibrating on the set AP is measured on would tune
the INT8 model on its own test (pass the train split). ``torch`` rows are FP32 only.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import os
import platform
import tempfile
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

from data_tools.atomic import atomic_write_text
from data_tools.errors import InvalidInput, is_user_error
from data_tools.outputs import check_output
from detect.tools.bench import _device_name
from detect.tools.bench_formats_table import GOALS, add_ratios, format_table, goals
from detect.tools.timing import synthetic_batch, time_inference

FORMATS = ("torch", "onnx", "openvino")
PRECISIONS = ("fp32", "int8")
THREADS = (1, 2)
BATCHES = (1, 2, 4, 8)
DEFAULTS = {"size": 128, "steps": 10, "warmup": 2}  # size: of --models heads (a checkpoint keeps its own)
SUFFIX = {"onnx": ".onnx", "openvino": ".xml"}
CPU = torch.device("cpu")


def parse_list(value: str | Sequence[str] | None, allowed: Sequence[str], flag: str) -> list[str]:
    """``"a,b"`` (or a list) -> names, each one of ``allowed``, in order, without repeats."""
    items = value.split(",") if isinstance(value, str) else list(value or [])
    items = list(dict.fromkeys(i.strip() for i in items if i.strip()))
    bad = [i for i in items if i not in allowed]
    if bad or not items:
        raise InvalidInput(f"{flag} {','.join(bad) or '(empty)'}: choose from {', '.join(allowed)}")
    return items


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """PyTorch's intra-op threads set to ``n`` inside, restored after."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _state_mb(model: nn.Module) -> float:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell() / 1e6


def _file_mb(path: Path) -> float:
    files = [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]
    return sum(f.stat().st_size for f in files) / 1e6


def measure_speed(make: Callable[[int], nn.Module], images: Tensor, s: dict, batches: Sequence[int]) -> dict:
    """Batch-1 ms at each of ``s["threads"]`` and img/s at each of ``batches`` on the most threads.

    ``make(n)`` gives the model to time on ``n`` threads (PyTorch's threads are ``n`` around it too).
    """
    ms, by_batch = {}, {}
    for n in s["threads"]:
        with torch_threads(n):
            model = make(n)
            ms[str(n)] = time_inference(model, images[:1], s["steps"], s["warmup"], CPU, False)["ms_per_image"]
            if n == max(s["threads"]):
                for b in batches:
                    t = time_inference(model, images[:b], s["steps"], s["warmup"], CPU, False)
                    by_batch[str(b)] = 1000.0 / t["ms_per_image"]
    best = max(by_batch, key=by_batch.get)
    return {"ms_b1": ms, "img_s": by_batch[best], "best_batch": int(best), "img_s_by_batch": by_batch}


def _ap(weights: Path, data: str | Path | None, s: dict) -> dict:
    """COCO AP / AP50 of ``weights`` (a checkpoint or an exported file) on ``data``; None without data."""
    if data is None:
        return {"ap": None, "ap50": None}
    from detect.verbs.evaluate_weights import evaluate_weights

    with torch_threads(max(s["threads"])):
        m = evaluate_weights(weights, data, device="cpu", log=lambda _line: None)
    return {"ap": m["AP"], "ap50": m["AP50"]}


class PeerOnnx(nn.Module):
    """A torchvision peer's batch-1 ONNX file behind our eval contract (``model(images) -> [dict]``), run by ONNX
    Runtime with our exports' session options (idle threads sleep)."""

    def __init__(self, path: Path, threads: int) -> None:
        super().__init__()
        from detect.engine.runtime.exported import _OnnxRunner

        self.session = _OnnxRunner(path, threads).session

    def forward(self, images: Tensor) -> list[dict[str, Tensor]]:
        out = []
        for image in images.float().numpy():  # the graph takes one image
            boxes, scores, labels = self.session.run(None, {"images": image[None]})
            out.append({"boxes": torch.from_numpy(boxes), "scores": torch.from_numpy(scores),
                        "labels": torch.from_numpy(labels)})
        return out


class _FirstImage(nn.Module):
    """A peer with its first image's detections as a tuple: what the ONNX tracer can export."""

    def __init__(self, peer: nn.Module) -> None:
        super().__init__()
        self.peer = peer

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        d = self.peer(images)[0]
        return d["boxes"], d["scores"], d["labels"]


def export_peer_onnx(peer: nn.Module, size: int, out: Path) -> Path:
    """The peer (eval mode) as a batch-1 ONNX graph ``images [1, 3, S, S] 0..255 -> boxes, scores, labels``."""
    example = torch.rand(1, 3, size, size) * 255
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_FirstImage(peer.eval()), (example,), str(out), input_names=["images"],
                          output_names=["boxes", "scores", "labels"], opset_version=17, dynamo=False)
    return out


def _row(head: str, model: str, role: str, fmt: str, precision: str, size: int,
         measure: Callable[[], dict], strict: bool, log: Callable[[str], None]) -> dict:
    row = {"head": head, "model": model, "role": role, "format": fmt, "precision": precision, "size": size}
    log(f"bench: {head} {model} {fmt} {precision} ...")
    try:
        row.update(measure())
    except Exception as exc:  # one broken format is a row with its reason, not the end of the bench
        if strict:
            raise
        if not (is_user_error(exc) or isinstance(exc, ImportError)):  # a bug: its traceback; a runtime or
            traceback.print_exc()  # part not installed, or a user error, is its one line in the table
        row["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return row


def bench_inputs(data: str | Path | None, size: int, n: int, num_classes: int) -> Tensor:
    """``n`` letterboxed uint8 images [n, 3, S, S]: the first photos of ``data`` (repeated when fewer), else noise."""
    if data is None:
        return synthetic_batch(n, size, num_classes, CPU, seed=0)[0]
    from data_tools.sources import load_any, select_split
    from detect.data import DetectionDataset

    rs = select_split(load_any(data), "eval", str(data))
    ds = DetectionDataset(rs, size, None, False, cache_images=False)
    if len(ds) == 0:
        raise InvalidInput(f"{data}: no images")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not writable")  # read once, never written
        return torch.stack([ds[i % len(ds)][0] for i in range(n)])


def _heads(weights: Sequence[str] | None, models: Sequence[str] | None, peer_weights: Sequence[str] | None,
           size: int | None, num_classes: int, class_names: list[str] | None, backbone: str, tmp: Path) -> list[dict]:
    """``[{"head", "weights", "trained", "peer_weights"}]``: the given checkpoints, or random-init ones written
    into ``tmp`` (``size`` px, ``num_classes`` classes)."""
    from detect.config import config_from_dict
    from detect.engine.runtime.checkpoint import load_checkpoint, save_checkpoint
    from detect.models.build import DETECTORS, build_model

    if weights:
        heads = []
        for w in weights:
            name = str(load_checkpoint(w).get("config", {}).get("model", {}).get("name"))
            if name not in DETECTORS:
                raise InvalidInput(f"--weights {w}: a checkpoint of {name!r}, not one of our heads "
                                   f"({', '.join(DETECTORS)}); a torchvision peer goes to --peer-weights")
            heads.append({"head": name, "weights": Path(w), "trained": True})
    else:
        heads = []
        names = class_names or [f"class{i}" for i in range(1, num_classes + 1)]
        for name in models or list(DETECTORS):
            if name not in DETECTORS:
                raise InvalidInput(f"--models {name}: choose from {', '.join(DETECTORS)}")
            cfg = config_from_dict({"data": {"image_size": size or DEFAULTS["size"]},
                                    "model": {"name": name, "backbone": backbone, "backbone_weights": "none"}})
            torch.manual_seed(0)
            model = build_model(cfg.model, len(names))
            path = save_checkpoint(tmp / f"{name}.pt", {"model": model.state_dict(), "config": cfg.to_dict(),
                                                       "class_names": names})
            heads.append({"head": name, "weights": Path(path), "trained": False})
    if peer_weights and len(peer_weights) != len(heads):
        raise InvalidInput(f"--peer-weights has {len(peer_weights)} checkpoints for {len(heads)} heads: give one "
                           "per head, in the same order")
    for h, pw in zip(heads, peer_weights or [None] * len(heads)):
        h["peer_weights"] = Path(pw) if pw else None
    return heads


def bench_head(h: dict, formats: Sequence[str], precisions: Sequence[str], s: dict, data: str | Path | None,
               calib: str | None, calib_images: int, inputs: Callable[[int], Tensor], tmp: Path, peers: bool,
               strict: bool, log: Callable[[str], None]) -> list[dict]:
    """The rows of one head: ours per format x precision, then its peer eager and as ONNX."""
    from detect.engine.runtime.checkpoint import load_model
    from detect.engine.runtime.exported_module import load_exported
    from detect.models.build import DETECTORS, PEER_PREFIX, build_model
    from detect.models.torchvision_peers import PEER_TITLES
    from detect.tools.export import export_model

    head, weights = h["head"], h["weights"]
    model, class_names, cfg = load_model(weights)
    size = int(s["size"] or cfg.data.image_size)
    images = inputs(size)
    ours, rows = f"ours: {head}", []
    ap_data = data if h["trained"] else None

    def eager() -> dict:
        return {**measure_speed(lambda _n: model, images, s, s["batches"]), **_ap(weights, ap_data, s),
                "mb": _state_mb(model)}

    if "torch" in formats:
        rows.append(_row(head, ours, "ours", "torch", "fp32", size, eager, strict, log))
    for fmt in (f for f in formats if f != "torch"):
        for prec in precisions:
            path = tmp / f"{head}-{prec}{SUFFIX[fmt]}"

            def exported(fmt: str = fmt, prec: str = prec, path: Path = path) -> dict:
                export_model(weights, fmt, path, image_size=size, check=False, int8=prec == "int8", calib=calib,
                             calib_images=calib_images, log=lambda _line: None)
                speed = measure_speed(lambda n: load_exported(path, threads=n)[0], images, s, s["batches"])
                return {**speed, **_ap(path, ap_data, s), "mb": _file_mb(path)}

            rows.append(_row(head, ours, "ours", fmt, prec, size, exported, strict, log))
    if not peers:
        return rows
    peer_name = DETECTORS[head].peers[0]
    title = PEER_TITLES[peer_name]
    pw = h["peer_weights"]
    if pw is not None:
        peer, _, peer_cfg = load_model(pw)
        if peer_cfg.model.name != PEER_PREFIX + peer_name:
            raise InvalidInput(f"--peer-weights {pw}: a {peer_cfg.model.name} checkpoint; {head}'s peer is "
                               f"{PEER_PREFIX + peer_name}")
    else:
        pcfg = cfg.model
        pcfg.name, pcfg.backbone_weights = PEER_PREFIX + peer_name, "none"
        torch.manual_seed(0)
        peer = build_model(pcfg, len(class_names), size).eval()
    peer_ap_data = data if pw is not None else None

    def peer_eager() -> dict:
        return {**measure_speed(lambda _n: peer, images, s, s["batches"]), **_ap(pw, peer_ap_data, s),
                "mb": _state_mb(peer)}

    def peer_onnx() -> dict:
        path = export_peer_onnx(peer, size, tmp / f"{head}-peer.onnx")
        return {**measure_speed(lambda n: PeerOnnx(path, n), images, s, (1,)), "ap": None, "ap50": None,
                "mb": _file_mb(path)}

    rows.append(_row(head, title, "peer", "torch", "fp32", size, peer_eager, strict, log))
    if "onnx" in formats:
        rows.append(_row(head, title, "peer", "onnx", "fp32", size, peer_onnx, strict, log))
    return rows


def _load() -> float | None:
    with contextlib.suppress(OSError, AttributeError):
        return os.getloadavg()[0]
    return None


def run_bench_formats(formats: str | Sequence[str] = FORMATS, precisions: str | Sequence[str] = ("fp32",),
                      weights: Sequence[str] | None = None, models: Sequence[str] | None = None,
                      data: str | Path | None = None, calib: str | None = None, calib_images: int = 100,
                      peer_weights: Sequence[str] | None = None, size: int | None = None, steps: int | None = None,
                      warmup: int | None = None, threads: Sequence[int] = THREADS, batches: Sequence[int] = BATCHES,
                      num_classes: int = 25, backbone: str = "efficientnet_lite0", peers: bool = True,
                      json_out: str | Path | None = None, strict: bool = False, verbose: bool = True,
                      log: Callable[[str], None] = print) -> dict:
    """The formats table (see the module doc); prints it when ``verbose``, writes ``json_out`` when given.

    Args:
        formats: ``torch``, ``onnx``, ``openvino`` (comma list or names); precisions: ``fp32``, ``int8``.
        weights: trained checkpoints, one per head (AP and AP50 measured on ``data``); else ``models``: names of
            heads built randomly initialised at ``size`` px for ``num_classes`` classes (K from ``data`` when
            given), AP not measured.
        data: the evaluation set (AP, and the photos every row is timed on); calib / calib_images: INT8's
            calibration photos (required for ``int8``; not ``data``).
        peer_weights: trained torchvision peers (``tv_*`` checkpoints, one per head), else random-init peers.
        size: the input side (default: each checkpoint's training size; 128 for ``models``).
        steps, warmup: timed and untimed calls per measurement (default 10 and 2).
        threads, batches: the thread counts of the batch-1 latency; the batches of the throughput.
        strict: re-raise a row's error instead of recording it.

    Returns:
        ``{"meta": {...}, "rows": [row, ...], "goals": {head: {goal: verdict}}}``
        (rows: :mod:`detect.tools.bench_formats_table`).
    """
    formats = parse_list(formats, FORMATS, "--formats")
    precisions = parse_list(precisions, PRECISIONS, "--precision")
    if "int8" in precisions and set(formats) != {"torch"}:
        if not calib:
            raise InvalidInput("--precision int8 needs --calib DATASET: photos to calibrate on that are not --data "
                               "(calibrating on the set AP is measured on tunes INT8 on its own test): the train split")
        if data is not None and Path(calib).resolve() == Path(data).resolve():
            raise InvalidInput(f"--calib {calib} is --data: calibrate INT8 on other photos (the train split)")
    if json_out is not None:
        check_output(json_out, "bench", [data, calib, *(weights or []), *(peer_weights or [])], flag="--json")
    s = {"size": size, "steps": steps or DEFAULTS["steps"], "warmup": DEFAULTS["warmup"] if warmup is None else warmup,
         "threads": sorted({int(t) for t in threads}), "batches": sorted({int(b) for b in batches}),
         "formats": formats, "precisions": precisions, "data": None if data is None else str(data),
         "calib": calib, "calib_images": calib_images}
    from detect.engine.runtime.threads import usable_cores

    meta = {"bench": "formats", "torchvision": torchvision.__version__, "torch": torch.__version__,
            "device": "cpu", "device_name": _device_name(CPU), "cpu_cores": usable_cores(),
            "python": platform.python_version(), "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "goals": GOALS, "settings": s, "load_average": {"start": _load()}}
    for name in ("onnxruntime", "openvino"):
        with contextlib.suppress(ImportError):
            meta[name] = __import__(name).__version__
    class_names = None
    if data is not None and not weights:
        from data_tools.sources import load_any

        class_names = list(load_any(data).class_names)
    cache: dict[int, Tensor] = {}

    def inputs(side: int) -> Tensor:
        if side not in cache:
            cache[side] = bench_inputs(data, side, max(s["batches"]), len(class_names or []) or num_classes)
        return cache[side]

    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench_formats_") as tmp:
        for h in _heads(weights, models, peer_weights, size, num_classes, class_names, backbone, Path(tmp)):
            rows += bench_head(h, formats, precisions, s, data, calib, calib_images, inputs, Path(tmp), peers,
                               strict, log)
    meta["load_average"]["end"] = _load()
    add_ratios(rows)
    result = {"meta": meta, "rows": rows, "goals": goals(rows)}
    if verbose:
        print(format_table(result))
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(result, indent=2))
    return result
