"""Shared fixtures: tiny synthetic shelf datasets (no ../shared needed)."""

from __future__ import annotations

import os
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning (a shared 2-core CI machine slows down badly otherwise);
# set before anything imports torch. A value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

from data_tools.split import split_train_val
from data_tools.store import save_dataset
from data_tools.synth import make_tiny_dataset


@pytest.fixture(autouse=True, scope="session")
def _dataset_cache(tmp_path_factory):
    """Label folders converted on the fly by the tests are cached in a temporary folder, never in ~/.cache."""
    old = os.environ.get("RETAIL_DETECT_CACHE")
    os.environ["RETAIL_DETECT_CACHE"] = str(tmp_path_factory.mktemp("dataset_cache"))
    yield
    if old is None:
        os.environ.pop("RETAIL_DETECT_CACHE", None)
    else:
        os.environ["RETAIL_DETECT_CACHE"] = old


@pytest.fixture(scope="session")
def shelf_split(tmp_path_factory) -> dict[str, Path]:
    """48 synthetic 160x128 shelf photos of 3 brands, split 38/10: ``{"train", "val", "root"}`` paths."""
    root = tmp_path_factory.mktemp("shelves")
    rs = make_tiny_dataset(root, images=48, classes=3, seed=0, size=(160, 128))
    train, val = split_train_val(rs, 0.2, 0)
    save_dataset(train, root / "train.pkl")
    save_dataset(val, root / "val.pkl")
    return {"train": root / "train.pkl", "val": root / "val.pkl", "root": root}


@pytest.fixture(scope="session")
def tiny_split(tmp_path_factory) -> dict[str, Path]:
    """8 synthetic 96x80 photos of 2 brands, split 6/2: for fast plumbing tests."""
    root = tmp_path_factory.mktemp("tiny")
    rs = make_tiny_dataset(root, images=8, classes=2, seed=3, size=(96, 80))
    train, val = split_train_val(rs, 0.25, 0)
    save_dataset(train, root / "train.pkl")
    save_dataset(val, root / "val.pkl")
    return {"train": root / "train.pkl", "val": root / "val.pkl", "root": root}
