"""The conversion summary as text lines: what ``retail-data convert`` prints, and what any verb prints when it
converts a label folder or file on the fly (:mod:`data_tools.sources`)."""

from __future__ import annotations

from data_tools.records import Problem

EXAMPLES = 5
LINE_BUDGET = 300  # characters of class counts / problem text printed on one line; the report has it all


def clip(text: str, budget: int = LINE_BUDGET) -> str:
    return text if len(text) <= budget else text[: budget - 3] + "..."


def example_problems(problems: list[Problem], n: int = EXAMPLES) -> list[Problem]:
    """Up to ``n`` problems in report order, the first of each kind preferred."""
    kinds: set[str] = set()
    firsts = [i for i, p in enumerate(problems) if not (p.kind in kinds or kinds.add(p.kind))]
    others = [i for i in range(len(problems)) if i not in set(firsts)]
    return [problems[i] for i in sorted((firsts + others)[:n])]


def per_class(counts: dict[str, int]) -> str:
    """``"beans 123, cake 112"`` for as many classes as fit in :data:`LINE_BUDGET`, then how many more."""
    parts, used = [], 0
    for name, n in counts.items():
        item = clip(f"{name} {n}", 60)
        if used + len(item) > LINE_BUDGET and parts:
            break
        parts.append(item)
        used += len(item) + 2
    rest = len(counts) - len(parts)
    return ", ".join(parts) + (f", ... and {rest:,} more classes (all in --report)" if rest else "")


def summary_lines(s: dict, problems: list[Problem], more_hint: str = "see --report", shown: str | None = None) -> list[str]:
    """The summary of :func:`data_tools.convert.summarize` and up to :data:`EXAMPLES` problems, as lines.

    ``shown``: the source as the user wrote it (default: its absolute path).
    """
    how = f"{s['format']}, detected: {s['detected']}" if s.get("detected") else s["format"]
    lines = [f"converted {shown or s['source']} ({how}): {s['inputs']} inputs in {s['seconds']:.2f} s",
             f"  images: {s['images']} ({s['images_skipped']} skipped, {s['empty_images']} without boxes)   "
             f"boxes: {s['boxes']} ({s['boxes_skipped']} skipped)   classes: {s['classes']}",
             "  per class: " + per_class(s["per_class"])]
    if s.get("splits"):
        lines.append("  splits: " + ", ".join(f"{k} {v}" for k, v in s["splits"].items()))
    if not problems:
        return [*lines, "  problems: none"]
    kinds = ", ".join(f"{k} {v}" for k, v in s["problems_by_kind"].items())
    actions = ", ".join(f"{k} {v}" for k, v in s["problems_by_action"].items())
    lines.append(f"  problems: {s['problems']} ({kinds}; {actions})")
    lines += [f"    {clip(str(p))}" for p in example_problems(problems)]
    if len(problems) > EXAMPLES:
        lines.append(f"    ... {len(problems) - EXAMPLES} more ({more_hint})")
    return lines
