"""The floors of the package point one way: every import, top-level or lazy, goes to the same floor or a lower
one, and no two files import each other, directly or round a loop.

Floors, lowest first (ARCHITECTURE.md, "Layout and layering"):

0. ``data_tools``: label files -> validated records, the dataset file, planograms, synthetic shelves; it imports
   nothing of ``detect``.
1. ``detect.models``: backbones, necks, heads, their options, the registry of detectors.
2. ``detect.config``: the recipe (reads the heads' options from the registry).
3. ``detect.data``: records -> augmented tensors and batches.
4. ``detect.engine.runtime`` (+ ``detect.tables``): checkpoints, run folders, threads, progress.
5. ``detect.engine.inference``: the Predictor, tiling, the COCO evaluator.
6. ``detect.engine.training``: the fit loop and what it owns.
7. the verbs: both CLIs (``retail-data`` is ``detect.verbs.retail_data``; ``python -m data_tools`` only starts
   it), ``detect.verbs``, ``detect.report``, ``detect.audit``, ``detect.tools``; the Python API (``detect.api``,
   ``detect.api_result``) and the bare ``detect`` package, whose ``load`` imports ``detect.api`` lazily.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("data_tools", "detect")

# (floor, module prefixes); the longest matching prefix decides a module's floor.
FLOORS: list[tuple[int, tuple[str, ...]]] = [
    (0, ("data_tools",)),
    (1, ("detect.models",)),
    (2, ("detect.config",)),
    (3, ("detect.data",)),
    (4, ("detect.engine.runtime", "detect.tables", "detect.engine")),
    (5, ("detect.engine.inference",)),
    (6, ("detect.engine.training",)),
    (7, ("detect.verbs", "detect.report", "detect.audit", "detect.tools", "detect.cli", "detect.__main__",
         "data_tools.__main__", "detect.api", "detect.api_result")),
]
# Package files that sit on a floor by themselves, not as a prefix of the modules under them: the bare ``detect``
# package offers the Python API (``from detect import load``, imported lazily from ``detect.api``), so it is on the
# API's floor, while a new ``detect/<module>.py`` must still be added to FLOORS.
EXACT: dict[str, int] = {"detect": 7}


def module_files() -> dict[str, Path]:
    """``{dotted module name: file}`` for every module of the two packages."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def floor_of(module: str) -> int:
    if module in EXACT:
        return EXACT[module]
    best, floor = -1, None
    for level, prefixes in FLOORS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, floor = len(prefix), level
    assert floor is not None, f"{module} is on no floor: add it to FLOORS"
    return floor


def imported_modules(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules that ``name`` imports anywhere in its file (functions included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        candidates: list[str] = []
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")
                parts = parts[: len(parts) - node.level + (1 if is_pkg else 0)]
                base = ".".join(parts + ([base] if base else []))
            candidates = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in candidates:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    known = module_files()
    return {name: imported_modules(name, path, known) for name, path in known.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_no_import_goes_up_a_floor():
    graph = import_graph()
    upward = [f"{a} (floor {floor_of(a)}) imports {b} (floor {floor_of(b)})"
              for a, targets in graph.items() for b in sorted(targets) if floor_of(b) > floor_of(a)]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_cycle_between_files():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_scan_sees_lazy_imports_and_cycles(tmp_path):
    """Negative control: a lazy import inside a function counts, and a two-file loop is found."""
    (tmp_path / "a.py").write_text("def f():\n    from b import g\n")
    (tmp_path / "b.py").write_text("import a\n")
    known = {"a": tmp_path / "a.py", "b": tmp_path / "b.py"}
    graph = {name: imported_modules(name, path, known) for name, path in known.items()}
    assert graph == {"a": {"b"}, "b": {"a"}}
    assert find_cycles(graph) == [["a", "b"]]


@pytest.mark.parametrize("module, floor", [("data_tools.records", 0), ("detect.verbs.retail_data", 7),
                                           ("detect.engine.training.trainer", 6), ("detect.report.build", 7),
                                           ("detect", 7), ("detect.api", 7), ("detect.engine", 4)])
def test_floor_table(module, floor):
    assert floor_of(module) == floor


def test_a_new_top_level_module_needs_a_floor():
    """The bare ``detect`` package's floor is its own: it does not place the modules under it."""
    with pytest.raises(AssertionError, match="on no floor"):
        floor_of("detect.new_module")


def test_nothing_imports_the_bare_detect_package():
    """``detect`` (floor 7, the API's front door) is imported by no module of the packages: ``import detect.x``
    names ``detect.x``, so only ``import detect`` / ``from detect import name`` would (an upward import below 7)."""
    graph = import_graph()
    assert not [a for a, targets in graph.items() if "detect" in targets]
