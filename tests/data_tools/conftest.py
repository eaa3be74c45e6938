"""Fixtures for the data_tools tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from dt_helpers import add_pair


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A good two-image VOC dataset under ``tmp_path / "ds"``: ``good1`` (2 boxes), ``good2`` (1 box)."""
    root = tmp_path / "ds"
    add_pair(root, "good1", [("beans", 2, 3, 10, 12), ("cake", 5, 5, 20, 20)])
    add_pair(root, "good2", [("cake", 1, 1, 32, 24)])
    return root
