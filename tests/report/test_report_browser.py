"""The report page in a real headless browser: it renders (not blank) and every image on it loads.

Skips where no Chromium is installed; ``.ci/run`` installs Debian's ``chromium`` so CI always runs it.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from detect.report.browser import dump_dom, find_browser, screenshot

pytestmark = pytest.mark.skipif(find_browser() is None,
                                reason="no Chromium installed (apt-get install chromium; .ci/run does)")


def test_page_renders_and_every_image_loads(synthetic_report, tmp_path):
    page = synthetic_report["dir"] / "index.html"
    dom = dump_dom(page)
    broken = re.search(r'data-broken-images="(\d*)"', dom)
    assert broken is not None and broken.group(1) == "0", "the page's load check found broken images"
    imgs = re.findall(r'<img [^>]*src="([^"]+)"', dom)
    assert len(imgs) >= 10
    assert all((synthetic_report["dir"] / src).is_file() for src in imgs)
    assert "Confusion matrix" in dom and "retail-detect predict --conf" in dom

    png = screenshot(page, tmp_path / "shot.png", width=1000, height=1400)
    with Image.open(png) as im:
        pixels = np.asarray(im.convert("L"), np.float32)
    assert pixels.shape == (1400, 1000)
    assert pixels.std() > 20  # text, tables and plots, not a blank page
    assert (pixels < 100).mean() > 0.01  # dark pixels: the header bar and text


def test_a_missing_image_is_caught(synthetic_report, tmp_path):
    page = tmp_path / "broken.html"
    html = (synthetic_report["dir"] / "index.html").read_text()
    page.write_text(html.replace('src="confusion.png"', 'src="nowhere.png"'))
    for f in synthetic_report["dir"].iterdir():  # the same page beside the same images, one reference broken
        if f.is_dir():
            (tmp_path / f.name).symlink_to(f)
        elif f.suffix == ".png":
            (tmp_path / f.name).symlink_to(f)
    dom = dump_dom(page)
    assert re.search(r'data-broken-images="1"', dom)
