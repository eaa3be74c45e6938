"""``gallery-bench``'s JSON (with the machine and its load) and its plain-text tables."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

import faiss
import torch

from detect.tables import aligned

BENCHMARK = "gallery-bench"  # ``meta.benchmark``: how data_tools.outputs recognises an earlier result file


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "cpu"


def _load() -> list[float] | None:
    with contextlib.suppress(OSError, AttributeError):
        return [round(x, 2) for x in os.getloadavg()]
    return None


def machine() -> dict:
    """The machine and its load when the benchmark starts."""
    return {"cpu": _cpu_name(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "faiss": getattr(faiss, "__version__", "?"),
            "python": platform.python_version(), "load_start": _load()}


def result_json(started: dict, setup: dict, runs: list[dict], search: list[dict]) -> dict:
    """The result file: ``meta`` (benchmark, machine with the load at start and end, the split and classes),
    ``runs`` (one per embedder) and ``search`` (the search timing)."""
    return {"meta": {"benchmark": BENCHMARK, "version": 1, "machine": started | {"load_end": _load()}, **setup},
            "runs": runs, "search": search}


def _f(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _name(run: dict) -> str:
    trained = f" ({run['trained_on']} classes)" if run.get("trained_on") else ""
    return f"{Path(run['embedder']).parent.name or run['embedder']}/{Path(run['embedder']).name}{trained}" \
        if run.get("trained_on") else run["embedder"]


def format_tables(result: dict) -> str:
    """Leave-classes-out, open-set and speed tables of a result (:func:`result_json`)."""
    meta = result["meta"]
    rows = [["embedder", "K", "SKUs", "refs", "new top-1", "old before", "old after", "old kept", "enrol s",
             "s per SKU", "chance"]]
    for run in result["runs"]:
        for s in run["shots"]:
            rows.append([_name(run), str(s["k"]), str(s["gallery_skus"]), str(s["gallery_refs"]), _f(s["new_top1"]),
                         _f(s["old_top1_before"]), _f(s["old_top1_after"]), "yes" if s["unchanged"]["ok"] else "NO",
                         _f(s["enrol_seconds"], 2), _f(s["enrol_seconds_per_sku"], 3), _f(s["chance"], 4)])
    m = meta["machine"]
    out = [f"leave-classes-out: {len(meta['old_classes'])} old classes, {len(meta['new_classes'])} new enrolled from "
           f"K crops each, {len(meta['unknown_classes'])} never enrolled; {meta['reference_crops']} reference and "
           f"{meta['query_crops']} query crops (no photo gives both)", aligned(rows, left=1), ""]
    rows = [["embedder", "unknown =", "K", "threshold", "unknown crops", "known crops", "precision", "recall",
             "known named right"]]
    for run in result["runs"]:
        sets = [("new classes", "-", run["open_set_before"])]
        sets += [("never enrolled", str(s["k"]), s["open_set"]) for s in run["shots"] if "open_set" in s]
        for what, k, o in sets:
            rows.append([_name(run), what, k, _f(o["threshold"]), str(o["unknown_crops"]), str(o["known_crops"]),
                         _f(o["precision"]), _f(o["recall"]), _f(o["known_named_right"])])
    out += ["open set: 'unknown' below the gallery's calibrated threshold", aligned(rows, left=2), ""]
    rows = [["embedder", "image", "batch", "crops", "ms per crop"]]
    for run in result["runs"]:
        e = run["embed"]
        rows.append([_name(run), str(e["image_size"]), str(e["batch"]), str(e["crops"]), _f(e["ms_per_crop"], 2)])
    out += [f"embedding speed on {m['cpu']} ({m['cpus']} CPUs, {m['torch_threads']} torch threads, load "
            f"{m['load_start']} at start, {m['load_end']} at end)", aligned(rows, left=1)]
    if result["search"]:
        rows = [["references", "SKUs", "dim", "build s", "ms per query"]]
        rows += [[str(s["refs"]), str(s["skus"]), str(s["dim"]), _f(s["build_seconds"], 3), _f(s["ms_per_query"], 4)]
                 for s in result["search"]]
        out += ["", "search (exact inner product, random unit vectors, 256 queries batched)", aligned(rows)]
    return "\n".join(out)
