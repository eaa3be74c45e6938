"""A headless Chromium for looking at the report pages as a person would: a screenshot, or the DOM after load.

Used by the browser test and by ``python -m detect.report.browser PAGE.html OUT.png`` (how docs/report.png
was made). Debian's package is
``chromium`` (``apt-get install chromium``); as root it needs ``--no-sandbox``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         "--disable-extensions", "--allow-file-access-from-files", "--run-all-compositor-stages-before-draw")


def find_browser() -> str | None:
    """Path of a Chromium-family browser (``$CHROMIUM`` first), or None."""
    env = os.environ.get("CHROMIUM")
    if env and shutil.which(env):
        return shutil.which(env)
    return next((shutil.which(n) for n in NAMES if shutil.which(n)), None)


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    browser = find_browser()
    if browser is None:
        raise FileNotFoundError("no Chromium found: apt-get install chromium (or set $CHROMIUM)")
    with tempfile.TemporaryDirectory(prefix="retail-detect-chromium-") as profile:
        cmd = [browser, *FLAGS, f"--user-data-dir={profile}", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{browser} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return proc


def screenshot(page: str | Path, png: str | Path, width: int = 1280, height: int = 2400,
               timeout: float = 60.0) -> Path:
    """Render ``page`` (an HTML file) at ``width x height`` CSS pixels into ``png``."""
    png = Path(png).resolve()
    _run([f"--window-size={width},{height}", f"--screenshot={png}", Path(page).resolve().as_uri()], timeout)
    if not png.is_file():
        raise RuntimeError(f"the browser wrote no screenshot {png}")
    return png


def dump_dom(page: str | Path, timeout: float = 60.0, budget_ms: int = 3000) -> str:
    """The page's DOM as the browser holds it after loading (scripts run), as HTML text."""
    return _run([f"--virtual-time-budget={budget_ms}", "--dump-dom", Path(page).resolve().as_uri()], timeout).stdout


def page_picture(page: str | Path, png: str | Path, width: int = 1280, height: int = 2600, out_width: int = 900,
                 colors: int = 256) -> Path:
    """A small screenshot for documentation: rendered at ``width x height``, scaled to ``out_width`` pixels wide,
    reduced to a ``colors``-colour palette PNG (a report page is a few hundred KB at most), written atomically."""
    import io

    from PIL import Image

    from data_tools.atomic import atomic_write_bytes

    with tempfile.TemporaryDirectory(prefix="retail-detect-shot-") as tmp:
        raw = screenshot(page, Path(tmp) / "raw.png", width, height)
        with Image.open(raw) as im:
            im = im.convert("RGB")
            im = im.resize((out_width, round(im.height * out_width / im.width)), Image.LANCZOS)
            small = im.quantize(colors=colors, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    small.save(buf, format="PNG", optimize=True)
    return atomic_write_bytes(png, buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    """``python -m detect.report.browser PAGE.html OUT.png [--width W] [--height H] [--out-width W2]``."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m detect.report.browser",
                                description="screenshot of a report page in headless Chromium")
    p.add_argument("page")
    p.add_argument("png")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=2600)
    p.add_argument("--out-width", type=int, default=900)
    a = p.parse_args(argv)
    out = page_picture(a.page, a.png, a.width, a.height, a.out_width)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
