"""``train --resume runs/x/last.pt``: the recipe comes from the checkpoint; only safe keys may change.

A resumed run continues in the checkpoint's own folder. Overrides (or a ``--config`` recipe) may change
how long and where the run trains (:data:`SAFE_KEYS`); any change to the model, data or optimisation
keys is refused with the list of differing keys, since the weights and optimizer state belong to them.

Data paths (:data:`~detect.config.DATA_PATH_KEYS`) are compared as files, not as text: checkpoints store them
absolute, and ``data.train=train.pkl`` given from the folder that holds it is the same setting. A checkpoint
written before paths were stored absolute holds them as typed: such a relative path matches any path that
ends with it, so the run can be resumed from another folder by naming the file.

A checkpoint older than the ``last.pt`` beside it (``--resume best.pt`` of epoch 3 when ``last.pt`` is at
epoch 10) is refused: resuming it would replace ``last.pt`` and retrain epochs the run already has, exactly
as they were (resume is deterministic). To branch from it, copy it into a new folder and resume that copy.
"""

from __future__ import annotations

import os
from pathlib import Path

from detect.config import DATA_PATH_KEYS, Config, ConfigError, config_from_dict, flatten, get_key, load_config
from detect.engine.runtime.checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint, require_keys

# keys a resumed run may change: budgets, logging and the hardware it runs on
SAFE_KEYS = frozenset({
    "train.epochs", "train.max_steps", "train.time_budget_s", "train.device", "train.log_every",
    "train.tensorboard", "train.eval_every", "train.early_stop_patience", "train.compile", "train.amp",
    "train.channels_last", "train.max_nonfinite", "data.workers", "data.pin_memory", "data.cache_images",
    "eval.batch_size", "train.report", "train.save_period",
})
# keys that are set by the resume itself
_IGNORED = frozenset({"train.resume", "train.out_dir", "train.exist_ok"})


def resume_config(checkpoint: str | Path, config: str | Path | None = None,
                  overrides: list[str] | None = None) -> Config:
    """The config to resume ``checkpoint`` with: its stored recipe plus safe overrides.

    Raises:
        FileNotFoundError / CheckpointError: the checkpoint is missing or unusable.
        ConfigError: the recipe or overrides change keys outside :data:`SAFE_KEYS` (all listed).
    """
    ckpt = load_checkpoint(checkpoint)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{checkpoint}: not a retail-detect training checkpoint (no optimizer state to resume)")
    require_keys(ckpt, checkpoint, ("model", "config", "class_names", "optimizer", "epoch"))
    try:
        stored = config_from_dict(ckpt["config"])
    except ConfigError as exc:
        raise CheckpointError(f"{checkpoint}: its stored recipe is invalid: {exc}") from None
    wanted = load_config(config, overrides) if config is not None else config_from_dict(ckpt["config"], overrides)
    old, new = flatten(stored.to_dict()), flatten(wanted.to_dict())
    # a key the recipe leaves unset (data.train: null) keeps the checkpoint's value
    changed = [k for k in new if k not in _IGNORED and not _same_value(k, old.get(k), new[k])
               and not (new[k] is None and config)]
    unsafe = [k for k in changed if k not in SAFE_KEYS]
    if unsafe:
        shown = ", ".join(f"{k} ({_short(old.get(k))} -> {_short(new[k])})" for k in unsafe[:8])
        more = f" and {len(unsafe) - 8} more" if len(unsafe) > 8 else ""
        raise ConfigError(f"cannot resume {checkpoint} with different settings: {shown}{more}. Only "
                          f"{', '.join(sorted(SAFE_KEYS))} may change; start a new run for the others")
    for key in changed:
        section, _, name = key.rpartition(".")
        setattr(get_key(stored, section), name, get_key(wanted, key))
    for key in (k for k in DATA_PATH_KEYS if k not in changed and isinstance(new.get(k), str) and new.get(k)):
        if not os.path.isabs(old.get(key) or ""):  # an old checkpoint's relative path: use the one given now
            section, _, name = key.rpartition(".")
            setattr(get_key(stored, section), name, get_key(wanted, key))
    refuse_older_than_last(checkpoint, ckpt)
    stored.train.resume = str(checkpoint)
    stored.train.out_dir = str(Path(checkpoint).parent)
    return stored


def _same_value(key: str, old, new) -> bool:
    """``old == new``; for a data path, the same file (see the module doc)."""
    if old == new:
        return True
    if key not in DATA_PATH_KEYS or not isinstance(old, str) or not isinstance(new, str):
        return False
    if os.path.realpath(old) == os.path.realpath(new):
        return True
    if os.path.isabs(old):
        return False
    tail = os.path.normpath(old).split(os.sep)  # an old checkpoint's relative path, seen from another folder
    return os.path.realpath(new).split(os.sep)[-len(tail):] == tail or \
        os.path.abspath(new).split(os.sep)[-len(tail):] == tail


def refuse_older_than_last(checkpoint: str | Path, ckpt: dict) -> None:
    """Refuse to resume ``checkpoint`` (loaded as ``ckpt``) when the ``last.pt`` beside it has trained further
    (more optimizer steps): resuming would replace it. A ``last.pt`` that cannot be loaded does not count
    (resuming an older checkpoint is then the way to recover)."""
    path = Path(checkpoint)
    last = path.parent / "last.pt"
    if path.name == "last.pt" or not last.is_file():
        return
    try:
        newer = load_checkpoint(last)
    except (CheckpointError, OSError):
        return
    steps, last_steps = ckpt.get("step"), newer.get("step")
    if not isinstance(steps, int) or not isinstance(last_steps, int) or last_steps <= steps:
        return
    raise ConfigError(f"{path} is at epoch {ckpt.get('epoch')} (step {steps}) but {last} beside it is newer, at "
                      f"epoch {newer.get('epoch')} (step {last_steps}), and resuming would replace it: resume "
                      f"{last} instead, or copy {path.name} into a new folder and resume that copy")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
