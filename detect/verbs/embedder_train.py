"""``retail-detect embedder train``: fit the product embedder on crops and say where its checkpoint is."""

from __future__ import annotations

import os
from collections.abc import Callable

from detect.config.embedder import EmbedderConfig, embedder_config_from_dict, load_embedder_config
from detect.data.crops import read_class_list
from detect.engine.runtime.checkpoint import CheckpointError, load_checkpoint
from detect.engine.training.embedder_fit import fit_embedder


def _quote(value: str) -> str:
    """A path as a YAML override value (quoted, so ``1e3`` or ``yes`` stay strings)."""
    return "'" + str(value).replace("'", "''") + "'"


def embedder_recipe(data: str | None, val: str | None = None, out: str | None = None, classes=None,
                    config: str | None = None, resume: str | None = None, exist_ok: bool = False,
                    overrides: list[str] | None = None) -> EmbedderConfig:
    """The recipe the CLI's flags describe: ``config`` (default: the built-in defaults, as ``configs/embedder.yaml``),
    then the flags, then ``key=value`` ``overrides``; with ``resume`` the checkpoint's own recipe instead of ``config``."""
    flags: list[str] = []
    if data:
        flags.append(f"data.train={_quote(os.path.abspath(data))}")
    if val:
        flags.append(f"data.val={_quote(os.path.abspath(val))}")
    if out:
        flags.append(f"train.out_dir={_quote(out)}")
    names = read_class_list(classes)
    if names:
        flags.append("data.classes=[" + ", ".join(_quote(n) for n in names) + "]")
    if exist_ok:
        flags.append("train.exist_ok=true")
    every = flags + list(overrides or [])
    if resume:
        ckpt = load_checkpoint(resume)
        if not isinstance(ckpt.get("embedder_config"), dict):
            raise CheckpointError(f"{resume}: not an embedder training checkpoint (resume from a run's last.pt)")
        return embedder_config_from_dict(ckpt["embedder_config"], every + [f"train.resume={_quote(resume)}"])
    return load_embedder_config(config, every)


def run_embedder_train(cfg: EmbedderConfig, log: Callable[[str], None] = print) -> dict:
    """Train ``cfg`` (:func:`~detect.engine.training.embedder_fit.fit_embedder`) and print the closing line."""
    result = fit_embedder(cfg, log)
    base = result["baseline_top1"]
    vs = f" (imagenet baseline {base:.4f})" if base is not None else ""
    if result["best_epoch"] > 0:
        head = f"best val top-1 {result['best_top1']:.4f} at epoch {result['best_epoch']}{vs}"
    else:
        head = "no evaluation"
    stop = f"; stopped by {result['stopped_by']}" if result["stopped_by"] else ""
    log(f"{head}; {result['epochs']} epochs, {result['steps']} steps, {result['seconds']:.0f} s "
        f"({result['images_per_s']:.1f} img/s){stop}; checkpoint {result['best'] or result['last'] or 'none'}")
    return result
