"""Checkpoints: atomic save (through :func:`data_tools.atomic.atomic_open`) and safe load (``weights_only=True``).

A file that cannot be loaded gets one line naming it and the reason (truncated, not a checkpoint, an
unsafe pickle and the global it wants), plus the newest loadable checkpoint beside it when there is one;
never advice to load it unsafely. :func:`load_model` rebuilds a checkpoint's model (EMA weights preferred) for
eval, predict, export and compare; :func:`unwrap` gives the plain model inside DDP / ``torch.compile``.
"""

from __future__ import annotations

import errno
import os
import pickle
import re
import stat
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from data_tools.atomic import atomic_open, same_file
from data_tools.errors import UserError
from data_tools.userfiles import UnsafeFile, open_regular
from detect.config import Config, config_from_dict

CHECKPOINT_FORMAT = "retail-detect-checkpoint"
DETECTOR_KIND = "detector"  # a checkpoint's ``kind``: ``detector`` (absent in files of earlier versions) or ``embedder``
_MAX_CHECKPOINT_BYTES = 8 << 30
_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_WRITER_FAILED = re.compile(r"unexpected pos|PytorchStreamWriter failed|inline_container")
_LAST_GOOD_TRIES = 4  # checkpoints beside a broken one tried for the "last good checkpoint" hint (newest first)
_LAST_GOOD_SCAN = 10_000  # folder entries looked at for it


class CheckpointError(UserError, ValueError):
    """A checkpoint cannot be loaded or used; the message names the file and the reason."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically: a crash or a full disk mid-write leaves the previous file intact.

    Raises:
        OSError: :class:`data_tools.atomic.WriteError` naming the user's path (``no space left writing
        runs/x/last.pt (previous last.pt kept)``), never the temp file's name.
    """
    path = Path(path)
    with atomic_open(path, "wb") as f:
        try:
            torch.save(state, f)
        except RuntimeError as exc:  # torch's zip writer hides a failed write behind "unexpected pos"
            raise _write_failure(exc) from None
    return path


def _write_failure(exc: RuntimeError) -> BaseException:
    """What :func:`torch.save` really hit: the ``OSError`` its ``RuntimeError`` hides (torch's zip writer turns a
    failed write, e.g. a full disk, into ``[enforce fail at inline_container.cc] . unexpected pos N vs M``,
    the OSError kept as its context), for :func:`~data_tools.atomic.atomic_open` to name the user's path;
    an I/O error when the writer failed without one; else ``exc`` itself (a bug)."""
    seen: BaseException | None = exc
    for _ in range(8):  # the chain of causes, bounded
        seen = seen.__cause__ or seen.__context__ if seen is not None else None
        if isinstance(seen, OSError):
            return seen
    if _WRITER_FAILED.search(str(exc)):
        return OSError(errno.EIO, "the write failed (is the disk full?)")
    return exc


def _reason(path: Path, exc: BaseException) -> str:
    """One short reason for a failed ``torch.load`` of ``path``."""
    text = _ANSI.sub("", str(exc))
    unsafe = _UNSAFE_GLOBAL.search(text)
    if unsafe:
        return f"it holds a pickled object that is not plain data (global {unsafe.group(1)}); refused for safety"
    try:
        with open_regular(path, _MAX_CHECKPOINT_BYTES) as f:
            head = f.read(4)
    except (OSError, UnsafeFile):
        head = b""
    if not head:
        return "the file is empty"
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path):
                pass
        except zipfile.BadZipFile:
            return "the file is truncated (zip central directory missing)"
        return "a damaged PyTorch zip archive"
    if head[:1] == b"\x80":
        return "a pickle file that is not a plain-data PyTorch checkpoint; refused for safety"
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "a text file, not a PyTorch checkpoint"
    return "not a PyTorch checkpoint"


def _load_raw(path: Path, map_location) -> dict[str, Any]:
    """``torch.load`` of a regular file (a FIFO or device is refused before it is opened, never read)."""
    try:
        f = open_regular(path, _MAX_CHECKPOINT_BYTES)
    except UnsafeFile as exc:
        if exc.kind == "huge_file":
            raise CheckpointError(f"{path}: {path.stat().st_size / 2**30:.1f} GiB is too large for a checkpoint") from None
        raise CheckpointError(f"{path} {exc.reason}") from None
    try:
        with f:
            state = torch.load(f, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError, KeyError, TypeError,
            IndexError, zipfile.BadZipFile, UnicodeDecodeError, OSError) as exc:
        raise CheckpointError(f"{path} is unusable: {_reason(path, exc)}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a retail-detect checkpoint (top level is {type(state).__name__})")
    return state


def _last_good(path: Path) -> Path | None:
    """The newest other ``*.pt`` beside ``path`` that loads, or None: only regular files (a FIFO named
    ``x.pt`` would block ``open``), at most :data:`_LAST_GOOD_TRIES` of them, each under the size limit."""
    folder = path.parent
    candidates: list[tuple[float, str]] = []
    try:
        with os.scandir(folder) as entries:
            for i, entry in enumerate(entries):
                if i >= _LAST_GOOD_SCAN:
                    break
                if not entry.name.endswith(".pt") or entry.name == path.name:
                    continue
                try:
                    st = entry.stat()  # follows a symlink: its target must be a regular file too
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) and 0 < st.st_size <= _MAX_CHECKPOINT_BYTES:
                    candidates.append((st.st_mtime, entry.name))
    except OSError:
        return None
    for _, name in sorted(candidates, reverse=True)[:_LAST_GOOD_TRIES]:
        p = folder / name
        if same_file(p, path):
            continue
        try:
            if _load_raw(p, "cpu").get("format") == CHECKPOINT_FORMAT:
                return p
        except CheckpointError:
            continue
    return None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)``: tensors and plain data only, never code.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not a checkpoint, truncated, or carrying a pickle payload (one line, naming the
            newest loadable checkpoint in the same folder when there is one).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return _load_raw(path, map_location)
    except CheckpointError as exc:
        good = _last_good(path)
        raise CheckpointError(f"{exc}" + (f"; last good checkpoint: {good}" if good else "")) from None


def require_keys(ckpt: dict[str, Any], path: str | Path, keys: tuple[str, ...] = ("model", "config", "class_names")) -> None:
    """Refuse a checkpoint missing any of ``keys`` (e.g. a training checkpoint without class names)."""
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: not a retail-detect checkpoint (missing {', '.join(repr(k) for k in missing)})")


def load_state_strict(model: torch.nn.Module, state: dict, path: str | Path) -> None:
    """``model.load_state_dict(state)`` with a one-line summary instead of a multi-KB key dump."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        ours, theirs = set(model.state_dict()), set(state)
        missing, extra = sorted(ours - theirs), sorted(theirs - ours)
        if missing or extra:
            ex = (missing or extra)[0]
            detail = f"{len(missing)} missing and {len(extra)} unexpected weights (e.g. '{ex}')"
        else:
            detail = "weight shapes differ (the recipe's model settings do not match the checkpoint)"
        raise CheckpointError(f"{path}: weights do not fit this model: {detail}") from exc


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DDP / torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def _strip_prefixes(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop DDP (``module.``) and ``torch.compile`` (``_orig_mod.``) key prefixes."""
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix) :]
        out[k] = v
    return out


def _ema_state(ema) -> dict[str, Tensor] | None:
    """The EMA state dict, whether stored bare or wrapped (``{"state_dict"|"model"|"module": ...}``)."""
    if not isinstance(ema, dict) or not ema:
        return None
    if all(isinstance(v, Tensor) for v in ema.values()):
        return ema
    for key in ("state_dict", "model", "module", "ema"):
        if isinstance(ema.get(key), dict):
            return _ema_state(ema[key])
    return None


def load_model(
    weights: str | Path, use_ema: bool = True, score_thresh: float | None = None
) -> tuple[nn.Module, list[str], Config]:
    """Rebuild the model of a checkpoint: ``(model on CPU in eval mode, class_names, config)``.

    ``score_thresh`` replaces the training ``model.score_thresh`` (the model then filters at ``conf``).
    An exported file (``.onnx``, ``.xml``) gives its runner behind the same contract
    (:func:`detect.engine.runtime.exported_module.load_exported`).
    """
    from detect.engine.runtime.exported import is_exported
    from detect.models.build import build_model  # models import nothing from the engine: no cycle

    if is_exported(weights):
        from detect.engine.runtime.exported_module import load_exported

        return load_exported(weights, score_thresh)

    ckpt = load_checkpoint(weights)
    kind = ckpt.get("kind", DETECTOR_KIND)
    if kind != DETECTOR_KIND:
        raise CheckpointError(f"{weights}: an {kind} checkpoint, not a detector; it names crops for a gallery "
                              f"(`retail-detect gallery build --embedder {weights} ...`)" if kind == "embedder"
                              else f"{weights}: a checkpoint of kind {kind!r}, not a detector")
    require_keys(ckpt, weights)
    cfg = config_from_dict(ckpt["config"])
    class_names = [str(c) for c in ckpt["class_names"]]
    cfg.model.backbone_weights = "none"  # the checkpoint has every weight: do not look for ImageNet files
    if score_thresh is not None:
        cfg.model.score_thresh = float(score_thresh)
    model = build_model(cfg.model, len(class_names), cfg.data.image_size)
    load_weights(model, ckpt, weights, use_ema)
    return model.eval(), class_names, cfg


def load_weights(model: nn.Module, ckpt: dict[str, Any], path: str | Path, use_ema: bool = True) -> None:
    """Load a checkpoint's weights into ``model``: its EMA weights when ``use_ema`` and it has them, else
    ``model``; DDP / ``torch.compile`` prefixes stripped; strict (one-line summary of what does not fit)."""
    state = _ema_state(ckpt.get("ema")) if use_ema else None
    load_state_strict(model, _strip_prefixes(state if state is not None else ckpt["model"]), path)
