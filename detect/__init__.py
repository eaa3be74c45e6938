"""retail-detect: detectors, trainer, evaluator and predictor for retail product photos.

``from detect import load`` is the Python API (:mod:`detect.api`). It is imported on first use, so
``import detect`` (and every ``import detect.<module>``, which runs this file first) stays cheap: no torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Model", "Result", "load", "__version__"]
_API = ("Model", "Result", "load")


def __getattr__(name: str) -> Any:
    if name in _API:
        import detect.api

        return getattr(detect.api, name)
    raise AttributeError(f"module 'detect' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
