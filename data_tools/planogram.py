"""Planogram files: which products each shelf bay should hold, row by row, left to right.

Format (YAML or JSON; the documented example is ``configs/planogram_example.yaml``)::

    brands:                     # optional: class name -> brand, for share of shelf per brand
      brand_a: acme
    bays:
      - name: bay1
        match: "bay1_*"         # fnmatch pattern on the photo's file name; omitted = any other photo
        rows:                   # top shelf first, each row left to right
          - [{sku: brand_a, facings: 3}, {sku: brand_b, facings: 2}]
          - [{sku: brand_c, facings: 4}]

A file with one plan for every photo may give ``rows:`` at the top level instead of ``bays:``. A photo
gets the first bay whose ``match`` fits its file name (or its path), else the bay without ``match``.

Every problem in the file is collected and reported as one line ``FILE:LINE: what is wrong``: malformed
YAML/JSON, an empty row, a missing or non-positive ``facings``, an unknown key, and (once the class
names are known, :meth:`Planogram.check_classes`) an SKU that is not a class of the detector.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from data_tools.errors import UserError
from data_tools.safe_yaml import LineDict, LineLoader, with_unknown_lines
from data_tools.userfiles import UnsafeFile, read_limited

_TOP_KEYS = ("bays", "rows", "brands", "name")
_BAY_KEYS = ("name", "match", "rows")
_ITEM_KEYS = ("sku", "facings")
# Bounds: a real bay has a few shelves of a few dozen facings; the audit aligns rows pairwise (cost rows x
# facings squared), so far larger plans are typos or hostile files, refused before any work.
MAX_PLANOGRAM_BYTES = 4 * 1024 * 1024
MAX_FACINGS = 1000  # of one SKU in one row
MAX_ROWS = 100  # per bay
MAX_BAY_FACINGS = 5000  # planned facings in one bay
MAX_BAYS = 1000


class PlanogramError(UserError, ValueError):
    """A planogram that cannot be used; ``problems`` holds one ``FILE:LINE: reason`` line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)

    def lines(self) -> list[str]:
        """One line per problem: the CLIs print each as ``error: FILE:LINE: reason``."""
        return list(self.problems)


@dataclass(frozen=True)
class Facing:
    """``facings`` side-by-side units of one SKU in a planned row."""

    sku: str
    facings: int
    line: int | None = None  # line of the item in the plan file (1-based), None when unknown


@dataclass(frozen=True)
class Bay:
    """One planned shelf unit: rows top to bottom, each a left-to-right list of :class:`Facing`."""

    name: str
    match: str | None
    rows: tuple[tuple[Facing, ...], ...]
    line: int | None = None

    def sequence(self, row: int) -> list[str]:
        """Planned row ``row`` expanded to one SKU per facing, left to right."""
        return [f.sku for f in self.rows[row] for _ in range(f.facings)]

    def sequences(self) -> list[list[str]]:
        """Every row as :meth:`sequence`, top row first."""
        return [self.sequence(r) for r in range(len(self.rows))]

    @property
    def facings(self) -> int:
        """Planned facings in the whole bay."""
        return sum(f.facings for row in self.rows for f in row)


@dataclass
class Planogram:
    path: str
    bays: list[Bay]
    brands: dict[str, str] = field(default_factory=dict)  # class name -> brand (optional)
    brand_lines: dict[str, int | None] = field(default_factory=dict)

    def bay_for(self, photo: str | Path) -> Bay | None:
        """The bay of a photo: the first whose ``match`` fits its file name or path, else the default bay."""
        p = Path(photo)
        for bay in self.bays:
            if bay.match is not None and (
                fnmatch.fnmatch(p.name, bay.match) or fnmatch.fnmatch(p.as_posix(), bay.match)
            ):
                return bay
        return next((b for b in self.bays if b.match is None), None)

    def skus(self) -> set[str]:
        return {f.sku for bay in self.bays for row in bay.rows for f in row}

    def brand_of(self, class_name: str, sep: str = "_") -> str:
        """The brand of a class: the plan's ``brands`` entry, else the name up to the first ``sep``."""
        if class_name in self.brands:
            return self.brands[class_name]
        return brand_prefix(class_name, sep)

    def check_classes(self, class_names: list[str], what: str = "the detector's classes") -> None:
        """Raise :class:`PlanogramError` naming the line of every SKU (or brand key) not in ``class_names``."""
        known = set(class_names)
        problems = []
        for bay in self.bays:
            for r, row in enumerate(bay.rows):
                for i, f in enumerate(row):
                    if f.sku not in known:
                        problems.append(
                            f"{_where(self.path, f.line)}: unknown SKU '{f.sku}' (bay '{bay.name}' row {r + 1} "
                            f"item {i + 1}); {_known(f.sku, class_names, what)}"
                        )
        for name, line in self.brand_lines.items():
            if name not in known:
                problems.append(
                    f"{_where(self.path, line)}: brands: unknown class '{name}'; {_known(name, class_names, what)}"
                )
        if problems:
            raise PlanogramError(problems)


def brand_prefix(class_name: str, sep: str = "_") -> str:
    """``coke_zero`` -> ``coke`` for ``sep="_"``; the whole name when ``sep`` is empty or absent."""
    return class_name.split(sep, 1)[0] if sep and sep in class_name else class_name


# ----------------------------------------------------------------------------- loading with line numbers


def _parse(path: str, text: str):
    """File text -> nested data with lines; raises a one-line :class:`PlanogramError` when malformed."""
    if path.lower().endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise PlanogramError([f"{path}:{e.lineno}: malformed JSON: {e.msg} (column {e.colno})"]) from None
        try:  # JSON is (nearly always) YAML too: reparse for the line numbers
            return yaml.load(text, Loader=LineLoader)
        except yaml.YAMLError:
            return with_unknown_lines(data)
    try:
        return yaml.load(text, Loader=LineLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        context = f" ({e.context}" if e.context else ""
        if context and e.context_mark is not None and e.context_mark is not mark:
            context += f" that starts at line {e.context_mark.line + 1}"
        context += ")" if context else ""
        raise PlanogramError([f"{path}{line}: malformed YAML: {e.problem}{context}"]) from None
    except yaml.YAMLError as e:
        raise PlanogramError([f"{path}: malformed YAML: {e}"]) from None


# ----------------------------------------------------------------------------- validation


def _where(path: str, line: int | None) -> str:
    return f"{path}:{line}" if line else path


def _known(name: str, names: list[str], what: str) -> str:
    shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
    near = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return f"{what}: {shown}" + (f" (did you mean '{near[0]}'?)" if near else "")


def _key_line(d, key, default: int | None) -> int | None:
    return getattr(d, "key_lines", {}).get(key, default)


def _item_line(seq, i: int, default: int | None) -> int | None:
    lines = getattr(seq, "item_lines", None)
    return lines[i] if lines and i < len(lines) and lines[i] is not None else default


def _unknown_keys(d: dict, allowed: tuple[str, ...], path: str, what: str, problems: list[str]) -> None:
    for key in d:
        if key not in allowed:
            near = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.5)
            hint = f"; did you mean '{near[0]}'?" if near else f"; expected {', '.join(allowed)}"
            problems.append(f"{_where(path, _key_line(d, key, getattr(d, 'line', None)))}: {what}: unknown key '{key}'{hint}")


def _positive_int(value, most: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        return None
    return value


def _short(value, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters (a message never grows with the file)."""
    text = repr(value) if not isinstance(value, (list, dict)) or len(value) < 50 else f"a {type(value).__name__} of {len(value)} items"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _build_row(path: str, row, line: int | None, label: str, problems: list[str]) -> tuple[Facing, ...]:
    if not isinstance(row, list):
        problems.append(f"{_where(path, line)}: {label} must be a list of {{sku, facings}}, got {type(row).__name__}")
        return ()
    if not row:
        problems.append(f"{_where(path, line)}: {label} is empty: list at least one {{sku: NAME, facings: N}}")
        return ()
    out = []
    for i, item in enumerate(row):
        at = _item_line(row, i, line)
        what = f"{label} item {i + 1}"
        if not isinstance(item, dict):
            problems.append(f"{_where(path, at)}: {what} must be {{sku: NAME, facings: N}}, got {_short(item)}")
            continue
        _unknown_keys(item, _ITEM_KEYS, path, what, problems)
        sku = item.get("sku")
        if not isinstance(sku, str) or not sku.strip():
            problems.append(f"{_where(path, _key_line(item, 'sku', at))}: {what}: 'sku' must be a class name, got {_short(sku)}")
            continue
        n = _positive_int(item.get("facings", 1), MAX_FACINGS)
        if n is None:
            problems.append(
                f"{_where(path, _key_line(item, 'facings', at))}: {what} ('{sku[:80]}'): 'facings' must be a whole "
                f"number from 1 to {MAX_FACINGS}, got {_short(item.get('facings'))}"
            )
            continue
        out.append(Facing(sku.strip(), n, at))
    return tuple(out)


def _build_bay(path: str, raw, line: int | None, index: int, problems: list[str]) -> Bay | None:
    label = f"bay {index + 1}"
    if not isinstance(raw, dict):
        problems.append(f"{_where(path, line)}: {label} must be a mapping with 'rows', got {type(raw).__name__}")
        return None
    line = getattr(raw, "line", None) or line
    name = raw.get("name", f"bay{index + 1}")
    if not isinstance(name, (str, int)) or isinstance(name, bool) or not str(name).strip():
        problems.append(f"{_where(path, _key_line(raw, 'name', line))}: {label}: 'name' must be a text, got {name!r}")
        name = f"bay{index + 1}"
    name = str(name).strip()
    label = f"bay '{name}'"
    _unknown_keys(raw, _BAY_KEYS, path, label, problems)
    match = raw.get("match")
    if match is not None and (not isinstance(match, str) or not match.strip()):
        problems.append(f"{_where(path, _key_line(raw, 'match', line))}: {label}: 'match' must be a file-name pattern, got {match!r}")
        match = None
    rows = raw.get("rows")
    rows_line = _key_line(raw, "rows", line)
    if not isinstance(rows, list) or not rows:
        got = "nothing" if rows is None else _short(rows)
        problems.append(f"{_where(path, rows_line)}: {label}: 'rows' must be a non-empty list of rows (top shelf first), got {got}")
        return None
    if len(rows) > MAX_ROWS:
        problems.append(f"{_where(path, rows_line)}: {label}: {len(rows)} rows, more than the {MAX_ROWS} a bay may have")
        return None
    built = tuple(
        _build_row(path, row, _item_line(rows, r, rows_line), f"{label} row {r + 1}", problems)
        for r, row in enumerate(rows)
    )
    planned = sum(f.facings for row in built for f in row)
    if planned > MAX_BAY_FACINGS:
        problems.append(f"{_where(path, line)}: {label}: {planned:,} planned facings, more than the {MAX_BAY_FACINGS:,} "
                        "a bay may have")
        return None
    return Bay(name, match.strip() if match else None, built, line)


def load_planogram(path: str | Path, class_names: list[str] | None = None, what: str = "the detector's classes") -> Planogram:
    """Read and validate a planogram file.

    Args:
        path: YAML (``.yaml``/``.yml``) or JSON (``.json``) file.
        class_names: when given, every SKU (and ``brands`` key) must be one of them.
        what: how to name ``class_names`` in the unknown-SKU message.

    Raises:
        PlanogramError: every problem, one ``FILE:LINE: reason`` line each.
        OSError: the file cannot be read.
    """
    path = str(path)
    if not Path(path).exists():
        raise PlanogramError([f"{path}: planogram file not found"])
    try:
        text = read_limited(path, MAX_PLANOGRAM_BYTES).decode("utf-8")
    except UnsafeFile as e:
        raise PlanogramError([str(e)]) from None
    except UnicodeDecodeError as e:
        raise PlanogramError([f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})"]) from None
    data = _parse(path, text)
    if data is None:
        raise PlanogramError([f"{path}: the planogram is empty: give 'bays:' (or 'rows:' for one plan)"])
    if not isinstance(data, dict):
        raise PlanogramError([f"{_where(path, getattr(data, 'line', 1))}: the planogram must be a mapping with 'bays:' "
                              f"(or 'rows:'), got a {type(data).__name__}"])
    problems: list[str] = []
    _unknown_keys(data, _TOP_KEYS, path, "planogram", problems)
    if "bays" in data and "rows" in data:
        problems.append(f"{_where(path, _key_line(data, 'rows', 1))}: give either 'bays:' or one plan's 'rows:', not both")
    if "bays" in data:
        raw_bays, bays_line = data["bays"], _key_line(data, "bays", 1)
        if not isinstance(raw_bays, list) or not raw_bays:
            problems.append(f"{_where(path, bays_line)}: 'bays' must be a non-empty list of bays")
            raw_bays = []
        elif len(raw_bays) > MAX_BAYS:
            raise PlanogramError([f"{_where(path, bays_line)}: {len(raw_bays):,} bays, more than the {MAX_BAYS} "
                                  "a planogram may have"])
    elif "rows" in data:
        single = LineDict(name=data.get("name", "plan"), rows=data["rows"])
        single.key_lines = {k: _key_line(data, k, None) for k in ("name", "rows")}
        single.line = getattr(data, "line", 1)
        raw_bays, bays_line = [single], 1
    else:
        raise PlanogramError([f"{path}: no 'bays:' (or 'rows:' for one plan for every photo) in the planogram"])
    bays = [b for i, raw in enumerate(raw_bays)
            if (b := _build_bay(path, raw, _item_line(raw_bays, i, bays_line), i, problems)) is not None]
    _check_bays(path, bays, problems)
    brands, brand_lines = _build_brands(path, data, problems)
    if problems:
        raise PlanogramError(problems)
    plan = Planogram(path, bays, brands, brand_lines)
    if class_names is not None:
        plan.check_classes(class_names, what)
    return plan


def _check_bays(path: str, bays: list[Bay], problems: list[str]) -> None:
    seen: dict[str, Bay] = {}
    default: Bay | None = None
    for bay in bays:
        if bay.name in seen:
            problems.append(f"{_where(path, bay.line)}: bay name '{bay.name}' is used twice (first at line {seen[bay.name].line})")
        seen.setdefault(bay.name, bay)
        if bay.match is None:
            if default is not None:
                problems.append(f"{_where(path, bay.line)}: bay '{bay.name}' has no 'match' pattern, and neither has "
                                f"bay '{default.name}': only one bay can be the default for all other photos")
            default = default or bay


def _build_brands(path: str, data: dict, problems: list[str]) -> tuple[dict[str, str], dict[str, int | None]]:
    raw = data.get("brands")
    if raw is None:
        return {}, {}
    line = _key_line(data, "brands", 1)
    if not isinstance(raw, dict):
        problems.append(f"{_where(path, line)}: 'brands' must map class names to brand names")
        return {}, {}
    brands, lines = {}, {}
    for k, v in raw.items():
        at = _key_line(raw, k, line)
        if not isinstance(v, (str, int)) or isinstance(v, bool):
            problems.append(f"{_where(path, at)}: brands: '{k}' must map to a brand name, got {v!r}")
            continue
        brands[str(k)], lines[str(k)] = str(v), at
    return brands, lines


__all__ = ["Bay", "Facing", "Planogram", "PlanogramError", "brand_prefix", "load_planogram"]
