"""Stratified split / k-fold (deterministic, disjoint, balanced) and dataset statistics."""

from __future__ import annotations

import numpy as np
import pytest

from data_tools.records import Record, RecordSet
from data_tools.split import kfold, split_train_val, strata
from data_tools.stats import compute_stats, format_stats


def _rs(n_common=80, n_rare=10, n_empty=5) -> RecordSet:
    recs = []
    for i in range(n_common):
        recs.append(Record(f"c{i}.jpg", 100, 80, np.array([[0, 0, 10, 20], [5, 5, 45, 25]], np.float32), [1, 1]))
    for i in range(n_rare):  # rare class 2 always next to the common class
        recs.append(Record(f"r{i}.jpg", 100, 80, np.array([[0, 0, 10, 10], [0, 0, 30, 30]], np.float32), [1, 2]))
    recs += [Record(f"e{i}.jpg", 100, 80) for i in range(n_empty)]
    return RecordSet(["common", "rare"], "/ds", recs)


def test_strata_rarest_and_dominant():
    rs = _rs(2, 1, 1)
    rs.records.append(Record("m.jpg", 100, 80, np.array([[0, 0, 5, 5]] * 3, np.float32), [1, 1, 2]))
    assert strata(rs, "rarest").tolist() == [1, 1, 2, 0, 2]
    assert strata(rs, "dominant").tolist() == [1, 1, 2, 0, 1]  # a tie goes to the rarer class


def test_split_is_stratified_disjoint_and_deterministic():
    rs = _rs()
    tr, va = split_train_val(rs, 0.2, seed=1)
    names_tr, names_va = {r.image for r in tr.records}, {r.image for r in va.records}
    assert not names_tr & names_va and len(names_tr | names_va) == len(rs) and len(va) == 19
    assert sum(n.startswith("r") for n in names_va) == 2  # the rare class lands in val in proportion
    assert sum(n.startswith("e") for n in names_va) == 1
    tr2, va2 = split_train_val(rs, 0.2, seed=1)
    assert [r.image for r in va2.records] == [r.image for r in va.records]
    _, va3 = split_train_val(rs, 0.2, seed=2)
    assert [r.image for r in va3.records] != [r.image for r in va.records]
    assert va.class_names == rs.class_names and va.meta["split"] == "val"


def test_kfold_covers_every_image_once():
    rs = _rs()
    folds = kfold(rs, 5, seed=0)
    vals = [r.image for _, va in folds for r in va.records]
    assert sorted(vals) == sorted(r.image for r in rs.records)
    for tr, va in folds:
        assert len(tr) + len(va) == len(rs) and 18 <= len(va) <= 19
        assert sum(r.image.startswith("r") for r in va.records) == 2


@pytest.mark.parametrize("kwargs", [{"val_fraction": 0}, {"val_fraction": 1.0}, {"by": "size"}])
def test_split_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        split_train_val(_rs(), **kwargs)


def test_tiny_datasets():
    rs = _rs(2, 0, 0)
    tr, va = split_train_val(rs, 0.1)
    assert (len(tr), len(va)) == (1, 1)
    with pytest.raises(ValueError):
        split_train_val(_rs(1, 0, 0))
    with pytest.raises(ValueError):
        kfold(rs, 3)


def test_stats_values():
    s = compute_stats(_rs(2, 1, 1))
    assert (s["images"], s["boxes"], s["classes"], s["empty_images"]) == (4, 6, 2, 1)
    assert s["per_class"] == {"common": {"boxes": 5, "images": 3}, "rare": {"boxes": 1, "images": 1}}
    assert s["objects_per_image"]["histogram"] == {"0": 1, "2": 3}
    assert s["box_size"]["max"] == pytest.approx(30) and s["aspect"]["min"] == pytest.approx(0.5)
    assert sum(s["box_size"]["histogram"]["counts"]) == 6 and s["image_sizes"] == {"100x80": 4}
    assert "images: 4  boxes: 6  classes: 2" in format_stats(s)


def test_stats_of_an_empty_dataset():
    s = compute_stats(RecordSet(["a"], "/", []))
    assert s["boxes"] == 0 and s["box_size"]["median"] is None
    assert "box size" in format_stats(s)
