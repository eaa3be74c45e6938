"""A headless Chromium for looking at the report pages as a person would: a screenshot, or the DOM after load.

Used by the browser test and by ``scripts/report_screenshot.py`` (the README's screenshot). Debian's package is
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
