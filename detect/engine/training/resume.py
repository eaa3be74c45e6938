"""``train --resume runs/x/last.pt``: the recipe comes from the checkpoint; only safe keys may change.

A resumed run continues in the checkpoint's own folder. Overrides (or a ``--config`` recipe) may change
how long and where the run trains (:data:`SAFE_KEYS`); any change to the model, data or optimisation
keys is refused with the list of differing keys, since the weights and optimizer state belong to them.
"""

from __future__ import annotations

from pathlib import Path

from detect.config import Config, ConfigError, config_from_dict, flatten, get_key, load_config
from detect.engine.runtime.checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint, require_keys

# keys a resumed run may change: budgets, logging and the hardware it runs on
SAFE_KEYS = frozenset({
    "train.epochs", "train.max_steps", "train.time_budget_s", "train.device", "train.log_every",
    "train.tensorboard", "train.eval_every", "train.early_stop_patience", "train.compile", "train.amp",
    "train.channels_last", "train.max_nonfinite", "data.workers", "data.pin_memory", "data.cache_images",
    "eval.batch_size", "train.report",
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
    changed = [k for k in new if k not in _IGNORED and new[k] != old.get(k) and not (new[k] is None and config)]
    unsafe = [k for k in changed if k not in SAFE_KEYS]
    if unsafe:
        shown = ", ".join(f"{k} ({_short(old.get(k))} -> {_short(new[k])})" for k in unsafe[:8])
        more = f" and {len(unsafe) - 8} more" if len(unsafe) > 8 else ""
        raise ConfigError(f"cannot resume {checkpoint} with different settings: {shown}{more}. Only "
                          f"{', '.join(sorted(SAFE_KEYS))} may change; start a new run for the others")
    for key in changed:
        section, _, name = key.rpartition(".")
        setattr(get_key(stored, section), name, get_key(wanted, key))
    stored.train.resume = str(checkpoint)
    stored.train.out_dir = str(Path(checkpoint).parent)
    return stored


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
