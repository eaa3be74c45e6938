"""Loader workers never hang: OpenCV's thread pool vs ``fork``, and a stalled worker ends in one clear line.

OpenCV's pool does not survive ``fork``: a child forked after the parent ran a parallel ``cv2.resize`` (a
640x640 image is large enough; 320x320 is not) hangs forever in ``cv2.setNumThreads``. Each hang check
runs in its own process group with a timeout, so a regression fails the test instead of hanging the suite.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from data_tools.store import save_dataset
from data_tools.synth import make_tiny_dataset
from detect.data import build_loader
from detect.data.loader import LoaderStalled

REPO = Path(__file__).resolve().parents[2]
HANG_TIMEOUT_S = 60  # the fixed code needs a few seconds; a hang is forever


def run_python(code: str, timeout: float) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (this checkout first on the path); on timeout kill its whole
    process group (forked loader workers included) and fail the test."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"hung for {timeout} s (killed); output so far:\n{out}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out)


def test_opencv_single_thread_makes_fork_safe():
    """The mechanism: the parent's pool after a 640x640 resize, shut down by ``opencv_single_thread``."""
    result = run_python("""
        import os
        import time
        import cv2
        import numpy as np
        from detect.data.loader import opencv_single_thread

        img = np.random.default_rng(0).integers(0, 255, (640, 640, 3), dtype=np.uint8)
        cv2.resize(img, (320, 320), interpolation=cv2.INTER_AREA)  # starts OpenCV's thread pool
        time.sleep(0.5)  # its threads go from spinning to waiting: the state a fork must not copy
        opencv_single_thread()
        pid = os.fork()
        if pid == 0:
            cv2.setNumThreads(1)  # hangs in a child forked with a live pool
            cv2.resize(img, (320, 320), interpolation=cv2.INTER_AREA)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print("child status", status)
    """, timeout=HANG_TIMEOUT_S)
    assert result.returncode == 0 and "child status 0" in result.stdout, result.stdout


@pytest.mark.slow  # the whole path in a fresh interpreter; the mechanism's test above stays in the default lane
def test_workers_iterate_large_cached_images(tmp_path):
    """The trainer's path: 640x640 photos cached (resized to 320 in this process), then 2 workers."""
    rs = make_tiny_dataset(tmp_path, images=8, classes=2, seed=1, size=(640, 640))
    save_dataset(rs, tmp_path / "big.pkl")
    result = run_python(f"""
        import time
        from data_tools.store import load_dataset
        from detect.config import AugmentConfig
        from detect.data import DetectionDataset, build_loader

        ds = DetectionDataset(load_dataset({str(tmp_path / "big.pkl")!r}), 320, AugmentConfig(), True, True)
        assert ds.check_images() == []  # builds the cache here, as the trainer does
        time.sleep(0.5)  # the trainer builds the model here; OpenCV's idle pool threads go to sleep
        loader = build_loader(ds, 4, True, 2, False, False, 0)
        for epoch in range(2):
            shapes = [tuple(images.shape) for images, _ in loader]
        print("batches", shapes)
    """, timeout=HANG_TIMEOUT_S)
    assert result.returncode == 0, result.stdout
    assert "batches [(4, 3, 320, 320), (4, 3, 320, 320)]" in result.stdout, result.stdout


class SlowDataset(Dataset):
    """Each sample takes ``delay`` seconds: a worker that stalls."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int):
        time.sleep(self.delay)
        return torch.zeros(3, 8, 8, dtype=torch.uint8), {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}


def test_stalled_workers_raise_one_line_naming_workers_0():
    loader = build_loader(SlowDataset(1.5), 2, False, 1, False, False, 0, timeout_s=0.5)
    start = time.perf_counter()
    with pytest.raises(LoaderStalled) as err:
        next(iter(loader))
    assert time.perf_counter() - start < 1.5  # the timeout fired, not the slow sample
    del loader  # stop the worker here (it exits once its sample is done), not in a later test
    gc.collect()
    message = str(err.value)
    assert "\n" not in message and "data.workers=0" in message and "0.5 s" in message
    assert isinstance(err.value, RuntimeError)  # the CLI prints RuntimeErrors as one `error:` line


def test_worker_loader_keeps_len_and_batches():
    loader = build_loader(SlowDataset(0.0), 2, False, 1, False, False, 0, timeout_s=HANG_TIMEOUT_S)
    it = iter(loader)
    assert len(it) == len(loader) == 2
    assert [tuple(images.shape) for images, _ in it] == [(2, 3, 8, 8), (2, 3, 8, 8)]
