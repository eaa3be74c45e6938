"""The one way figures become PNG files: matplotlib on its ``Agg`` backend (no screen needed), rendered into
memory and written atomically (:func:`data_tools.atomic.atomic_write_bytes`), the figure closed afterwards."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from data_tools.atomic import atomic_write_bytes


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (imported on first use: matplotlib is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: str | Path, dpi: int = 100, tight: bool = False) -> Path:
    """Write ``fig`` to ``path`` as PNG (atomically) and close it.

    ``tight``: crop to the drawn content (``bbox_inches="tight"``, a second render); figures laid out with
    ``constrained`` layout do not need it.
    """
    plt = pyplot()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, **({"bbox_inches": "tight"} if tight else {}))
    finally:
        plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
