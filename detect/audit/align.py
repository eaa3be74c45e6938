"""Edit-distance alignment of a planned row of facings to the detected one (and of planned to detected rows).

A planned row is one SKU per facing, left to right. The detected row is a sequence of tokens, left to
right: a detected product (its class name, a ``str``) or an empty gap (a ``float``: the product width
that fits in it, in units of the row's median product width). The alignment is a minimum-cost edit
script (Needleman-Wunsch), so one missing product costs one edit instead of shifting the rest of the row:

==============  =======================================  ==========================================
operation       meaning                                  cost
==============  =======================================  ==========================================
present         planned SKU found in its slot            0
misplaced       another SKU stands in the slot           ``misplaced`` (1)
out_of_stock    ``k`` planned facings fall in a gap      ``k * in_gap + gap_fit * |gap - sum(w + s)|``
missing         planned facing with neither product      ``missing`` (1.5)
                nor gap (no room left for it)
extra           detected product in no planned slot      ``extra`` (1)
==============  =======================================  ==========================================

``w`` is a planned facing's expected width and ``s`` the row's normal spacing (same units as the gap), so
the gap's width decides how many (and which) planned facings it holds. A missing product leaves a gap,
and a gap it fits costs 1 per facing, less than ``missing``: a missing facing is pinned to the empty
space it left. A substitution (1) is cheaper than a deletion plus an insertion (2.5), so a wrong product
in a slot is ``misplaced``, not ``missing + extra``. Ties prefer present/misplaced, then out_of_stock,
then missing, then extra.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

INF = float("inf")


@dataclass(frozen=True)
class AlignCosts:
    misplaced: float = 1.0
    missing: float = 1.5
    extra: float = 1.0
    in_gap: float = 1.0
    gap_fit: float = 0.75


@dataclass(frozen=True)
class Op:
    """One step of the edit script.

    ``kind``: ``present`` | ``misplaced`` | ``out_of_stock`` | ``missing`` | ``extra``; ``plan``: index in
    the planned sequence (None for ``extra``); ``token``: index in the detected tokens (a product for
    present/misplaced/extra, a gap for out_of_stock, None for missing).
    """

    kind: str
    plan: int | None
    token: int | None


def align_row(
    planned: Sequence[str],
    tokens: Sequence[str | float],
    costs: AlignCosts = AlignCosts(),
    widths: Sequence[float] | None = None,
    spacing: float = 0.0,
) -> tuple[float, list[Op]]:
    """Align a planned row to detected tokens.

    Args:
        planned: one SKU per planned facing, left to right.
        tokens: detected products (``str``: class name) and gaps (``float``: the product width that fits,
            in row-median product widths), left to right.
        costs: operation costs (see the module table).
        widths: expected width of each planned facing (same units; None = 1 each).
        spacing: the row's normal space between products (same units).

    Returns:
        ``(total cost, ops)``: ops in left-to-right order; every planned index and every product token
        appears exactly once (a gap token appears once per facing it holds, or not at all).
    """
    pitch = [(1.0 if widths is None else float(widths[i])) + spacing for i in range(len(planned))]
    P, T = len(planned), len(tokens)
    cost = [[INF] * (T + 1) for _ in range(P + 1)]
    back: list[list[tuple[int, int, str] | None]] = [[None] * (T + 1) for _ in range(P + 1)]
    cost[0][0] = 0.0

    def relax(i: int, j: int, pi: int, pj: int, c: float, kind: str) -> None:
        if cost[pi][pj] + c < cost[i][j]:
            cost[i][j] = cost[pi][pj] + c
            back[i][j] = (pi, pj, kind)

    for i in range(P + 1):
        for j in range(T + 1):
            tok = tokens[j - 1] if j else None
            if j and isinstance(tok, str) and i:
                same = planned[i - 1] == tok
                relax(i, j, i - 1, j - 1, 0.0 if same else costs.misplaced, "present" if same else "misplaced")
            if j and not isinstance(tok, str):
                filled = 0.0  # width of the k planned facings ending at i
                for k in range(0, i + 1):
                    if k:
                        filled += pitch[i - k]
                    relax(i, j, i - k, j - 1, k * costs.in_gap + costs.gap_fit * abs(float(tok) - filled), "out_of_stock")
                    if filled > float(tok) + 2.0:
                        break
            if i:
                relax(i, j, i - 1, j, costs.missing, "missing")
            if j and isinstance(tok, str):
                relax(i, j, i, j - 1, costs.extra, "extra")

    ops: list[Op] = []
    i, j = P, T
    while i or j:
        pi, pj, kind = back[i][j]
        if kind in ("present", "misplaced"):
            ops.append(Op(kind, i - 1, j - 1))
        elif kind == "out_of_stock":
            ops.extend(Op(kind, p, j - 1) for p in range(i - 1, pi - 1, -1))
        elif kind == "missing":
            ops.append(Op(kind, i - 1, None))
        else:
            ops.append(Op(kind, None, j - 1))
        i, j = pi, pj
    ops.reverse()
    return cost[P][T], ops


def match_sequences(
    n_a: int, n_b: int, pair: Callable[[int, int], float], skip_a: Callable[[int], float], skip_b: Callable[[int], float]
) -> list[tuple[int | None, int | None]]:
    """Order-preserving matching of two sequences (e.g. planned and detected shelf rows, top to bottom).

    Args:
        n_a, n_b: lengths.
        pair: cost of matching ``a[i]`` with ``b[j]``.
        skip_a, skip_b: cost of leaving ``a[i]`` / ``b[j]`` unmatched.

    Returns:
        ``[(i, j)]`` in order, ``i`` or ``j`` None for an unmatched item; every index appears once.
    """
    cost = [[INF] * (n_b + 1) for _ in range(n_a + 1)]
    back: list[list[tuple[int, int] | None]] = [[None] * (n_b + 1) for _ in range(n_a + 1)]
    cost[0][0] = 0.0
    for i in range(n_a + 1):
        for j in range(n_b + 1):
            for pi, pj, c in (
                (i - 1, j - 1, pair(i - 1, j - 1) if i and j else INF),
                (i - 1, j, skip_a(i - 1) if i else INF),
                (i, j - 1, skip_b(j - 1) if j else INF),
            ):
                if c < INF and cost[pi][pj] + c < cost[i][j]:
                    cost[i][j], back[i][j] = cost[pi][pj] + c, (pi, pj)
    out: list[tuple[int | None, int | None]] = []
    i, j = n_a, n_b
    while i or j:
        pi, pj = back[i][j]
        out.append((i - 1 if pi < i else None, j - 1 if pj < j else None))
        i, j = pi, pj
    out.reverse()
    return out


__all__ = ["AlignCosts", "Op", "align_row", "match_sequences"]
