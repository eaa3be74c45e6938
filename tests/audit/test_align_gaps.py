"""Edit-distance alignment of planned and detected facings, row matching, and gap finding, on hand-made rows."""

from __future__ import annotations

import numpy as np

from detect.audit.align import align_row, match_sequences
from detect.audit.gaps import find_gaps


def _kinds(ops):
    return [(o.kind, o.plan, o.token) for o in ops]


def test_missing_facing_is_pinned_to_its_gap_not_shifting_the_row():
    cost, ops = align_row(list("aaabb"), ["a", 1.0, "a", "b", "b"])
    assert cost == 1.0
    assert _kinds(ops) == [("present", 0, 0), ("out_of_stock", 1, 1), ("present", 2, 2), ("present", 3, 3),
                           ("present", 4, 4)]


def test_wrong_product_in_a_slot_is_misplaced_not_missing_plus_extra():
    _, ops = align_row(list("aabb"), ["a", "c", "b", "b"])
    assert [o.kind for o in ops] == ["present", "misplaced", "present", "present"]
    _, ops = align_row(list("ab"), ["b", "a"])  # two swapped facings: both misplaced
    assert [o.kind for o in ops] == ["misplaced", "misplaced"]


def test_extra_and_missing_without_room():
    _, ops = align_row(list("aab"), ["a", "a", "b", "c"])
    assert _kinds(ops)[-1] == ("extra", None, 3)
    _, ops = align_row(list("abcd"), ["a", "c", "d"])  # no gap left where b stood: missing, the rest in place
    assert [o.kind for o in ops] == ["present", "missing", "present", "present"]


def test_gap_width_decides_how_many_facings_it_holds():
    _, ops = align_row(list("abbbc"), ["a", 2.0, "b", "c"])
    assert [o.kind for o in ops] == ["present", "out_of_stock", "out_of_stock", "present", "present"]
    _, ops = align_row(list("abc"), ["a", 1.0, "b", "c"])  # room for a product nobody planned: no facing in it
    assert [o.kind for o in ops] == ["present", "present", "present"]


def test_misplaced_next_to_a_gap_uses_the_gap_position():
    # planned D D D D E E E E; slot 3 holds an E, slot 4 is empty: the gap sits where slot 4 was
    _, ops = align_row(list("DDDDEEEE"), ["D", "D", "D", "E", 1.0, "E", "E", "E"])
    assert [o.kind for o in ops] == ["present"] * 3 + ["misplaced", "out_of_stock"] + ["present"] * 3


def test_match_sequences_skips_the_row_that_has_no_counterpart():
    planned = ["aaa", "bbb", "ccc"]
    detected = ["aaa", "ccc"]

    def pair(i, j):
        return align_row(list(planned[i]), list(detected[j]))[0]

    pairs = match_sequences(3, 2, pair, lambda i: 3.0, lambda j: 3.0)
    assert pairs == [(0, 0), (1, None), (2, 1)]


def _row(xs, w=40.0, y1=10.0, y2=90.0):
    return np.array([[x, y1, x + w, y2] for x in xs], dtype=np.float64)


def test_find_gaps_between_neighbours_and_at_both_shelf_ends():
    boxes = _row([30, 74, 162, 206])  # 30 px free at the left end, a 48 px hole after the 2nd, 34 px at the right
    gaps = find_gaps(boxes, (0, 280), min_gap=0.4)
    assert [(g.x1, g.x2, g.after) for g in gaps] == [(0, 30, 0), (114, 162, 2), (246, 280, 4)]
    assert gaps[1].facings == 1 and gaps[1].ratio == 1.2 and gaps[1].box == [114, 10, 162, 90]
    assert find_gaps(boxes, (0, 280), min_gap=0.9) == [find_gaps(boxes, (0, 280), 0.4)[1]]


def test_find_gaps_ignores_space_covered_by_a_wide_overlapping_box():
    boxes = np.array([[0, 0, 200, 50], [20, 0, 60, 50], [150, 0, 190, 50], [202, 0, 242, 50]], np.float64)
    assert find_gaps(boxes, (0, 244), min_gap=0.4) == []
