import numpy as np
import torch

from detect.verbs.shelf_rows import assign_rows, class_counts, group_rows, row_counts

NAMES = ["cola", "chips", "soap"]


def _shelf(rows_spec, seed=0):
    """Boxes on synthetic shelves: rows_spec = [(y_bottom, [labels...]), ...] top to bottom."""
    rng = np.random.default_rng(seed)
    boxes, labels, truth = [], [], []
    for r, (bottom, labs) in enumerate(rows_spec):
        x = 10.0
        for lab in labs:
            h = rng.uniform(60, 100)  # products of different heights stand on the same shelf
            w = rng.uniform(30, 50)
            boxes.append([x, bottom - h, x + w, bottom])
            labels.append(lab)
            truth.append(r)
            x += w + 4
    perm = rng.permutation(len(boxes))
    return (
        torch.tensor(boxes, dtype=torch.float32)[perm],
        torch.tensor(labels)[perm],
        np.array(truth)[perm],
    )


def test_three_rows_counts():
    spec = [(150, [1, 1, 2, 2, 2]), (330, [3, 3, 1]), (510, [2, 1, 1, 1, 3, 3, 3])]
    boxes, labels, truth = _shelf(spec)
    rows, summary = group_rows(boxes, labels, NAMES)
    assert np.array_equal(rows, truth)
    assert [s["count"] for s in summary] == [5, 3, 7]
    assert summary[0]["classes"] == {"cola": 2, "chips": 3}
    assert summary[1]["classes"] == {"soap": 2, "cola": 1}
    assert summary[2]["classes"] == {"chips": 1, "cola": 3, "soap": 3}
    assert [s["row"] for s in summary] == [0, 1, 2]
    assert class_counts(labels, NAMES) == {"cola": 6, "chips": 4, "soap": 5}


def test_one_row_and_single_box():
    boxes, labels, truth = _shelf([(400, [1, 2, 3, 1, 2, 3, 1])], seed=3)
    assert set(assign_rows(boxes).tolist()) == {0}
    assert assign_rows(np.array([[0, 0, 10, 10]])).tolist() == [0]


def test_many_rows():
    spec = [(120 + 170 * r, [1 + r % 3] * 4) for r in range(8)]
    boxes, labels, truth = _shelf(spec, seed=1)
    rows = assign_rows(boxes)
    assert np.array_equal(rows, truth)
    assert [s["count"] for s in row_counts(rows, labels, NAMES)] == [4] * 8


def test_empty():
    rows, summary = group_rows(torch.zeros((0, 4)), torch.zeros(0, dtype=torch.int64), NAMES)
    assert rows.shape == (0,) and summary == []
    assert class_counts(torch.zeros(0, dtype=torch.int64), NAMES) == {}
