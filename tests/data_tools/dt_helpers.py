"""Helpers that build tiny on-disk VOC datasets for the data_tools tests (images are a few pixels)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image


def make_image(path: Path, size=(32, 24), mode: str = "RGB", fmt: str | None = None, exif_orientation: int = 0) -> Path:
    """Write a small image (``size`` = (W, H) as stored) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    if mode == "I;16":
        img = Image.fromarray(np.arange(w * h, dtype=np.uint16).reshape(h, w) * 50)  # a 16-bit PNG
    else:
        img = Image.new(mode, (w, h), color=(120,) * len(Image.new(mode, (1, 1)).getbands()))
    kwargs = {}
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif.tobytes()
    img.save(path, format=fmt, **kwargs)
    return path


def voc_xml(filename: str | None = "img.jpg", size=(32, 24), objects=(), extra: str = "") -> str:
    """A labelImg-style XML string. ``objects``: tuples ``(name, xmin, ymin, xmax, ymax)`` or dicts of raw
    element text (``{"name": ..., "xmin": ..., "difficult": ...}``; a missing key omits the element)."""
    parts = ["<annotation>", "\t<folder>x</folder>"]
    if filename is not None:
        parts.append(f"\t<filename>{filename}</filename>")
    parts.append("\t<path>C:\\Users\\someone\\img.png</path>")
    if size is not None:
        parts.append(f"\t<size>\n\t\t<width>{size[0]}</width>\n\t\t<height>{size[1]}</height>\n\t\t<depth>3</depth>\n\t</size>")
    for obj in objects:
        if not isinstance(obj, dict):
            obj = dict(zip(("name", "xmin", "ymin", "xmax", "ymax"), obj), difficult="0")
        parts.append("\t<object>")
        for tag in ("name", "truncated", "difficult"):
            if tag in obj:
                parts.append(f"\t\t<{tag}>{obj[tag]}</{tag}>")
        coords = [f"\t\t\t<{t}>{obj[t]}</{t}>" for t in ("xmin", "ymin", "xmax", "ymax") if t in obj]
        if coords:  # no coordinate keys at all: no <bndbox> element
            parts += ["\t\t<bndbox>", *coords, "\t\t</bndbox>"]
        parts.append("\t</object>")
    parts.append(extra + "</annotation>\n")
    return "\n".join(parts)


def add_pair(root: Path, stem: str, objects=(), size=(32, 24), image_size=None, xml: str | bytes | None = None,
             folder: str = "", ext: str = ".jpg", **image_kw) -> tuple[Path, Path]:
    """``root/annotations/<folder>/<stem>.xml`` + ``root/images/<folder>/<stem><ext>``."""
    ann = root / "annotations" / folder / f"{stem}.xml"
    img = root / "images" / folder / f"{stem}{ext}"
    ann.parent.mkdir(parents=True, exist_ok=True)
    if image_size is not False:
        make_image(img, image_size or size, **image_kw)
    if xml is None:
        xml = voc_xml(f"{stem}{ext}", size, objects)
    ann.write_bytes(xml if isinstance(xml, bytes) else xml.encode("utf-8"))
    return ann, img


def tree_hashes(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``root``."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


def temp_leftovers(folder: Path) -> list[Path]:
    """Temporary files an atomic write would leave behind if it broke."""
    return [p for p in folder.rglob(".*.tmp")]


def cli_convert(root: Path, out_dir: Path, *extra: str) -> tuple[int, object, dict]:
    """Run ``retail-data convert`` on ``root`` through ``main``; check the bad-input invariants (ARCHITECTURE.md, "Bad inputs").

    Checks: the inputs under ``root`` are byte-identical afterwards, the report is written, and no
    temporary file is left in ``out_dir``. Returns ``(exit code, RecordSet or None, report dict)``.
    """
    from data_tools.store import load_dataset
    from detect.verbs.retail_data import main

    out_dir.mkdir(parents=True, exist_ok=True)
    out, report = out_dir / "ds.pkl", out_dir / "report.json"
    before = tree_hashes(root)
    rc = main(["convert", str(root), "-o", str(out), "--report", str(report), "--quiet", *extra])
    assert tree_hashes(root) == before, "convert modified its inputs"
    assert not temp_leftovers(out_dir)
    doc = json.loads(report.read_text(encoding="utf-8"))
    rs = load_dataset(out) if out.exists() else None
    return rc, rs, doc


def problems_of(report: dict, file_part: str) -> list[dict]:
    """Report rows whose file path contains ``file_part``."""
    return [p for p in report["problems"] if file_part in p["file"]]


def images_of(rs) -> set[str]:
    """Stems of the images in a RecordSet."""
    return {Path(r.image).stem for r in rs.records}


def line_of(path: Path, needle: str, nth: int = 1) -> int:
    """1-based line number of the ``nth`` line of ``path`` that contains ``needle``."""
    hits = [i for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if needle in line]
    return hits[nth - 1]


REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, timeout: float = 60, mem_mb: int = 2048):
    """Run ``python -m data_tools ARGS`` in a child process with a wall-clock and an address-space limit.

    For inputs that could hang (a FIFO) or eat memory (``/dev/zero``) on broken code: the child is killed
    after ``timeout`` seconds (``subprocess.TimeoutExpired``) or fails its allocations past ``mem_mb``.
    Returns the ``subprocess.CompletedProcess`` (text stdout/stderr).
    """
    import os
    import resource
    import subprocess
    import sys

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (mem_mb << 20, mem_mb << 20))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "data_tools", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limit, env=env)
