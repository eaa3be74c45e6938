"""`retail-detect bench`: our detectors against torchvision peers on the same backbone and input size.

For each family (``ssd``, ``fast_rcnn``, ``yolo``) it builds our model (``detect.models.build``) and its peer
(``detect.models.torchvision_peers``) and measures, in one run: training images/s (forward + backward + SGD step on synthetic
on-device batches), inference ms/image at batch 1 and at the bench batch (eval mode, postprocess included),
peak GPU memory, and our model's real-data training throughput (decode + augment + load through
``DetectionDataset`` + ``build_loader``) against its synthetic-batch throughput. On CUDA the timed regions run
under bf16 autocast, our models in ``channels_last``; timed loops hold no host syncs of ours (torchvision's peers
keep their own). Ratios, not absolute times, are what we compare; see :func:`format_table` for the printout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import itertools
import json
import os
import platform
import tempfile
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

from data_tools.atomic import atomic_write_text
from data_tools.errors import InvalidInput
from data_tools.outputs import check_output
from detect.config import AugmentConfig, Config, ModelConfig
from detect.engine.runtime.device import resolve_device
from detect.models.build import DETECTORS, NAMES, PEER_PREFIX, build_model
from detect.models.torchvision_peers import PEER_TITLES
from detect.tables import aligned
from detect.tools.timing import Batch, reset_peak, synthetic_batch, time_inference, time_training

FAMILIES = NAMES  # every registered detector (detect.models.build.DETECTORS)
# What a CPU run defaults to (small enough for CI) and what a GPU run defaults to.
CPU_DEFAULTS = {"size": 128, "batch": 4, "steps": 2, "warmup": 1, "latency_iters": 2}
CUDA_DEFAULTS = {"size": 320, "batch": 32, "steps": 20, "warmup": 5, "latency_iters": 30}
# Goals on a GPU (issue 6): ours/peer train img/s, peer/ours batch-1 latency, real/synthetic throughput.
GOALS = {"train": 2.0, "latency_b1": 2.0, "real_vs_synthetic": 0.9}
# Real-data augmentation when none is given: what our recipes use (flip, light affine, colour jitter).
BENCH_AUGMENT = AugmentConfig(hflip=0.5, affine_p=0.3, scale=(0.8, 1.2), translate=0.05, color_jitter=0.3)


def _model_config(backbone: str, weights: str) -> ModelConfig:
    cfg = Config().model
    cfg.backbone, cfg.backbone_weights = backbone, weights
    return cfg


def _build_with_fallback(build: Callable[[ModelConfig], nn.Module], backbone: str,
                         weights: str | None) -> tuple[nn.Module, str]:
    """Build with ``weights``; when None, ImageNet weights if they load, else random ("none")."""
    if weights is not None:
        return build(_model_config(backbone, weights)), weights
    try:
        return build(_model_config(backbone, "imagenet")), "imagenet"
    except (OSError, RuntimeError, ValueError, ImportError, KeyError):
        return build(_model_config(backbone, "none")), "none"


def _measure(model: nn.Module, title: str, synth: list[Batch], b1: Tensor, s: dict, device: torch.device,
             real: Callable[[], Iterator[Batch]] | None = None) -> dict:
    """Train img/s, latency at batch 1 and batch B, peaks; and (ours only) real-data img/s."""
    train = time_training(model, itertools.cycle(synth), s["steps"], s["warmup"], device, s["amp"])
    row = {"model": title, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
           "train_img_s": train["img_s"], "train_peak_mib": train["peak_mib"], "loss_last": train["loss_last"]}
    if real is not None:
        row["real_img_s"] = time_training(model, real(), s["steps"], s["warmup"], device, s["amp"])["img_s"]
    lat1 = time_inference(model, b1, s["latency_iters"], s["warmup"], device, s["amp"])
    latb = time_inference(model, synth[0][0], s["latency_iters"], s["warmup"], device, s["amp"])
    row.update(latency_ms_b1=lat1["ms_per_image"], latency_ms_batch=latb["ms_per_image"],
               infer_peak_mib=latb["peak_mib"], dets_per_image=latb["dets_per_image"])
    return row


def _prepare(model: nn.Module, device: torch.device, channels_last: bool, compile_model: bool) -> nn.Module:
    model = model.to(device)
    if channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        model._bench_channels_last = True  # read by the timing loops to feed channels_last images
    if compile_model:
        compiled = torch.compile(model)
        compiled._bench_channels_last = getattr(model, "_bench_channels_last", False)
        return compiled
    return model


def _ratios(ours: dict, peer: dict) -> dict:
    r = {"train": ours["train_img_s"] / peer["train_img_s"],
         "latency_b1": peer["latency_ms_b1"] / ours["latency_ms_b1"],
         "latency_batch": peer["latency_ms_batch"] / ours["latency_ms_batch"]}
    r["goals_met"] = {"train": r["train"] >= GOALS["train"], "latency_b1": r["latency_b1"] >= GOALS["latency_b1"]}
    return r


def bench_family(family: str, peers: Sequence[str], s: dict, device: torch.device,
                 real: Callable[[], Iterator[Batch]] | None) -> dict:
    """Our ``family`` model and each of its ``peers``: measurements and ratios (see module docstring)."""
    nc, size, batch = s["num_classes"], s["size"], s["batch"]
    synth = [synthetic_batch(batch, size, nc, device, seed=i) for i in range(4)]
    b1 = synthetic_batch(1, size, nc, device, seed=99)[0]

    def build_ours(cfg: ModelConfig) -> nn.Module:
        cfg.name = family
        return build_model(cfg, nc)

    model, used = _build_with_fallback(build_ours, s["backbone"], s["backbone_weights"])
    model = _prepare(model, device, s["channels_last"], s["compile"])
    ours = _measure(model, f"ours: {family}", synth, b1, s, device, real)
    del model
    out = {"ours": ours, "backbone_weights": used, "peers": {}, "ratios": {}}
    real_img_s = ours.get("real_img_s")
    if real_img_s is not None:
        out["real_vs_synthetic"] = real_img_s / ours["train_img_s"]
        out["real_goal_met"] = out["real_vs_synthetic"] >= GOALS["real_vs_synthetic"]
    for name in peers:
        peer_cfg = _model_config(s["backbone"], used)
        peer_cfg.name = PEER_PREFIX + name
        peer_model = build_model(peer_cfg, nc, size)
        peer_model = _prepare(peer_model, device, channels_last=False, compile_model=False)
        out["peers"][name] = _measure(peer_model, PEER_TITLES[name], synth, b1, s, device)
        del peer_model
        out["ratios"][name] = _ratios(ours, out["peers"][name])
    reset_peak(device)
    return out


def _settings(device: torch.device, **given) -> dict:
    """The run's settings: ``given``, with None replaced by the device's default (CPU or CUDA)."""
    defaults = CUDA_DEFAULTS if device.type == "cuda" else CPU_DEFAULTS
    settings = dict(given)
    for key, default in defaults.items():
        if settings.get(key) is None:
            settings[key] = default
    return settings


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "cpu"


def _check_families(models: Sequence[str]) -> list[str]:
    for m in models:
        if m not in DETECTORS:
            raise InvalidInput(f"unknown model family '{m}'; choose from {', '.join(DETECTORS)}")
    return list(models)


def real_data_batches(data: str | Path | None, tmp: str, s: dict, augment: AugmentConfig | None,
                      device: torch.device) -> tuple[Callable[[], Iterator[Batch]], dict]:
    """Our training input pipeline (decode + augment + load): a factory of endless batch iterators, and its info.

    ``data`` None -> synthetic shelf JPEGs + VOC XML generated into ``tmp`` (enough for warmup + timed steps, at
    most 512 images; later epochs read the decoded-image cache, as in training).
    """
    from detect.data import DetectionDataset, build_loader

    if data is None:
        from data_tools.synth import make_tiny_dataset

        n = min(max(s["batch"] * (s["warmup"] + s["steps"]), 2 * s["batch"]), 512)
        rs = make_tiny_dataset(tmp, images=n, classes=s["num_classes"], seed=0, size=2 * s["size"])
        source = "synthetic shelves"
    else:
        from data_tools.sources import load_any

        rs = load_any(data)
        source = str(data)
    augment = augment or BENCH_AUGMENT
    ds = DetectionDataset(rs, s["size"], augment, train=True, cache_images=True)
    loader = build_loader(ds, s["batch"], train=True, workers=s["workers"], pin_memory=device.type == "cuda",
                          distributed=False, seed=0)
    if len(loader) == 0:
        raise InvalidInput(f"{source}: {len(ds)} images are fewer than one batch of {s['batch']}")

    def batches() -> Iterator[Batch]:  # endless epochs
        return itertools.chain.from_iterable(itertools.repeat(loader))

    info = {"source": source, "images": len(ds), "num_classes": len(rs.class_names), "workers": s["workers"],
            "augment": dataclasses.asdict(augment)}
    return batches, info


def _cell(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def format_table(result: dict) -> str:
    """The measurements table, then the ratios table (goals apply on a GPU), then skipped / failed families."""
    st, b = result["meta"]["settings"], result["meta"]["settings"]["batch"]
    lines = [f"retail-detect bench on {result['meta']['device_name']} ({result['meta']['device']}): "
             f"size {st['size']}, batch {b}, {st['steps']} timed steps after {st['warmup']} warmup"]
    rows = [["family", "model", "params M", "train img/s", "ms/img b1", f"ms/img b{b}", "train MiB", "infer MiB",
             "dets/img"]]
    ratios = [["family", "vs peer", "train ours/peer", "b1 peer/ours", f"b{b} peer/ours", "real/synthetic"]]
    for fam, r in result["families"].items():
        for m in [r["ours"], *r["peers"].values()]:
            rows.append([fam, m["model"], _cell(m["params_m"], ".2f"), _cell(m["train_img_s"], ".1f"),
                         _cell(m["latency_ms_b1"], ".2f"), _cell(m["latency_ms_batch"], ".2f"),
                         _cell(m["train_peak_mib"], ".0f"), _cell(m["infer_peak_mib"], ".0f"),
                         _cell(m["dets_per_image"], ".1f")])
        if "real_img_s" in r["ours"]:
            rows.append([fam, f"{r['ours']['model']} on real data", "-", _cell(r["ours"]["real_img_s"], ".1f"),
                         "-", "-", "-", "-", "-"])
        for name, q in r["ratios"].items():
            ratios.append([fam, PEER_TITLES[name], _cell(q["train"], ".2f", "x"), _cell(q["latency_b1"], ".2f", "x"),
                           _cell(q["latency_batch"], ".2f", "x"), _cell(r.get("real_vs_synthetic"), ".2f", "x")])
    g = GOALS
    ratios.append(["goal (GPU)", "", f">= {g['train']:.1f}x", f">= {g['latency_b1']:.1f}x", "-",
                   f">= {g['real_vs_synthetic']:.1f}x"])
    if len(rows) > 1:
        lines += ["", aligned(rows, left=2), "", aligned(ratios, left=2)]
    lines += [f"skipped {fam}: {why}" for fam, why in result["skipped"].items()]
    lines += [f"FAILED {fam}: {why}" for fam, why in result["errors"].items()]
    return "\n".join(lines)


def run_bench(models: Sequence[str] = FAMILIES, size: int | None = None, batch: int | None = None,
              device: str = "auto", steps: int | None = None, warmup: int | None = None,
              latency_iters: int | None = None, num_classes: int = 25, data: str | Path | None = None,
              json_out: str | Path | None = None, backbone: str = "efficientnet_lite0",
              backbone_weights: str | None = None, compile: bool = False, amp: bool = True,
              channels_last: bool = True, peers: dict[str, Sequence[str]] | None = None,
              real_data: bool = True, workers: int | None = None, augment: AugmentConfig | None = None,
              strict: bool = False, verbose: bool = True) -> dict:
    """Benchmark our detectors against their torchvision peers; print a table and optionally write JSON.

    Args:
        models: families to run (names of ``detect.models.build.DETECTORS``).
        size, batch, steps, warmup, latency_iters: None -> ``CUDA_DEFAULTS`` on CUDA, ``CPU_DEFAULTS`` on the CPU.
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.
        num_classes: K for the synthetic runs (a dataset given by ``data`` sets K from its class map).
        data: dataset .pkl for the real-data throughput; None -> synthetic shelves generated in a temp dir.
        json_out: where to write the results (parent folders are created); checked before any work
            (:func:`data_tools.outputs.check_output`: it may replace only an earlier bench JSON).
        backbone, backbone_weights: backbone name; weights None -> ImageNet if they load, else random
            (weights do not change speed).
        compile: ``torch.compile`` our models (the peers stay eager).
        amp, channels_last: bf16 autocast / channels_last for ours; CUDA only.
        peers: family -> peer names (default the first of ``DETECTORS[family].peers``: SSD, FasterRCNN, FCOS).
        real_data: measure the real-data pipeline; workers: its loader workers (None: 0 on CPU, up to 8 on CUDA).
        augment: the real-data augmentation (default: hflip + light affine + colour jitter, like our recipes).
        strict: re-raise a family's error instead of recording it and going on.
        verbose: print the table.

    Returns:
        ``{"meta": {...}, "families": {family: {"ours", "peers", "ratios", "real_vs_synthetic", ...}},
        "skipped": {family: reason}, "errors": {family: message}}``.
    """
    if json_out is not None:
        check_output(json_out, "bench", [data], flag="--json")
    dev = resolve_device(device)
    families, skipped = _check_families(models), {}
    s = _settings(dev, size=size, batch=batch, steps=steps, warmup=warmup, latency_iters=latency_iters,
                  num_classes=num_classes, backbone=backbone, backbone_weights=backbone_weights, amp=amp,
                  channels_last=channels_last, compile=compile)
    s["workers"] = workers if workers is not None else (0 if dev.type == "cpu" else min(8, os.cpu_count() or 1))
    meta = {"device": str(dev), "device_name": _device_name(dev), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "python": platform.python_version(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "goals": GOALS,
            "settings": s}
    result: dict = {"meta": meta, "families": {}, "skipped": skipped, "errors": {}}
    old_benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = dev.type == "cuda"  # fixed input sizes
    try:
        with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
            real = None
            if real_data and families:
                real, info = real_data_batches(data, tmp, s, augment, dev)
                s["num_classes"] = info.pop("num_classes")
                meta["real_data"] = info
            for fam in families:
                fam_peers = list((peers or {}).get(fam, DETECTORS[fam].peers[:1]))
                try:
                    result["families"][fam] = bench_family(fam, fam_peers, s, dev, real)
                except Exception as exc:  # a bench of several models reports a broken one and goes on
                    if strict:
                        raise
                    traceback.print_exc()
                    result["errors"][fam] = f"{type(exc).__name__}: {exc}"
    finally:
        torch.backends.cudnn.benchmark = old_benchmark
    if verbose:
        print(format_table(result))
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(result, indent=2))
    return result

