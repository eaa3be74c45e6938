"""``retail-detect tune``: grid search over recipe keys, optionally k-fold averaged, ranked by val AP.

Every combination of the ``--grid`` values is one short training run in ``OUT/<combo>/`` (``OUT/<combo>/fold{i}/``
with k-fold). A finished run leaves ``summary.json``; re-running the same grid skips it and only trains what is
missing. With several GPUs the runs go side by side, one per GPU (each a ``python -m detect train`` process
with its own ``CUDA_VISIBLE_DEVICES``); otherwise one after another in this process.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import yaml

from data_tools.errors import CannotRun, InvalidInput
from data_tools.sources import load_any
from data_tools.split import kfold
from data_tools.store import save_dataset
from detect.config import ConfigError, load_config
from detect.tables import aligned, write_dicts_csv


def parse_grid(items: list[str]) -> dict[str, list]:
    """``["train.lr=0.1,0.01", "train.momentum=0.9"]`` -> ``{"train.lr": [0.1, 0.01], "train.momentum": [0.9]}``."""
    grid: dict[str, list] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--grid entry '{item}' must look like section.key=v1,v2,...")
        key, raw = item.split("=", 1)
        values = [yaml.safe_load(v) for v in raw.split(",") if v.strip()]
        if not values:
            raise ConfigError(f"--grid entry '{item}' has no values")
        grid[key.strip()] = values
    return grid


def combo_name(combo: dict) -> str:
    """Folder name of one combination, e.g. ``lr=0.01_momentum=0.9``."""
    parts = [f"{k.split('.')[-1]}={v}" for k, v in combo.items()]
    return re.sub(r"[^A-Za-z0-9=._-]+", "-", "_".join(parts))


def _fold_files(cfg_path: str | None, overrides: list[str], folds: int, out: Path, seed: int) -> list[tuple[Path, Path]]:
    """k-fold split of ``data.train`` (written once to ``OUT/folds``): ``[(train.pkl, val.pkl), ...]``."""
    cfg = load_config(cfg_path, overrides)
    if cfg.data.train is None:
        raise InvalidInput("tune --folds needs data.train (the dataset to split into folds)")
    files = [(out / "folds" / f"fold{i}" / "train.pkl", out / "folds" / f"fold{i}" / "val.pkl") for i in range(folds)]
    if not all(t.is_file() and v.is_file() for t, v in files):
        for (t, v), (train_rs, val_rs) in zip(files, kfold(load_any(cfg.data.train), folds, seed)):
            save_dataset(train_rs, t)
            save_dataset(val_rs, v)
    return files


def _run_one(cfg_path: str | None, overrides: list[str], gpu: int | None, log) -> dict:
    """Train one run; returns its summary (from ``summary.json``)."""
    out_dir = next(o.split("=", 1)[1] for o in overrides if o.startswith("train.out_dir="))
    if gpu is None:
        from detect.engine.training.trainer import fit
        from detect.report.train_report import best_checkpoint_report

        cfg = load_config(cfg_path, overrides)
        fit(cfg, log=lambda *a: None, on_finish=best_checkpoint_report)  # as `retail-detect train` does
    else:
        cmd = [sys.executable, "-m", "detect", "train", "--config", str(cfg_path), *overrides]
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu)}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise CannotRun(f"run {out_dir} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads((Path(out_dir) / "summary.json").read_text())


def run_tune(config: str | None, grid_items: list[str], overrides: list[str] | None = None, folds: int = 0,
             epochs: int | None = None, out: str | Path = "runs/tune", seed: int = 0, log=print) -> list[dict]:
    """Run the grid (see the module doc); returns rows sorted by mean val AP, best first.

    Writes ``OUT/tune_results.csv`` (atomic) and prints the ranked table.
    """
    grid = parse_grid(grid_items)
    base = list(overrides or []) + ([f"train.epochs={epochs}"] if epochs else [])
    out = Path(out)
    load_config(config, base + [f"{k}={v[0]}" for k, v in grid.items()])  # fail fast on unknown keys
    datasets = _fold_files(config, base, folds, out, seed) if folds >= 2 else [None]
    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    gpus = torch.cuda.device_count()
    jobs = []
    for combo in combos:
        name = combo_name(combo)
        for i, files in enumerate(datasets):
            run_dir = out / name / (f"fold{i}" if files else "")
            over = base + [f"{k}={v}" for k, v in combo.items()] + [f"train.out_dir={run_dir}", "train.exist_ok=true"]
            if files:
                over += [f"data.train={files[0]}", f"data.val={files[1]}"]
            jobs.append((name, combo, run_dir, over))
    todo = [j for j in jobs if not (j[2] / "summary.json").is_file()]
    log(f"tune: {len(combos)} combinations x {len(datasets)} fold(s) = {len(jobs)} runs; "
        f"{len(jobs) - len(todo)} already finished; {f'{gpus} GPUs side by side' if gpus > 1 else 'one after another'}")
    if gpus > 1:
        free: queue.Queue[int] = queue.Queue()
        for g in range(gpus):
            free.put(g)

        def on_free_gpu(job: tuple) -> dict:
            gpu = free.get()
            try:
                return _run_one(config, job[3], gpu, log)
            finally:
                free.put(gpu)

        with ThreadPoolExecutor(max_workers=gpus) as pool:
            list(pool.map(on_free_gpu, todo))
    else:
        for k, (_, _, run_dir, over) in enumerate(todo, 1):
            log(f"  [{k}/{len(todo)}] {run_dir}")
            _run_one(config, over, None, log)
    rows = []
    for combo in combos:
        name = combo_name(combo)
        sums = [json.loads((j[2] / "summary.json").read_text()) for j in jobs if j[0] == name]
        aps = [s["best_map"] for s in sums]
        ap50 = [s["metrics"].get("AP50", 0.0) for s in sums]
        rows.append({"rank": 0, **{k: v for k, v in combo.items()}, "AP": sum(aps) / len(aps),
                     "AP_min": min(aps), "AP_max": max(aps), "AP50": sum(ap50) / len(ap50), "runs": len(aps),
                     "dir": str(out / name)})
    rows.sort(key=lambda r: -r["AP"])
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    write_dicts_csv(rows, out / "tune_results.csv")
    log(format_table(rows, list(grid)))
    log(f"wrote {out / 'tune_results.csv'}")
    return rows


def format_table(rows: list[dict], keys: list[str]) -> str:
    head = ["rank", *[k.split(".")[-1] for k in keys], "val AP", "AP50", "runs"]
    body = [[str(r["rank"]), *[str(r[k]) for k in keys], f"{r['AP']:.4f}", f"{r['AP50']:.4f}", str(r["runs"])]
            for r in rows]
    return aligned([head, *body])
